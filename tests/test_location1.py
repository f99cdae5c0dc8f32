"""The one-channel location term op ``attnkern::location1_keys`` (csrc/kernels/location1.cpp)
against standard ops: ``base + dense(conv(prev))`` (ESPnet AttLoc / AttCovLoc, SpeechBrain
LocationAwareAttention), forward and every gradient, on every ISA path this CPU has.

Shapes hit the kernel's blocks: T below, at and past the 64-output register block, K wider
than T (taps reading only padding), A not a multiple of the 16 partial sums, C = 1.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkern import ops
from attnkern.modules.espnet import location_keys

pytestmark = [pytest.mark.skipif(
    not ops.HAS_CPP, reason=f"attnkern._C is not built ({ops.CPP_IMPORT_ERROR})"
), pytest.mark.usefixtures("every_isa")]  # every ISA path this CPU has (tests/conftest.py)

def _reference(base, prev, cw, dw):
    """Standard ops: conv1d (K = 2P + 1, P zeros each side), then the dense C -> A."""
    k = cw.shape[1]
    conv = F.conv1d(prev.unsqueeze(1), cw.unsqueeze(1), padding=(k - 1) // 2)  # (B, C, T)
    return base + conv.transpose(1, 2) @ dw.t()


def _inputs(B, T, A, C, K, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return mk(B, T, A), mk(B, T).softmax(-1), mk(C, K), mk(A, C)


# (B, T, A, C, K)
SHAPES = [
    (16, 200, 320, 10, 201),  # the LAS default
    (2, 7, 5, 3, 3),          # tiny: one partial block
    (3, 64, 17, 1, 1),        # one filter, one tap, T exactly a block
    (1, 65, 33, 4, 131),      # K > T: most taps read padding; ragged block
    (2, 1, 16, 2, 5),         # one frame
    (0, 5, 8, 2, 3),          # empty batch
]
IDS = ["B{}-T{}-A{}-C{}-K{}".format(*s) for s in SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_matches_standard_ops(shape, dtype):
    base, prev, cw, dw = (t.requires_grad_() for t in _inputs(*shape, dtype=dtype))
    got = ops.location1_keys(base, prev, cw, dw)
    ref_in = [t.detach().double().requires_grad_() for t in (base, prev, cw, dw)]
    want = _reference(*ref_in)
    tol = {torch.float32: 2e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    assert got.dtype == dtype and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=tol * 10, rtol=tol)
    if not got.numel():
        return
    g = torch.randn(got.shape, dtype=torch.float64)
    grads = torch.autograd.grad(got, (base, prev, cw, dw), g.to(dtype))
    want_grads = torch.autograd.grad(want, ref_in, g)
    for name, a, b in zip(("base", "prev", "conv_weight", "dense_weight"), grads, want_grads):
        scale = b.abs().max().item() + 1
        torch.testing.assert_close(a.double(), b, atol=tol * 10 * scale, rtol=tol,
                                   msg=lambda m, n=name: f"grad {n}: {m}")


def test_gradcheck_float64():
    inputs = [t.requires_grad_() for t in _inputs(2, 9, 5, 3, 5)]
    assert torch.autograd.gradcheck(ops.location1_keys, inputs)


@pytest.mark.parametrize("needs", ["prev", "weights", "base"])
def test_partial_gradients(needs):
    """Only what is asked for: the prev gradient is skipped when prev needs none."""
    base, prev, cw, dw = _inputs(2, 9, 5, 3, 5)
    want_in = [t.clone().requires_grad_() for t in (base, prev, cw, dw)]
    want = _reference(*want_in)
    which = {"prev": [1], "weights": [2, 3], "base": [0]}[needs]
    ins = [t.requires_grad_(i in which) for i, t in enumerate((base, prev, cw, dw))]
    got = ops.location1_keys(*ins)
    g = torch.randn(got.shape, dtype=torch.float64)
    grads = torch.autograd.grad(got, [ins[i] for i in which], g)
    want_grads = torch.autograd.grad(want, [want_in[i] for i in which], g)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_non_contiguous_inputs():
    base, prev, cw, dw = _inputs(3, 11, 6, 2, 7)
    nc = (base.transpose(0, 1).contiguous().transpose(0, 1), prev.t().contiguous().t(),
          cw.t().contiguous().t(), dw.t().contiguous().t())
    assert not any(t.is_contiguous() for t in nc[:1])
    torch.testing.assert_close(ops.location1_keys(*nc), _reference(base, prev, cw, dw),
                               atol=1e-12, rtol=1e-12)


def test_thread_count_does_not_change_the_bits():
    base, prev, cw, dw = (t.float().requires_grad_() for t in _inputs(8, 70, 40, 4, 21))
    g = torch.randn(8, 70, 40)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = ops.location1_keys(base, prev, cw, dw)
            outs.append((y, *torch.autograd.grad(y, (prev, cw, dw), g)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_opcheck():
    base, prev, cw, dw = (t.float().requires_grad_() for t in _inputs(2, 9, 5, 3, 5))
    torch.library.opcheck(ops.location1_keys, (base, prev, cw, dw))
    torch.library.opcheck(torch.ops.attnkern.location1_keys_backward.default,
                          (torch.randn(2, 9, 5), prev.detach(), cw.detach(), dw.detach(), True))


def test_compiles_without_graph_break():
    base, prev, cw, dw = (t.float() for t in _inputs(2, 9, 5, 3, 5))
    fn = torch.compile(ops.location1_keys, fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(base, prev, cw, dw), ops.location1_keys(base, prev, cw, dw))


@pytest.mark.parametrize("args, match", [
    (((2, 9), (2, 9), (3, 5), (5, 3)), r"base must be \(B, T, A\), got shape \(2, 9\)"),
    (((2, 9, 5), (2, 8), (3, 5), (5, 3)), r"prev must be \(B, T\) = \(2, 9\)"),
    (((2, 9, 5), (2, 9), (3, 1, 5), (5, 3)), r"conv_weight must be \(C, K\) with an odd"),
    (((2, 9, 5), (2, 9), (3, 4), (5, 3)), r"odd number of taps"),
    (((2, 9, 5), (2, 9), (3, 5), (5, 2)), r"dense_weight must be \(A, C\) = \(5, 3\)"),
])
def test_bad_shapes_raise(args, match):
    with pytest.raises(ValueError, match=match):
        ops.location1_keys(*(torch.randn(s) for s in args))


def test_bad_dtypes_raise():
    base, prev, cw, dw = (t.float() for t in _inputs(2, 9, 5, 3, 5))
    with pytest.raises(TypeError, match="prev must have base's dtype torch.float32"):
        ops.location1_keys(base, prev.double(), cw, dw)
    with pytest.raises(TypeError, match="prev must be a floating tensor"):
        ops.location1_keys(base, prev.long(), cw, dw)
    with pytest.raises(ValueError, match=r"grad must be \(B, T, A\)"):
        torch.ops.attnkern.location1_keys_backward(torch.randn(2, 9), prev, cw, dw, True)


@pytest.mark.parametrize("conv_rank", [3, 4])
def test_location_keys_takes_the_op_and_matches_the_standard_path(conv_rank, monkeypatch):
    """The modules' entry point: the op in eager on CPU, the GEMM paths elsewhere, the same
    numbers (ESPnet's Conv2d weight (C, 1, 1, K) and SpeechBrain's Conv1d (C, 1, K))."""
    base, prev, cw, dw = _inputs(3, 40, 24, 5, 11)
    conv_weight = cw.view(5, 1, 11) if conv_rank == 3 else cw.view(5, 1, 1, 11)
    calls = []
    real = ops.location1_keys
    monkeypatch.setattr(ops, "location1_keys", lambda *a: calls.append(1) or real(*a))
    got = location_keys(base, prev, conv_weight, dw, 5)
    assert calls
    monkeypatch.setattr(ops, "HAS_CPP", False)
    std = location_keys(base, prev, conv_weight, dw, 5)
    torch.testing.assert_close(got, std, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, _reference(base, prev, cw, dw), atol=1e-12, rtol=1e-12)


def test_location_keys_takes_the_gemm_where_the_op_does_more_work(monkeypatch):
    """ESPnet's Tacotron 2 AttLoc geometry (32 filters x 31 taps into att_dim 512): the op
    would do more multiply-adds than the folded filter's GEMM, so the GEMM runs (same
    numbers); at LAS's 10 x 201 into 320 the op does."""
    calls = []
    real = ops.location1_keys
    monkeypatch.setattr(ops, "location1_keys", lambda *a: calls.append(1) or real(*a))
    base, prev, cw, dw = _inputs(2, 19, 512, 32, 31)
    got = location_keys(base, prev, cw.view(32, 1, 1, 31), dw, 15)
    assert not calls
    torch.testing.assert_close(got, _reference(base, prev, cw, dw), atol=1e-10, rtol=1e-10)
    base, prev, cw, dw = _inputs(2, 19, 320, 10, 201)
    location_keys(base, prev, cw.view(10, 1, 1, 201), dw, 100)
    assert calls
