"""Public API: backend selection, ATTNKERN_BACKEND, return forms, the autograd Function."""

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


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    if not ops.HAS_TRITON:
        pytest.skip("triton not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        functional.resolve_backend("triton", torch.device("cpu"), torch.float32)
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
