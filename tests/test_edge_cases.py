"""Edge cases, defined and tested for every backend of the process (the ``backend`` fixture
of tests/conftest.py: reference and cpp in the main run, Triton on CUDA where there is
one, and the Triton interpreter in the ``TRITON_INTERPRET=1`` run). Tests build CPU
tensors; ``helpers.run`` moves them to the backend's device, so every comparison stays on
CPU.

Semantics checked here (see docs/reliability.md):
- Tk = 0, B = 0, Tq = 0 (and H = 0, Dv = 0): empty or zero results, zero gradients.
- A row with no usable key: zero context, zero weights, zero finite gradients.
- Saturated and large opposite inputs: exact tanh arithmetic, no overflow.
- Stride-0 (expanded) inputs, non-contiguous inputs, inputs never modified in place.
- >= 200k keys with memory bounded by the inputs.
- NaN / Inf stay confined to the rows that can attend to the poisoned element.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
import torch
from helpers import (
    GRAD_TOL,
    TOL,
    check_against_reference,
    device_of,
    fused,
    grads_of,
    make_inputs,
    make_masks,
    run,
)

import attnkern
from attnkern import testing
from attnkern.reference import valid_keys

# ------------------------------------------------------------------------- empty dimensions

EMPTY_SHAPES = {
    "Tk0": (2, 3, 0, 4, 5),
    "B0": (0, 3, 5, 4, 5),
    "Tq0": (2, 0, 5, 4, 5),
    "all0": (0, 0, 0, 4, 5),
    "H0": (2, 3, 5, 0, 5),
    "Dv0": (2, 3, 5, 4, 0),
}


@pytest.mark.parametrize("mask", ["none", "all"])
@pytest.mark.parametrize("shape", list(EMPTY_SHAPES.values()), ids=list(EMPTY_SHAPES))
def test_empty_dimensions(backend, shape, mask):
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv)
    kw = make_masks(mask, B, Tq, Tk)
    out, wts = run(backend, q, k, v, w, **kw)
    assert out.shape == (B, Tq, Dv) and wts.shape == (B, Tq, Tk)
    check_against_reference(q, k, v, w, backend=backend, **kw)


@pytest.mark.parametrize("step", [False, True], ids=["seq", "step"])
def test_zero_keys_give_zero_context_and_zero_grads(backend, step):
    q, k, v, w = make_inputs(2, 3, 0, 4, 5, step=step)
    out, wts = run(backend, q, k, v, w)
    assert out.shape == ((2, 5) if step else (2, 3, 5))
    assert wts.shape == ((2, 0) if step else (2, 3, 0))
    assert torch.equal(out, torch.zeros_like(out))
    dq, dk, dv, dw = grads_of([out], (q, k, v, w))
    assert torch.equal(dq, torch.zeros_like(q)) and torch.equal(dw, torch.zeros_like(w))
    assert dk.shape == k.shape and dv.shape == v.shape


# -------------------------------------------------------------------- fully masked rows

def _fully_masked_case(kind):
    """Inputs and kwargs where some rows can attend to nothing; returns (B, Tq, Tk, kw)."""
    B, Tq, Tk = 3, 4, 6
    if kind == "padding":
        m = torch.zeros(B, Tk, dtype=torch.bool)
        m[0] = True
        m[2, ::2] = True
        return B, Tq, Tk, {"key_padding_mask": m}
    if kind == "lengths":
        return B, Tq, Tk, {"key_lengths": torch.tensor([0, Tk, 2])}
    if kind == "causal":  # Tq > Tk: rows i < Tq - Tk see no key
        return B, 7, 3, {"causal": True}
    m = torch.zeros(B, Tk, dtype=torch.bool)
    m[1, :3] = True  # batch 1: padding hides keys 0..2, lengths hide 3..5
    return B, Tq, Tk, {"key_padding_mask": m, "key_lengths": torch.tensor([Tk, 3, 0]),
                       "causal": True}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("kind", ["padding", "lengths", "causal", "combined"])
def test_fully_masked_rows(backend, kind, dtype):
    B, Tq, Tk, kw = _fully_masked_case(kind)
    q, k, v, w = make_inputs(B, Tq, Tk, 4, 5, dtype=dtype, seed=1)
    check_against_reference(q, k, v, w, backend=backend, **kw)
    empty = ~valid_keys(B, Tq, Tk, **kw).any(-1)  # (B, Tq) rows with no usable key
    assert empty.any()
    out, wts = run(backend, q, k, v, w, **kw)
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    assert torch.equal(wts[empty], torch.zeros_like(wts[empty]))
    assert torch.isfinite(out).all() and torch.isfinite(wts).all()
    # A loss that only reads the empty rows has exactly zero gradient everywhere.
    gout = torch.where(empty[..., None], 1.0, 0.0).to(dtype)
    loss = (out * gout).sum() + (wts * gout).sum()
    for name, g in zip("qkvw", torch.autograd.grad(loss, (q, k, v, w))):
        assert torch.equal(g, torch.zeros_like(g)), f"grad_{name} not zero"


# ---------------------------------------------------------------- numerically hard inputs

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e2, 1e4, 1e6])
def test_saturated_inputs(backend, scale, dtype):
    q, k, v, w = make_inputs(2, 5, 33, 8, 3, dtype=dtype, scale=scale, seed=2)
    check_against_reference(q, k, v, w, backend=backend, **make_masks("both", 2, 5, 33))
    out, _ = run(backend, q, k, v, w)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("qk", [(60.0, -59.5), (-60.0, 59.5), (500.0, -499.75)],
                         ids=["60", "-60", "500"])
def test_large_opposite_query_and_key(backend, qk):
    """|q|, |k| large but q + k small: a kernel must add before tanh (no exp(2q) tricks,
    no tanh(q)/tanh(k) identities). float32 within 1e-5 relative of float64."""
    g = torch.Generator().manual_seed(4)
    B, Tq, Tk, H, Dv = 2, 3, 17, 8, 4
    q0, k0 = qk
    q = (q0 + 0.25 * torch.rand(B, Tq, H, generator=g)).requires_grad_()
    k = (k0 + 0.25 * torch.rand(B, Tk, H, generator=g)).requires_grad_()
    v = torch.randn(B, Tk, Dv, generator=g).requires_grad_()
    w = (2 * torch.randn(H, generator=g)).requires_grad_()
    out, wts = run(backend, q, k, v, w)
    args64 = [t.detach().double().requires_grad_() for t in (q, k, v, w)]
    rout, rwts = attnkern.reference.additive_attention(*args64, return_weights=True)
    torch.testing.assert_close(out.double(), rout, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wts.double(), rwts, rtol=1e-5, atol=1e-7)
    got = grads_of([out, wts], (q, k, v, w))
    want = grads_of([rout, rwts], args64)
    for name, a, b in zip("qkvw", got, want):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, n=name: f"grad_{n}: {m}")


# ------------------------------------------------------------------------- memory layout

@pytest.mark.parametrize("step", [False, True], ids=["seq", "step"])
def test_expanded_keys_and_values_beam_search(backend, step):
    """One encoder output shared by B beams: key/value expanded with stride 0 in batch;
    gradients accumulate into the shared (1, Tk, .) tensors."""
    g = torch.Generator().manual_seed(5)
    B, Tq, Tk, H, Dv = 4, 3, 11, 8, 5
    k1 = torch.randn(1, Tk, H, generator=g, requires_grad=True)
    v1 = torch.randn(1, Tk, Dv, generator=g, requires_grad=True)
    q = torch.randn(B, H, generator=g) if step else torch.randn(B, Tq, H, generator=g)
    q.requires_grad_()
    w1 = torch.randn(1, generator=g, requires_grad=True)  # weight expanded from one value
    lengths = torch.tensor([Tk, Tk, 7, 0])
    kw = {"key_lengths": lengths, "causal": not step}

    def forward(impl, dev, q, k1, v1, w1):
        # expand on the device the kernel runs on, so the kernel sees the stride-0 tensors
        q, k1, v1, w1 = (t.to(dev) for t in (q, k1, v1, w1))
        k, v = k1.expand(B, Tk, H), v1.expand(B, Tk, Dv)
        assert k.stride(0) == 0 and v.stride(0) == 0
        kwd = {n: (x.to(dev) if isinstance(x, torch.Tensor) else x) for n, x in kw.items()}
        out, wts = impl(q, k, v, w1.expand(H), return_weights=True, **kwd)
        return out.cpu(), wts.cpu()

    out, wts = forward(partial(attnkern.additive_attention, backend=backend),
                       device_of(backend), q, k1, v1, w1)
    args64 = [t.detach().double().requires_grad_() for t in (q, k1, v1, w1)]
    rout, rwts = forward(attnkern.reference.additive_attention, "cpu", *args64)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(out.double(), rout, atol=atol, rtol=rtol)
    torch.testing.assert_close(wts.double(), rwts, atol=atol, rtol=rtol)
    gatol, grtol = GRAD_TOL[torch.float32]
    for name, a, b in zip(("q", "k1", "v1", "w1"), grads_of([out, wts], (q, k1, v1, w1)),
                          grads_of([rout, rwts], args64)):
        torch.testing.assert_close(a.double(), b, atol=gatol * max(1, b.abs().max().item()),
                                   rtol=grtol, msg=lambda m, n=name: f"grad_{n}: {m}")


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded-query"])
def test_non_contiguous_inputs(backend, layout):
    g = torch.Generator().manual_seed(6)
    B, Tq, Tk, H, Dv = 3, 4, 9, 6, 5
    if layout == "transposed":
        q = torch.randn(Tq, B, H, generator=g).transpose(0, 1)
        k = torch.randn(H, B, Tk, generator=g).permute(1, 2, 0)
        v = torch.randn(Dv, Tk, B, generator=g).permute(2, 1, 0)
        w = torch.randn(H, 2, generator=g)[:, 1]
    elif layout == "sliced":
        q = torch.randn(B, 2 * Tq, H + 3, generator=g)[:, ::2, 1:H + 1]
        k = torch.randn(B + 1, Tk, 2 * H, generator=g)[1:, :, ::2]
        v = torch.randn(B, 2 * Tk, Dv, generator=g)[:, 1::2]
        w = torch.randn(3 * H, generator=g)[::3]
    else:
        q = torch.randn(1, 1, H, generator=g).expand(B, Tq, H)
        k = torch.randn(B, Tk, H, generator=g)
        v = torch.randn(B, Tk, 1, generator=g).expand(B, Tk, Dv)
        w = torch.randn(H, generator=g)
    assert not all(t.is_contiguous() for t in (q, k, v, w))
    mask = torch.rand(B, 2 * Tk, generator=g)[:, ::2] < 0.3
    lengths = torch.tensor([[Tk, 0], [5, 0], [1, 0]])[:, 0]  # stride 2
    if layout == "expanded-query":
        lengths = torch.tensor(5).expand(B)  # stride 0
    q, k, v, w = (t.requires_grad_() for t in (q, k, v, w))
    check_against_reference(q, k, v, w, backend=backend, key_padding_mask=mask,
                            key_lengths=lengths, causal=True)


def test_inputs_never_modified(backend):
    q, k, v, w = make_inputs(3, 4, 10, 8, 5, seed=7)
    kw = make_masks("all", 3, 4, 10)
    kw["key_padding_mask"] = kw["key_padding_mask"].t().contiguous().t()  # non-contiguous
    q_nc = q.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    inputs = [q_nc, k, v, w, kw["key_padding_mask"], kw["key_lengths"]]
    before = [t.detach().clone() for t in inputs]
    strides = [t.stride() for t in inputs]
    out, wts = run(backend, q_nc, k, v, w, **kw)
    grads_of([out, wts], (q_nc, k, v, w))
    out2, wts2 = run(backend, q_nc, k, v, w, **kw)
    for name, t, b, s in zip(("query", "key", "value", "weight", "mask", "lengths"),
                             inputs, before, strides):
        assert torch.equal(t.detach(), b), f"{name} was modified in place"
        assert t.stride() == s, f"{name} strides changed"
    assert torch.equal(out, out2) and torch.equal(wts, wts2)


# ------------------------------------------------------------------------------ dtypes

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask", ["none", "all"])
@pytest.mark.parametrize("step", [False, True], ids=["seq", "step"])
def test_half_precision_on_cpu(backend, dtype, mask, step):
    B, Tq, Tk, H, Dv = 3, 1 if step else 5, 19, 16, 8
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, dtype=dtype, step=step, seed=8)
    kw = make_masks(mask, B, Tq, Tk)
    check_against_reference(q, k, v, w, backend=backend, **kw)


# ------------------------------------------------------------------------ long sequences

def chunked_reference64(q, k, v, w, *, key_lengths=None, key_padding_mask=None, causal=False,
                        chunk=16384):
    """The spec in float64 without the (B, Tq, Tk, H) tensor: scores chunk by chunk.

    Returns (out, weights) differentiable w.r.t. the float64 leaves passed in."""
    B, Tq, _ = q.shape
    Tk = k.shape[1]
    scores = torch.cat([(torch.tanh(q[:, :, None] + k[:, None, j:j + chunk]) * w).sum(-1)
                        for j in range(0, Tk, chunk)], dim=-1)
    valid = valid_keys(B, Tq, Tk, key_padding_mask=key_padding_mask, key_lengths=key_lengths,
                       causal=causal)
    scores = torch.where(valid, scores, float("-inf"))
    row_max = scores.amax(-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0)
    p = torch.where(valid, torch.exp(torch.where(valid, scores, row_max) - row_max), 0.0)
    denom = p.sum(-1, keepdim=True)
    alpha = p / torch.where(denom > 0, denom, 1.0)
    return alpha @ v, alpha


LONG_TK = 200_003
# The interpreter runs every program and tile op in numpy: 20k keys already take 5 minutes
# per test. Under it the long-sequence test runs once (causal) with 1027 keys, still many key
# blocks and a split-K forward; on a GPU both variants with the full 200k.
INTERPRETER_LONG_TK = 1_027


@pytest.mark.parametrize("causal", [False, True])
def test_very_long_key_sequence(backend, causal):
    if backend == "reference" and not causal:
        pytest.skip("one pass of the (slow) reference is enough")
    interpreted = backend == "triton" and testing.triton_on_cpu()
    if interpreted and not causal:
        pytest.skip("interpreter: one long-sequence variant is enough")
    B, Tq, Tk, H, Dv = 2, 3, INTERPRETER_LONG_TK if interpreted else LONG_TK, 8, 4
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, seed=9)
    g = torch.Generator().manual_seed(10)
    kw = {"key_lengths": torch.tensor([Tk, 3 * Tk // 4]),
          "key_padding_mask": torch.rand(B, Tk, generator=g) < 0.1, "causal": causal}
    out, wts = run(backend, q, k, v, w, **kw)
    args64 = [t.detach().double().requires_grad_() for t in (q, k, v, w)]
    rout, rwts = chunked_reference64(*args64, **kw)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(out.double(), rout, atol=atol, rtol=rtol)
    torch.testing.assert_close(wts.double(), rwts, atol=1e-7, rtol=rtol)
    # Scores over 200k keys: weights are tiny, so compare the gradients with their scale.
    gatol, grtol = GRAD_TOL[torch.float32]
    for name, a, b in zip("qkvw", grads_of([out, wts], (q, k, v, w)),
                          grads_of([rout, rwts], args64)):
        torch.testing.assert_close(a.double(), b, rtol=grtol,
                                   atol=gatol * max(1e-3, b.abs().max().item()),
                                   msg=lambda m, n=name: f"grad_{n}: {m}")


_MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys, torch
    import attnkern
    backend, dev, B, Tq, Tk, H, Dv = json.loads(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, Tq, H, generator=g), torch.randn(B, Tk, H, generator=g)
    v, w = torch.randn(B, Tk, Dv, generator=g), torch.randn(H, generator=g)
    go = torch.randn(B, Tq, Dv, generator=g)
    q, k, v, w, go = (t.to(dev) for t in (q, k, v, w, go))
    for t in (q, k, v, w):
        t.requires_grad_()

    def peak():
        if dev == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() // 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB

    # Warm up on a tiny problem so one-off allocations (thread pools, dispatcher, JIT) are
    # not counted against the long one.
    tiny = [t[:, :2].detach().clone().requires_grad_() for t in (q, k, v)]
    attnkern.additive_attention(*tiny, w, backend=backend).sum().backward()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = peak()
    out = attnkern.additive_attention(q, k, v, w, backend=backend)
    fwd = peak()
    (out * go).sum().backward()
    bwd = peak()
    print(json.dumps({"fwd_kib": fwd - base, "bwd_kib": bwd - base,
                      "finite": bool(torch.isfinite(out).all() and torch.isfinite(k.grad).all())}))
""")


def test_very_long_key_sequence_memory_is_bounded_by_inputs(backend):
    """Peak memory growth (RSS on CPU, the CUDA caching allocator's peak on a GPU) of forward
    and forward+backward, measured in a fresh child process, stays within a few times the
    inputs; the (B, Tq, Tk, H) tanh tensor would be 16x them."""
    if not fused(backend):
        pytest.skip("the reference materialises (B, Tq, Tk, H) by design")
    if backend == "triton" and testing.triton_on_cpu():
        pytest.skip("the Triton interpreter's numpy buffers say nothing about GPU memory")
    B, Tq, Tk, H, Dv = 1, 16, LONG_TK, 16, 4
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [backend, device_of(backend), B, Tq, Tk, H, Dv]
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, json.dumps(args)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    inputs_kib = 4 * B * Tk * (H + Dv) / 1024
    four_d_kib = 4 * B * Tq * Tk * H / 1024
    assert res["finite"]
    # forward: out + lse only; backward: grads the size of the inputs (+ delta, scratch).
    assert res["fwd_kib"] < 1.0 * inputs_kib + 8 * 1024, (res, inputs_kib, four_d_kib)
    assert res["bwd_kib"] < 3.0 * inputs_kib + 16 * 1024, (res, inputs_kib, four_d_kib)


# ------------------------------------------------------------------------------ threads

def test_concurrent_calls_from_threads(backend):
    """Several Python threads calling forward+backward at once get the sequential results."""
    if backend == "triton" and testing.triton_on_cpu():
        pytest.skip("the Triton interpreter patches triton.language globally per launch: it "
                    "is not thread-safe (compiled kernels are)")
    jobs = []
    for seed in range(6):
        B, Tq, Tk = 2 + seed % 3, 1 + seed, 7 + 5 * seed
        q, k, v, w = make_inputs(B, Tq, Tk, 8, 4, seed=seed)
        jobs.append((q, k, v, w, make_masks(("all", "padding", "none")[seed % 3], B, Tq, Tk,
                                            seed=seed)))

    def one(job):
        q, k, v, w, kw = job
        out, wts = run(backend, q, k, v, w, **kw)
        return [out.detach(), wts.detach(), *grads_of([out, wts], (q, k, v, w))]

    sequential = [one(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            concurrent = list(pool.map(one, jobs))
            for seq, con in zip(sequential, concurrent):
                for a, b in zip(seq, con):
                    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------- NaN / Inf

def _poison_case(seed=11):
    B, Tq, Tk, H, Dv = 3, 4, 6, 5, 3
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, seed=seed)
    kw = {"key_lengths": torch.tensor([Tk, 4, Tk]), "causal": True}
    return (q, k, v, w), kw


def _check_confined(backend, args, kw, poisoned, batch=None):
    """``poisoned`` (B, Tq) bool: rows expected non-finite; every other row must equal the
    reference computed on the same inputs (and be finite). With ``batch``, the gradients of
    every other batch must be finite and match too."""
    q, k, v, w = args
    out, wts = run(backend, q, k, v, w, **kw)
    ref_args = [t.detach().double().requires_grad_() for t in args]
    rout, rwts = attnkern.reference.additive_attention(*ref_args, return_weights=True, **kw)
    assert (~torch.isfinite(out[poisoned])).all(), "a row that sees the NaN/Inf is finite"
    assert torch.isfinite(out[~poisoned]).all(), "NaN/Inf leaked into a row that cannot see it"
    assert torch.isfinite(wts[~poisoned]).all()
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(out[~poisoned].double(), rout[~poisoned], atol=atol, rtol=rtol)
    torch.testing.assert_close(wts[~poisoned].double(), rwts[~poisoned], atol=atol, rtol=rtol)
    if batch is None:
        return
    others = [b for b in range(q.shape[0]) if b != batch]
    got = grads_of([out], (q, k, v))
    want = grads_of([rout], ref_args[:3])
    gatol, grtol = GRAD_TOL[torch.float32]
    for name, a, b in zip("qkv", got, want):
        assert torch.isfinite(a[others]).all(), f"NaN leaked into grad_{name} of other batches"
        torch.testing.assert_close(a[others].double(), b[others], atol=gatol, rtol=grtol)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
def test_nonfinite_query_row_is_confined(backend, bad):
    """NaN in query[b, i, h] poisons output row (b, i) only. +-Inf alone is not poison:
    tanh saturates, so the row is finite and equals the reference."""
    (q, k, v, w), kw = _poison_case()
    with torch.no_grad():
        q[1, 2, 3] = bad
    poisoned = torch.zeros(3, 4, dtype=torch.bool)
    if bad != bad:  # NaN
        poisoned[1, 2] = True
    _check_confined(backend, (q, k, v, w), kw, poisoned, batch=1)


@pytest.mark.parametrize("j", [1, 4, 5], ids=["seen-by-some", "beyond-length", "last"])
def test_nan_key_is_confined_to_rows_that_see_it(backend, j):
    """NaN in key[b, j] poisons exactly the rows of batch b that may attend to key j."""
    (q, k, v, w), kw = _poison_case()
    with torch.no_grad():
        k[1, j, 0] = float("nan")
    valid = valid_keys(3, 4, 6, **kw)
    poisoned = torch.zeros(3, 4, dtype=torch.bool)
    poisoned[1] = valid[1, :, j]
    _check_confined(backend, (q, k, v, w), kw, poisoned, batch=1)


def test_inf_query_meets_opposite_inf_key(backend):
    """+Inf + -Inf is NaN: only the rows that see that key are poisoned."""
    (q, k, v, w), kw = _poison_case()
    with torch.no_grad():
        q[0, :, 2] = float("inf")
        k[0, 3, 2] = float("-inf")
    poisoned = torch.zeros(3, 4, dtype=torch.bool)
    poisoned[0] = valid_keys(3, 4, 6, **kw)[0, :, 3]
    _check_confined(backend, (q, k, v, w), kw, poisoned, batch=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_value_poisons_rows_that_see_it(backend, bad):
    """NaN/Inf in value[b, j]: the rows of batch b that may attend to key j are non-finite;
    no other batch is affected."""
    (q, k, v, w), kw = _poison_case()
    j = 2
    with torch.no_grad():
        v[1, j, 1] = bad
    out, _ = run(backend, q, k, v, w, **kw)
    sees = valid_keys(3, 4, 6, **kw)[1, :, j]
    assert (~torch.isfinite(out[1, sees])).any(-1).all()
    poisoned = torch.zeros(3, 4, dtype=torch.bool)
    poisoned[1] = True  # (rows of batch 1 that cannot see j: see the strict test below)
    others = ~poisoned
    ref = attnkern.reference.additive_attention(*(t.detach().double() for t in (q, k, v, w)),
                                                **kw)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(out[others].double(), ref[others], atol=atol, rtol=rtol)


@pytest.mark.parametrize("b,j", [(1, 4), (0, 5), (2, 1)],
                         ids=["beyond-length", "causal-hidden", "padding"])
def test_nan_value_of_masked_key_is_never_read(backend, b, j):
    """A masked key's value is never read: with NaN there, every row that cannot see the key
    (and, when no row can, every gradient) equals the result for a finite value there.
    Batch 1 has length 4, so its key 4 is past the length; in batch 0 key 5 is hidden from
    rows 0..2 by causality and visible to row 3 only; in batch 2 key 1 is padding."""
    (q, k, v, w), kw = _poison_case()
    kw["key_padding_mask"] = torch.zeros(3, 6, dtype=torch.bool)
    kw["key_padding_mask"][2, 1] = True
    with torch.no_grad():
        v[b, j, 1] = float("nan")
    v_clean = v.detach().nan_to_num(0.0).requires_grad_()
    out, _ = run(backend, q, k, v, w, **kw)
    sees = valid_keys(3, 4, 6, **kw)[b, :, j]
    rows = torch.ones(3, 4, dtype=torch.bool)
    rows[b] = ~sees  # the rows that must be unaffected
    assert (~torch.isfinite(out[b, sees])).any(-1).all()
    assert torch.isfinite(out[rows]).all(), out[b]
    args64 = [t.detach().double().requires_grad_() for t in (q, k, v_clean, w)]
    rout = attnkern.reference.additive_attention(*args64, **kw)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(out[rows].double(), rout[rows], atol=atol, rtol=rtol)
    if sees.any():
        return  # a poisoned row feeds NaN into the shared gradients (as in the reference)
    gatol, grtol = GRAD_TOL[torch.float32]
    for name, a, ref in zip("qkvw", grads_of([out], (q, k, v, w)), grads_of([rout], args64)):
        assert torch.isfinite(a).all(), f"grad_{name} not finite"
        torch.testing.assert_close(a.double(), ref, atol=gatol, rtol=grtol,
                                   msg=lambda m, n=name: f"grad_{n}: {m}")


def test_nan_weight_poisons_every_row_with_a_usable_key(backend):
    (q, k, v, w), kw = _poison_case()
    kw["key_lengths"] = torch.tensor([6, 0, 6])
    with torch.no_grad():
        w[2] = float("nan")
    out, wts = run(backend, q, k, v, w, **kw)
    has_key = valid_keys(3, 4, 6, **kw).any(-1)
    assert torch.isnan(out[has_key]).all()
    assert torch.equal(out[~has_key], torch.zeros_like(out[~has_key]))
    assert torch.equal(wts[~has_key], torch.zeros_like(wts[~has_key]))
