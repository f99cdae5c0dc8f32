"""The Triton kernels of the fused energies (``attnkern.additive_scores``: ``attnkern::scores``
/ ``scores_backward``) against the float64 reference.

As tests/test_triton.py: CUDA tensors (real kernels) when ``TRITON_INTERPRET`` is unset and a
GPU is present, CPU tensors under ``TRITON_INTERPRET=1`` (``scripts/test.sh`` runs
``tests/test_triton*.py`` that way), skipped otherwise. Every call goes through
``additive_scores(backend="triton")``: the op, its checks and the C++ autograd, so the three
gradients are the op's ``scores_backward``. Interpreted shapes are tiny but reach every code
path with the interpreter's tiles (16 wide, 32 from 64 up): H tails and several H chunks
(H = 5, 24, 40, 70), key tails (Tk = 1, 7, 33, 70), several query blocks, the rational tanh
(Tq = 1 and |k| > 43) and the factorised one, every mask kind, causal with Tq != Tk, step
mode, non-contiguous inputs and gradients, fully masked rows; fp32 and bf16, each with its
own tolerance (``test_the_comparison_can_fail`` shows those tolerances reject an error).
"""

from __future__ import annotations

import pytest
import torch
from helpers import MASK_KINDS, make_inputs, make_masks, triton_module_device

import attnkern
from attnkern import testing

INTERPRET = testing.triton_interpret_enabled()
DEVICE = triton_module_device()  # skips the module without Triton, or without CUDA/interpreter

from attnkern import triton_kernels as tk  # noqa: E402  (after the skip: imports triton)

BACKEND = "triton"
# (atol, rtol) against the float64 reference, evaluated on the same (rounded) inputs.
# fp32: the factorised tanh is within 4e-7 per element; bf16: the outputs' rounding
# (2^-9 relative) dominates. Gradients are compared with atol scaled by their largest
# reference entry (dweight sums B * Tq * Tk terms).
FWD_TOL = {torch.float32: (2e-5, 2e-4), torch.bfloat16: (1e-2, 1e-2)}
GRAD_TOL = {torch.float32: (2e-5, 2e-4), torch.bfloat16: (2e-2, 2e-2)}


def qkw(B, Tq, Tk, H, *, dtype=torch.float32, step=False, scale=1.0, seed=0):
    q, k, _, w = make_inputs(B, Tq, Tk, H, 1, dtype=dtype, device=DEVICE, step=step,
                             scale=scale, seed=seed)
    return q, k, w


def masks(kind, B, Tq, Tk, seed=0):
    return make_masks(kind, B, Tq, Tk, device=DEVICE, seed=seed)


def shape_id(B, Tq, Tk, H):
    return f"B{B}-Tq{Tq}-Tk{Tk}-H{H}"


def reference(q, k, w, cot, kw):
    """float64 reference energies and their gradients for the cotangent ``cot``."""
    leaves = [t.detach().cpu().double().requires_grad_() for t in (q, k, w)]
    kw = {n: (x.cpu() if isinstance(x, torch.Tensor) else x) for n, x in kw.items()}
    want = attnkern.reference.additive_scores(*leaves, **kw)
    grads = torch.autograd.grad(want, leaves, cot.cpu().double())
    return want.detach(), grads


def compare(got, grads, want, ref_grads, dtype):
    """The kernel's energies and (grad_query, grad_key, grad_weight) vs the reference's:
    -inf exactly where masked, finite values and gradients within the dtype's tolerance."""
    got = got.detach().cpu()
    assert got.dtype == dtype and got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite), "-inf not exactly at the masked keys"
    assert torch.all(got[~finite] == float("-inf"))
    atol, rtol = FWD_TOL[dtype]
    torch.testing.assert_close(got[finite].double(), want[finite], atol=atol, rtol=rtol)
    gatol, grtol = GRAD_TOL[dtype]
    for name, a, b in zip(("query", "key", "weight"), grads, ref_grads):
        a = a.cpu()
        assert a.dtype == dtype and a.shape == b.shape and a.is_contiguous(), name
        assert torch.isfinite(a).all(), f"non-finite grad_{name}"
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a.double(), b, atol=gatol * scale, rtol=grtol,
                                   msg=lambda m, n=name: f"grad_{n}: {m}")


def cotangent(shape, valid=None, seed=9):
    """A random gradient of the energies; NaN at the masked entries, where the op must
    take none (a masked energy is a constant)."""
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if valid is not None:
        g = torch.where(valid, g, float("nan"))
    return g


def check(q, k, w, kw, *, key=None, cot=None):
    """additive_scores(backend="triton") and its three gradients vs the float64 reference."""
    dtype = q.dtype
    got = attnkern.additive_scores(q, k if key is None else key, w, backend=BACKEND, **kw)
    if cot is None:
        want0 = attnkern.reference.additive_scores(q.detach().cpu(), k.detach().cpu(),
                                                   w.detach().cpu(), **{
            n: (x.cpu() if isinstance(x, torch.Tensor) else x) for n, x in kw.items()})
        cot = cotangent(want0.shape, torch.isfinite(want0))
    cot = cot.to(dtype)  # the reference takes the same (rounded) gradient
    want, ref_grads = reference(q, k, w, torch.nan_to_num(cot.cpu(), nan=0.0), kw)
    grads = torch.autograd.grad(got, (q, k, w), cot.to(got.device))
    compare(got, grads, want, ref_grads, dtype)
    return got, grads


def assert_nontrivial(B, Tq, Tk, kw):
    valid = attnkern.reference.valid_keys(
        B, Tq, Tk, key_padding_mask=kw.get("key_padding_mask"),
        key_lengths=kw.get("key_lengths"), causal=kw.get("causal", False), device=DEVICE)
    assert (valid.sum(-1) >= 2).sum() >= 2, "test inputs leave fewer than 2 rows with 2 keys"


# --------------------------------------------------------------------- shapes and tails

SHAPES = [
    (2, 7, 33, 5),    # H < chunk, key tail, one query block of 8
    (1, 1, 1, 3),     # one key, one row (the rational tanh: BLOCK_M = 1)
    (2, 16, 7, 24),   # two H chunks with a tail, Tk < block
    (2, 5, 70, 40),   # three H chunks, three 32-key blocks with a tail
    (1, 17, 33, 24),  # two query blocks (one row in the second), three key blocks
    (2, 3, 20, 70),   # 32-wide H chunks with a tail
]


@pytest.mark.parametrize("B,Tq,Tk,H", SHAPES, ids=[shape_id(*s) for s in SHAPES])
def test_energies_and_grads_match_reference(B, Tq, Tk, H):
    check(*qkw(B, Tq, Tk, H, seed=B + Tq + Tk), {})


# -------------------------------------------------------------------------------- masks

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("Tq,Tk", [(6, 21), (20, 9)], ids=["Tq<Tk", "Tq>Tk"])
def test_every_mask_kind(kind, Tq, Tk, dtype):
    B = 3
    kw = masks(kind, B, Tq, Tk)
    check(*qkw(B, Tq, Tk, 10, dtype=dtype, seed=11), kw)
    assert_nontrivial(B, Tq, Tk, kw)


def test_fully_masked_rows():
    B, Tq, Tk, H = 3, 9, 5, 6
    q, k, w = qkw(B, Tq, Tk, H, seed=2)
    pad = torch.zeros(B, Tk, dtype=torch.bool, device=DEVICE)
    pad[2] = True  # batch row 2: everything padded
    kw = dict(key_lengths=torch.tensor([0, 5, 2], device=DEVICE), key_padding_mask=pad,
              causal=True)
    e, (dq, dk, dw) = check(q, k, w, kw)
    # causal with Tq - Tk = 4: rows 0..3 of batch row 1 see no key either
    assert torch.all(e[0] == float("-inf")) and torch.all(e[2] == float("-inf"))
    assert torch.all(e[1, :4] == float("-inf")) and torch.isfinite(e[1, 4:]).any()
    assert torch.all(dq[0] == 0) and torch.all(dq[2] == 0) and torch.all(dq[1, :4] == 0)
    assert torch.all(dk[0] == 0) and torch.all(dk[2] == 0)
    assert dq[1, 4:].abs().sum() > 0 and dw.abs().sum() > 0


# ---------------------------------------------------------------------------- step mode

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["none", "padding", "lengths", "all"])
def test_step_query(kind, dtype):
    B, Tk, H = 4, 37, 20
    q, k, w = qkw(B, 1, Tk, H, dtype=dtype, step=True, seed=5)
    kw = masks(kind, B, 1, Tk)
    e, (dq, _, _) = check(q, k, w, kw)
    assert e.shape == (B, Tk) and dq.shape == (B, H)


def test_step_query_matches_one_row_query():
    q, k, w = qkw(3, 1, 40, 12, step=True, seed=6)
    kw = masks("both", 3, 1, 40)
    with torch.no_grad():
        e2 = attnkern.additive_scores(q, k, w, backend=BACKEND, **kw)
        e3 = attnkern.additive_scores(q[:, None], k, w, backend=BACKEND, **kw)
    assert torch.equal(e2, e3[:, 0])


# ---------------------------------------------------- the rational tanh and prepared keys

@pytest.mark.parametrize("tq", [1, 9], ids=["Tq1", "Tq9"])
def test_large_keys_take_the_rational_tanh(tq):
    """|k| > 43 (exp(2k) leaves fp32) in one key block: that tile (forward) and the query
    blocks (backward pass 2) use the rational tanh; the other tiles stay factorised."""
    B, Tk, H = 2, 40, 18
    q, k, w = qkw(B, tq, Tk, H, seed=4)
    with torch.no_grad():
        k[0, 2, 5] = 50.0
        k[1, 30, 1] = -60.0
    check(q, k, w, masks("lengths", B, tq, Tk))


def test_saturated_tanh():
    check(*qkw(2, 5, 19, 12, scale=8.0, seed=3), masks("padding", 2, 5, 19))


def test_prepared_keys_give_the_same_result():
    q, k, w = qkw(2, 4, 21, 8, seed=8)
    prepared = attnkern.prepare_keys(k)
    kw = masks("both", 2, 4, 21)
    with torch.no_grad():
        a = attnkern.additive_scores(q, k, w, backend=BACKEND, **kw)
        b = attnkern.additive_scores(q, prepared, w, backend=BACKEND, **kw)
    assert torch.equal(a, b)
    check(q, k, w, kw, key=prepared)


# ------------------------------------------------------------ strides, sizes, launches

def test_non_contiguous_inputs_and_gradient():
    B, Tq, Tk, H = 2, 6, 11, 9
    g = torch.Generator().manual_seed(0)
    q = torch.randn(Tq, B, 2 * H, generator=g).to(DEVICE).transpose(0, 1)[..., ::2]
    k = torch.randn(B, H, Tk, generator=g).to(DEVICE).transpose(1, 2)
    w = (torch.randn(2 * H, generator=g).to(DEVICE) / 3)[::2]
    pad = (torch.rand(Tk, B, generator=g) < 0.3).to(DEVICE).t()
    assert not any(t.is_contiguous() for t in (q, k, w, pad))
    q, k, w = (t.requires_grad_() for t in (q, k, w))
    kw = dict(key_padding_mask=pad)
    want = attnkern.reference.additive_scores(q.detach(), k.detach(), w.detach(), **kw)
    cot = cotangent((B, Tq, Tk), torch.isfinite(want.cpu()), seed=1)
    cot = cot.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (i, j) strides
    assert not cot.is_contiguous()
    check(q, k, w, kw, cot=cot)


def test_expanded_gradient_and_lengths():
    """e.sum().backward(): the gradient is an expanded (stride 0) tensor; expanded
    key_lengths too."""
    B, Tq, Tk, H = 3, 5, 13, 7
    q, k, w = qkw(B, Tq, Tk, H, seed=7)
    lens = torch.tensor([9], device=DEVICE).expand(B)
    e = attnkern.additive_scores(q, k, w, backend=BACKEND, key_lengths=lens)
    e.masked_fill(~torch.isfinite(e), 0.0).sum().backward()
    leaves = [t.detach().double().requires_grad_() for t in (q, k, w)]
    r = attnkern.reference.additive_scores(*leaves, key_lengths=lens)
    r.masked_fill(~torch.isfinite(r), 0.0).sum().backward()
    for a, b in zip((q, k, w), leaves):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=2e-5, rtol=2e-4)
    ones = torch.ones(1, 1, 1, device=DEVICE).expand(B, Tq, Tk)
    dq, dk, dw = torch.ops.attnkern.scores_backward(ones, q.detach(), k.detach(), w.detach(),
                                                    None, lens.contiguous(), False)
    torch.testing.assert_close(dq, q.grad)
    torch.testing.assert_close(dk, k.grad)
    torch.testing.assert_close(dw, w.grad)


@pytest.mark.parametrize("B,Tq,Tk", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_empty_sizes(B, Tq, Tk):
    q, k, w = qkw(B, Tq, Tk, 4)
    e = attnkern.additive_scores(q, k, w, backend=BACKEND)
    assert e.shape == (B, Tq, Tk)
    dq, dk, dw = torch.autograd.grad(e.sum(), (q, k, w), allow_unused=True)
    for grad, t in zip((dq, dk, dw), (q, k, w)):
        assert grad is None or (grad.shape == t.shape and torch.all(grad == 0))


@pytest.fixture
def launches(monkeypatch):
    """Names of the kernels launched during the test."""
    seen: list[str] = []
    launch = tk._launch

    def spy(kernel, grid, *args, **meta):
        seen.append(getattr(kernel, "fn", kernel).__name__)
        return launch(kernel, grid, *args, **meta)

    monkeypatch.setattr(tk, "_launch", spy)
    return seen


def test_the_op_runs_the_triton_kernels(launches):
    q, k, w = qkw(2, 4, 9, 6, seed=1)
    e = attnkern.additive_scores(q, k, w, backend=BACKEND, key_lengths=torch.tensor(
        [9, 3], device=DEVICE))
    assert launches == ["_scores_fwd_kernel"]
    torch.autograd.grad(e.masked_fill(e == float("-inf"), 0).sum(), (q, k, w))
    assert launches == ["_scores_fwd_kernel", "_scores_ds_kernel", "_bwd_dqdk_kernel"]


def test_backward_is_deterministic():
    q, k, w = qkw(2, 9, 40, 20, seed=2)
    kw = masks("all", 2, 9, 40)
    cot = cotangent((2, 9, 40)).to(DEVICE)
    runs = [torch.autograd.grad(attnkern.additive_scores(q, k, w, backend=BACKEND, **kw),
                                (q, k, w), cot) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_grad_of_the_wrong_shape_is_rejected():
    q, k, w = (t.detach() for t in qkw(2, 3, 5, 4))
    for bad in (torch.zeros(2, 3, 4, device=DEVICE), torch.zeros(2, 5, device=DEVICE)):
        with pytest.raises(ValueError, match="attnkern::scores_backward: grad must be"):
            torch.ops.attnkern.scores_backward(bad, q, k, w, None, None, False)


def test_the_comparison_can_fail():
    """The tolerances above are tight enough to reject a small error: a weight off by
    0.5 % (forward) and a gradient off by 0.5 % in one entry both fail ``compare``."""
    B, Tq, Tk, H = 2, 7, 12, 10
    q, k, w = qkw(B, Tq, Tk, H, seed=3)
    kw = masks("padding", B, Tq, Tk)
    got = attnkern.additive_scores(q, k, w, backend=BACKEND, **kw)
    want0 = attnkern.reference.additive_scores(q.detach().cpu(), k.detach().cpu(),
                                               w.detach().cpu(), **kw)
    cot = cotangent(want0.shape)
    want, ref_grads = reference(q, k, w, cot, kw)
    grads = [g.cpu() for g in torch.autograd.grad(got, (q, k, w), cot.to(DEVICE))]
    compare(got, grads, want, ref_grads, torch.float32)  # the real thing passes
    wrong = attnkern.additive_scores(q, k, w * 1.005, backend=BACKEND, **kw)
    with pytest.raises(AssertionError):
        compare(wrong, grads, want, ref_grads, torch.float32)
    bad = [g.clone() for g in grads]
    bad[1].view(-1)[ref_grads[1].abs().argmax()] *= 1.005  # the largest grad_key entry
    with pytest.raises(AssertionError):
        compare(got, bad, want, ref_grads, torch.float32)
    masked_wrong = got.detach().clone()
    masked_wrong[~torch.isfinite(want.to(masked_wrong.device))] = 0.0
    with pytest.raises(AssertionError):
        compare(masked_wrong, grads, want, ref_grads, torch.float32)


# ------------------------------------------------------------------ GPU (real kernels)

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B,Tq,Tk,H", [(4, 1, 1000, 256), (8, 64, 64, 256),
                                       (2, 200, 333, 96)],
                         ids=["step", "TRAIN-like", "odd"])
def test_gpu_large_shapes(dtype, B, Tq, Tk, H):
    check(*qkw(B, Tq, Tk, H, dtype=dtype, step=Tq == 1, seed=Tk), masks("all", B, Tq, Tk))


@pytest.mark.gpu
def test_gpu_memory_never_scales_with_b_tq_tk_h():
    B, T, H = 2, 1024, 256  # a (B, Tq, Tk, H) fp32 tensor would be 2 GiB
    q, k, w = qkw(B, T, T, H)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    e = attnkern.additive_scores(q, k, w, backend=BACKEND)
    e.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < 64 * 2**20, f"peak extra memory {peak / 2**20:.1f} MiB"


def test_config_invariants():
    """The GPU tiles (pure functions of the sizes): a step-sized backward tile has no
    wasted query rows; from Tq = 9 it is the attention's pass 2 tile."""
    for tq in range(1, 9):
        cfg = tk.scores_dqdk_config(tq, 100, 64)
        assert cfg.block_m >= tq and cfg.block_m < 2 * tq and cfg.block_m * cfg.block_n == 32
    assert tk.scores_dqdk_config(64, 64, 256) == tk.dqdk_config(tk.Config(0, 0, 0, 1, 1), 256)
    assert tk.scores_config(1, 128, 256).block_m == 1
    assert tk.scores_config(64, 64, 256) == tk.fwd_config(64, 64, 256, 1)
