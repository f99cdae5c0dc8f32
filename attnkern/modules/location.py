"""``LocationSensitiveAttention``: a checkpoint-compatible drop-in for NVIDIA/tacotron2's
``model.Attention`` (Chorowski et al. 2015, as used by Tacotron 2).

Same constructor arguments, ``forward`` signature and return, ``memory_layer``, and
``state_dict`` keys and shapes (``query_layer.linear_layer.weight``,
``memory_layer.linear_layer.weight``, ``v.linear_layer.weight``,
``location_layer.location_conv.conv.weight``,
``location_layer.location_dense.linear_layer.weight``), so a tacotron2 checkpoint loads
with a strict ``load_state_dict``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .._steps import StepCache, StepOperand, TransposedWeight, _eager, forget_on_backward, plain
from .._validation import check_backend
from ..functional import additive_attention

__all__ = ["LocationSensitiveAttention"]


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


class _ConvNorm(nn.Module):
    """tacotron2's ``ConvNorm``: an ``nn.Conv1d`` (as ``.conv``), Xavier init."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 bias: bool, w_init_gain: Literal["linear", "tanh"] = "linear") -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size,
                              padding=padding, bias=bias)
        nn.init.xavier_uniform_(self.conv.weight, gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, signal: Tensor) -> Tensor:
        return self.conv(signal)


class _LocationLayer(nn.Module):
    """The location features ``dense(conv(attention_weights_cat))``: ``(B, 2, T) -> (B, T,
    attention_dim)``, both without bias (tacotron2's ``LocationLayer``)."""

    def __init__(self, attention_n_filters: int, attention_kernel_size: int,
                 attention_dim: int) -> None:
        super().__init__()
        self.location_conv = _ConvNorm(2, attention_n_filters, attention_kernel_size,
                                       padding=(attention_kernel_size - 1) // 2, bias=False)
        self.location_dense = _LinearNorm(attention_n_filters, attention_dim, bias=False,
                                          w_init_gain="tanh")

    def forward(self, attention_weights_cat: Tensor) -> Tensor:
        processed = self.location_conv(attention_weights_cat).transpose(1, 2)
        return self.location_dense(processed)


class LocationSensitiveAttention(nn.Module):
    """Location-sensitive additive attention, tacotron2's ``Attention`` on the fused op.

    ``e[b, j] = v . tanh(W_q h_b + W_m m_bj + U f_bj)`` with location features
    ``f = conv(attention_weights_cat)``, softmax over the unmasked encoder steps, context
    ``sum_j alpha_bj memory_bj``. The middle (tanh, score, softmax, context, and their
    backward) is one call of :func:`attnkern.additive_attention`: the query is
    ``W_q h`` and the keys ``processed_memory + U f`` (the location term changes every step,
    so there is no per-sequence preparation to reuse).

    Args:
        attention_rnn_dim: size of the attention RNN state (the query).
        embedding_dim: size of the encoder outputs (``memory``).
        attention_dim: size of the attention MLP.
        attention_location_n_filters: channels of the location convolution.
        attention_location_kernel_size: its (odd) kernel size.
        backend: passed to :func:`attnkern.additive_attention` (keyword only; an addition
            to tacotron2's arguments).

    Shapes (``forward``):
        attention_hidden_state ``(B, attention_rnn_dim)``; memory ``(B, T, embedding_dim)``;
        processed_memory ``(B, T, attention_dim)`` = ``self.memory_layer(memory)``, once per
        utterance; attention_weights_cat ``(B, 2, T)`` (previous and cumulative weights);
        mask ``(B, T)`` bool, True = padding, or None. Returns ``(attention_context (B,
        embedding_dim), attention_weights (B, T))``. A row whose steps are all masked gives
        zeros (tacotron2 gives NaN there).
    """

    def __init__(
        self,
        attention_rnn_dim: int,
        embedding_dim: int,
        attention_dim: int,
        attention_location_n_filters: int,
        attention_location_kernel_size: int,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.query_layer = _LinearNorm(attention_rnn_dim, attention_dim, bias=False,
                                       w_init_gain="tanh")
        self.memory_layer = _LinearNorm(embedding_dim, attention_dim, bias=False,
                                        w_init_gain="tanh")
        self.v = _LinearNorm(attention_dim, 1, bias=False)
        self.location_layer = _LocationLayer(attention_location_n_filters,
                                             attention_location_kernel_size, attention_dim)
        self.score_mask_value = -float("inf")  # tacotron2's attribute, kept for its users
        self.backend = check_backend(backend)
        # Step-invariant operands (one tensor for every step of an utterance): their
        # gradients are one GEMM per utterance instead of one per step (see _steps.py).
        self._memory = StepOperand()  # context = weights @ memory
        self._query_weight = StepOperand(linear=True)  # query = hidden @ W_q^T
        self._query_t = TransposedWeight()  # W_q^T, contiguous, for every step
        self._filter = StepCache()  # (conv, dense) -> U: see location_filter
        # The utterance (its memory) the two parameter caches above belong to: they
        # are rebuilt for each new one, so even a weight edited through .data (which no
        # version counter sees) is picked up from the next utterance on.
        self._utterance = StepCache()

    def location_filter(self) -> Tensor:
        """``U = dense.W @ conv.W`` ``(attention_dim, 2 * taps)``: the location layer as one
        linear map of each window (taps zero-padded, see :meth:`location_keys`).

        The same tensor is returned for as long as the parameters are unchanged and no
        backward pass has reached it, so an utterance's steps share one node (its
        gradient is summed there and goes to the two weights once).
        """
        conv = self.location_layer.location_conv.conv.weight  # (F, 2, kernel)
        dense = self.location_layer.location_dense.linear_layer.weight  # (A, F)
        eager = _eager()
        if eager:
            cached = self._filter.lookup((conv, dense), torch.is_grad_enabled())
            if cached is not None:
                return cached
        n_filters, channels, kernel = conv.shape
        # Each channel's taps padded with zeros to `taps` so that the GEMMs' inner size
        # channels * taps is a multiple of 16 (62 -> 64 for tacotron2's 2 x 31): the
        # backward's two GEMMs run about 25% faster at 64 than at 62 (MKL, AVX2).
        taps = next(t for t in range(kernel, kernel + 16) if channels * t % 16 == 0)
        conv_w = F.pad(conv, (0, taps - kernel)).reshape(n_filters, channels * taps)
        combined = dense @ conv_w  # (A, 2 * taps), zero at the padded taps
        if eager:
            # A backward pass through it frees its graph: the next step builds a new one.
            forget_on_backward(combined, self._filter)
            self._filter.store((conv, dense), combined, torch.is_grad_enabled())
        return combined

    def location_keys(self, processed_memory: Tensor, attention_weights_cat: Tensor) -> Tensor:
        """``processed_memory + location_dense(location_conv(attention_weights_cat))``.

        One GEMM: the (bias-free) convolution followed by the dense layer is a single
        linear map of each ``(2, kernel)`` window, :meth:`location_filter`, applied to the
        unfolded windows and added to ``processed_memory`` by ``addmm``.
        """
        conv = self.location_layer.location_conv.conv
        combined = self.location_filter()
        kernel = conv.weight.shape[2]
        pad = int(conv.padding[0])
        batch, channels, steps = attention_weights_cat.shape
        attention_dim = combined.shape[0]
        taps = combined.shape[1] // channels
        # (B, 2, T) -> windows (B * T, 2 * taps), ordered as conv.weight's (channel, tap):
        # one C++ op (and one for its backward) on CPU in eager mode; standard ops
        # elsewhere and in exported / compiled graphs (which then need no attnkern op).
        if attention_weights_cat.is_cpu and ops.HAS_CPP and _eager():
            windows = ops.location_windows(attention_weights_cat, kernel, pad, taps)
        else:
            windows = F.pad(attention_weights_cat, (pad, pad)).unfold(2, kernel, 1)
            windows = F.pad(windows.permute(0, 2, 1, 3), (0, taps - kernel))
            windows = windows.reshape(batch * steps, channels * taps)
        keys = torch.addmm(processed_memory.reshape(batch * steps, attention_dim), windows,
                           combined.t())
        return keys.view(batch, steps, attention_dim)

    def forward(
        self,
        attention_hidden_state: Tensor,
        memory: Tensor,
        processed_memory: Tensor,
        attention_weights_cat: Tensor,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Return ``(attention_context, attention_weights)`` as tacotron2's ``Attention``."""
        if _eager() and self._utterance.lookup((memory,)) is None:  # a new utterance
            self._filter.value = self._query_t.value = None
            self._utterance.store((memory,), True)
        weight = self.query_layer.linear_layer.weight
        direct = plain(self.query_layer)  # no hooks to run: W_q may be used directly
        deferred_w = self._query_weight.attach(weight) if direct else None
        if deferred_w is not None:
            query = deferred_w.linear(attention_hidden_state, self._query_t.get(weight))
        elif direct and not (weight.requires_grad and torch.is_grad_enabled()):
            # inference: from the contiguous W_q^T too (a decoder step's few rows run
            # about 1.5x faster there)
            query = attention_hidden_state @ self._query_t.get(weight)
        else:
            query = self.query_layer(attention_hidden_state)
        keys = self.location_keys(processed_memory, attention_weights_cat)
        deferred_m = self._memory.attach(memory)
        context, weights = additive_attention(
            query, keys, memory if deferred_m is None else deferred_m.detached,
            self.v.linear_layer.weight, key_padding_mask=mask, return_weights=True,
            backend=self.backend,
        )
        if deferred_m is not None:
            context = deferred_m.tap(context, weights)
        return context, weights
