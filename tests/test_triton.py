"""The Triton kernels against the float64 reference.

Runs on CUDA tensors (real kernels) when ``TRITON_INTERPRET`` is unset and a GPU is present,
on CPU tensors under ``TRITON_INTERPRET=1`` (``scripts/test.sh`` runs this file that way in
a separate pytest invocation), and is skipped otherwise. Interpreted shapes are tiny but
reach every code path with the interpreter's tiles (16 wide, 32 from 64 up): H tails and
several H chunks (H = 5, 24, 40), key tails (Tk = 1, 7, 33, 70), tensor-core (Tq >= 16) and
broadcast (Tq < 16) P@V, split-K with empty splits, every mask kind, causal with Tq != Tk.
Tests marked ``gpu`` use larger shapes and real-kernel-only features (fast tanh).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import (
    BAD_OP_CALLS,
    MASK_KINDS,
    bad_op_call,
    check_against_reference,
    fake_op_error,
    make_inputs,
    make_masks,
    op_error,
    reference64,
    shape_id,
    triton_module_device,
)

import attnkern
from attnkern import testing

INTERPRET = testing.triton_interpret_enabled()
DEVICE = triton_module_device()  # skips the module without Triton, or without CUDA/interpreter

from attnkern import triton_kernels as tk  # noqa: E402  (after the skip: imports triton)

BACKEND = "triton"


def inputs(B, Tq, Tk, H, Dv, dtype=torch.float32, **kw):
    return make_inputs(B, Tq, Tk, H, Dv, dtype=dtype, device=DEVICE, **kw)


def masks(kind, B, Tq, Tk, seed=0):
    return make_masks(kind, B, Tq, Tk, device=DEVICE, seed=seed)


@pytest.fixture
def force_splits():
    """force_splits(n): attnkern.testing.force_num_splits(n) for the rest of the test."""
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(testing.force_num_splits(n))


@pytest.fixture
def launches(monkeypatch):
    """Names and grids of the kernels launched during the test."""
    seen: list[tuple[str, tuple]] = []
    launch = tk._launch

    def spy(kernel, grid, *args, **meta):
        seen.append((getattr(kernel, "fn", kernel).__name__, grid))
        return launch(kernel, grid, *args, **meta)

    monkeypatch.setattr(tk, "_launch", spy)
    return seen


# --------------------------------------------------------------------- shapes and tails

SHAPES = [
    (2, 7, 33, 5, 6),    # H < chunk, Tk tail, Tq < 16: broadcast P@V
    (1, 1, 1, 3, 2),     # one key
    (2, 16, 7, 24, 8),   # tensor-core P@V, two H chunks, Tk < block
    (2, 5, 70, 40, 3),   # three H chunks with a tail, three 32-key blocks with a tail
    (1, 17, 33, 24, 16), # two query blocks (one row in the second)
    (3, 3, 20, 8, 20),   # Dv > H, Dv not a power of two
]


@pytest.mark.parametrize("B,Tq,Tk,H,Dv", SHAPES, ids=[shape_id(*s) for s in SHAPES])
def test_forward_weights_and_grads_match_reference(B, Tq, Tk, H, Dv):
    q, k, v, w = inputs(B, Tq, Tk, H, Dv, seed=B + Tq + Tk)
    check_against_reference(q, k, v, w, backend=BACKEND)


def test_mid_size_with_masks():
    # >= 64 along each dimension: the interpreter's 32-wide tiles (and a 2nd query block)
    B, Tq, Tk, H, Dv = 2, 70, 100, 64, 33
    q, k, v, w = inputs(B, Tq, Tk, H, Dv, seed=12)
    check_against_reference(q, k, v, w, backend=BACKEND, **masks("both", B, Tq, Tk))


def test_large_scores_saturated_tanh():
    # |q + k| up to ~30: the tanh clamp, and softmax rows dominated by one key.
    q, k, v, w = inputs(2, 5, 19, 12, 4, scale=8.0, seed=3)
    check_against_reference(q, k, v, w, backend=BACKEND)


# -------------------------------------------------------------------------------- masks

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("Tq,Tk", [(6, 21), (20, 9)], ids=["Tq<Tk", "Tq>Tk"])
def test_every_mask_kind(kind, Tq, Tk, dtype):
    B = 3
    q, k, v, w = inputs(B, Tq, Tk, 10, 5, dtype=dtype, seed=11)
    kw = masks(kind, B, Tq, Tk)
    check_against_reference(q, k, v, w, backend=BACKEND, **kw)
    assert_nontrivial(q, k, v, w, kw)


def assert_nontrivial(q, k, v, w, kw):
    """Guard against a mask draw that leaves (almost) nothing to compare."""
    valid = attnkern.reference.valid_keys(
        q.shape[0], q.shape[1] if q.dim() == 3 else 1, k.shape[1],
        key_padding_mask=kw.get("key_padding_mask"), key_lengths=kw.get("key_lengths"),
        causal=kw.get("causal", False), device=q.device)
    assert (valid.sum(-1) >= 2).sum() >= 2, "test inputs leave fewer than 2 rows with 2 keys"


def test_fully_masked_rows_give_zero_output_weights_and_grads():
    B, Tq, Tk = 3, 9, 5
    q, k, v, w = inputs(B, Tq, Tk, 6, 4, seed=2)
    lengths = torch.tensor([0, 5, 2], device=DEVICE)
    pad = torch.zeros(B, Tk, dtype=torch.bool, device=DEVICE)
    pad[2] = True  # batch row 2: everything padded
    kw = dict(key_lengths=lengths, key_padding_mask=pad, causal=True)
    out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend=BACKEND,
                                           **kw)
    # causal with Tq - Tk = 4: rows 0..3 of batch row 1 see no key either
    assert torch.all(out[0] == 0) and torch.all(out[2] == 0) and torch.all(out[1, :4] == 0)
    assert torch.all(wts[0] == 0) and torch.all(wts[1, :4] == 0)
    out.sum().backward()
    assert torch.all(q.grad[0] == 0) and torch.all(q.grad[1, :4] == 0)
    assert torch.all(k.grad[0] == 0) and torch.all(v.grad[2] == 0)
    check_against_reference(*inputs(B, Tq, Tk, 6, 4, seed=2), backend=BACKEND, **kw)


def test_op_outputs_lse_and_empty_weights():
    q, k, v, w = inputs(2, 4, 9, 6, 3, requires_grad=False)
    lengths = torch.tensor([0, 7], device=DEVICE)
    out, lse, wts = tk.fwd(q, k, v, w, None, lengths, False, False)
    assert wts.shape == (0,) and out.is_contiguous() and out.dtype == q.dtype
    assert lse.dtype == torch.float32 and lse.shape == (2, 4)
    assert torch.all(torch.isinf(lse[0])) and torch.all(lse[0] > 0)
    s = (torch.tanh(q[1, :, None].double() + k[1, None, :7].double()) * w.double()).sum(-1)
    torch.testing.assert_close(lse[1].double(), torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_op_expanded_lengths_and_mask(causal):
    """Stride-0 key_lengths / key_padding_mask passed straight to the launchers (as
    torch.ops.attnkern.fwd/bwd may get them) are read per batch row, not as element 0."""
    B, Tq, Tk = 3, 5, 9
    q, k, v, w = inputs(B, Tq, Tk, 6, 4, seed=7, requires_grad=False)
    lengths = torch.tensor(5, device=DEVICE).expand(B)
    pad = torch.zeros(Tk, dtype=torch.bool, device=DEVICE)
    pad[1] = True
    pad = pad.expand(B, Tk)
    assert lengths.stride() == (0,) and pad.stride() == (0, 1)
    out, lse, _ = tk.fwd(q, k, v, w, pad, lengths, causal, False)
    kw = {"key_padding_mask": pad.cpu(), "key_lengths": lengths.cpu(), "causal": causal}
    args = [t.detach().double().cpu().requires_grad_() for t in (q, k, v, w)]
    ref = attnkern.reference.additive_attention(*args, **kw)
    torch.testing.assert_close(out.double().cpu(), ref.detach(), atol=2e-5, rtol=2e-4)
    go = torch.randn(B, Tq, 4, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    delta = (go * out).sum(-1)
    grads = tk.bwd(go, None, q, k, v, w, lse, delta, pad, lengths, causal)
    for a, b in zip(grads, torch.autograd.grad(ref, args, go.double().cpu())):
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-4, rtol=1e-3)


def test_grads_without_weights_output():
    q, k, v, w = inputs(2, 6, 13, 7, 5, seed=4)
    kw = masks("both", 2, 6, 13)
    out = attnkern.additive_attention(q, k, v, w, backend=BACKEND, **kw)
    gq, gk, gv, gw = torch.autograd.grad(out.square().sum(), (q, k, v, w))
    args = [t.detach().double().cpu().requires_grad_() for t in (q, k, v, w)]
    rkw = {n: (x.cpu() if isinstance(x, torch.Tensor) else x) for n, x in kw.items()}
    ref = attnkern.reference.additive_attention(*args, **rkw)
    torch.testing.assert_close(out.double().cpu(), ref.detach(), atol=2e-5, rtol=2e-4)
    for a, b in zip((gq, gk, gv, gw), torch.autograd.grad(ref.square().sum(), args)):
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------------------- step mode

@pytest.mark.parametrize("kind", ["none", "lengths", "all"])
def test_step_mode_two_d_query(kind):
    B, Tk = 3, 33
    q, k, v, w = inputs(B, 1, Tk, 24, 5, step=True, seed=5)
    check_against_reference(q, k, v, w, backend=BACKEND, **masks(kind, B, 1, Tk))


@pytest.mark.parametrize("splits", [2, 3, 4])
def test_step_mode_split_k(force_splits, launches, splits):
    # Tk = 63: four key blocks of 16 (the last one a tail); the lengths leave later splits
    # empty for some rows (and row 2 has no key at all).
    force_splits(splits)
    B, Tk = 4, 63
    q, k, v, w = inputs(B, 1, Tk, 12, 6, step=True, seed=splits)
    kw = dict(key_lengths=torch.tensor([63, 17, 0, 40], device=DEVICE),
              key_padding_mask=masks("padding", B, 1, Tk)["key_padding_mask"])
    check_against_reference(q, k, v, w, backend=BACKEND, **kw)
    if INTERPRET:  # the forced split is what ran (3 splits of 4 blocks round to 2 of 2)
        per_split = -(-4 // splits)
        assert ("_fwd_kernel", (1, B, -(-4 // per_split))) in launches
        # one launch per forward: the last split of each row combines, in the same kernel
        # (the weights kernel runs only where weights are returned)
        assert {name for name, _ in launches} <= {"_fwd_kernel", "_weights_kernel",
                                                  "_bwd_ds_kernel", "_bwd_dqdk_kernel"}


def test_split_k_with_query_blocks_and_causal(force_splits):
    force_splits(2)
    q, k, v, w = inputs(2, 20, 45, 8, 4, seed=9)
    check_against_reference(q, k, v, w, backend=BACKEND, **masks("all", 2, 20, 45))


def test_split_heuristic():
    sm = 132
    assert tk.num_splits(64, 1, 4096, 64, sm) > 1      # decode, long keys: split
    assert tk.num_splits(512, 1, 4096, 64, sm) == 1    # grid already fills the GPU
    assert tk.num_splits(2, 1, 100, 64, sm) == 1       # two key blocks: not worth it
    assert tk.num_splits(1, 1, 64 * 1000, 64, sm) <= 32


# -------------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("B,Tq,Tk,H,Dv,kind", [
    (2, 17, 33, 24, 16, "none"),
    (2, 20, 37, 40, 20, "causal"),
    (3, 5, 21, 40, 3, "both"),
    (3, 1, 40, 12, 8, "lengths"),
], ids=["tc-none", "tc-causal", "small-both", "step-lengths"])
def test_low_precision(dtype, B, Tq, Tk, H, Dv, kind):
    q, k, v, w = inputs(B, Tq, Tk, H, Dv, dtype=dtype, seed=Tk, step=Tq == 1)
    kw = masks(kind, B, Tq, Tk)
    check_against_reference(q, k, v, w, backend=BACKEND, **kw)
    assert_nontrivial(q, k, v, w, kw)


# ----------------------------------------------------------------- layout and edge cases

def test_non_contiguous_inputs():
    B, Tq, Tk, H, Dv = 2, 6, 11, 9, 5
    g = torch.Generator().manual_seed(0)
    qb = torch.randn(Tq, B, 2 * H, generator=g).to(DEVICE)
    kb = torch.randn(B, H, Tk, generator=g).to(DEVICE)
    vb = torch.randn(B, Tk, Dv + 3, generator=g).to(DEVICE)
    wb = torch.randn(2 * H, generator=g).to(DEVICE) / 3
    q = qb.transpose(0, 1)[..., ::2].requires_grad_()   # every stride non-trivial
    k = kb.transpose(1, 2).requires_grad_()
    v = vb[..., 1:Dv + 1].requires_grad_()
    w = wb[::2].requires_grad_()
    pad = (torch.rand(Tk, B, generator=g) < 0.3).to(DEVICE).t()
    assert not any(t.is_contiguous() for t in (q, k, v, w, pad))
    check_against_reference(q, k, v, w, backend=BACKEND, key_padding_mask=pad)


def test_non_contiguous_step_query():
    q, k, v, w = inputs(3, 1, 10, 6, 4, step=True, requires_grad=False)
    qn = torch.cat([q, q], dim=1)[:, ::2].requires_grad_()
    check_against_reference(qn, k.requires_grad_(), v.requires_grad_(), w.requires_grad_(),
                            backend=BACKEND)


@pytest.mark.parametrize("B,Tq,Tk", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_empty_sizes(B, Tq, Tk):
    q, k, v, w = inputs(B, Tq, Tk, 4, 3)
    out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend=BACKEND)
    assert out.shape == (B, Tq, 3) and wts.shape == (B, Tq, Tk)
    assert torch.all(out == 0)
    grads = torch.autograd.grad(out.sum() + wts.sum(), (q, k, v, w), allow_unused=True)
    for g, t in zip(grads, (q, k, v, w)):
        assert g is None or (g.shape == t.shape and torch.all(g == 0))


def test_backward_is_deterministic():
    q, k, v, w = inputs(2, 18, 37, 24, 5, seed=8)
    kw = masks("both", 2, 18, 37)
    runs = []
    for _ in range(2):
        out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True,
                                               backend=BACKEND, **kw)
        loss = out.square().sum() + wts[..., ::3].sum()
        runs.append(torch.autograd.grad(loss, (q, k, v, w)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_config_table_invariants():
    # the interpreter configs: every tile dim a power of two, BLOCK_M follows Tq
    for tq in (1, 2, 5, 16, 63, 100):
        c = tk.fwd_config(tq, 50, 24, 8, interpret=True)
        assert c.block_m == (min(16, triton_np2(tq)) if tq < 64 else 32)
    # GPU table: tensor-core tiles need BLOCK_M, BLOCK_N >= 16; decode tiles do not waste rows
    for tq in (1, 2, 3, 8, 9, 16, 33, 64, 1000):
        for dv in (3, 64, 128, 256):
            for cfg in (tk.fwd_config(tq, 512, 128, dv), tk.bwd_config(tq, 512, 128, dv)):
                if cfg.block_m >= 16:
                    assert cfg.block_n >= 16
                else:
                    assert cfg.block_m == triton_np2(tq)


def triton_np2(x):
    return 1 << (max(x, 1) - 1).bit_length()


# ---------------------------------------------------------------- GPU: real kernels only

GPU_SHAPES = [
    (4, 300, 257, 128, 64),
    (2, 64, 1000, 100, 96),   # H, Dv not powers of two
    (3, 1, 4096, 128, 128),   # decode step, automatic split-K
    (8, 4, 777, 64, 32),      # small-Tq broadcast path
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("B,Tq,Tk,H,Dv", GPU_SHAPES, ids=[shape_id(*s) for s in GPU_SHAPES])
def test_gpu_large_shapes(dtype, B, Tq, Tk, H, Dv):
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, dtype=dtype, device="cuda", step=Tq == 1,
                             seed=Tk)
    check_against_reference(q, k, v, w, backend=BACKEND, **make_masks("all", B, Tq, Tk,
                                                                     device="cuda"))


@pytest.mark.gpu
def test_gpu_fast_tanh_within_stated_tolerance(monkeypatch):
    # tanh.approx.f32 has abs error ~5e-4 (2^-10.99 relative); stated tolerance 2e-3.
    monkeypatch.setenv("ATTNKERN_FAST_TANH", "1")
    q, k, v, w = make_inputs(2, 70, 300, 64, 32, device="cuda", seed=1)
    kw = make_masks("both", 2, 70, 300, device="cuda")
    out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend=BACKEND,
                                           **kw)
    _, rout, rwts = reference64(q, k, v, w, **kw)
    torch.testing.assert_close(out.double().cpu(), rout.detach(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(wts.double().cpu(), rwts.detach(), atol=2e-3, rtol=2e-3)
    out2 = tk.fwd(q, k, v, w, kw["key_padding_mask"], kw["key_lengths"], False, False,
                  fast_tanh=False)[0]
    assert not torch.equal(out.detach(), out2)  # the flag really switched paths


@pytest.mark.gpu
def test_gpu_memory_never_scales_with_b_tq_tk_h():
    B, T, H, Dv = 2, 1024, 256, 64   # a (B,Tq,Tk,H) fp32 tensor would be 2 GiB
    q, k, v, w = make_inputs(B, T, T, H, Dv, device="cuda", seed=0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = attnkern.additive_attention(q, k, v, w, backend=BACKEND)
    out.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < 64 * 2**20, f"peak extra memory {peak / 2**20:.1f} MiB"


@pytest.mark.gpu
def test_gpu_backward_bitwise_deterministic_large():
    q, k, v, w = make_inputs(4, 200, 333, 96, 64, dtype=torch.bfloat16, device="cuda")
    runs = []
    for _ in range(3):
        out = attnkern.additive_attention(q, k, v, w, backend=BACKEND, causal=True)
        runs.append(torch.autograd.grad(out.float().square().sum(), (q, k, v, w)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# ------------------------------------------------------------------- the op's own checks

@pytest.mark.parametrize("case", list(BAD_OP_CALLS))
def test_direct_op_call_checks_its_inputs(case):
    """torch.ops.attnkern.fwd / bwd on the Triton kernel (CUDA, or CPU tensors under the
    interpreter) with one bad input: ValueError / TypeError naming the argument, in the
    words of the fake kernel (and so of the C++ kernel: tests/test_validation.py), before
    any launch."""
    op, args, _ = bad_op_call(case, DEVICE)
    kernel = op_error(op, args)
    assert kernel[0] in ("ValueError", "TypeError"), kernel
    assert kernel[1].startswith(f"attnkern::{op}: "), kernel
    fake = fake_op_error(op, args)
    assert fake == (("no error", "") if case.endswith("-range") else kernel)


def test_force_num_splits_lasts_for_its_block_only(launches):
    q, k, v, w = inputs(1, 1, 33, 8, 4, step=True, seed=1)  # 3 key blocks of 16: no split

    def grid():
        launches.clear()
        with torch.no_grad():
            attnkern.additive_attention(q, k, v, w, backend=BACKEND)
        return [g for name, g in launches if name == "_fwd_kernel"]

    if not INTERPRET:
        pytest.skip("the interpreter's tiles (16 keys per block) are assumed")
    assert grid() == [(1, 1, 1)]
    with testing.force_num_splits(3):
        assert grid() == [(1, 1, 3)]
    assert grid() == [(1, 1, 1)]  # the product kernel is back
