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

__all__ = ["additive_attention", "valid_keys", "compute_dtype"]


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
    """
    step = query.dim() == 2
    if step:
        query = query.unsqueeze(1)
    in_dtype = query.dtype
    acc = compute_dtype(in_dtype)
    q, k, v, w = (t.to(acc) for t in (query, key, value, weight))
    batch, tq, _ = q.shape
    tk = k.shape[1]

    scores = (torch.tanh(q[:, :, None, :] + k[:, None, :, :]) * w).sum(-1)  # (B, Tq, Tk)
    valid = valid_keys(
        batch, tq, tk, key_padding_mask=key_padding_mask, key_lengths=key_lengths,
        causal=causal, device=q.device,
    )
    # Row max over usable keys only; rows with none get 0 so nothing below is inf or NaN.
    row_max = torch.where(valid, scores, float("-inf")).amax(-1, keepdim=True) if tk else \
        scores.new_zeros(batch, tq, 1)
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0).detach()
    # Masked entries are replaced by the max before exp, so they can neither overflow nor
    # leak a NaN gradient through torch.where.
    p = torch.where(valid, torch.exp(torch.where(valid, scores, row_max) - row_max), 0.0)
    denom = p.sum(-1, keepdim=True)
    alpha = p / torch.where(denom > 0, denom, 1.0)
    # Sum only over usable keys: a masked key's value is never read, forward or backward
    # (alpha @ value would form 0 * NaN for NaN padding).
    v_used = torch.where(valid[..., None], v[:, None], 0.0)  # (B, Tq, Tk, Dv)
    out = (alpha[..., None] * v_used).sum(2).to(in_dtype)
    alpha = alpha.to(in_dtype)
    if step:
        out, alpha = out.squeeze(1), alpha.squeeze(1)
    return (out, alpha) if return_weights else out
