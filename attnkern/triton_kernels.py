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
  (flash-decoding); each split writes a normalised partial context and its lse, and
  ``_combine_kernel`` merges them (a ``num_splits``-way logsumexp per row).
- Backward: ``_bwd_dkdv_kernel`` (program per key block: dk, dv and a per-block partial of
  dweight) and ``_bwd_dq_kernel`` (program per query block: dq). Both recompute the scores and
  ``p = exp(s - lse)`` from the saved lse. No atomics: every output element is owned by one
  program, and dweight's ``(B, key blocks, H)`` partials are summed by a second pass, so two
  runs are bitwise identical.
- NaN/Inf confinement: a masked key's value never reaches a row that cannot see it (the
  forward loads V with the padding and length validity as mask; the backward selects
  ``ds = 0``, not ``p * (...)``, where a key is unusable, since ``dO . v`` may be NaN).
  Under ``causal`` a visited tile may hold a key hidden from only some of its rows: its
  non-finite V entries are zeroed for ``P @ V`` and a row that may attend to such a key
  gets NaN in its whole output row (the reference: NaN/Inf in the affected columns only).

tanh: the default is a [13/6] minimax rational approximation (Eigen/XLA's float tanh) on
the input clamped to +-7.9053: about 15 FMA-pipe instructions and ONE MUFU op (the reciprocal
of the division); max abs error 3.4e-7 (<= 6 ulp) over all floats, see docs/triton.md.
Opt-in fast path: ``ATTNKERN_FAST_TANH=1`` (or ``fwd(..., fast_tanh=True)``) uses the PTX
``tanh.approx.f32`` (one MUFU.TANH, abs error ~5e-4); GPU only -- inline PTX cannot run in
the interpreter, where the flag is ignored.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra.cuda import libdevice

__all__ = ["fwd", "bwd", "fwd_config", "bwd_config", "num_splits"]

LOG2E = 1.4426950408889634
# Kernels are interpreted (numpy) iff TRITON_INTERPRET is set when this module is imported,
# as triton.jit decides at decoration time.
_COMPILED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))

# Tests (and users chasing a decode latency) may force the split-K factor of the forward.
FORCE_NUM_SPLITS: int | None = None


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
def _mma(a, b, IS_FP32: tl.constexpr):
    """a @ b on tensor cores with fp32 accumulation (a, b in the input dtype)."""
    if IS_FP32:
        return tl.dot(a, b, input_precision="ieee")  # tf32 would miss fp32 tolerances
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
def _scores(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh, swh,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
            FAST: tl.constexpr):
    """s[i, j] = sum_h w[h] tanh(q[i,h] + k[j,h]) for one (BLOCK_M, BLOCK_N) tile, fp32."""
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BLOCK_M == 1:
        # Decoder step: each key element is used once, so load K as (BLOCK_N, BLOCK_H) with
        # h contiguous (vector loads) against the one query row.
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
    Q, K, V, W, MASK, LENS, OUT, LSE, S, PO, PL,
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
    for start_n in range(lo, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        s = _scores(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh, swh,
                    BLOCK_M, BLOCK_N, BLOCK_H, FAST_TANH)
        if STORE_S:
            s_ptr = S + (b * Tq + offs_m)[:, None] * Tk + offs_n[None, :]
            tl.store(s_ptr, s, mask=m_ok[:, None] & n_ok[None, :])
        kv_ok = _key_ok(MASK, b, smb, smt, offs_n, end, HAS_MASK)
        ok = _rows_ok(kv_ok, offs_m, offs_n, Tq, Tk, CAUSAL)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with nothing usable yet keeps m = -inf; shift by 0 so exp2 sees -inf, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2((m_i - m_safe) * 1.4426950408889634)
        p = tl.exp2((s - m_safe[:, None]) * 1.4426950408889634)
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
    o = acc / l_safe[:, None]
    if CAUSAL:
        o = tl.where(bad[:, None] > 0, float("nan"), o)
    row = b * Tq + offs_m
    if SPLIT:
        base = split * nb * Tq
        tl.store(PO + (base + row)[:, None] * Dv + offs_d[None, :], o,
                 mask=m_ok[:, None] & d_ok[None, :])
        tl.store(PL + base + row, tl.where(has, m_i + tl.log(l_safe), float("-inf")), mask=m_ok)
    else:
        tl.store(OUT + row[:, None] * Dv + offs_d[None, :], o.to(OUT.dtype.element_ty),
                 mask=m_ok[:, None] & d_ok[None, :])
        tl.store(LSE + row, tl.where(has, m_i + tl.log(l_safe), float("inf")), mask=m_ok)


@triton.jit
def _combine_kernel(PO, PL, OUT, LSE, rows, Dv, n_splits,
                    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """Merge split-K partials: lse = logsumexp_s lse_s; out = sum_s exp(lse_s - lse) o_s."""
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = offs_r < rows
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < Dv
    lse_s = tl.load(PL + offs_s[:, None] * rows + offs_r[None, :],
                    mask=(offs_s < n_splits)[:, None] & r_ok[None, :], other=float("-inf"))
    mx = tl.max(lse_s, axis=0)
    mx_safe = tl.where(mx == float("-inf"), 0.0, mx)
    tot = tl.sum(tl.exp2((lse_s - mx_safe[None, :]) * 1.4426950408889634), axis=0)
    has = tot > 0.0
    lse = tl.where(has, mx_safe + tl.log(tl.where(has, tot, 1.0)), float("inf"))
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for s in range(0, n_splits):
        ls = tl.load(PL + s * rows + offs_r, mask=r_ok, other=float("-inf"))
        scale = tl.exp2((ls - lse) * 1.4426950408889634)  # 0 for empty splits / empty rows
        o = tl.load(PO + (s * rows + offs_r)[:, None] * Dv + offs_d[None, :],
                    mask=r_ok[:, None] & d_ok[None, :] & (scale > 0.0)[:, None], other=0.0)
        acc += scale[:, None] * o
    tl.store(OUT + offs_r[:, None] * Dv + offs_d[None, :], acc.to(OUT.dtype.element_ty),
             mask=r_ok[:, None] & d_ok[None, :])
    tl.store(LSE + offs_r, lse, mask=r_ok)


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
    wts = tl.where(ok, tl.exp2((s - lse[:, None]) * 1.4426950408889634), 0.0)
    tl.store(WTS + ptr, wts.to(WTS.dtype.element_ty), mask=io)


@triton.jit
def _probs(q_base, k_base, W, MASK, GW, LSE, DELTA, DO, V, b, offs_m, offs_n, m_ok, n_ok, hi,
           Tq, Tk, H, Dv, sqt, sqh, skt, skh, swh, smb, smt, sgb, sgt, sgk,
           sdb, sdt, sdd, svb, svt, svd,
           HAS_MASK: tl.constexpr, HAS_GW: tl.constexpr, CAUSAL: tl.constexpr,
           IS_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, FAST: tl.constexpr):
    """Recompute p = exp(s - lse) and ds = p * (dO.v + gW - delta) for one tile.

    Returns (p, ds, dO tile (BLOCK_M, BLOCK_D) in the input dtype).
    """
    s = _scores(q_base, k_base, W, offs_m, offs_n, m_ok, n_ok, H, sqt, sqh, skt, skh, swh,
                BLOCK_M, BLOCK_N, BLOCK_H, FAST)
    kv_ok = _key_ok(MASK, b, smb, smt, offs_n, hi, HAS_MASK)
    ok = _rows_ok(kv_ok, offs_m, offs_n, Tq, Tk, CAUSAL) & m_ok[:, None]
    lse = tl.load(LSE + b * Tq + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + b * Tq + offs_m, mask=m_ok, other=0.0)
    p = tl.where(ok, tl.exp2((s - lse[:, None]) * 1.4426950408889634), 0.0)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < Dv
    do = tl.load(DO + b * sdb + offs_m[:, None] * sdt + offs_d[None, :] * sdd,
                 mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(V + b * svb + offs_n[:, None] * svt + offs_d[None, :] * svd,
                mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    if BLOCK_M >= 16:
        dp = _mma(do, tl.trans(v), IS_FP32)
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
def _bwd_dq_kernel(
    Q, K, V, W, MASK, LENS, GW, DO, LSE, DELTA, DQ,
    Tq, Tk, H, Dv,
    sqb, sqt, sqh, skb, skt, skh, svb, svt, svd, swh, smb, smt, sgb, sgt, sgk, sdb, sdt, sdd,
    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, HAS_GW: tl.constexpr,
    CAUSAL: tl.constexpr, IS_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr, FAST_TANH: tl.constexpr,
):
    """dq[i,h] = w[h] sum_j ds[i,j] (1 - t[i,j,h]^2); DQ is a zeroed fp32 (B, Tq, H)."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < Tq
    hi = _key_end(LENS, b, Tq, Tk, (pid_m + 1) * BLOCK_M, HAS_LENS, CAUSAL)
    q_base = Q + b * sqb
    k_base = K + b * skb
    dq_base = DQ + b * Tq * H
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        p, ds, do = _probs(q_base, k_base, W, MASK, GW, LSE, DELTA, DO, V, b, offs_m, offs_n,
                           m_ok, n_ok, hi, Tq, Tk, H, Dv, sqt, sqh, skt, skh, swh, smb, smt,
                           sgb, sgt, sgk, sdb, sdt, sdd, svb, svt, svd,
                           HAS_MASK, HAS_GW, CAUSAL, IS_FP32,
                           BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_D, FAST_TANH)
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            h_ok = offs_h < H
            q, k, w = _chunk(q_base, k_base, W, offs_m, offs_n, offs_h, m_ok, n_ok, h_ok,
                             sqt, sqh, skt, skh, swh)
            t = _tanh(q[:, :, None] + k[:, None, :], FAST_TANH)  # (BLOCK_H, BLOCK_M, BLOCK_N)
            g = tl.sum(ds[None, :, :] * (1.0 - t * t), axis=2) * w[:, None]
            # This program owns these dq rows: a plain read-modify-write, no atomics.
            ptr = dq_base + offs_m[None, :] * H + offs_h[:, None]
            io = m_ok[None, :] & h_ok[:, None]
            tl.store(ptr, tl.load(ptr, mask=io, other=0.0) + g, mask=io)
        # Make this iteration's dq writes visible to whichever thread reads them next.
        tl.debug_barrier()


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, W, MASK, LENS, GW, DO, LSE, DELTA, DK, DV, DWP,
    Tq, Tk, H, Dv,
    sqb, sqt, sqh, skb, skt, skh, svb, svt, svd, swh, smb, smt, sgb, sgt, sgk, sdb, sdt, sdd,
    HAS_MASK: tl.constexpr, HAS_LENS: tl.constexpr, HAS_GW: tl.constexpr,
    CAUSAL: tl.constexpr, IS_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr, FAST_TANH: tl.constexpr,
):
    """For one key block: dv = p^T dO; dk[j,h] = w[h] sum_i ds (1 - t^2);
    DWP[b, block, h] = sum_ij ds t (partial dweight). DK and DWP are zeroed fp32."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    nblk = tl.num_programs(0)
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
    # A block wholly past key_lengths[b] computes nothing (its dk, dv, dweight stay 0).
    first = tl.where(pid_n * BLOCK_N >= hi, Tq, first)
    q_base = Q + b * sqb
    k_base = K + b * skb
    dk_base = DK + b * Tk * H
    dw_base = DWP + (b * nblk + pid_n) * H
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(first, Tq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < Tq
        p, ds, do = _probs(q_base, k_base, W, MASK, GW, LSE, DELTA, DO, V, b, offs_m, offs_n,
                           m_ok, n_ok, hi, Tq, Tk, H, Dv, sqt, sqh, skt, skh, swh, smb, smt,
                           sgb, sgt, sgk, sdb, sdt, sdd, svb, svt, svd,
                           HAS_MASK, HAS_GW, CAUSAL, IS_FP32,
                           BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_D, FAST_TANH)
        if BLOCK_M >= 16:
            dv += _mma(tl.trans(p.to(do.dtype)), do, IS_FP32)
        else:
            dv += tl.sum(p[:, :, None] * do.to(tl.float32)[:, None, :], axis=0)
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            h_ok = offs_h < H
            q, k, w = _chunk(q_base, k_base, W, offs_m, offs_n, offs_h, m_ok, n_ok, h_ok,
                             sqt, sqh, skt, skh, swh)
            t = _tanh(q[:, :, None] + k[:, None, :], FAST_TANH)  # (BLOCK_H, BLOCK_M, BLOCK_N)
            dst = ds[None, :, :] * t
            gk = tl.sum(ds[None, :, :] - dst * t, axis=1) * w[:, None]  # ds * (1 - t^2)
            gw = tl.sum(tl.sum(dst, axis=2), axis=1)
            ptr = dk_base + offs_n[None, :] * H + offs_h[:, None]
            io = (offs_n < Tk)[None, :] & h_ok[:, None]
            tl.store(ptr, tl.load(ptr, mask=io, other=0.0) + gk, mask=io)
            tl.store(dw_base + offs_h, tl.load(dw_base + offs_h, mask=h_ok, other=0.0) + gw,
                     mask=h_ok)
        tl.debug_barrier()
    tl.store(DV + (b * Tk + offs_n)[:, None] * Dv + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=(offs_n < Tk)[:, None] & d_ok[None, :])


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
    # Timings below: H100, GPU time from CUDA-graph replays (bench/gpu_tune.py, 2026-11-24).
    if tq >= 64 and dv <= 128:
        return Config(64, 32, 4, 8, 2)  # 149 regs on sm_90; LONG shape 0.49 ms, best tried
    if dv > 128 and tq < 128:
        return Config(16, 64, 4, 8, 2)  # TRAIN shape: 0.052 ms (was 0.093 with 32x32)
    if tq >= 32 or dv > 128:
        return Config(32, 32, 4, 8, 2)  # 97 regs; MEM shape 0.55 ms, best tried
    return Config(16, 32, 4, 4, 2)


def bwd_config(tq: int, tk: int, h: int, dv: int, interpret: bool = False) -> Config:
    """Backward tile (shared by the dq and the dk/dv kernels)."""
    if interpret:
        return _interpret_config(tq, tk, h)
    if tq <= 8:
        return _small_m_config(tq, dv, 8, 32, 16, 16, 64)._replace(num_stages=1)
    # H100 GPU times (dk/dv + dq, CUDA-graph replays, bench/gpu_tune.py): TRAIN 0.76 ms and
    # MEM 5.57 ms with 32x32 (were 0.92 / 7.32 with 16x32); LONG 4.87 ms with 32x64 (was 5.48).
    if dv > 128:
        return Config(32, 32, 4, 8, 1)
    if dv > 64:
        return Config(32, 64, 4, 8, 1)  # (32, 32, 8, 8) ran 4.72 ms but spills 8 B in dq
    return Config(32, 32, 2, 8, 1)


def num_splits(batch: int, m_blocks: int, tk: int, block_n: int, sm_count: int) -> int:
    """Split-K factor of the forward: split the keys when the grid would leave SMs idle."""
    n_kb = triton.cdiv(tk, block_n)
    force = FORCE_NUM_SPLITS
    env = os.environ.get("ATTNKERN_NUM_SPLITS", "").strip()
    if force is None and env:
        force = int(env)
    if force is not None:
        return max(1, min(int(force), n_kb))
    progs = batch * m_blocks
    if progs >= sm_count or n_kb < 4:
        return 1
    # at least two key blocks per split, about two waves of programs in all
    return max(1, min(n_kb // 2, triton.cdiv(2 * sm_count, progs), 32))


def _sm_count(t: Tensor) -> int:
    if t.device.type == "cuda":
        return torch.cuda.get_device_properties(t.device).multi_processor_count
    return 132  # interpreter: behave as an H100 would


def _fast_tanh(t: Tensor, fast_tanh: bool | None) -> bool:
    if _interpreting(t):
        return False  # inline PTX cannot run in the interpreter
    if fast_tanh is None:
        return os.environ.get("ATTNKERN_FAST_TANH", "0") not in ("", "0")
    return bool(fast_tanh)


def _launch(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    # wrap_triton makes the launch visible to torch.compile / make_fx; in eager mode (and on
    # CPU tensors under the interpreter) it launches the kernel directly.
    torch.library.wrap_triton(kernel)[grid](*args, **meta)


def _mask_args(query: Tensor, key_padding_mask: Tensor | None,
               key_lengths: Tensor | None) -> tuple[Tensor, Tensor, int, int]:
    if key_padding_mask is not None:
        mask = key_padding_mask.view(torch.uint8)
        smb, smt = mask.stride()
    else:
        mask, smb, smt = query, 0, 0
    # The kernels read key_lengths[b] at LENS + b: an expanded (stride 0) tensor must be
    # made contiguous. The mask is read through its own strides.
    lens = key_lengths.contiguous() if key_lengths is not None else query
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
) -> tuple[Tensor, Tensor, Tensor]:
    """attnkern::fwd on Triton: query (B,Tq,H), key (B,Tk,H), value (B,Tk,Dv), weight (H,)
    -> out (B,Tq,Dv) input dtype, lse (B,Tq) fp32 (+inf: no usable key), weights (B,Tq,Tk)
    if return_weights else (0,)."""
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

    interp = _interpreting(query)
    cfg = fwd_config(tq, tk, h, dv, interp)
    block_d = max(16, _np2(dv)) if cfg.block_m >= 16 else _np2(dv)
    m_blocks = triton.cdiv(tq, cfg.block_m)
    splits = num_splits(batch, m_blocks, tk, cfg.block_n, _sm_count(query))
    bps = triton.cdiv(triton.cdiv(tk, cfg.block_n), splits)
    splits = triton.cdiv(triton.cdiv(tk, cfg.block_n), bps)
    mask, lens, smb, smt = _mask_args(query, key_padding_mask, key_lengths)
    # Unused output pointers get their own placeholder, never an alias of a real output
    # (torch.compile functionalises the launch and must see distinct mutated buffers).
    def unused() -> Tensor:
        return torch.empty(1, dtype=torch.float32, device=dev)

    if return_weights:
        scores = (weights if dtype == torch.float32
                  else torch.empty(batch, tq, tk, dtype=torch.float32, device=dev))
    else:
        scores = unused()
    if splits > 1:
        p_out = torch.empty(splits, batch, tq, dv, dtype=torch.float32, device=dev)
        p_lse = torch.empty(splits, batch, tq, dtype=torch.float32, device=dev)
    else:
        p_out, p_lse = unused(), unused()
    _launch(
        _fwd_kernel, (m_blocks, batch, splits),
        query, key, value, weight, mask, lens, out, lse, scores, p_out, p_lse,
        tq, tk, h, dv, bps,
        *query.stride(), *key.stride(), *value.stride(), weight.stride(0), smb, smt,
        HAS_MASK=key_padding_mask is not None, HAS_LENS=key_lengths is not None,
        CAUSAL=bool(causal), STORE_S=bool(return_weights), SPLIT=splits > 1,
        IS_FP32=dtype == torch.float32,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_H=cfg.block_h, BLOCK_D=block_d,
        FAST_TANH=_fast_tanh(query, fast_tanh),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if splits > 1:
        rows = batch * tq
        block_r = 16
        _launch(_combine_kernel, (triton.cdiv(rows, block_r),),
                p_out, p_lse, out, lse, rows, dv, splits,
                BLOCK_R=block_r, BLOCK_D=_np2(dv), BLOCK_S=_np2(splits), num_warps=4)
    if return_weights:
        bm, bn = (16, 16) if interp else (32, 64)
        _launch(_weights_kernel, (triton.cdiv(tk, bn), triton.cdiv(tq, bm), batch),
                scores, lse, mask, lens, weights, tq, tk, smb, smt,
                HAS_MASK=key_padding_mask is not None, HAS_LENS=key_lengths is not None,
                CAUSAL=bool(causal), BLOCK_M=bm, BLOCK_N=bn, num_warps=4)
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
    """attnkern::bwd on Triton: recompute from lse; returns (dq, dk, dv, dweight), contiguous,
    input dtype. Deterministic: no atomics, dweight reduced from per-block partials."""
    batch, tq, h = query.shape
    tk, dv = key.shape[1], value.shape[2]
    dtype, dev = query.dtype, query.device
    f32 = torch.float32
    if batch == 0 or tq == 0 or tk == 0:
        return (torch.zeros(batch, tq, h, dtype=dtype, device=dev),
                torch.zeros(batch, tk, h, dtype=dtype, device=dev),
                torch.zeros(batch, tk, dv, dtype=dtype, device=dev),
                torch.zeros(h, dtype=dtype, device=dev))
    interp = _interpreting(query)
    cfg = bwd_config(tq, tk, h, dv, interp)
    block_d = max(16, _np2(dv)) if cfg.block_m >= 16 else _np2(dv)
    lse = lse.contiguous()
    delta = delta.to(f32).contiguous()
    mask, lens, smb, smt = _mask_args(query, key_padding_mask, key_lengths)
    gw = grad_weights if grad_weights is not None else lse
    sg = grad_weights.stride() if grad_weights is not None else (0, 0, 0)
    dq32 = torch.zeros(batch, tq, h, dtype=f32, device=dev)
    dk32 = torch.zeros(batch, tk, h, dtype=f32, device=dev)
    d_v = torch.empty(batch, tk, dv, dtype=dtype, device=dev)
    n_blocks = triton.cdiv(tk, cfg.block_n)
    dwp = torch.zeros(batch, n_blocks, h, dtype=f32, device=dev)
    common = (tq, tk, h, dv, *query.stride(), *key.stride(), *value.stride(), weight.stride(0),
              smb, smt, *sg, *grad_out.stride())
    meta = dict(
        HAS_MASK=key_padding_mask is not None, HAS_LENS=key_lengths is not None,
        HAS_GW=grad_weights is not None, CAUSAL=bool(causal), IS_FP32=dtype == f32,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_H=cfg.block_h, BLOCK_D=block_d,
        FAST_TANH=_fast_tanh(query, fast_tanh),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    _launch(_bwd_dkdv_kernel, (n_blocks, batch),
            query, key, value, weight, mask, lens, gw, grad_out, lse, delta, dk32, d_v, dwp,
            *common, **meta)
    _launch(_bwd_dq_kernel, (triton.cdiv(tq, cfg.block_m), batch),
            query, key, value, weight, mask, lens, gw, grad_out, lse, delta, dq32,
            *common, **meta)
    # Second, fixed-order reduction pass over the per-block dweight partials.
    d_w = dwp.sum(dim=(0, 1))
    return dq32.to(dtype), dk32.to(dtype), d_v, d_w.to(dtype)
