"""Public API: backend selection, ATTNKERN_BACKEND, return forms, the autograd Function."""

import os

import pytest
import torch
from helpers import make_inputs

import attnkern
from attnkern import functional, ops


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


def test_resolve_backend_rules(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("ATTNKERN_BACKEND", raising=False)
    assert functional.resolve_backend("reference", cpu, torch.float32) == "reference"
    expected_auto = "op" if ops.HAS_CPP else "reference"
    assert functional.resolve_backend("auto", cpu, torch.float32) == expected_auto
    monkeypatch.setenv("ATTNKERN_BACKEND", "reference")
    assert functional.resolve_backend("auto", cpu, torch.float32) == "reference"
    # an explicit backend wins over the environment
    if ops.HAS_CPP:
        assert functional.resolve_backend("cpp", cpu, torch.float32) == "op"
    monkeypatch.setenv("ATTNKERN_BACKEND", "gpu")
    with pytest.raises(ValueError, match="ATTNKERN_BACKEND"):
        functional.resolve_backend("auto", cpu, torch.float32)
    monkeypatch.delenv("ATTNKERN_BACKEND")
    with pytest.raises(ValueError, match="backend must be one of"):
        functional.resolve_backend("fast", cpu, torch.float32)
    with pytest.raises(ValueError, match="cpp.*CPU"):
        functional.resolve_backend("cpp", torch.device("meta"), torch.float32)


def test_triton_on_cpu_needs_the_interpreter_opt_in(monkeypatch):
    if not ops.HAS_TRITON:
        pytest.skip("triton not installed")
    if ops.triton_on_cpu():
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
        ops.use_triton_on_cpu()
    with pytest.raises(TypeError, match="float64"):
        functional.resolve_backend("triton", torch.device("cpu"), torch.float64)


def test_missing_extension_warns_once_then_reference(monkeypatch):
    monkeypatch.delenv("ATTNKERN_BACKEND", raising=False)
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


def test_missing_extension_gradients_take_the_reference_on_cuda(monkeypatch):
    monkeypatch.delenv("ATTNKERN_BACKEND", raising=False)
    monkeypatch.setattr(ops, "HAS_CPP", False)
    monkeypatch.setattr(ops, "HAS_TRITON", True)
    monkeypatch.setattr(functional, "_warned", set())
    cuda = torch.device("cuda")
    # forward-only calls keep the Triton op; a call needing gradients cannot use it
    assert functional.resolve_backend("auto", cuda, torch.float32, False) == "op"
    with pytest.warns(RuntimeWarning, match="no autograd"):
        assert functional.resolve_backend("auto", cuda, torch.float32, True) == "reference"
    with pytest.raises(RuntimeError, match="gradients through backend='triton'"):
        functional.resolve_backend("triton", cuda, torch.float32, True)
    assert functional.resolve_backend("triton", cuda, torch.float32, False) == "op"


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
        assert not ops.HAS_CPP
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
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "ATTNKERN_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
