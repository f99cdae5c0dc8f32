"""Public API: backend selection, ATTNKERN_BACKEND, return forms, the autograd Function."""

import os

import pytest
import torch
from helpers import make_inputs

import attnkern
from attnkern import functional, ops, testing


def test_public_names():
    assert attnkern.__version__
    for name in ("additive_attention", "AdditiveAttention", "AdditiveAttentionFunction",
                 "reference"):
        assert hasattr(attnkern, name)
    assert issubclass(attnkern.AdditiveAttentionFunction, torch.autograd.Function)


@pytest.mark.parametrize("step", [False, True])
def test_return_forms(step):
    q, k, v, w = make_inputs(2, 3, 5, 4, 6, step=step, requires_grad=False)
    out = attnkern.additive_attention(q, k, v, w, backend="reference")
    assert isinstance(out, torch.Tensor)
    assert out.shape == ((2, 6) if step else (2, 3, 6))
    out2, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend="reference")
    assert wts.shape == ((2, 5) if step else (2, 3, 5))
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(wts.sum(-1), torch.ones(wts.shape[:-1]))


def test_resolve_backend_rules():
    cpu = torch.device("cpu")
    assert attnkern.get_backend() == "auto"
    assert functional.resolve_backend("reference", cpu, torch.float32) == "reference"
    expected_auto = "op" if ops.HAS_CPP else "reference"
    assert functional.resolve_backend("auto", cpu, torch.float32) == expected_auto
    with attnkern.using_backend("reference"):
        assert attnkern.get_backend() == "reference"
        assert functional.resolve_backend("auto", cpu, torch.float32) == "reference"
        # an explicit backend wins over the default
        if ops.HAS_CPP:
            assert functional.resolve_backend("cpp", cpu, torch.float32) == "op"
    assert attnkern.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        attnkern.set_backend("gpu")
    assert attnkern.get_backend() == "auto"  # unchanged by the bad value
    with pytest.raises(ValueError, match="backend must be one of"):
        functional.resolve_backend("fast", cpu, torch.float32)
    with pytest.raises(ValueError, match="cpp.*CPU"):
        functional.resolve_backend("cpp", torch.device("meta"), torch.float32)


def test_set_backend_changes_what_auto_calls_run(monkeypatch):
    """set_backend is what an "auto" call runs (the reference here: seen by a spy), until
    reset; it returns the previous setting. The environment variable is read once, at
    import: setting it later changes nothing."""
    calls = []
    reference = attnkern.reference.additive_attention
    monkeypatch.setattr(attnkern.reference, "additive_attention",
                        lambda *a, **kw: calls.append(1) or reference(*a, **kw))
    q, k, v, w = make_inputs(2, 3, 5, 4, 6, requires_grad=False)
    assert attnkern.set_backend("reference") == "auto"
    try:
        out = attnkern.additive_attention(q, k, v, w)
        assert calls == [1]
        attnkern.additive_attention(q, k, v, w, backend="cpp" if ops.HAS_CPP else "reference")
        assert calls == [1] + ([] if ops.HAS_CPP else [1])  # explicit backends are kept
    finally:
        assert attnkern.set_backend("auto") == "reference"
    torch.testing.assert_close(out, reference(q, k, v, w))
    if ops.HAS_CPP:
        calls.clear()
        monkeypatch.setenv("ATTNKERN_BACKEND", "reference")
        attnkern.additive_attention(q, k, v, w)
        assert calls == []


@pytest.mark.parametrize("env", ["reference", " reference ", "gpu", "CPP"])
def test_backend_environment_variable_read_at_import(env):
    """ATTNKERN_BACKEND sets the default at import (surrounding blanks tolerated); a bad
    value fails the import with a ValueError naming the variable and the value."""
    import subprocess
    import sys

    code = "import attnkern; print(attnkern.get_backend())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, ATTNKERN_BACKEND=env))
    if env.strip() == "reference":
        assert proc.returncode == 0 and proc.stdout.strip() == "reference", proc.stderr
    else:
        assert proc.returncode != 0
        assert "ValueError: ATTNKERN_BACKEND must be one of" in proc.stderr, proc.stderr
        assert repr(env.strip()) in proc.stderr


def test_triton_on_cpu_needs_the_interpreter_opt_in(monkeypatch):
    if not ops.HAS_TRITON:
        pytest.skip("triton not installed")
    if testing.triton_on_cpu():
        pytest.skip("this process runs the Triton kernels on CPU (TRITON_INTERPRET run)")
    # Even with TRITON_INTERPRET set, CPU tensors never silently take the C++ kernels when
    # Triton was asked for: the opt-in is explicit.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="use_triton_on_cpu"):
        functional.resolve_backend("triton", torch.device("cpu"), torch.float32)
    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 2)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        attnkern.additive_attention(q, k, v, torch.randn(4), backend="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        monkeypatch.delenv("TRITON_INTERPRET")
        testing.use_triton_on_cpu()
    with pytest.raises(TypeError, match="float64"):
        functional.resolve_backend("triton", torch.device("cpu"), torch.float64)


def test_missing_extension_warns_once_then_reference(monkeypatch):
    monkeypatch.setattr(ops, "HAS_CPP", False)
    monkeypatch.setattr(ops, "CPP_IMPORT_ERROR", "simulated")
    monkeypatch.setattr(functional, "_warned", set())
    q, k, v, w = make_inputs(2, 3, 5, 4, 6, requires_grad=False)
    with pytest.warns(RuntimeWarning, match="not built"):
        out = attnkern.additive_attention(q, k, v, w)
    torch.testing.assert_close(out, attnkern.reference.additive_attention(q, k, v, w))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attnkern.additive_attention(q, k, v, w)  # second call: no warning
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation -e ."):
        attnkern.additive_attention(q, k, v, w, backend="cpp")


@pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")
def test_function_calls_registered_ops_and_matches_functional():
    q, k, v, w = make_inputs(2, 4, 7, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 2])
    out, lse, wts = attnkern.AdditiveAttentionFunction.apply(q, k, v, w, None, lengths, True,
                                                             True)
    assert lse.dtype == torch.float64 and lse.shape == (2, 4)
    ref_out, ref_w = attnkern.reference.additive_attention(
        q, k, v, w, key_lengths=lengths, causal=True, return_weights=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(wts, ref_w)
    # lse really is the log-sum-exp of the usable scores: weights = exp(s - lse)
    g1 = torch.autograd.grad(out.sum() + wts.square().sum(), (q, k, v, w))
    g2 = torch.autograd.grad(ref_out.sum() + ref_w.square().sum(), (q, k, v, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- prepared keys, weight (1, H)

@pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prepared_keys_same_results_and_gradients(dtype):
    q, k, v, w = make_inputs(3, 1, 9, 8, 5, dtype=dtype, step=True)
    lengths = torch.tensor([9, 4, 1])
    pk = attnkern.prepare_keys(k)
    assert isinstance(pk, attnkern.PreparedKeys) and pk.key is k and pk.shape == k.shape
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert pk.key_exp.dtype == acc and pk.key_exp.is_contiguous()
    assert not pk.key_exp.requires_grad
    torch.testing.assert_close(pk.key_exp, torch.exp(2 * k.detach().to(acc)))
    outs = []
    for key in (k, pk):
        out, wts = attnkern.additive_attention(q, key, v, w, key_lengths=lengths,
                                               return_weights=True, backend="cpp")
        grads = torch.autograd.grad(out.square().sum() + wts.sum(), (q, k, v, w))
        outs.append((out, wts, grads))
    (o1, w1, g1), (o2, w2, g2) = outs
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(w1, w2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    assert g2[1].abs().sum() > 0  # the gradient reaches the key through PreparedKeys.key


def test_prepared_keys_passed_to_the_op_only_when_they_match(monkeypatch):
    seen = []
    monkeypatch.setattr(attnkern.functional, "resolve_backend", lambda *a: "op")
    monkeypatch.setattr(ops, "fwd", lambda *args: seen.append(args[8]) or (
        torch.zeros(2, 1, 3), torch.zeros(2, 1), torch.zeros(0)))
    q, k, v, w = make_inputs(2, 1, 4, 5, 3, step=True, requires_grad=False)
    pk = attnkern.prepare_keys(k)
    attnkern.additive_attention(q, pk, v, w)
    assert seen[-1] is pk.key_exp
    attnkern.additive_attention(q, k, v, w)
    assert seen[-1] is None
    stale = attnkern.PreparedKeys(k, pk.key_exp[:, :2])  # not this key's: dropped
    attnkern.additive_attention(q, stale, v, w)
    assert seen[-1] is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the key gets cast: dropped
        attnkern.additive_attention(q.bfloat16(), pk, v.bfloat16(), w.bfloat16())
    assert seen[-1] is None


def test_prepare_keys_rejects_bad_keys():
    with pytest.raises(ValueError, match=r"prepare_keys.*\(2, 3\)"):
        attnkern.prepare_keys(torch.randn(2, 3))
    with pytest.raises(ValueError, match="prepare_keys"):
        attnkern.prepare_keys(torch.ones(2, 3, 4, dtype=torch.int64))


@pytest.mark.parametrize("backend", ["reference"] + (["cpp"] if ops.HAS_CPP else []))
def test_weight_as_linear_weight(backend):
    q, k, v, w = make_inputs(2, 3, 5, 4, 6)
    w2 = w.detach().clone()[None].requires_grad_(True)  # (1, H): nn.Linear(H, 1).weight
    out1 = attnkern.additive_attention(q, k, v, w, backend=backend)
    out2 = attnkern.additive_attention(q, k, v, w2, backend=backend)
    torch.testing.assert_close(out1, out2)
    (g1,) = torch.autograd.grad(out1.sum(), (w,))
    (g2,) = torch.autograd.grad(out2.sum(), (w2,))
    assert g2.shape == (1, 4)
    torch.testing.assert_close(g2[0], g1)


# ---------------------------------------------------------------- the one autograd route

@pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")
def test_autograd_is_the_cpp_function_and_no_grad_records_nothing():
    q, k, v, w = make_inputs(2, 3, 5, 4, 6)
    out = attnkern.additive_attention(q, k, v, w, backend="cpp")
    assert "FwdFunction" in out.grad_fn.name()  # csrc/autograd.cpp, not a Python Function
    out_f, _, _ = attnkern.AdditiveAttentionFunction.apply(q, k, v, w)
    assert type(out_f.grad_fn) is type(out.grad_fn)
    with torch.no_grad():
        assert attnkern.additive_attention(q, k, v, w, backend="cpp").grad_fn is None
    # weights not requested: only the output is differentiable
    _, lse, wts = attnkern.AdditiveAttentionFunction.apply(q, k, v, w)
    assert not lse.requires_grad and not wts.requires_grad


def test_missing_extension_takes_the_reference_on_cuda(monkeypatch):
    """The op schemas live in attnkern._C: without it there is no op on any device."""
    monkeypatch.setattr(ops, "HAS_CPP", False)
    monkeypatch.setattr(ops, "HAS_TRITON", True)
    monkeypatch.setattr(functional, "_warned", set())
    cuda = torch.device("cuda")
    with pytest.warns(RuntimeWarning, match="not built"):
        assert functional.resolve_backend("auto", cuda, torch.float32, False) == "reference"
    assert functional.resolve_backend("auto", cuda, torch.float32, True) == "reference"
    with pytest.raises(RuntimeError, match="backend='triton' needs the C\\+\\+ extension"):
        functional.resolve_backend("triton", cuda, torch.float32, False)


def test_package_imports_and_works_without_the_extension():
    """A real missing attnkern._C (import blocked in a fresh interpreter): forward and
    gradients on CPU through the reference, an explicit cpp backend raises."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["attnkern._C"] = None  # makes `import attnkern._C` raise ImportError
        import torch, attnkern
        from attnkern import ops
        assert not ops.HAS_CPP and not hasattr(torch.ops.attnkern, "fwd")
        q, k, v, w = (torch.randn(*s, requires_grad=True)
                      for s in ((2, 4), (2, 5, 4), (2, 5, 3), (4,)))
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            out = attnkern.additive_attention(q, attnkern.prepare_keys(k), v, w)
        ref = attnkern.reference.additive_attention(q, k, v, w)
        torch.testing.assert_close(out, ref)
        out.sum().backward()
        assert k.grad is not None and w.grad is not None
        try:
            attnkern.additive_attention(q, k, v, w, backend="cpp")
        except RuntimeError as e:
            assert "attnkern._C" in str(e)
        else:
            raise AssertionError("backend='cpp' without the extension must raise")
        for call in (lambda: ops.fwd(q, k, v, w, None, None, False, False),
                     lambda: attnkern.AdditiveAttentionFunction.apply(q, k, v, w)):
            try:
                call()
            except RuntimeError as e:
                assert "attnkern._C" in str(e) and "backend='reference'" in str(e)
            else:
                raise AssertionError("the op without the extension must raise")
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "ATTNKERN_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


# ---------------------------------------------------------------- one op contract, no seams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_schema_is_written_once_in_schema_cpp():
    import glob
    import re

    defs = {}
    for path in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True):
        text = open(path).read()
        for name in re.findall(r'm\.def\(\s*"(\w+)\(', text):
            defs.setdefault(name, []).append(os.path.relpath(path, ROOT))
        if not path.endswith("schema.cpp"):
            assert "TORCH_LIBRARY(" not in text and "TORCH_LIBRARY_FRAGMENT(" not in text, path
    assert defs == {name: ["csrc/schema.cpp"] for name in (
        "fwd", "bwd", "location_windows", "location_windows_backward", "wgrad_store",
        "wgrad_record", "wgrad_record_linear", "same_bytes", "location1_keys",
        "location1_keys_backward", "scores", "scores_backward", "location_attention",
        "location1_attention", "location_keys", "rows_linear")}
    for path in glob.glob(os.path.join(ROOT, "attnkern", "**", "*.py"), recursive=True):
        text = open(path).read()
        assert ".define(" not in text and "infer_schema" not in text, path
    if ops.HAS_CPP:
        assert all(hasattr(torch.ops.attnkern, name) for name in defs)
        assert not hasattr(torch.ops.attnkern, "step_pending")


def test_product_path_imports_no_test_helpers():
    """attnkern.testing (the Triton-on-CPU seam, forced split counts) is imported only by
    whoever calls it; a plain import and call never load it."""
    import subprocess
    import sys

    code = ("import sys, torch, attnkern\n"
            "q, k, v, w = torch.randn(2, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 3), "
            "torch.randn(4)\n"
            "attnkern.additive_attention(q, k, v, w)\n"
            "assert 'attnkern.testing' not in sys.modules\n"
            "import attnkern.triton_kernels as tk\n"
            "assert not hasattr(tk, 'FORCE_NUM_SPLITS')\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    if "No module named 'triton'" in proc.stderr:
        pytest.skip("triton not installed")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_clear_caches_is_public_and_empties_the_plan_cache():
    assert "clear_caches" in attnkern.__all__
    attnkern.clear_caches()  # fine before any Triton module is loaded
    if not ops.HAS_TRITON:
        return
    from attnkern import triton_kernels as tk

    tk._fwd_plan_cached(2, 3, 5, 4, 6, torch.float32, torch.device("cpu"), False, False,
                        False, False, False, None)
    assert tk._fwd_plan_cached.cache_info().currsize >= 1
    assert tk._fwd_plan_cached.cache_info().maxsize == tk.PLAN_CACHE_SIZE
    attnkern.clear_caches()
    assert tk._fwd_plan_cached.cache_info().currsize == 0
    assert tk._bwd_plan_cached.cache_info().currsize == 0


def test_is_eager_in_every_mode():
    """_compat.is_eager() (one home for the mode checks; the weight-gradient stores and the
    location windows op run only where it is True): eager yes; CPU autocast, a functorch
    transform, TorchScript tracing, torch.compile no."""
    from attnkern import _compat

    assert _compat.is_eager()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _compat.is_eager()
    seen = []
    torch.func.vmap(lambda x: seen.append(_compat.is_eager()) or x)(torch.ones(2, 3))
    torch.jit.trace(lambda x: seen.append(_compat.is_eager()) or x * 2, torch.ones(2),
                    check_trace=False)
    assert seen == [False, False]  # vmap, then the trace
    compiled = torch.compile(lambda x: x + (1.0 if _compat.is_eager() else 2.0),
                             backend="eager", fullgraph=True)
    assert compiled(torch.zeros(1)).item() == 2.0


def test_reference_takes_a_linear_weight_as_before():
    """The reference (also the export form) broadcasts a (1, H) score vector as (H,)."""
    q, k, v, w = make_inputs(2, 3, 5, 4, 6, requires_grad=False)
    torch.testing.assert_close(attnkern.reference.additive_attention(q, k, v, w[None]),
                               attnkern.reference.additive_attention(q, k, v, w),
                               atol=0, rtol=0)
