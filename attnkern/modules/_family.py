"""Pieces the attention family shares (forward attention, Coqui, monotonic).

Raw additive energies ``e = v . tanh(q + k)`` without a softmax (sigmoid normalisation,
monotonic attention) are the fused :func:`attnkern.additive_scores`. Where the softmax of
the energies is what is needed, the modules call the fused :func:`attnkern.additive_attention`
instead (:func:`softmax_weights` when only the weights are used).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..functional import PreparedKeys, additive_attention, get_backend
from ..state import eager as _eager
from ..state import hooks_free, record, record_linear, usable, weight_grad_store

__all__ = ["attention_with_store", "context_of", "fold_location_filter", "location_attention",
           "inference_linear", "location_term", "project_query", "query_store",
           "softmax_weights"]

def _stored(memory: Tensor, token: Tensor | None, value_of: Tensor | None) -> bool:
    return (token is not None and memory is value_of and torch.is_grad_enabled()
            and _eager())


def context_of(weights: Tensor, memory: Tensor, token: Tensor | None = None,
               value_of: Tensor | None = None) -> Tensor:
    """``sum_j weights[b, j] memory[b, j]``: weights ``(B, T)``, memory ``(B, T, D)`` ->
    ``(B, D)``; through the weight-gradient store ``token`` (made by
    :func:`attnkern.state.weight_grad_store` for the tensor ``value_of``) when ``memory`` is
    that tensor."""
    if not _stored(memory, token, value_of):
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
    y = torch.bmm(weights.unsqueeze(1), memory.detach()).squeeze(1)
    return record(token, y, weights)  # type: ignore[arg-type]


class _LinearNorm(nn.Module):
    """tacotron2's ``LinearNorm``: an ``nn.Linear`` (as ``.linear_layer``), Xavier init."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True,
                 w_init_gain: Literal["linear", "tanh"] = "linear") -> None:
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
        nn.init.xavier_uniform_(self.linear_layer.weight,
                                gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_layer(x)


def _plain_linear(layer: nn.Module) -> nn.Linear | None:
    """The ``nn.Linear`` a query layer computes with (the layer itself, or a wrapper's
    ``.linear_layer``: tacotron2's / Coqui's ``LinearNorm``), hooks-free; else None (call
    the layer)."""
    inner = layer.linear_layer if hasattr(layer, "linear_layer") else layer
    if type(inner) is not nn.Linear or not hooks_free(layer):
        return None
    if inner is not layer and type(layer) is not _LinearNorm:
        return None  # a wrapper whose forward may do more than its linear layer
    return inner


def query_store(layer: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """For a new state: ``(store, weight)``, the query layer's weight-gradient store
    (:func:`attnkern.state.weight_grad_store`) and the weight it was made for, or
    ``(None, None)`` where a store does not apply (grad mode off, hooks on the layer, not
    eager, ...)."""
    inner = _plain_linear(layer)
    if inner is None:
        return None, None
    token = weight_grad_store(inner.weight, linear=True)
    return (token, inner.weight) if token is not None else (None, None)


def project_query(layer: nn.Module, x: Tensor, token: Tensor | None,
                  token_of: Tensor | None) -> Tensor:
    """``layer(x)`` for a decoder step's query ``(B, in)`` -> ``(B, out)``, its weight's
    gradient through the store ``token`` (made by :func:`query_store` for ``token_of``)
    when that applies: one GEMM for the whole utterance at backward instead of a
    ``(out, in)`` GEMM and a ``(out, in)`` add into ``.grad`` at every step (ESPnet's 1024 ->
    512 query layer: 0.5 ms a step at B4). The weight is read as it is now."""
    if usable(token):
        inner = _plain_linear(layer)
        if inner is None or inner.weight is not token_of:
            return layer(x)  # type: ignore[no-any-return]
        w = inner.weight
        y = record_linear(token, x, w, w.detach().t())  # type: ignore[arg-type]
        return y if inner.bias is None else y + inner.bias
    return inference_linear(layer, x)


def inference_linear(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)``; an inference step's few rows on CPU (nothing to differentiate, eager,
    float32/float64, a plain hooks-free ``nn.Linear``) by ``attnkern::rows_linear``: x
    ``(B, in)`` -> ``(B, out)``."""
    if not (ops.HAS_CPP and x.is_cpu and x.dim() == 2 and x.dtype in _FUSED_DTYPES
            and _eager()):
        return layer(x)  # type: ignore[no-any-return]
    inner = _plain_linear(layer)
    if inner is None:
        return layer(x)  # type: ignore[no-any-return]
    w, b = inner.weight, inner.bias
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                    or (b is not None and b.requires_grad)):
        return layer(x)  # type: ignore[no-any-return]
    if w.dtype != x.dtype or w.device != x.device:
        return layer(x)  # type: ignore[no-any-return]
    y: Tensor = ops.rows_linear(x, w)
    return y if b is None else y + b


def attention_with_store(query: Tensor, key: Tensor | PreparedKeys, memory: Tensor,
                         weight: Tensor, key_padding_mask: Tensor | None, backend: str,
                         token: Tensor | None, value_of: Tensor | None, *,
                         key_lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The fused op's ``(context, weights)`` with ``memory`` as the values, their gradient
    through the store ``token`` when it applies (made for ``value_of``: the op then skips
    its value pass)."""
    stored = _stored(memory, token, value_of)
    context, weights = additive_attention(
        query, key, memory.detach() if stored else memory, weight,
        key_padding_mask=key_padding_mask, key_lengths=key_lengths, return_weights=True,
        backend=backend)
    if stored:
        context = record(token, context, weights)  # type: ignore[arg-type]
    return context, weights


def beam_groups(rows: Tensor | None, batch: int) -> int:
    """Hypotheses per source row when ``rows`` (hypothesis -> source row, ``(N,)``; None:
    the identity) is the grouped beam layout ``rows[i] = i // g`` with ``N = batch * g``
    (what a beam search's reorders keep: each hypothesis picks among its own source's);
    0 for any other selection, and where the check cannot run (compile, export, a CUDA
    graph capture: it reads ``rows``)."""
    if rows is None:
        return 1
    n = rows.shape[0]
    if batch == 0 or n == 0 or n % batch or not _eager():
        return 0
    if rows.is_cuda and torch.cuda.is_current_stream_capturing():
        return 0
    g = n // batch
    grouped = torch.arange(batch, device=rows.device).repeat_interleave(g)
    return g if torch.equal(rows, grouped) else 0


def attend_rows(query: Tensor, key: Tensor | PreparedKeys, value: Tensor, weight: Tensor,
                rows: Tensor | None, *, key_padding_mask: Tensor | None = None,
                key_lengths: Tensor | None = None, backend: str = "auto"
                ) -> tuple[Tensor, Tensor]:
    """The fused op's ``(context (N, Dv), weights (N, Tk))`` for ``N`` hypotheses whose key
    side (key ``(B, Tk, H)`` or its prepared form, value ``(B, Tk, Dv)``, the mask and
    lengths) stays at the ``B`` source rows, ``rows`` ``(N,)`` mapping each hypothesis to
    its row (None: ``N = B``, the identity). query ``(N, H)``.

    Grouped (``rows[i] = i // g``, a beam search's layout): one call with the ``g``
    hypotheses of a source as ``g`` query rows of its keys, which the kernel reads once for
    all of them (no per-beam copy, and the key-side work shared). Any other selection
    gathers the key side per hypothesis (a copy; correct for every index)."""
    batch = value.shape[0]
    if rows is not None and rows.shape[0] != query.shape[0]:
        raise ValueError(f"query has {query.shape[0]} rows, the state has {rows.shape[0]} "
                         "hypotheses (state.rows)")
    g = beam_groups(rows, batch) if query.dim() == 2 else 0
    if rows is None or g == 1 and query.shape[0] == batch:
        context, weights = additive_attention(
            query, key, value, weight, key_padding_mask=key_padding_mask,
            key_lengths=key_lengths, return_weights=True, backend=backend)
        return context, weights
    n = query.shape[0]
    if g:
        context, weights = additive_attention(
            query.reshape(batch, g, query.shape[-1]), key, value, weight,
            key_padding_mask=key_padding_mask, key_lengths=key_lengths, return_weights=True,
            backend=backend)
        return context.reshape(n, -1), weights.reshape(n, -1)

    def pick(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.index_select(0, rows.to(t.device))

    if isinstance(key, PreparedKeys):
        key = PreparedKeys(pick(key.key), pick(key.key_exp))  # type: ignore[arg-type]
    else:
        key = pick(key)  # type: ignore[assignment]
    context, weights = additive_attention(
        query, key, pick(value), weight,  # type: ignore[arg-type]
        key_padding_mask=pick(key_padding_mask), key_lengths=pick(key_lengths),
        return_weights=True, backend=backend)
    return context, weights


def softmax_weights(query: Tensor, key: Tensor, weight: Tensor,
                    key_padding_mask: Tensor | None, backend: str = "auto") -> Tensor:
    """``softmax_j(v . tanh(q + k_j))`` over the unmasked keys, from the fused op (a
    zero-width value: no context is computed). query ``(B, H)``, key ``(B, Tk, H)`` ->
    ``(B, Tk)``; zeros where masked (and for a row with no usable key)."""
    empty = key.new_empty(key.shape[0], key.shape[1], 0)
    _, weights = additive_attention(query, key, empty, weight, key_padding_mask=key_padding_mask,
                                    return_weights=True, backend=backend)
    return weights


def fold_location_filter(conv_weight: Tensor, dense_weight: Tensor) -> Tensor:
    """A bias-free ``Conv1d(C, F, kernel)`` followed by a bias-free ``Linear(F, A)`` as one
    linear map of each ``(C, taps)`` window: ``U = dense @ conv`` ``(A, C * taps)``, each
    channel's taps zero-padded so that ``C * taps`` is a multiple of 16 (GEMM-friendly).

    conv_weight ``(F, C, kernel)``; dense_weight ``(A, F)``.
    """
    n_filters, channels, kernel = conv_weight.shape
    taps = next(t for t in range(kernel, kernel + 16) if channels * t % 16 == 0)
    conv = F.pad(conv_weight, (0, taps - kernel)).reshape(n_filters, channels * taps)
    return dense_weight @ conv


def location_term(base: Tensor, x: Tensor, filt: Tensor, kernel: int, pad: int,
                  key_padding_mask: Tensor | None = None,
                  key_lengths: Tensor | None = None) -> Tensor:
    """``base + dense(conv(x))`` as one GEMM: base ``(B, T, A)``; x ``(B, C, T)`` (the
    location features' input); filt ``(A, C * taps)`` from :func:`fold_location_filter`
    (the convolution has ``kernel`` taps and ``pad`` zeros each side, stride 1, output
    length T). Returns ``(B, T, A)``.

    With ``key_padding_mask`` / ``key_lengths`` (those of the attention that reads the
    keys), the rows past each batch's last usable key may be left as ``base`` (on CPU, in
    eager mode, the C++ op ``attnkern::location_keys`` skips them, forward and backward):
    pass them only where nothing but that attention reads the keys."""
    batch, channels, steps = x.shape
    attention_dim = filt.shape[0]
    taps = filt.shape[1] // channels
    if x.is_cpu and ops.HAS_CPP and _eager():
        keys: Tensor = ops.location_keys(base, x, filt, key_padding_mask, key_lengths, kernel,
                                         pad)  # one C++ op (and backward)
        return keys
    windows = F.pad(x, (pad, pad)).unfold(2, kernel, 1)  # (B, C, T, kernel)
    windows = F.pad(windows.permute(0, 2, 1, 3), (0, taps - kernel))
    windows = windows.reshape(batch * steps, channels * taps)
    out = torch.addmm(base.reshape(batch * steps, attention_dim), windows, filt.t())
    return out.view(batch, steps, attention_dim)


_FUSED_DTYPES = (torch.float32, torch.float64)


def _plain_masks(key_padding_mask: Tensor | None, key_lengths: Tensor | None) -> bool:
    """A bool mask and int64 lengths (or None): what the C++ location ops take as they are."""
    return ((key_padding_mask is None or key_padding_mask.dtype == torch.bool)
            and (key_lengths is None or key_lengths.dtype == torch.int64))


def _inference_step_op(backend: str, query: Tensor, tensors: tuple[Tensor, ...],
                       key_padding_mask: Tensor | None, key_lengths: Tensor | None) -> bool:
    """Whether a location step may be ``attnkern::location_attention``: eager, CPU, the C++
    backend, float32/float64, nothing to differentiate, plain bool mask / int64 lengths."""
    if not (ops.HAS_CPP and query.is_cpu and query.dtype in _FUSED_DTYPES and _eager()):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if not _plain_masks(key_padding_mask, key_lengths):
        return False
    return (get_backend() if backend == "auto" else backend) in ("auto", "cpp")


def location_attention(query: Tensor, base: Tensor, x: Tensor, filt: Tensor, kernel: int,
                       pad: int, memory: Tensor, weight: Tensor, *,
                       key_padding_mask: Tensor | None = None,
                       key_lengths: Tensor | None = None, backend: str = "auto",
                       token: Tensor | None = None,
                       value_of: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One step of softmax additive attention on the keys ``base + dense(conv(x))``
    (:func:`location_term`'s arguments): query ``(B, A)``, memory ``(B, T, Dv)`` (the
    values), weight ``(A,)`` or ``(1, A)`` -> ``(context (B, Dv), weights (B, T))``.

    An inference step on CPU (grad mode off or nothing that requires grad, eager, float32 /
    float64, the C++ backend) is one C++ op, ``attnkern::location_attention``: the windows,
    the location GEMM and the fused forward, with the step's keys in per-thread scratch
    instead of new tensors. Otherwise :func:`location_term`, then
    :func:`attention_with_store` (``token`` / ``value_of``: memory's weight-gradient store).
    """
    if _inference_step_op(backend, query, (query, base, x, filt, memory, weight),
                          key_padding_mask, key_lengths):
        context: Tensor
        weights: Tensor
        context, weights = ops.location_attention(
            query, base, x, filt, memory, weight.view(-1), key_padding_mask, key_lengths,
            kernel, pad)
        return context, weights
    plain = _plain_masks(key_padding_mask, key_lengths)
    keys = location_term(base, x, filt, kernel, pad, *((key_padding_mask, key_lengths) if plain
                                                       else (None, None)))
    return attention_with_store(query, keys, memory, weight, key_padding_mask, backend, token,
                                value_of, key_lengths=key_lengths)


def lengths_mask(lengths: object, batch: int, steps: int, device: torch.device) -> Tensor:
    """``(B, T)`` bool, True at padding (``j >= lengths[b]``), from a list or tensor of
    lengths."""
    lens = torch.as_tensor(lengths, device=device)
    if lens.dim() != 1 or lens.shape[0] != batch or lens.is_floating_point():
        raise ValueError(
            f"lengths must be {batch} integers (one per batch item), got "
            f"{tuple(lens.shape)} {lens.dtype}")
    return torch.arange(steps, device=device)[None, :] >= lens[:, None]
