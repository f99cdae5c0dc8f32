"""attnkern.additive_scores and the fused op under it (attnkern::scores, csrc/kernels/scores.cpp)
against the reference: forward and every gradient, every mask kind, step mode, odd shapes
(H not a multiple of 16, key chunks and splits, more than one query block), prepared keys,
keys past the factorised range, non-contiguous inputs, each dtype with its tolerance;
float64 gradcheck, opcheck, compile, the bad-input messages; every test once per ISA path
this CPU can run (the ``every_isa`` fixture, tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch
from helpers import MASK_KINDS, make_inputs, make_masks, shape_id

import attnkern
from attnkern import ops

pytestmark = [pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built"),
              pytest.mark.usefixtures("every_isa")]

# (B, Tq, Tk, H): a step-sized row count, several query blocks, a key split and chunks
SHAPES = [(3, 1, 37, 24), (2, 9, 70, 32), (1, 3, 700, 16), (4, 17, 5, 20), (2, 4, 130, 48)]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-11),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _qkw(B, Tq, Tk, H, *, dtype=torch.float32, step=False, seed=0):
    q, k, _, w = make_inputs(B, Tq, Tk, H, 1, dtype=dtype, step=step, seed=seed)
    return q, k, w


def _check(q, k, w, kw, dtype, key=None):
    g = torch.Generator().manual_seed(9)
    got = attnkern.additive_scores(q, k if key is None else key, w, backend="cpp", **kw)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, w)]
    want = attnkern.reference.additive_scores(*leaves, **kw)
    assert got.dtype == dtype and got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)  # -inf exactly where masked
    torch.testing.assert_close(got[finite].double(), want[finite], **TOL[dtype])
    cot = torch.randn(want.shape, generator=g, dtype=torch.float64)
    mine = torch.autograd.grad(got, (q, k, w), cot.to(dtype))
    ref = torch.autograd.grad(want, leaves, cot)
    for name, a, b in zip(("query", "key", "weight"), mine, ref):
        # weight's gradient sums B * Tq * Tk terms (and cancels sum(dE) - 2 dwr): in float32
        # its rounding grows with them
        tol = dict(rtol=1e-4, atol=1e-4) if name == "weight" and dtype == torch.float32 \
            else TOL[dtype]
        torch.testing.assert_close(a.double(), b, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[shape_id(*s, 0) for s in SHAPES])
def test_scores_match_reference(shape, kind):
    B, Tq, Tk, H = shape
    q, k, w = _qkw(B, Tq, Tk, H, seed=Tk)
    _check(q, k, w, make_masks(kind, B, Tq, Tk), torch.float32)


@pytest.mark.parametrize("kind", ["none", "lengths", "padding"])
def test_step_query(kind):
    B, Tk, H = 4, 45, 20
    q, k, w = _qkw(B, 1, Tk, H, step=True)
    kw = make_masks(kind, B, 1, Tk)
    assert attnkern.additive_scores(q, k, w, **kw).shape == (B, Tk)
    _check(q, k, w, kw, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["f64", "bf16"])
def test_other_dtypes(dtype):
    q, k, w = _qkw(2, 5, 40, 24, dtype=dtype)
    _check(q, k, w, make_masks("both", 2, 5, 40), dtype)


@pytest.mark.parametrize("tq", [1, 9], ids=["Tq1", "Tq9"])
def test_prepared_keys_and_large_keys(tq):
    """PreparedKeys give the same energies and gradients; a key block past the factorised
    range (|k| > 21) and an infinite key take the direct path."""
    B, Tk, H = 2, 80, 32
    q, k, w = _qkw(B, tq, Tk, H, seed=4)
    with torch.no_grad():
        k[0, 2, 5] = 30.0
        k[1, 70, 1] = float("-inf")
    kw = make_masks("lengths", B, tq, Tk)
    _check(q, k, w, kw, torch.float32, key=attnkern.prepare_keys(k))
    _check(q, k, w, kw, torch.float32)


def test_non_contiguous_inputs():
    q, k, w = _qkw(3, 6, 33, 20)
    qt = q.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    kt = k.detach()[:, ::1, :].clone().transpose(1, 2).contiguous().transpose(1, 2)
    kt.requires_grad_()
    assert not kt.is_contiguous()
    _check(qt, kt, w, make_masks("padding", 3, 6, 33), torch.float32)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_gradcheck(kind):
    q, k, w = _qkw(2, 3, 7, 5, dtype=torch.float64)
    kw = make_masks(kind, 2, 3, 7)

    def fn(q, k, w):
        e = attnkern.additive_scores(q, k, w, backend="cpp", **kw)
        return torch.where(torch.isfinite(e), e, 0.0)

    assert torch.autograd.gradcheck(fn, (q, k, w))


@pytest.mark.parametrize("kind", ["none", "all", "both"])
def test_opcheck(kind):
    q, k, w = _qkw(2, 5, 9, 20)
    kw = make_masks(kind, 2, 5, 9)
    torch.library.opcheck(torch.ops.attnkern.scores.default,
                          (q, k, w, kw.get("key_padding_mask"), kw.get("key_lengths"),
                           kw.get("causal", False)))
    g = torch.randn(2, 5, 9)
    torch.library.opcheck(torch.ops.attnkern.scores_backward.default,
                          (g, q.detach(), k.detach(), w.detach(), kw.get("key_padding_mask"),
                           kw.get("key_lengths"), kw.get("causal", False)))


def test_compiled_matches_eager():
    q, k, w = _qkw(2, 4, 30, 16)
    kw = make_masks("lengths", 2, 4, 30)

    def fn(q, k, w):
        return torch.sigmoid(attnkern.additive_scores(q, k, w, **kw)).sum(-1)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, w), fn(q, k, w))


def test_no_double_backward():
    q, k, w = _qkw(2, 3, 6, 8, dtype=torch.float64)
    e = attnkern.additive_scores(q, k, w, backend="cpp")
    with pytest.raises(RuntimeError, match="gradients of gradients"):
        torch.autograd.grad(e.sum(), (q,), create_graph=True)


@pytest.mark.parametrize("case, match", [
    ("query", "query must be"), ("key", "key must be"), ("weight", "weight"),
    ("mask", "key_padding_mask"), ("lengths", "key_lengths"), ("dtype", "dtype")])
def test_bad_input_names_the_argument(case, match):
    q, k, w = _qkw(2, 3, 6, 8, seed=1)
    args = {"query": q, "key": k, "weight": w}
    kw = {}
    if case == "query":
        args["query"] = q[0, 0]
    elif case == "key":
        args["key"] = k[0]
    elif case == "weight":
        args["weight"] = w[:3]
    elif case == "mask":
        kw["key_padding_mask"] = torch.zeros(2, 5, dtype=torch.bool)
    elif case == "lengths":
        kw["key_lengths"] = torch.tensor([7, 1])
    elif case == "dtype":
        args["key"] = k.double()
    with pytest.raises((ValueError, TypeError), match=match):
        attnkern.additive_scores(args["query"], args["key"], args["weight"], **kw)
    # and the op itself, directly (C++ checks: never an out-of-bounds read)
    w1 = args["weight"] if args["weight"].dim() == 1 else args["weight"][0]
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        torch.ops.attnkern.scores(args["query"], args["key"], w1, kw.get("key_padding_mask"),
                                  kw.get("key_lengths"), False)


def test_reference_backend_and_no_grad():
    q, k, w = _qkw(2, 3, 6, 8, seed=2)
    a = attnkern.additive_scores(q, k, w, backend="reference")
    with torch.no_grad():
        b = attnkern.additive_scores(q, k, w, backend="cpp")
    torch.testing.assert_close(a, b, **TOL[torch.float32])
