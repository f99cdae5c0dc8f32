"""Fused Triton kernels for additive attention (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).

Kernels (all fp32 accumulation, any input strides, H and Dv of any size via masks):

- ``_fwd_kernel``: one program per (query block, batch row, key split). Loops over key
  blocks; per tile computes ``s[i,j] = sum_h w[h] * tanh(q[i,h] + k[j,h])`` over H in chunks
  of ``BLOCK_H`` (a ``(BLOCK_M, BLOCK_N, BLOCK_H)`` register tile, never anything of size
  ``B*Tq*Tk*H``), applies the masks, keeps the online-softmax state (running max, running
  sum, fp32 accumulator over Dv) and writes the context and the log-sum-exp. Key blocks at or
  past ``key_lengths[b]`` and past the causal diagonal are never visited. With
  ``return_weights`` it also stores the raw scores (``B*Tq*Tk`` floats), which
  ``_weights_kernel`` turns into ``exp(s - lse)`` once the final lse is known: no second
  score pass.
- Step mode (small Tq, e.g. a 2-D query): ``BLOCK_M`` shrinks to ``next_pow2(Tq)`` (1 for a
  decoder step, no wasted query rows) and the keys are split over ``num_splits`` programs
  (flash-decoding); each split writes a normalised partial context and its lse, and the last
  split of a (query block, batch row) to finish (an int32 arrival counter, self-resetting)
  merges them in split order, in the same launch: one launch per decoder step.
- Backward, two passes, no float atomics, bitwise deterministic:
  ``_bwd_ds_kernel`` (program per key block) recomputes the scores once,
  ``p = exp(s - lse)``, stores ``ds = p (dO.v + gW - delta)`` as a ``B*Tq*Tk`` fp32 buffer
  and writes dv; ``_bwd_dqdk_kernel`` (program per (H chunk, batch row), one warp, a thread
  per h column) sweeps ds once for dq, dk and a per-row dweight partial, every output owned
  by one program; the partials are summed in a fixed order.
- Fused energies (``attnkern::scores``, no softmax): ``_scores_fwd_kernel``, one program
  per (key block, query block, batch row), the same ``_scores`` tile and masks, stores
  ``e`` (``-inf`` where masked) in the input dtype; backward ``_scores_ds_kernel`` selects
  the incoming gradient where usable into a ``B*Tq*Tk`` fp32 buffer and the attention's
  ``_bwd_dqdk_kernel`` takes it as its ds (dq, dk, dweight partials, tanh recomputed).
- NaN/Inf confinement: a masked key's value never reaches a row that cannot see it (the
  forward loads V with the padding and length validity as mask; the backward selects
  ``ds = 0``, not ``p * (...)``, where a key is unusable, since ``dO . v`` may be NaN).
  Under ``causal`` a visited tile may hold a key hidden from only some of its rows: its
  non-finite V entries are zeroed for ``P @ V`` and a row that may attend to such a key
  gets NaN in its whole output row (the reference: NaN/Inf in the affected columns only).

tanh, factorised: ``tanh(q + k) = 1 - 2 r``, ``r = 1 / (exp(2q) exp(2k) + 1)``, with exp(2q)
and exp(2k) computed once per loaded H chunk (on the FMA pipe, ``_exp2x``), so an (i, j, h)
element costs one FMA (the denominator), one MUFU.RCP and one FMA (the weighted sum); in the
backward ``1 - t^2 = 4 r (1 - r)``. Max abs error <= 4e-7 over [-30, 30]^2 (tested; see
docs/triton.md for the MUFU.RCP bound). Where a tile holds |q| or |k| > 43 (exp(2x) would
leave the normal fp32 range) or a NaN/Inf, that tile (forward, backward pass 1) or query
block (backward pass 2) uses the rational tanh instead: a [13/6] minimax rational
approximation (Eigen/XLA's float tanh) on the input clamped to +-7.9053, about 15 FMA-pipe
instructions and one MUFU op, max abs error 3.4e-7, NaN in -> NaN out. Decoder steps
(``BLOCK_M == 1``: nothing to share) use the rational tanh throughout.
Opt-in fast path: ``ATTNKERN_FAST_TANH=1`` (or ``fwd(..., fast_tanh=True)``) uses the PTX
``tanh.approx.f32`` (one MUFU.TANH, abs error ~5e-4) everywhere; GPU only -- inline PTX
cannot run in the interpreter, where the flag is ignored.

Host side: launch parameters (tiles, grids, constexprs) are a pure function of (device,
dtype, sizes, flags), cached (``functools.lru_cache``, bounded; ``attnkern.clear_caches()``
empties it); a call allocates only its outputs (and, for split-K, the partials); absent
optional pointers are passed as ``None``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra.cuda import libdevice

from ._compat import is_wrap_triton_enabled, traced_tensor

__all__ = ["fwd", "bwd", "scores_fwd", "scores_bwd", "fwd_config", "bwd_config",
           "dqdk_config", "scores_config", "scores_ds_config", "scores_dqdk_config",
           "num_splits", "clear_caches"]

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E)
# Kernels are interpreted (numpy) iff TRITON_INTERPRET is set when this module is imported,
# as triton.jit decides at decoration time.
_COMPILED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))

# Users chasing a decode latency may force the split-K factor of the forward (read once, at
# import; fwd(num_splits=...) per call, attnkern.testing.force_num_splits in tests).
_ENV_SPLITS = os.environ.get("ATTNKERN_NUM_SPLITS", "").strip()
ENV_NUM_SPLITS: int | None = int(_ENV_SPLITS) if _ENV_SPLITS else None


# ----------------------------------------------------------------------------- device code

@triton.jit
def _tanh(x, FAST: tl.constexpr):
    """tanh of an fp32 tensor: one MUFU op either way (see the module docstring)."""
    if FAST:
        return tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )
    else:
        # Eigen's generic_fast_tanh_float coefficients; beyond +-7.9053 tanh == +-1 in fp32.
        # NaN must stay NaN (a NaN input poisons its rows, as torch.tanh does).
        xc = tl.minimum(tl.maximum(x, -7.90531110763549805, propagate_nan=tl.PropagateNan.ALL),
                        7.90531110763549805, propagate_nan=tl.PropagateNan.ALL)
        x2 = xc * xc
        p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
        p = p * x2 + -8.60467152213735e-11
        p = p * x2 + 5.12229709037114e-08
        p = p * x2 + 1.48572235717979e-05
        p = p * x2 + 6.37261928875436e-04
        p = p * x2 + 4.89352455891786e-03
        p = p * xc
        d = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
        d = d * x2 + 2.26843463243900e-03
        d = d * x2 + 4.89352518554385e-03
        # d is in [4.9e-3, 0.91]: flush-to-zero approximate division (MUFU.RCP + FMUL, 2 ulp)
        # is safe and skips the denormal range checks of div.full / div.approx.
        if _COMPILED:
            return libdevice.fast_dividef(p, d)
        else:  # the interpreter has no libdevice; numpy's exact division
            return p / d


@triton.jit
def _tf32_round(x):
    """x rounded to tf32 (10 mantissa bits), to nearest, ties away from zero, as fp32."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + 0x1000) & -8192).to(tl.float32, bitcast=True)


@triton.jit
def _tf32_split(x):
    """(hi, lo): x = hi + lo + O(2^-22 |x|), both exact in tf32."""
    hi = _tf32_round(x)
    return hi, _tf32_round(x - hi)


@triton.jit
def _mma(a, b, IS_FP32: tl.constexpr, IEEE: tl.constexpr = False):
    """a @ b with fp32 accumulation (a, b in the input dtype). fp32 inputs: 3xTF32 on tensor
    cores (fp32-level accuracy), or ``IEEE`` fp32 FMAs where 3xTF32's split operands would
    spill (the backward's first pass)."""
    if IS_FP32:
        if IEEE:
            return tl.dot(a, b, input_precision="ieee")
        else:
            # 3xTF32 with the split done here: hi = round-to-nearest(-away) tf32 of x by
            # the bits (+ 2^12, clear the low 13), lo = x - hi (exact), likewise rounded;
            # the values cvt.rna.tf32 gives for finite x in 5 integer/FP ops instead of
            # Triton's ~10-instruction emulated cvt per operand (Inf -> NaN either way).
            a_hi, a_lo = _tf32_split(a)
            b_hi, b_lo = _tf32_split(b)
            acc = tl.dot(a_lo, b_hi, input_precision="tf32")
            acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
            return tl.dot(a_hi, b_hi, acc, input_precision="tf32")
    elif _COMPILED:
        return tl.dot(a, b)
    else:  # the interpreter multiplies bf16 as raw uint16 bits; fp32 products are exact
        return tl.dot(a.to(tl.float32), b.to(tl.float32))


@triton.jit
def _chunk(q_base, k_base, W, offs_m, offs_n, offs_h, m_ok, n_ok, h_ok,
           sqt, sqh, skt, skh, swh):
    """H-chunk of q (BLOCK_H, BLOCK_M), k (BLOCK_H, BLOCK_N) and w (BLOCK_H,) in fp32;
    w = 0 on the H tail, so padded h contribute nothing."""
    q = tl.load(q_base + offs_h[:, None] * sqh + offs_m[None, :] * sqt,
                mask=h_ok[:, None] & m_ok[None, :], other=0.0).to(tl.float32)
    k = tl.load(k_base + offs_h[:, None] * skh + offs_n[None, :] * skt,
                mask=h_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
    w = tl.load(W + offs_h * swh, mask=h_ok, other=0.0).to(tl.float32)
    return q, k, w


@triton.jit
def _exp2x(x):
    """exp(2 x) on the FMA pipe (no MUFU op: those are left to the reciprocals), for
    |x| <= 43 (the factorised path's guard): n = round(2x / ln2) by the 1.5 * 2^23 trick,
    r = 2x - n ln2 (Cody-Waite, two FMAs), exp(r) by its degree-7 Taylor polynomial
    (|r| <= ln2 / 2: truncation 5e-9 relative), 2^n added to the exponent bits. About 1 ulp;
    the same arithmetic runs in the interpreter."""
    y = x * 2.0
    t = tl.fma(y, LOG2E, 12582912.0)
    nf = t - 12582912.0
    r = tl.fma(nf, -0.693145751953125, y)
    r = tl.fma(nf, -1.428606765330187e-06, r)
    p = tl.fma(r, 1.0 / 5040.0, 1.0 / 720.0)
    p = tl.fma(p, r, 1.0 / 120.0)
    p = tl.fma(p, r, 1.0 / 24.0)
    p = tl.fma(p, r, 1.0 / 6.0)
    p = tl.fma(p, r, 0.5)
    p = tl.fma(p, r, 1.0)
    p = tl.fma(p, r, 1.0)
    n = t.to(tl.int32, bitcast=True) - 0x4B400000
    return (p.to(tl.int32, bitcast=True) + (n << 23)).to(tl.float32, bitcast=True)


@triton.jit
def _rcp(x):
    """1 / x: one MUFU.RCP (rcp.approx.ftz.f32, max relative error 2^-23 on normal x, which
    is all the factorised tanh feeds it: x = exp(2q) exp(2k) + 1 >= 1)."""
    if _COMPILED:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:  # the interpreter's division is exact: the rcp error bound is argued in the docs
        return 1.0 / x


@triton.jit
def _tanh_unsafe(x):
    """1 where the factorised tanh may not be used on a q or k entry: |x| > TANH_SAFE
    (exp(2x) would overflow or flush to zero), or x is NaN or +-Inf."""
    return tl.where(tl.abs(x) <= 43.0, 0, 1)


@triton.jit
def _scores_rational(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh,
                     swh, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_H: tl.constexpr, FAST: tl.constexpr):
    """s[i, j] = sum_h w[h] tanh(q[i,h] + k[j,h]) with the rational tanh: the fallback for
    tiles the factorised form cannot take, and the decoder-step path."""
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BLOCK_M == 1:
        # Decoder step: each key element is used once, so load K as (BLOCK_N, BLOCK_H) with
        # h contiguous (vector loads) against the one query row. (exp(2k) per element would
        # cost a second MUFU op: the rational tanh is cheaper when nothing is shared.)
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            h_ok = offs_h < H
            q = tl.load(q_base + offs_m[:, None] * sqt + offs_h[None, :] * sqh,
                        mask=m_ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
            k = tl.load(k_base + offs_n[:, None] * skt + offs_h[None, :] * skh,
                        mask=n_ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
            w = tl.load(W + offs_h * swh, mask=h_ok, other=0.0).to(tl.float32)
            t = _tanh(q + k, FAST)  # (BLOCK_N, BLOCK_H)
            s += tl.sum(t * w[None, :], axis=1)[None, :]
        return s
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        q, k, w = _chunk(q_base, k_base, W, offs_m, offs_n, offs_h, m_ok, n_ok,
                         offs_h < H, sqt, sqh, skt, skh, swh)
        # h is the leading (slowest) axis of the tile so the sum over it stays in-thread.
        t = _tanh(q[:, :, None] + k[:, None, :], FAST)
        s += tl.sum(t * w[:, None, None], axis=0)
    return s


@triton.jit
def _scores(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh, swh, wsum,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
            FAST: tl.constexpr):
    """s[i, j] = sum_h w[h] tanh(q[i,h] + k[j,h]) for one (BLOCK_M, BLOCK_N) tile, fp32.

    Factorised: tanh(q + k) = 1 - 2 r with r = 1 / (exp(2q) exp(2k) + 1), so
    s = sum_h w - 2 sum_h w r (``wsum`` = sum_h w): exp(2q) and exp(2k) once per loaded
    chunk (O((BLOCK_M + BLOCK_N) BLOCK_H)), then per element one FMA (the denominator), one
    MUFU.RCP and one FMA (the weighted sum). A tile holding any |q| or |k| > 43 (or a
    NaN/Inf) is recomputed with the rational tanh, which handles every input.
    """
    if BLOCK_M == 1 or FAST:
        return _scores_rational(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh,
                                skt, skh, swh, BLOCK_M, BLOCK_N, BLOCK_H, FAST)
    # Accumulate over h elementwise (acc += r * w is one FMA), sum the BLOCK_H lanes once
    # per tile.
    acc = tl.zeros([BLOCK_H, BLOCK_M, BLOCK_N], dtype=tl.float32)
    bad_q = tl.zeros([BLOCK_H, BLOCK_M], dtype=tl.int32)
    bad_k = tl.zeros([BLOCK_H, BLOCK_N], dtype=tl.int32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        q, k, w = _chunk(q_base, k_base, W, offs_m, offs_n, offs_h, m_ok, n_ok,
                         offs_h < H, sqt, sqh, skt, skh, swh)
        bad_q = bad_q | _tanh_unsafe(q)
        bad_k = bad_k | _tanh_unsafe(k)
        r = _rcp(_exp2x(q)[:, :, None] * _exp2x(k)[:, None, :] + 1.0)
        # the factor -2 is applied once per tile below (exact: a power of two), not to
        # each chunk's w (BLOCK_H multiplies per thread and chunk)
        acc += r * w[:, None, None]
    if tl.max(tl.max(bad_q, axis=1), axis=0) + tl.max(tl.max(bad_k, axis=1), axis=0) > 0:
        s = _scores_rational(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh,
                             skt, skh, swh, BLOCK_M, BLOCK_N, BLOCK_H, FAST)
    else:
        s = tl.sum(acc, axis=0) * -2.0 + wsum
    return s


@triton.jit
def _wsum(W, H, swh, BLOCK_H: tl.constexpr):
    """sum_h w[h] in fp32 (the constant term of the factorised score)."""
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        acc += tl.load(W + offs_h * swh, mask=offs_h < H, other=0.0).to(tl.float32)
    return tl.sum(acc, axis=0)


@triton.jit
def _key_end(LENS, b, Tq, Tk, m_end, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr):
    """Exclusive end of the keys any query row < m_end of batch row b may use."""
    hi = Tk
    if HAS_LENS:
        hi = tl.minimum(hi, tl.load(LENS + b).to(tl.int32))
    if CAUSAL:
        hi = tl.minimum(hi, tl.minimum(m_end, Tq) + (Tk - Tq))
    return tl.maximum(hi, 0)


@triton.jit
def _key_ok(MASK, b, smb, smt, offs_n, hi, HAS_MASK: tl.constexpr):
    """(BLOCK_N,) bool: key j is below hi (lengths folded in) and not padding."""
    n_ok = offs_n < hi
    if HAS_MASK:
        pad = tl.load(MASK + b * smb + offs_n * smt, mask=n_ok, other=1)
        n_ok = n_ok & (pad == 0)
    return n_ok


@triton.jit
def _rows_ok(n_ok, offs_m, offs_n, Tq, Tk, CAUSAL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) bool: usable key n_ok[j] visible to query i (causality)."""
    ok = n_ok[None, :] & (offs_m[:, None] >= 0)
    if CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None] + (Tk - Tq))
    return ok


@triton.jit
def _valid(MASK, b, smb, smt, offs_m, offs_n, hi, Tq, Tk,
           HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) bool: key j usable by query i (lengths folded into hi)."""
    return _rows_ok(_key_ok(MASK, b, smb, smt, offs_n, hi, HAS_MASK), offs_m, offs_n,
                    Tq, Tk, CAUSAL)


@triton.jit
def _fwd_kernel(
    Q, K, V, W, MASK, LENS, OUT, LSE, S, PO, PL, CNT,
    Tq, Tk, H, Dv, blocks_per_split,
    sqb, sqt, sqh, skb, skt, skh, svb, svt, svd, swh, smb, smt,
    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    STORE_S: tl.constexpr, SPLIT: tl.constexpr, IS_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr, FAST_TANH: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    nb = tl.num_programs(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < Tq
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < Dv

    hi = _key_end(LENS, b, Tq, Tk, (pid_m + 1) * BLOCK_M, HAS_LENS, CAUSAL)
    lo = split * blocks_per_split * BLOCK_N
    end = tl.minimum(hi, lo + blocks_per_split * BLOCK_N)

    q_base = Q + b * sqb
    k_base = K + b * skb
    v_base = V + b * svb
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    bad = tl.zeros([BLOCK_M], dtype=tl.int32)  # causal: row sees a non-finite value
    wsum = _wsum(W, H, swh, 256)  # wide chunks: few trips (the prologue)
    for start_n in range(lo, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        s = _scores(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh, swh,
                    wsum, BLOCK_M, BLOCK_N, BLOCK_H, FAST_TANH)
        if STORE_S:
            s_ptr = S + (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :]
            tl.store(s_ptr, s, mask=m_ok[:, None] & n_ok[None, :])
        kv_ok = _key_ok(MASK, b, smb, smt, offs_n, end, HAS_MASK)
        ok = _rows_ok(kv_ok, offs_m, offs_n, Tq, Tk, CAUSAL)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with nothing usable yet keeps m = -inf; shift by 0 so exp2 sees -inf, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2((m_i - m_safe) * LOG2E)
        p = tl.exp2((s - m_safe[:, None]) * LOG2E)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        # A masked key's value is never read: p = 0 there, but p @ v would form 0 * NaN.
        v = tl.load(v_base + offs_n[:, None] * svt + offs_d[None, :] * svd,
                    mask=kv_ok[:, None] & d_ok[None, :], other=0.0)
        if CAUSAL:
            # A key hidden by causality from only some rows of the tile is loaded: zero its
            # non-finite entries for the product and poison (below) the rows that see one.
            fin = tl.abs(v.to(tl.float32)) < float("inf")  # False for NaN and +-Inf
            v = tl.where(fin, v, tl.zeros_like(v))
            key_bad = tl.max(tl.where(fin, 0, 1), axis=1)  # (BLOCK_N,)
            bad = tl.maximum(bad, tl.max(tl.where(ok, key_bad[None, :], 0), axis=1))
        acc = acc * alpha[:, None]
        if BLOCK_M >= 16:
            acc += _mma(p.to(v.dtype), v, IS_FP32)
        else:  # decode-sized tiles: too small for tensor cores
            acc += tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
        m_i = m_new

    has = l_i > 0.0
    l_safe = tl.where(has, l_i, 1.0)
    o = acc * (1.0 / l_safe)[:, None]  # one division per row, not per (row, d)
    if CAUSAL:
        o = tl.where(bad[:, None] > 0, float("nan"), o)
    row = b * Tq + offs_m
    if SPLIT:
        base = split * nb * Tq
        tl.store(PO + (base + row)[:, None] * Dv + offs_d[None, :], o,
                 mask=m_ok[:, None] & d_ok[None, :])
        tl.store(PL + base + row, tl.where(has, m_i + tl.log(l_safe), float("-inf")), mask=m_ok)
        # Split-K combine in the same launch: the last split of this (query block, batch
        # row) to finish merges all of them, in split order (deterministic). The int32
        # counter is reset by that program, so the cached zeroed buffer stays zeroed.
        tl.debug_barrier()  # every thread's partial stores precede the release below
        slot = CNT + b * tl.num_programs(0) + pid_m
        n_splits = tl.num_programs(2)
        if tl.atomic_add(slot, 1, sem="acq_rel", scope="gpu") == n_splits - 1:
            _combine_rows(PO, PL, OUT, LSE, row, offs_d, m_ok & (row >= 0), d_ok, nb * Tq, Dv,
                          n_splits)
            tl.atomic_xchg(slot, 0, sem="relaxed", scope="gpu")
    else:
        tl.store(OUT + row[:, None] * Dv + offs_d[None, :], o.to(OUT.dtype.element_ty),
                 mask=m_ok[:, None] & d_ok[None, :])
        tl.store(LSE + row, tl.where(has, m_i + tl.log(l_safe), float("inf")), mask=m_ok)


@triton.jit
def _combine_rows(PO, PL, OUT, LSE, row, offs_d, r_ok, d_ok, rows, Dv, n_splits):
    """Merge the split-K partials of ``row``: lse = logsumexp_s lse_s,
    out = sum_s exp(lse_s - lse) o_s, splits in order. Partials are read through L2 (.cg):
    other SMs wrote them."""
    mx = tl.load(PL + row, mask=r_ok, other=float("-inf"), cache_modifier=".cg")
    for sp in range(1, n_splits):
        mx = tl.maximum(mx, tl.load(PL + sp * rows + row, mask=r_ok, other=float("-inf"),
                                    cache_modifier=".cg"))
    mx_safe = tl.where(mx == float("-inf"), 0.0, mx)
    tot = tl.zeros_like(mx_safe)
    acc = tl.zeros([row.shape[0], offs_d.shape[0]], dtype=tl.float32)
    for sp in range(0, n_splits):
        ls = tl.load(PL + sp * rows + row, mask=r_ok, other=float("-inf"), cache_modifier=".cg")
        scale = tl.exp2((ls - mx_safe) * LOG2E)  # 0 for empty splits
        o = tl.load(PO + (sp * rows + row)[:, None] * Dv + offs_d[None, :],
                    mask=r_ok[:, None] & d_ok[None, :] & (scale > 0.0)[:, None], other=0.0,
                    cache_modifier=".cg")
        tot += scale
        acc += scale[:, None] * o
    has = tot > 0.0
    t_safe = tl.where(has, tot, 1.0)
    tl.store(OUT + row[:, None] * Dv + offs_d[None, :],
             (acc * (1.0 / t_safe)[:, None]).to(OUT.dtype.element_ty),
             mask=r_ok[:, None] & d_ok[None, :])
    tl.store(LSE + row, tl.where(has, mx_safe + tl.log(t_safe), float("inf")), mask=r_ok)


@triton.jit
def _weights_kernel(S, LSE, MASK, LENS, WTS, Tq, Tk, smb, smt,
                    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """weights = exp(s - lse) where usable, else 0 (S holds the forward's raw scores)."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < Tq
    hi = _key_end(LENS, b, Tq, Tk, Tq, HAS_LENS, False)
    ok = _valid(MASK, b, smb, smt, offs_m, offs_n, hi, Tq, Tk, HAS_MASK, CAUSAL)
    ptr = (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :]
    io = m_ok[:, None] & (offs_n < Tk)[None, :]
    lse = tl.load(LSE + b * Tq + offs_m, mask=m_ok, other=float("inf"))
    s = tl.load(S + ptr, mask=io & ok, other=0.0)
    wts = tl.where(ok, tl.exp2((s - lse[:, None]) * LOG2E), 0.0)
    tl.store(WTS + ptr, wts.to(WTS.dtype.element_ty), mask=io)


@triton.jit
def _probs(q_base, k_base, W, wsum, MASK, GW, LSE, DELTA, DO, V, b, offs_m, offs_n, m_ok, n_ok, hi,
           Tq, Tk, H, Dv, sqt, sqh, skt, skh, swh, smb, smt, sgb, sgt, sgk,
           sdb, sdt, sdd, svb, svt, svd,
           HAS_MASK: tl.constexpr, HAS_GW: tl.constexpr, CAUSAL: tl.constexpr,
           IS_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, FAST: tl.constexpr):
    """Recompute p = exp(s - lse) and ds = p * (dO.v + gW - delta) for one tile.

    Returns (p, ds, dO tile (BLOCK_M, BLOCK_D) in the input dtype).
    """
    s = _scores(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh, swh,
                wsum, BLOCK_M, BLOCK_N, BLOCK_H, FAST)
    kv_ok = _key_ok(MASK, b, smb, smt, offs_n, hi, HAS_MASK)
    ok = _rows_ok(kv_ok, offs_m, offs_n, Tq, Tk, CAUSAL) & m_ok[:, None]
    lse = tl.load(LSE + b * Tq + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + b * Tq + offs_m, mask=m_ok, other=0.0)
    p = tl.where(ok, tl.exp2((s - lse[:, None]) * LOG2E), 0.0)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < Dv
    do = tl.load(DO + b * sdb + offs_m[:, None] * sdt + offs_d[None, :] * sdd,
                 mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(V + b * svb + offs_n[:, None] * svt + offs_d[None, :] * svd,
                mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    if BLOCK_M >= 16:
        dp = _mma(do, tl.trans(v), IS_FP32, True)
    else:
        dp = tl.sum(do.to(tl.float32)[:, None, :] * v.to(tl.float32)[None, :, :], axis=2)
    if HAS_GW:
        dp += tl.load(GW + b * sgb + offs_m[:, None] * sgt + offs_n[None, :] * sgk,
                      mask=ok, other=0.0).to(tl.float32)
    ds = p * (dp - delta[:, None])
    if HAS_MASK or CAUSAL:
        # Select, not multiply: dp is NaN where a padded or causally hidden key's value is
        # (0 * NaN). Keys past the length are not loaded.
        ds = tl.where(ok, ds, 0.0)
    return p, ds, do


@triton.jit
def _bwd_ds_kernel(
    Q, K, V, W, MASK, LENS, GW, DO, LSE, DELTA, DS, DV,
    Tq, Tk, H, Dv,
    sqb, sqt, sqh, skb, skt, skh, svb, svt, svd, swh, smb, smt, sgb, sgt, sgk, sdb, sdt, sdd,
    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, HAS_GW: tl.constexpr,
    CAUSAL: tl.constexpr, IS_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr, FAST_TANH: tl.constexpr,
):
    """Backward pass 1, one program per key block: recompute the scores once (the only
    tanh evaluation of the backward on the factorised path), p = exp(s - lse),
    ds = p (dO.v + gW - delta) into DS (B, Tq, Tk) fp32, and dv = p^T dO (owned here).

    Writes DS for every (i, j) of each visited tile (0 where j is unusable by i);
    ``_bwd_dqdk_kernel`` reads only those (i, j), whatever its own tiles.
    """
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < Dv
    hi = _key_end(LENS, b, Tq, Tk, Tq, HAS_LENS, False)
    n_ok = offs_n < hi
    # Causal: query i sees key j iff i >= j - (Tk - Tq); earlier query blocks are skipped.
    first = 0
    if CAUSAL:
        first = tl.maximum(pid_n * BLOCK_N - (Tk - Tq), 0)
        first = (first // BLOCK_M) * BLOCK_M
    # A block wholly past key_lengths[b] computes nothing (its dv stays 0, DS unread).
    first = tl.where(pid_n * BLOCK_N >= hi, Tq, first)
    q_base = Q + b * sqb
    k_base = K + b * skb
    wsum = _wsum(W, H, swh, 256)  # wide chunks: few trips (the prologue)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(first, Tq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < Tq
        p, ds, do = _probs(q_base, k_base, W, wsum, MASK, GW, LSE, DELTA, DO, V, b, offs_m,
                           offs_n, m_ok, n_ok, hi, Tq, Tk, H, Dv, sqt, sqh, skt, skh, swh,
                           smb, smt, sgb, sgt, sgk, sdb, sdt, sdd, svb, svt, svd,
                           HAS_MASK, HAS_GW, CAUSAL, IS_FP32,
                           BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_D, FAST_TANH)
        if BLOCK_M >= 16:
            dv += _mma(tl.trans(p.to(do.dtype)), do, IS_FP32, True)
        else:
            dv += tl.sum(p[:, :, None] * do.to(tl.float32)[:, None, :], axis=0)
        tl.store(DS + (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :], ds,
                 mask=m_ok[:, None] & (offs_n < Tk)[None, :])
    tl.store(DV + (b * Tk + offs_n)[:, None] * Dv + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=(offs_n < Tk)[:, None] & d_ok[None, :])


@triton.jit
def _dqdk_sweep(q, K, DS, DK, w, dw, ds_sum, b, start_m, offs_m, m_ok, offs_h, h_ok,
                Tq, Tk, H, skb, skt, skh, LENS, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
                RATIONAL: tl.constexpr, FAST_TANH: tl.constexpr):
    """One query block of ``_bwd_dqdk_kernel`` against all the keys it sees: returns its
    dq (BLOCK_M, BLOCK_H) before the w factor, and the updated dw and ds_sum; dk is
    accumulated in DK."""
    if not RATIONAL:
        eq = _exp2x(q)
    hi = _key_end(LENS, b, Tq, Tk, start_m + BLOCK_M, HAS_LENS, CAUSAL)
    dq = tl.zeros([BLOCK_M, BLOCK_H], dtype=tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        # Exactly the (i, j) pass 1 wrote: its tiles may differ from this kernel's.
        use = m_ok[:, None] & n_ok[None, :]
        if CAUSAL:
            use = use & (offs_n[None, :] <= offs_m[:, None] + (Tk - Tq))
        ds = tl.load(DS + (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :], mask=use,
                     other=0.0)
        k = tl.load(K + b * skb + offs_n[:, None] * skt + offs_h[None, :] * skh,
                    mask=n_ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
        if RATIONAL:
            t = _tanh(q[:, None, :] + k[None, :, :], FAST_TANH)  # (BLOCK_M, BLOCK_N, BLOCK_H)
            u = ds[:, :, None] * t
            g = ds[:, :, None] - u * t  # ds (1 - t^2)
            dq += tl.sum(g, axis=1)
            dk_t = tl.sum(g, axis=0)
            dw += tl.sum(tl.sum(u, axis=1), axis=0)
        else:
            r = _rcp(eq[:, None, :] * _exp2x(k)[None, :, :] + 1.0)
            u = ds[:, :, None] * r
            g = u - u * r  # ds r (1 - r) = ds (1 - t^2) / 4
            dq += tl.sum(g, axis=1) * 4.0
            dk_t = tl.sum(g, axis=0) * 4.0
            dw += tl.sum(tl.sum(u, axis=1), axis=0) * -2.0
            ds_sum += ds
        # This program owns these dk entries: the first query block to reach key block
        # start_n stores, later ones read-modify-write.
        first = 0
        if CAUSAL:
            first = (tl.maximum(start_n - (Tk - Tq), 0) // BLOCK_M) * BLOCK_M
        ptr = DK + (b * Tk + offs_n)[:, None] * H + offs_h[None, :]
        io = (offs_n < Tk)[:, None] & h_ok[None, :]
        rmw = (tl.zeros([BLOCK_N], dtype=tl.int32) + start_m) != first
        old = tl.load(ptr, mask=io & rmw[:, None], other=0.0)
        tl.store(ptr, old + dk_t * w[None, :], mask=io)
        # Should the load and store layouts differ, the next reader of these dk entries
        # may be another thread: order it after this store.
        tl.debug_barrier()
    return dq, dw, ds_sum


@triton.jit
def _bwd_dqdk_kernel(
    Q, K, W, LENS, DS, DQ, DK, DWP,
    Tq, Tk, H,
    sqb, sqt, sqh, skb, skt, skh, swh,
    HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    FAST_TANH: tl.constexpr,
):
    """Backward pass 2, one program per (H chunk, batch row), owning dq[b, :, chunk],
    dk[b, :, chunk] and dweight's partial DWP[b, chunk]: one sweep over the (i, j) tiles
    that pass 1 visited, from the stored ds.

    Factorised: with r = 1 / (exp(2q) exp(2k) + 1), t = 1 - 2 r and 1 - t^2 = 4 r (1 - r), so
    per element: one FMA, one MUFU.RCP, u = ds r, g = u - u r, and the three sums
    dq += g (over j), dk += g (over i), dw += u (over i, j); dw = sum ds - 2 sum u. Tiles with
    |q| or |k| > 43 (or NaN/Inf) take the rational tanh instead.
    dk is read-modify-written in DK (fp32), dq written once per query block in DQ's dtype.
    """
    pid_h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = offs_h < H
    w = tl.load(W + offs_h * swh, mask=h_ok, other=0.0).to(tl.float32)
    hi_b = _key_end(LENS, b, Tq, Tk, Tq, HAS_LENS, False)
    dw = tl.zeros([BLOCK_H], dtype=tl.float32)
    ds_sum = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # sum of ds on factorised tiles
    # The fallback is decided per query block, with this program's keys checked once here:
    # the factorised and the rational sweeps are separate loops (neither carries the other).
    k_bad = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.int32)
    for start_n in range(0, hi_b, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = tl.load(K + b * skb + offs_n[:, None] * skt + offs_h[None, :] * skh,
                    mask=(offs_n < hi_b)[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
        k_bad = k_bad | _tanh_unsafe(k)
    any_k_bad = tl.max(tl.max(k_bad, axis=1), axis=0)
    for start_m in range(0, Tq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < Tq
        q = tl.load(Q + b * sqb + offs_m[:, None] * sqt + offs_h[None, :] * sqh,
                    mask=m_ok[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
        bad = any_k_bad + tl.max(tl.max(_tanh_unsafe(q), axis=1), axis=0)
        if FAST_TANH:  # opt-in tanh.approx: the one-MUFU tanh everywhere
            bad = bad + 1
        if bad > 0:
            dq, dw, ds_sum = _dqdk_sweep(q, K, DS, DK, w, dw, ds_sum, b, start_m, offs_m, m_ok,
                                         offs_h, h_ok, Tq, Tk, H, skb, skt, skh, LENS,
                                         HAS_LENS, CAUSAL, BLOCK_M, BLOCK_N, BLOCK_H, True,
                                         FAST_TANH)
        else:
            dq, dw, ds_sum = _dqdk_sweep(q, K, DS, DK, w, dw, ds_sum, b, start_m, offs_m, m_ok,
                                         offs_h, h_ok, Tq, Tk, H, skb, skt, skh, LENS,
                                         HAS_LENS, CAUSAL, BLOCK_M, BLOCK_N, BLOCK_H, False,
                                         FAST_TANH)
        tl.store(DQ + (b * Tq + offs_m)[:, None] * H + offs_h[None, :],
                 (dq * w[None, :]).to(DQ.dtype.element_ty), mask=m_ok[:, None] & h_ok[None, :])
    # Keys past key_lengths[b] were never visited: their dk is 0.
    for start_n in range(tl.cdiv(hi_b, BLOCK_N) * BLOCK_N, Tk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        tl.store(DK + (b * Tk + offs_n)[:, None] * H + offs_h[None, :],
                 tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32),
                 mask=(offs_n < Tk)[:, None] & h_ok[None, :])
    dw += tl.sum(tl.sum(ds_sum, axis=1), axis=0)
    tl.store(DWP + b * H + offs_h, dw, mask=h_ok)


# ------------------------------------------------- fused energies (attnkern::scores)

@triton.jit
def _scores_fwd_kernel(
    Q, K, W, MASK, LENS, OUT,
    Tq, Tk, H,
    sqb, sqt, sqh, skb, skt, skh, swh, smb, smt,
    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    FAST_TANH: tl.constexpr,
):
    """Energies without the softmax, one program per (key block, query block, batch row):
    ``OUT[b, i, j] = sum_h w[h] tanh(q[b,i,h] + k[b,j,h])`` (the forward's score tile,
    ``_scores``: factorised tanh, rational fallback, the rational tanh for BLOCK_M == 1),
    ``-inf`` where key j is unusable by query i (``_valid``: padding, lengths, causal).
    A tile wholly past the block's key end (lengths, causal) computes nothing and stores
    ``-inf``. OUT is contiguous (B, Tq, Tk) (or (B, Tk): Tq = 1), in the input dtype."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < Tq
    hi = _key_end(LENS, b, Tq, Tk, (pid_m + 1) * BLOCK_M, HAS_LENS, CAUSAL)
    s = tl.full([BLOCK_M, BLOCK_N], float("-inf"), dtype=tl.float32)
    if pid_n * BLOCK_N < hi:
        wsum = _wsum(W, H, swh, 256)
        e = _scores(Q + b * sqb, K + b * skb, W, offs_m, offs_n, m_ok, offs_n < hi, H,
                    sqt, sqh, skt, skh, swh, wsum, BLOCK_M, BLOCK_N, BLOCK_H, FAST_TANH)
        ok = _valid(MASK, b, smb, smt, offs_m, offs_n, hi, Tq, Tk, HAS_MASK, CAUSAL)
        s = tl.where(ok, e, s)
    tl.store(OUT + (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :],
             s.to(OUT.dtype.element_ty), mask=m_ok[:, None] & (offs_n < Tk)[None, :])


@triton.jit
def _scores_ds_kernel(
    G, MASK, LENS, DS,
    Tq, Tk,
    sgb, sgt, sgk, smb, smt,
    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Backward of the energies, first pass, one program per (key block, query block,
    batch row): ``DS = grad`` where key j is usable by query i, else 0 (selected, not
    multiplied: a masked energy is a constant ``-inf`` and takes no gradient, whatever
    grad holds there), fp32, contiguous (B, Tq, Tk). Writes every (i, j) with
    ``j < key_lengths[b]``: what ``_bwd_dqdk_kernel`` reads (it applies lengths and causal
    itself, padding only through these zeros), which then gives dq, dk and dweight from DS
    exactly as for the attention's ds."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < Tq
    hi = _key_end(LENS, b, Tq, Tk, Tq, HAS_LENS, False)
    ok = _valid(MASK, b, smb, smt, offs_m, offs_n, hi, Tq, Tk, HAS_MASK, CAUSAL)
    ok = ok & m_ok[:, None]
    g = tl.load(G + b * sgb + offs_m[:, None] * sgt + offs_n[None, :] * sgk, mask=ok,
                other=0.0).to(tl.float32)
    tl.store(DS + (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :], g,
             mask=m_ok[:, None] & (offs_n < hi)[None, :])


# ------------------------------------------------------------------------------ host side

class Config(NamedTuple):
    block_m: int
    block_n: int
    block_h: int
    num_warps: int
    num_stages: int


def _np2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


def _interpreting(t: Tensor) -> bool:
    return t.device.type == "cpu"


def _small_m_config(tq: int, dv: int, num_warps: int, pv_per_thread: int,
                    tanh_per_thread: int, max_h: int, max_n: int = 128) -> Config:
    """Tq <= 8 (decoder steps): BLOCK_M = Tq rounded up, no wasted query rows. P@V is a
    broadcast-and-sum (tensor-core tiles need 16 rows), so BLOCK_N is sized to keep its
    (BLOCK_M, BLOCK_N, Dv) tile at ``pv_per_thread`` values per thread, and BLOCK_H the
    score tile at ``tanh_per_thread``."""
    bm = _np2(tq)
    threads = 32 * num_warps
    bn = max(8, min(max_n, pv_per_thread * threads // (bm * _np2(dv))))
    bh = max(2, min(max_h, tanh_per_thread * threads // (bm * bn)))
    return Config(bm, bn, bh, num_warps, 2)


def _interpret_config(tq: int, tk: int, h: int) -> Config:
    """Interpreter tiles: 16 (every code path is reached by tiny test shapes: key tails,
    H chunks, several query blocks), 32 once a dimension reaches 64 (numpy work per op is
    cheap; the interpreter's cost is the number of ops, i.e. of programs x iterations)."""
    bm = min(16, _np2(tq)) if tq < 64 else 32
    return Config(bm, 16 if tk < 64 else 32, 16 if h < 64 else 32, 4, 1)


def fwd_config(tq: int, tk: int, h: int, dv: int, interpret: bool = False) -> Config:
    """Forward tile per (Tq, Dv) bucket (Tk drives the split-K factor, see num_splits; H
    only the number of H-chunk iterations).

    Chosen so that every tile stays in registers: bench/kernel_report.py compiles these for
    sm_80/sm_90 and shows zero spills. (BLOCK_H, BLOCK_M, BLOCK_N) / threads is the number
    of tanh arguments each thread holds per H-chunk iteration (16 or 32 here).
    """
    if interpret:
        return _interpret_config(tq, tk, h)
    if tq <= 8:  # decode: (1, 64, 64) tile, 4 warps at H = Dv = 128
        return (_small_m_config(tq, dv, 4, 64, 32, 64) if dv <= 128
                else _small_m_config(tq, dv, 8, 32, 32, 64))
    # BLOCK_H = 8: 32-64 elements per thread per H chunk, enough to amortise the chunk's
    # loads and exp(2q), exp(2k) (kernel_report.py --per-element); the Dv > 128
    # accumulator needs the smaller tile to stay in registers.
    if dv > 128:
        return Config(32, 32, 8, 8, 2)
    if tq >= 64:
        return Config(64, 32, 8, 8, 2)
    return Config(32, 32, 8, 8, 2)


def bwd_config(tq: int, tk: int, h: int, dv: int, interpret: bool = False) -> Config:
    """Tile of the backward's first pass (``_bwd_ds_kernel``; see dqdk_config for the
    second). Not yet timed on a GPU: chosen from the SASS (no spills at the bench shapes)."""
    if interpret:
        return _interpret_config(tq, tk, h)
    if tq <= 8:
        return _small_m_config(tq, dv, 8, 32, 16, 16, 64)._replace(num_stages=1)
    # 32 x 32 x 8: no spills with the fp32 FMA-pipe dots (3xTF32 ones spill here).
    return Config(32, 32, 8, 8, 1)


def num_splits(batch: int, m_blocks: int, tk: int, block_n: int, sm_count: int,
               force: int | None = None) -> int:
    """Split-K factor of the forward: split the keys when the grid would leave SMs idle;
    ``force`` (else ``ATTNKERN_NUM_SPLITS``) fixes it, clamped to the number of key blocks."""
    n_kb = triton.cdiv(tk, block_n)
    if force is None:
        force = ENV_NUM_SPLITS
    if force is not None:
        return max(1, min(int(force), n_kb))
    progs = batch * m_blocks
    if progs >= sm_count or n_kb < 4:
        return 1
    # at least two key blocks per split, about two waves of programs in all
    return max(1, min(n_kb // 2, triton.cdiv(2 * sm_count, progs), 32))


def _fast_tanh(t: Tensor, fast_tanh: bool | None) -> bool:
    if _interpreting(t):
        return False  # inline PTX cannot run in the interpreter
    if fast_tanh is None:
        return os.environ.get("ATTNKERN_FAST_TANH", "0") not in ("", "0")
    return bool(fast_tanh)


def dqdk_config(cfg: Config, h: int, interpret: bool = False) -> Config:
    """Tile of the backward's second pass: (BLOCK_M, BLOCK_N) of ds times an H chunk of its
    own (one program per chunk and batch row)."""
    if interpret:
        return cfg
    # One warp per program, a thread per h column: the sums over i (dk) and j (dq) and the
    # dweight sum stay in-thread (no shuffles); 16 query rows share each exp(2k).
    return Config(16, 4, 32, 1, 1)


def _launch(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    # wrap_triton makes the launch visible to torch.compile / make_fx; in eager mode (and on
    # CPU tensors under the interpreter) it launches the kernel directly.
    if is_wrap_triton_enabled():
        torch.library.wrap_triton(kernel)[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)


class _FwdPlan(NamedTuple):
    grid: tuple[int, int, int]
    splits: int
    bps: int  # key blocks per split
    meta: dict[str, Any]
    weights_grid: tuple[int, int, int]
    weights_meta: dict[str, Any]


class _BwdPlan(NamedTuple):
    grid_ds: tuple[int, int]
    grid_dqdk: tuple[int, int]
    meta_ds: dict[str, Any]
    meta_dqdk: dict[str, Any]


# Split-K arrival counters, int32 zeros, per device; the combining program resets its slot.
_COUNTERS: dict[Any, Tensor] = {}

# Launch plans (tile configs, grids, constexprs) are pure functions of the shape and flags,
# cached: a call then only allocates its outputs and launches. Bounded: a server seeing
# every sequence length keeps the most recent plans only.
PLAN_CACHE_SIZE = 1024


def clear_caches() -> None:
    """Forget the launch plans and the split-K counters (see attnkern.clear_caches)."""
    _fwd_plan_cached.cache_clear()
    _bwd_plan_cached.cache_clear()
    _scores_plan_cached.cache_clear()
    _scores_bwd_plan_cached.cache_clear()
    _COUNTERS.clear()


def _counters(like: Tensor, n: int) -> Tensor:
    dev = like.device
    if _tracing(like):
        # Traced (torch.compile, make_fx): a graph-owned buffer, not module state.
        return torch.zeros(n, dtype=torch.int32, device=dev)
    buf = _COUNTERS.get(dev)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=dev)
        _COUNTERS[dev] = buf
    return buf


def _tracing(t: Tensor) -> bool:
    """Under torch.compile / make_fx (fake or functional tensors), not eager."""
    return type(t) is not Tensor and traced_tensor(t)


def _traced_ptrs(like: Tensor, *ptrs: Tensor | None) -> tuple[Tensor | None, ...]:
    """Absent pointers as ``None`` in eager mode (no allocation); when traced, each gets
    its own placeholder tensor, never an alias of a real buffer, as the graph capture of
    ``wrap_triton`` has always been given."""
    if not _tracing(like):
        return ptrs
    return tuple(torch.empty(1, dtype=torch.float32, device=like.device) if p is None else p
                 for p in ptrs)


def _concrete(*sizes: Any) -> bool:
    # Symbolic sizes (torch.compile with dynamic shapes) are not cached.
    for x in sizes:
        if type(x) is not int:
            return False
    return True


def _fwd_plan(batch: int, tq: int, tk: int, h: int, dv: int, dtype: torch.dtype,
              dev: torch.device, has_mask: bool, has_lens: bool, causal: bool,
              return_weights: bool, fast: bool, force_splits: int | None) -> _FwdPlan:
    interp = dev.type == "cpu"
    cfg = fwd_config(tq, tk, h, dv, interp)
    block_d = max(16, _np2(dv)) if cfg.block_m >= 16 else _np2(dv)
    m_blocks = triton.cdiv(tq, cfg.block_m)
    n_kb = triton.cdiv(tk, cfg.block_n)
    splits = num_splits(batch, m_blocks, tk, cfg.block_n, _sm_count_dev(dev), force_splits)
    bps = triton.cdiv(n_kb, splits)
    splits = triton.cdiv(n_kb, bps)
    meta = dict(
        HAS_MASK=has_mask, HAS_LENS=has_lens, CAUSAL=causal, STORE_S=return_weights,
        SPLIT=splits > 1, IS_FP32=dtype == torch.float32,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_H=cfg.block_h, BLOCK_D=block_d,
        FAST_TANH=fast, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    bm, bn = (16, 16) if interp else (32, 64)
    wmeta = dict(HAS_MASK=has_mask, HAS_LENS=has_lens, CAUSAL=causal,
                 BLOCK_M=bm, BLOCK_N=bn, num_warps=4)
    return _FwdPlan((m_blocks, batch, splits), splits, bps, meta,
                    (triton.cdiv(tk, bn), triton.cdiv(tq, bm), batch), wmeta)


_fwd_plan_cached = functools.lru_cache(maxsize=PLAN_CACHE_SIZE)(_fwd_plan)


def _bwd_plan(batch: int, tq: int, tk: int, h: int, dv: int, dtype: torch.dtype,
              dev: torch.device, has_mask: bool, has_lens: bool, has_gw: bool, causal: bool,
              fast: bool) -> _BwdPlan:
    interp = dev.type == "cpu"
    cfg = bwd_config(tq, tk, h, dv, interp)
    cfg2 = dqdk_config(cfg, h, interp)
    block_d = max(16, _np2(dv)) if cfg.block_m >= 16 else _np2(dv)
    meta_ds = dict(
        HAS_MASK=has_mask, HAS_LENS=has_lens, HAS_GW=has_gw, CAUSAL=causal,
        IS_FP32=dtype == torch.float32, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        BLOCK_H=cfg.block_h, BLOCK_D=block_d, FAST_TANH=fast,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    meta_dqdk = dict(
        HAS_LENS=has_lens, CAUSAL=causal, BLOCK_M=cfg2.block_m,
        BLOCK_N=cfg2.block_n, BLOCK_H=cfg2.block_h, FAST_TANH=fast,
        num_warps=cfg2.num_warps, num_stages=cfg2.num_stages,
    )
    return _BwdPlan((triton.cdiv(tk, cfg.block_n), batch),
                    (triton.cdiv(h, cfg2.block_h), batch), meta_ds, meta_dqdk)


_bwd_plan_cached = functools.lru_cache(maxsize=PLAN_CACHE_SIZE)(_bwd_plan)


def _sm_count_dev(dev: torch.device) -> int:
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).multi_processor_count
    return 132  # interpreter (and meta tensors): behave as an H100 would


def _mask_args(key_padding_mask: Tensor | None,
               key_lengths: Tensor | None) -> tuple[Tensor | None, Tensor | None, int, int]:
    if key_padding_mask is not None:
        mask = key_padding_mask.view(torch.uint8)
        smb, smt = mask.stride()
    else:
        mask, smb, smt = None, 0, 0
    # The kernels read key_lengths[b] at LENS + b: an expanded (stride 0) tensor must be
    # made contiguous. The mask is read through its own strides.
    lens = key_lengths.contiguous() if key_lengths is not None else None
    return mask, lens, smb, smt


def fwd(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    return_weights: bool,
    *,
    fast_tanh: bool | None = None,
    num_splits: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """attnkern::fwd on Triton: query (B,Tq,H), key (B,Tk,H), value (B,Tk,Dv), weight (H,)
    -> out (B,Tq,Dv) input dtype, lse (B,Tq) fp32 (+inf: no usable key), weights (B,Tq,Tk)
    if return_weights else (0,). ``num_splits`` forces the split-K factor.

    One launch (split-K included), plus one for the weights if they are asked for."""
    batch, tq, h = query.shape
    tk, dv = key.shape[1], value.shape[2]
    dtype, dev = query.dtype, query.device
    out = torch.empty(batch, tq, dv, dtype=dtype, device=dev)
    lse = torch.empty(batch, tq, dtype=torch.float32, device=dev)
    weights = (torch.empty(batch, tq, tk, dtype=dtype, device=dev) if return_weights
               else torch.empty(0, dtype=dtype, device=dev))
    if batch == 0 or tq == 0:
        return out, lse, weights
    if tk == 0:
        out.zero_()
        lse.fill_(float("inf"))
        return out, lse, weights

    has_mask, has_lens = key_padding_mask is not None, key_lengths is not None
    fast = _fast_tanh(query, fast_tanh)
    plan = (_fwd_plan_cached if _concrete(batch, tq, tk, h, dv) else _fwd_plan)(
        batch, tq, tk, h, dv, dtype, dev, has_mask, has_lens, bool(causal),
        bool(return_weights), fast, num_splits)
    mask, lens, smb, smt = _mask_args(key_padding_mask, key_lengths)
    scores = None
    if return_weights:
        scores = (weights if dtype == torch.float32
                  else torch.empty(batch, tq, tk, dtype=torch.float32, device=dev))
    p_out = p_lse = cnt = None
    if plan.splits > 1:
        p_out = torch.empty(plan.splits, batch, tq, dv, dtype=torch.float32, device=dev)
        p_lse = torch.empty(plan.splits, batch, tq, dtype=torch.float32, device=dev)
        cnt = _counters(query, batch * plan.grid[0])
    mask, lens, scores, p_out, p_lse, cnt = _traced_ptrs(query, mask, lens, scores, p_out,
                                                          p_lse, cnt)
    _launch(
        _fwd_kernel, plan.grid,
        query, key, value, weight, mask, lens, out, lse, scores, p_out, p_lse, cnt,
        tq, tk, h, dv, plan.bps,
        *query.stride(), *key.stride(), *value.stride(), weight.stride(0), smb, smt,
        **plan.meta,
    )
    if return_weights:
        _launch(_weights_kernel, plan.weights_grid,
                scores, lse, mask, lens, weights, tq, tk, smb, smt, **plan.weights_meta)
    return out, lse, weights


def bwd(
    grad_out: Tensor,
    grad_weights: Tensor | None,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    lse: Tensor,
    delta: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    *,
    fast_tanh: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """attnkern::bwd on Triton: returns (dq, dk, dv, dweight), contiguous, input dtype.

    Two kernels: ``_bwd_ds_kernel`` recomputes the scores once and stores ds (B, Tq, Tk)
    fp32 (and writes dv), ``_bwd_dqdk_kernel`` sweeps the stored ds once for dq, dk and the
    dweight partials. Deterministic: no float atomics, fixed-order reductions."""
    batch, tq, h = query.shape
    tk, dv = key.shape[1], value.shape[2]
    dtype, dev = query.dtype, query.device
    f32 = torch.float32
    if batch == 0 or tq == 0 or tk == 0:
        return (torch.zeros(batch, tq, h, dtype=dtype, device=dev),
                torch.zeros(batch, tk, h, dtype=dtype, device=dev),
                torch.zeros(batch, tk, dv, dtype=dtype, device=dev),
                torch.zeros(h, dtype=dtype, device=dev))
    has_mask, has_lens = key_padding_mask is not None, key_lengths is not None
    has_gw = grad_weights is not None
    fast = _fast_tanh(query, fast_tanh)
    plan = (_bwd_plan_cached if _concrete(batch, tq, tk, h, dv) else _bwd_plan)(
        batch, tq, tk, h, dv, dtype, dev, has_mask, has_lens, has_gw, bool(causal), fast)
    lse = lse.contiguous()
    delta = delta.to(f32).contiguous()
    mask, lens, smb, smt = _mask_args(key_padding_mask, key_lengths)
    sg = grad_weights.stride() if grad_weights is not None else (0, 0, 0)
    ds = torch.empty(batch, tq, tk, dtype=f32, device=dev)  # B*Tq*Tk, never B*Tq*Tk*H
    d_v = torch.empty(batch, tk, dv, dtype=dtype, device=dev)
    d_q = torch.empty(batch, tq, h, dtype=dtype, device=dev)
    dk32 = torch.empty(batch, tk, h, dtype=f32, device=dev)
    dwp = torch.empty(batch, h, dtype=f32, device=dev)
    mask, lens, gw = _traced_ptrs(query, mask, lens, grad_weights)
    _launch(_bwd_ds_kernel, plan.grid_ds,
            query, key, value, weight, mask, lens, gw, grad_out, lse, delta, ds, d_v,
            tq, tk, h, dv, *query.stride(), *key.stride(), *value.stride(), weight.stride(0),
            smb, smt, *sg, *grad_out.stride(), **plan.meta_ds)
    _launch(_bwd_dqdk_kernel, plan.grid_dqdk,
            query, key, weight, lens, ds, d_q, dk32, dwp,
            tq, tk, h, *query.stride(), *key.stride(), weight.stride(0), **plan.meta_dqdk)
    # Fixed-order reduction of the per-batch-row dweight partials.
    d_w = dwp.sum(dim=0)
    return d_q, dk32.to(dtype), d_v, d_w.to(dtype)


# ------------------------------------------------- fused energies: host side

def scores_config(tq: int, tk: int, h: int, interpret: bool = False) -> Config:
    """Tile of ``_scores_fwd_kernel``: the forward's score tile (fwd_config with no value
    columns: ``(1, 128, 32)`` at Tq = 1, the rational tanh; ``(32, 32, 8)`` / ``(64, 32, 8)``
    with 8 warps from Tq = 9, the factorised tanh). No P @ V, so fewer registers than the
    attention's forward at the same tile."""
    return fwd_config(tq, tk, h, 1, interpret)


def scores_ds_config(interpret: bool = False) -> Config:
    """Tile of ``_scores_ds_kernel`` (elementwise: a select and a cast per (i, j))."""
    return Config(16, 16, 0, 4, 1) if interpret else Config(32, 64, 0, 4, 1)


def scores_dqdk_config(tq: int, tk: int, h: int, interpret: bool = False) -> Config:
    """Tile of the scores backward's ``_bwd_dqdk_kernel``: the attention's pass 2 tile
    (dqdk_config: 16 query rows x 4 keys per thread and h column), but for Tq <= 8 (decoder
    steps) ``BLOCK_M = next_pow2(Tq)`` rows x ``32 / BLOCK_M`` keys: at Tq = 1 the 16-row
    tile is 1/16 useful (kernel_report: 150 SASS per element at DECODE, 36 with this tile,
    no spills; 64 keys would spill)."""
    if interpret:
        return _interpret_config(tq, tk, h)
    if tq <= 8:
        bm = _np2(tq)
        return Config(bm, 32 // bm, 32, 1, 1)
    return dqdk_config(Config(0, 0, 0, 1, 1), h)


class _ScoresPlan(NamedTuple):
    grid: tuple[int, int, int]
    meta: dict[str, Any]


class _ScoresBwdPlan(NamedTuple):
    grid_ds: tuple[int, int, int]
    grid_dqdk: tuple[int, int]
    meta_ds: dict[str, Any]
    meta_dqdk: dict[str, Any]


def _scores_plan(batch: int, tq: int, tk: int, h: int, dev: torch.device, has_mask: bool,
                 has_lens: bool, causal: bool, fast: bool) -> _ScoresPlan:
    cfg = scores_config(tq, tk, h, dev.type == "cpu")
    meta = dict(HAS_MASK=has_mask, HAS_LENS=has_lens, CAUSAL=causal, BLOCK_M=cfg.block_m,
                BLOCK_N=cfg.block_n, BLOCK_H=cfg.block_h, FAST_TANH=fast,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return _ScoresPlan((triton.cdiv(tk, cfg.block_n), triton.cdiv(tq, cfg.block_m), batch),
                       meta)


_scores_plan_cached = functools.lru_cache(maxsize=PLAN_CACHE_SIZE)(_scores_plan)


def _scores_bwd_plan(batch: int, tq: int, tk: int, h: int, dev: torch.device,
                     has_mask: bool, has_lens: bool, causal: bool,
                     fast: bool) -> _ScoresBwdPlan:
    interp = dev.type == "cpu"
    cfg = scores_ds_config(interp)
    cfg2 = scores_dqdk_config(tq, tk, h, interp)
    meta_ds = dict(HAS_MASK=has_mask, HAS_LENS=has_lens, CAUSAL=causal,
                   BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                   num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    meta_dqdk = dict(HAS_LENS=has_lens, CAUSAL=causal, BLOCK_M=cfg2.block_m,
                     BLOCK_N=cfg2.block_n, BLOCK_H=cfg2.block_h, FAST_TANH=fast,
                     num_warps=cfg2.num_warps, num_stages=cfg2.num_stages)
    return _ScoresBwdPlan(
        (triton.cdiv(tk, cfg.block_n), triton.cdiv(tq, cfg.block_m), batch),
        (triton.cdiv(h, cfg2.block_h), batch), meta_ds, meta_dqdk)


_scores_bwd_plan_cached = functools.lru_cache(maxsize=PLAN_CACHE_SIZE)(_scores_bwd_plan)


def _rows(query: Tensor) -> tuple[int, int, int, int, int]:
    """(B, Tq, H, stride of b, stride of i) of a (B, Tq, H) query, or of a 2-D (B, H) step
    query as Tq = 1 (no unsqueeze: the kernels index rows b * Tq + i)."""
    if query.dim() == 2:
        return query.shape[0], 1, query.shape[1], query.stride(0), 0
    return (query.shape[0], query.shape[1], query.shape[2], query.stride(0),
            query.stride(1))


def scores_fwd(
    query: Tensor,
    key: Tensor,
    weight: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    *,
    fast_tanh: bool | None = None,
) -> Tensor:
    """attnkern::scores on Triton: query (B, Tq, H) or (B, H), key (B, Tk, H), weight (H,)
    -> energies (B, Tq, Tk) (or (B, Tk)), contiguous, in the input dtype, ``-inf`` where a
    key is masked. One launch (``_scores_fwd_kernel``); nothing of size B*Tq*Tk*H."""
    batch, tq, h, sqb, sqt = _rows(query)
    tk = key.shape[1]
    dtype, dev = query.dtype, query.device
    out = torch.empty(*query.shape[:-1], tk, dtype=dtype, device=dev)
    if batch == 0 or tq == 0 or tk == 0:
        return out
    has_mask, has_lens = key_padding_mask is not None, key_lengths is not None
    fast = _fast_tanh(query, fast_tanh)
    plan = (_scores_plan_cached if _concrete(batch, tq, tk, h) else _scores_plan)(
        batch, tq, tk, h, dev, has_mask, has_lens, bool(causal), fast)
    mask, lens, smb, smt = _mask_args(key_padding_mask, key_lengths)
    mask, lens = _traced_ptrs(query, mask, lens)
    _launch(_scores_fwd_kernel, plan.grid,
            query, key, weight, mask, lens, out, tq, tk, h,
            sqb, sqt, query.stride(-1), *key.stride(), weight.stride(0), smb, smt,
            **plan.meta)
    return out


def scores_bwd(
    grad: Tensor,
    query: Tensor,
    key: Tensor,
    weight: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    *,
    fast_tanh: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """attnkern::scores_backward on Triton: grad (B, Tq, Tk) (or (B, Tk) with a 2-D query)
    -> (grad_query in query's shape, grad_key (B, Tk, H), grad_weight (H,)), contiguous,
    in the input dtype; zero gradient from masked entries.

    Two kernels: ``_scores_ds_kernel`` selects grad where usable into ds (B, Tq, Tk) fp32,
    then the attention's ``_bwd_dqdk_kernel`` sweeps ds once for dq, dk and the dweight
    partials, recomputing tanh (nothing of size B*Tq*Tk*H); the partials are summed in a
    fixed order. Deterministic: no atomics."""
    batch, tq, h, sqb, sqt = _rows(query)
    tk = key.shape[1]
    dtype, dev = query.dtype, query.device
    f32 = torch.float32
    if batch == 0 or tq == 0 or tk == 0:
        return (torch.zeros(query.shape, dtype=dtype, device=dev),
                torch.zeros(batch, tk, h, dtype=dtype, device=dev),
                torch.zeros(h, dtype=dtype, device=dev))
    has_mask, has_lens = key_padding_mask is not None, key_lengths is not None
    fast = _fast_tanh(query, fast_tanh)
    plan = (_scores_bwd_plan_cached if _concrete(batch, tq, tk, h) else _scores_bwd_plan)(
        batch, tq, tk, h, dev, has_mask, has_lens, bool(causal), fast)
    mask, lens, smb, smt = _mask_args(key_padding_mask, key_lengths)
    sgb, sgt, sgk = ((grad.stride(0), 0, grad.stride(1)) if grad.dim() == 2
                     else grad.stride())
    ds = torch.empty(batch, tq, tk, dtype=f32, device=dev)  # B*Tq*Tk, never B*Tq*Tk*H
    d_q = torch.empty(query.shape, dtype=dtype, device=dev)
    dk32 = torch.empty(batch, tk, h, dtype=f32, device=dev)
    dwp = torch.empty(batch, h, dtype=f32, device=dev)
    mask, lens = _traced_ptrs(query, mask, lens)
    _launch(_scores_ds_kernel, plan.grid_ds,
            grad, mask, lens, ds, tq, tk, sgb, sgt, sgk, smb, smt, **plan.meta_ds)
    _launch(_bwd_dqdk_kernel, plan.grid_dqdk,
            query, key, weight, lens, ds, d_q, dk32, dwp,
            tq, tk, h, sqb, sqt, query.stride(-1), *key.stride(), weight.stride(0),
            **plan.meta_dqdk)
    d_w = dwp.sum(dim=0)  # fixed-order reduction of the per-batch-row partials
    return d_q, dk32.to(dtype), d_w.to(dtype)
