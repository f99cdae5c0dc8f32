"""Plain-PyTorch reference of additive attention: the spec and the test oracle.

Written for clarity, not speed: it materialises the ``[B, Tq, Tk, H]`` tanh tensor that the
fused kernels never build. Every backend is tested against this file.

    e[b,i,j]   = sum_h weight[h] * tanh(query[b,i,h] + key[b,j,h])
    alpha[b,i] = softmax_j(e[b,i,:]) over the keys that are not masked
    out[b,i]   = sum_j alpha[b,i,j] * value[b,j,:]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["additive_attention", "additive_scores", "valid_keys", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def valid_keys(
    batch: int,
    tq: int,
    tk: int,
    *,
    key_padding_mask: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean ``(B, Tq, Tk)`` tensor, True where query i may attend to key j.

    A key is used only if every mask allows it: ``key_padding_mask[b, j]`` is False,
    ``j < key_lengths[b]``, and with ``causal`` ``j <= i + (Tk - Tq)``.
    """
    valid = torch.ones(batch, tq, tk, dtype=torch.bool, device=device)
    if key_padding_mask is not None:
        valid = valid & ~key_padding_mask.to(device=device, dtype=torch.bool)[:, None, :]
    if key_lengths is not None:
        j = torch.arange(tk, device=device)
        valid = valid & (j[None, :] < key_lengths.to(device)[:, None])[:, None, :]
    if causal:
        i = torch.arange(tq, device=device)[:, None]
        j = torch.arange(tk, device=device)[None, :]
        valid = valid & (j <= i + (tk - tq))[None]
    return valid


def additive_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference additive attention (same semantics as :func:`attnkern.additive_attention`).

    Args:
        query: ``(B, Tq, H)``, or ``(B, H)`` for one decoder step.
        key: ``(B, Tk, H)``.
        value: ``(B, Tk, Dv)``.
        weight: ``(H,)``, the score vector ``v``.
        key_padding_mask: ``(B, Tk)`` bool, True marks padding (ignored keys).
        key_lengths: ``(B,)`` integers; keys ``j >= key_lengths[b]`` are ignored.
        causal: query ``i`` sees keys ``j <= i + (Tk - Tq)``.
        return_weights: also return the attention weights.

    Returns:
        context ``(B, Tq, Dv)`` (``(B, Dv)`` for a 2-D query) in the input dtype, and with
        ``return_weights`` the weights ``(B, Tq, Tk)`` (``(B, Tk)``). Rows with no usable key
        give zero context and zero weights, with finite (zero) gradients.

    Inputs are not validated here; :func:`attnkern.additive_attention` does that.

    Written in standard ops only, with no data-dependent branch, so that it also is the
    export form of the op: while ``torch.onnx.export`` traces a model,
    :func:`attnkern.additive_attention` computes with this function (both exporters
    translate it). Hence two choices of form: masked scores are filled with the dtype's most
    negative finite value before the softmax (exp of it is exactly 0, and a row of them gives
    finite values that the mask then zeroes: no inf - inf, no NaN), and the context is one
    matmul over values whose padded rows are zeroed, or with ``causal`` (keys hidden from
    some queries only) a masked sum over a ``(B, Tq, Tk, Dv)`` product, so that no hidden
    value (NaN padding) is ever read, forward or backward.
    """
    step = query.dim() == 2
    if step:
        query = query.unsqueeze(1)
    in_dtype = query.dtype
    acc = compute_dtype(in_dtype)
    q, k, v, w = (t.to(acc) for t in (query, key, value, weight))

    scores = (torch.tanh(q[:, :, None, :] + k[:, None, :, :]) * w).sum(-1)  # (B, Tq, Tk)
    key_ok, valid = _usable_keys(q.shape[1], k.shape[1], key_padding_mask, key_lengths,
                                 causal, q.device)
    if valid is None:
        alpha = torch.softmax(scores, dim=-1)
    else:
        alpha = torch.softmax(torch.where(valid, scores, torch.finfo(acc).min), dim=-1)
        alpha = torch.where(valid, alpha, 0.0)  # a row with no usable key: zeros
    if causal:
        # Keys hidden from some queries only: mask per query so that their values are never
        # read, at (B, Tq, Tk, Dv) memory like the tanh tensor's.
        assert valid is not None
        out = torch.where(valid[..., None], alpha[..., None] * v[:, None], 0.0).sum(2)
    else:
        if key_ok is not None:
            v = torch.where(key_ok[:, :, None], v, 0.0)  # padding values are never read
        out = torch.matmul(alpha, v)
    out, alpha = out.to(in_dtype), alpha.to(in_dtype)
    if step:
        out, alpha = out.squeeze(1), alpha.squeeze(1)
    return (out, alpha) if return_weights else out


def additive_scores(
    query: Tensor,
    key: Tensor,
    weight: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """Reference energies ``e[b,i,j] = sum_h weight[h] * tanh(query[b,i,h] + key[b,j,h])``
    (same semantics as :func:`attnkern.additive_scores`): ``(B, Tq, Tk)``, ``(B, Tk)`` for a
    2-D query, in the input dtype; ``-inf`` where a key is masked (no gradient there).
    Inputs are not validated here."""
    step = query.dim() == 2
    if step:
        query = query.unsqueeze(1)
    acc = compute_dtype(query.dtype)
    q, k, w = (t.to(acc) for t in (query, key, weight))
    scores = (torch.tanh(q[:, :, None, :] + k[:, None, :, :]) * w).sum(-1)
    _, valid = _usable_keys(q.shape[1], k.shape[1], key_padding_mask, key_lengths, causal,
                            q.device)
    if valid is not None:
        scores = torch.where(valid, scores, float("-inf"))
    scores = scores.to(query.dtype)
    return scores.squeeze(1) if step else scores


def _usable_keys(tq: int, tk: int, key_padding_mask: Tensor | None,
                 key_lengths: Tensor | None, causal: bool,
                 device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    """``(key_ok, valid)``: key_ok ``(B, Tk)`` bool (padding and lengths) or None; valid,
    broadcastable to ``(B, Tq, Tk)``, True where query i may use key j, or None where every
    key is usable. The same rule as :func:`valid_keys`, without materialising ``(B, Tq, Tk)``
    where no mask needs it."""
    key_ok = None
    if key_padding_mask is not None:
        key_ok = ~key_padding_mask
    if key_lengths is not None:
        in_length = torch.arange(tk, device=device)[None, :] < key_lengths[:, None]
        key_ok = in_length if key_ok is None else key_ok & in_length
    valid = None if key_ok is None else key_ok[:, None, :]
    if causal:
        i = torch.arange(tq, device=device)[:, None]
        j = torch.arange(tk, device=device)[None, :]
        seen = j <= i + (tk - tq)  # (Tq, Tk)
        valid = seen if valid is None else valid & seen
    return key_ok, valid
