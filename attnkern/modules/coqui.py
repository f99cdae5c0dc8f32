"""A drop-in for Coqui TTS's ``OriginalAttention``
(``TTS.tts.layers.tacotron.attentions``) in every configuration: location-sensitive or not,
softmax or sigmoid normalisation, windowing at inference, forward attention with or
without the transition agent and the inference-time forward-attention mask.

Same constructor arguments, parameter names and shapes (``query_layer.linear_layer``,
``inputs_layer.linear_layer``, ``v.linear_layer`` with its bias, ``ta``,
``location_layer.location_conv1d``, ``location_layer.location_dense.linear_layer``),
protocol (``init_states(inputs)``, ``preprocess_inputs(inputs)``, ``forward(query, inputs,
processed_inputs, mask) -> context``, then ``attention_weights`` etc. as attributes) and
results. Where each configuration's work goes:

- softmax, no forward attention: one fused :func:`attnkern.additive_attention` call gives
  the context and the weights (``v``'s bias cancels in a softmax);
- softmax with forward attention: the fused op gives the softmax weights only; the
  transition prior, the optional mask and the renormalisation are ``(B, T)`` ops, the
  context one ``bmm``;
- sigmoid: the raw energies (with ``v``'s bias), then ``sigmoid(e) / sum sigmoid(e)``;
- location: the convolution and the dense layer are one GEMM on the windows of the
  previous and cumulative weights (the weights folded into one filter: at every step of
  the explicit state, and kept between calls of Coqui's protocol while the conv and dense
  weights are bitwise unchanged, so a ``.data`` edit is seen at the next call).

Windowing (eval mode only, as in Coqui) is per batch item, as tensor ops without a host
sync: item b keeps keys ``[w_b - 2, w_b + 6)`` around its own last attended position
``w_b`` (``-1`` at the start, where its first key's energy is set to its own maximum).
Coqui reads the position of batch item 0 (``.item()``) for the whole batch and takes the
batch-wide maximum: the results are identical for B = 1 (and for B > 1 whenever the items
agree); for B > 1 each item here follows its own alignment.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._registry import converts
from .._validation import check_backend
from ..functional import additive_scores
from ..state import DecodingState, held, hold, register, shared, weight_grad_store
from ._family import (
    _LinearNorm,  # Coqui's common_layers.Linear is the same layer
    attention_with_store,
    context_of,
    fold_location_filter,
    location_attention,
    location_term,
    project_query,
    query_store,
    softmax_weights,
)

__all__ = ["CoquiAttentionState", "OriginalAttention"]

# where the call protocol keeps the folded location filter (attnkern.state.hold)
_FILTER_SLOT = "_held_filter"

# Coqui's fixed window around the last attended position (init_win_idx)
_WIN_BACK, _WIN_FRONT = 2, 6


class _LocationLayer(nn.Module):
    """Coqui's ``LocationLayer``: ``location_dense(location_conv1d(cat).transpose(1, 2))``,
    ``(B, 2, T) -> (B, T, attention_dim)``, both bias-free."""

    def __init__(self, attention_dim: int, attention_n_filters: int = 32,
                 attention_kernel_size: int = 31) -> None:
        super().__init__()
        self.location_conv1d = nn.Conv1d(2, attention_n_filters, attention_kernel_size,
                                         stride=1, padding=(attention_kernel_size - 1) // 2,
                                         bias=False)
        self.location_dense = _LinearNorm(attention_n_filters, attention_dim, bias=False,
                                      w_init_gain="tanh")

    def forward(self, attention_cat: Tensor) -> Tensor:
        processed = self.location_conv1d(attention_cat)
        return self.location_dense(processed.transpose(1, 2))


@register
@dataclasses.dataclass(frozen=True)
class CoquiAttentionState(DecodingState):
    """Per-utterance state of :class:`OriginalAttention` (Coqui's attributes):

    inputs ``(B, T, D)`` (the values), processed_inputs ``(B, T, A)``
    (``preprocess_inputs(inputs)``), mask ``(B, T)`` bool, True = padding (Coqui's mask is
    True = valid) or None, previous_weights ``(B, T)`` (the previous step's alignment),
    cumulative_weights ``(B, T)`` (location only), alpha ``(B, T)`` and u ``(B, 1)``
    (forward attention only), win_idx ``(B,)`` long (windowing only; -1 at the start).
    """

    inputs: Tensor
    processed_inputs: Tensor | None
    mask: Tensor | None
    previous_weights: Tensor
    cumulative_weights: Tensor | None = None
    alpha: Tensor | None = None
    u: Tensor | None = None
    win_idx: Tensor | None = None
    value_store: Tensor | None = shared()  # the inputs' weight-gradient store
    store_of: Tensor | None = shared()  # the inputs value_store was made for (calls pass theirs)
    query_store: Tensor | None = shared()  # query_layer's weight-gradient store
    query_of: Tensor | None = shared()  # the weight query_store was made for
    location_filter: Tensor | None = shared()  # the folded location filter (None: fold per step)


class OriginalAttention(nn.Module):
    """Coqui TTS ``OriginalAttention`` (Bahdanau attention with Coqui's options).

    Args (Coqui's, in its order): query_dim, embedding_dim, attention_dim,
    location_attention (bool), attention_location_n_filters,
    attention_location_kernel_size (odd), windowing (truthy: window at inference),
    norm (``"softmax"`` | ``"sigmoid"``), forward_attn, trans_agent, forward_attn_mask;
    keyword ``backend`` (passed to the fused op).

    Shapes (``forward``): query ``(B, query_dim)``; inputs ``(B, T, embedding_dim)``;
    processed_inputs ``(B, T, attention_dim)``; mask ``(B, T)`` bool, True = valid, or
    None. Returns the context ``(B, embedding_dim)``; ``attention_weights`` ``(B, T)``
    holds the alignment.

    Explicit state: ``state = layer.start(inputs, mask=...)``, ``context, alignment, state
    = layer.step(query, state)``.
    """

    win_back = _WIN_BACK
    win_front = _WIN_FRONT

    def __init__(self, query_dim: int, embedding_dim: int, attention_dim: int,
                 location_attention: bool, attention_location_n_filters: int,
                 attention_location_kernel_size: int, windowing: Any, norm: str,
                 forward_attn: bool, trans_agent: bool, forward_attn_mask: bool, *,
                 backend: str = "auto") -> None:
        super().__init__()
        if norm not in ("softmax", "sigmoid"):
            raise ValueError(f"norm must be 'softmax' or 'sigmoid', got {norm!r}")
        if location_attention and attention_location_kernel_size % 2 == 0:
            # Coqui's conv then gives T - 1 outputs, which do not add to the T inputs
            raise ValueError("attention_location_kernel_size must be odd (Coqui's location "
                             f"layer fails for even sizes), got {attention_location_kernel_size}")
        self.query_layer = _LinearNorm(query_dim, attention_dim, bias=False, w_init_gain="tanh")
        self.inputs_layer = _LinearNorm(embedding_dim, attention_dim, bias=False,
                                        w_init_gain="tanh")
        self.v = _LinearNorm(attention_dim, 1, bias=True)
        if trans_agent:
            self.ta = nn.Linear(query_dim + embedding_dim, 1, bias=True)
        if location_attention:
            self.location_layer = _LocationLayer(attention_dim, attention_location_n_filters,
                                                 attention_location_kernel_size)
        self._mask_value = -float("inf")
        self.windowing = windowing
        self.norm = norm
        self.forward_attn = forward_attn
        self.trans_agent = trans_agent
        self.forward_attn_mask = forward_attn_mask
        self.location_attention = location_attention
        self.backend = check_backend(backend)
        self._held: CoquiAttentionState | None = None

    # --- explicit state ---------------------------------------------------------------

    def initial_state(self, inputs: Tensor, processed_inputs: Tensor | None = None,
                      key_padding_mask: Tensor | None = None) -> CoquiAttentionState:
        """The state Coqui's ``init_states(inputs)`` sets up (zeros; forward attention's
        ``[1, 1e-7, ...]`` and ``u = 0.5``; window position -1), in the inputs' dtype."""
        if not isinstance(inputs, Tensor) or inputs.dim() != 3:
            raise ValueError("inputs must be (B, T, embedding_dim), got "
                             f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else inputs}")
        batch, steps = inputs.shape[:2]
        zeros = inputs.new_zeros(batch, steps)
        alpha = u = win = None
        if self.forward_attn:
            alpha = torch.cat([inputs.new_ones(batch, 1),
                               inputs.new_zeros(batch, steps)[:, :-1] + 1e-7], dim=1)
            u = inputs.new_full((batch, 1), 0.5)
        if self.windowing:
            win = torch.full((batch,), -1, dtype=torch.long, device=inputs.device)
        return CoquiAttentionState(
            inputs, processed_inputs, key_padding_mask, zeros,
            inputs.new_zeros(batch, steps) if self.location_attention else None, alpha, u, win,
            weight_grad_store(inputs), inputs, *query_store(self.query_layer))

    def start(self, inputs: Tensor, *, mask: Tensor | None = None,
              key_padding_mask: Tensor | None = None) -> CoquiAttentionState:
        """Per-utterance work: inputs ``(B, T, embedding_dim)``; ``mask`` ``(B, T)`` bool
        True = valid (Coqui's) or ``key_padding_mask`` True = padding."""
        if mask is not None:
            key_padding_mask = ~mask.bool()
        return self.initial_state(inputs, self.preprocess_inputs(inputs), key_padding_mask)

    def step(self, query: Tensor, state: CoquiAttentionState
             ) -> tuple[Tensor, Tensor, CoquiAttentionState]:
        """One decoder step: query ``(B, query_dim)`` -> ``(context (B, embedding_dim),
        alignment (B, T), new state)``."""
        inputs, processed = state.inputs, state.processed_inputs
        if processed is None:
            raise ValueError("the state has no processed_inputs (preprocess_inputs(inputs))")
        batch, steps = inputs.shape[:2]
        if query.dim() != 2 or query.shape[0] != batch:
            raise ValueError(f"query must be ({batch}, query_dim), got {tuple(query.shape)}")
        query_proj = project_query(self.query_layer, query, state.query_store,
                                   state.query_of)  # (B, A)
        cum = state.cumulative_weights
        if self.location_attention:
            if cum is None:
                raise ValueError("location attention needs cumulative_weights in the state")
            conv = self.location_layer.location_conv1d
            kept = state.location_filter
            filt = kept if kept is not None else fold_location_filter(
                conv.weight, self.location_layer.location_dense.linear_layer.weight)
            cat = torch.stack((state.previous_weights, cum), dim=1)  # (B, 2, T)
            geometry = (conv.weight.shape[2], int(conv.padding[0]))
        keys: Tensor | None = None if self.location_attention else processed

        def location_keys() -> Tensor:  # only where the keys themselves are needed
            return location_term(processed, cat, filt, *geometry) if keys is None else keys
        mask = state.mask
        win = state.win_idx if (not self.training and self.windowing) else None
        first = None
        if win is not None:
            j = torch.arange(steps, device=inputs.device)
            outside = (j < win[:, None] - _WIN_BACK) | (j >= win[:, None] + _WIN_FRONT)
            mask = outside if mask is None else mask | outside
            first = (win == -1)[:, None]  # (B, 1): Coqui's first-step trick applies
        v_weight = self.v.linear_layer.weight.view(-1)
        v_bias = self.v.linear_layer.bias
        context: Tensor | None = None
        if self.norm == "softmax":
            # v's bias cancels in the softmax; 0 * bias gives it its (zero) gradient
            weight = v_weight + 0.0 * v_bias
            if self.forward_attn and self.location_attention:
                # the weights only (a zero-width value); an inference step is one C++ op
                _, alignment = location_attention(
                    query_proj, processed, cat, filt, *geometry, inputs.new_empty(batch, steps, 0),
                    weight, key_padding_mask=mask, backend=self.backend)
            elif self.forward_attn:
                alignment = softmax_weights(query_proj, processed, weight, mask, self.backend)
            elif self.location_attention:  # one C++ op for an inference step on CPU
                context, alignment = location_attention(
                    query_proj, processed, cat, filt, *geometry, inputs, weight,
                    key_padding_mask=mask, backend=self.backend, token=state.value_store,
                    value_of=state.store_of)
            else:
                context, alignment = attention_with_store(
                    query_proj, processed, inputs, weight, mask, self.backend,
                    state.value_store, state.store_of)
            if first is not None:
                # Coqui sets e_0 := max_j e_j at the first windowed step; on the softmax
                # weights that is exactly a_0 -> a_max, the row renormalised by
                # 1 - a_0 + a_max (and the context corrected the same way)
                a_max = alignment.amax(1, keepdim=True)
                a0 = alignment[:, :1]
                denom = 1 - a0 + a_max
                alignment = torch.where(
                    first, torch.cat((a_max, alignment[:, 1:]), 1) / denom, alignment)
                if context is not None:
                    fixed = (context + (a_max - a0) * inputs[:, 0]) / denom
                    context = torch.where(first, fixed, context)
            new_win = alignment.argmax(1) if win is not None else None
        else:
            # -inf (Coqui's mask value) at masked keys, from the op: they cost nothing there
            e = additive_scores(query_proj, location_keys(), v_weight, key_padding_mask=mask,
                                backend=self.backend) + v_bias
            if first is not None:
                e = torch.cat((torch.where(first, e.amax(1, keepdim=True), e[:, :1]), e[:, 1:]), 1)
            # argmax of the energies (the sigmoid saturates: ties where e does not)
            new_win = e.argmax(1) if win is not None else None
            s = torch.sigmoid(e)
            alignment = s / s.sum(dim=1, keepdim=True)
        if self.location_attention:
            assert cum is not None
            cum = cum + alignment
        alpha, u = state.alpha, state.u
        if self.forward_attn:
            if alpha is None or u is None:
                raise ValueError("forward attention needs alpha and u in the state")
            shifted = F.pad(alpha[:, :-1], (1, 0))
            alpha = ((1 - u) * alpha + u * shifted + 1e-8) * alignment
            if not self.training and self.forward_attn_mask:
                alpha = _forward_attn_mask(alpha, shifted)
            alignment = alpha = alpha / alpha.sum(dim=1, keepdim=True)
            context = None
        if context is None:
            context = context_of(alignment, inputs, state.value_store, state.store_of)
        if self.forward_attn and self.trans_agent:
            u = torch.sigmoid(self.ta(torch.cat([context, query], dim=-1)))
        return context, alignment, state.replace(
            previous_weights=alignment, cumulative_weights=cum, alpha=alpha, u=u,
            win_idx=new_win if new_win is not None else state.win_idx)

    # --- Coqui's protocol -------------------------------------------------------------

    def init_states(self, inputs: Tensor) -> None:
        """Start an utterance (Coqui's ``init_states``). The one rule: the state set up
        here is the one every ``forward`` until the next ``init_states`` steps from; each
        ``forward`` uses its own ``inputs``, ``processed_inputs`` and ``mask``. The one thing
        derived from the parameters that is kept between calls, the folded location filter,
        follows :func:`attnkern.state.held`'s rule (the conv and dense weights compared
        bitwise at each call)."""
        self._held = self.initial_state(inputs)

    def preprocess_inputs(self, inputs: Tensor) -> Tensor:
        """``inputs_layer(inputs)``: ``(B, T, embedding_dim) -> (B, T, attention_dim)``."""
        return self.inputs_layer(inputs)

    def forward(self, query: Tensor, inputs: Tensor, processed_inputs: Tensor,
                mask: Tensor | None) -> Tensor:
        """Coqui's step: returns the context ``(B, embedding_dim)``; the alignment is then
        ``self.attention_weights``."""
        held = self._held
        if held is None:
            raise RuntimeError("OriginalAttention: call init_states(inputs) before the first "
                               "step of an utterance (as Coqui's decoders do)")
        state = held.replace(inputs=inputs, processed_inputs=processed_inputs,
                             mask=None if mask is None else ~mask,
                             location_filter=self._protocol_filter())
        context, _, state = self.step(query, state)
        self._held = state
        return context

    def _protocol_filter(self) -> Tensor | None:
        """The folded location filter for a protocol step: kept between calls by the rule of
        :func:`attnkern.state.held` (the conv and dense weights compared bitwise at each
        call, so a ``.data`` edit is seen; same grad mode; refolded once a backward pass has
        consumed it), so a step neither folds nor differentiates the fold (one fold and one
        fold backward per utterance)."""
        if not self.location_attention:
            return None
        conv = self.location_layer.location_conv1d.weight
        dense = self.location_layer.location_dense.linear_layer.weight
        grad = torch.is_grad_enabled()
        kept = held(self, (), (conv, dense), grad, slot=_FILTER_SLOT)
        if kept is not None:
            return kept.value  # type: ignore[no-any-return]
        filt = fold_location_filter(conv, dense)
        return hold(self, (), (conv, dense), filt, (filt,), grad,  # type: ignore[no-any-return]
                    slot=_FILTER_SLOT)

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles start without the kept filter, and their protocol state without
        # this module's weight-gradient stores (autograd nodes: a copy records into its own)
        state = self.__dict__.copy()
        state.pop(_FILTER_SLOT, None)
        if state.get("_held") is not None:
            state["_held"] = state["_held"].replace(
                value_store=None, store_of=None, query_store=None, query_of=None,
                location_filter=None)
        return state

    def init_win_idx(self) -> None:
        """Coqui's: window position back to -1 (every batch item)."""
        if self._held is not None and self._held.win_idx is not None:
            self._held = self._held.replace(win_idx=torch.full_like(self._held.win_idx, -1))

    def init_forward_attn(self, inputs: Tensor) -> None:
        """Coqui's: forward attention's alpha and u back to their initial values."""
        fresh = self.initial_state(inputs)
        base = self._held if self._held is not None else fresh
        self._held = base.replace(alpha=fresh.alpha, u=fresh.u)

    def init_location_attention(self, inputs: Tensor) -> None:
        """Coqui's: cumulative weights back to zeros."""
        fresh = self.initial_state(inputs)
        base = self._held if self._held is not None else fresh
        self._held = base.replace(cumulative_weights=fresh.cumulative_weights)

    def _field(self, name: str) -> Any:
        return None if self._held is None else getattr(self._held, name)

    @property
    def attention_weights(self) -> Tensor | None:
        """The last alignment ``(B, T)`` (zeros after ``init_states``)."""
        return self._field("previous_weights")

    @property
    def attention_weights_cum(self) -> Tensor | None:
        return self._field("cumulative_weights")

    @property
    def alpha(self) -> Tensor | None:
        return self._field("alpha")

    @property
    def u(self) -> Tensor | None:
        return self._field("u")

    @property
    def win_idx(self) -> Tensor | None:
        """``(B,)`` long per item (Coqui keeps one int, batch item 0's)."""
        return self._field("win_idx")


def _forward_attn_mask(alpha: Tensor, shifted: Tensor) -> Tensor:
    """Coqui's inference-time forward-attention mask, per item, as tensor ops::

        n = argmax(shifted); val = max(alpha)
        alpha[n + 3:] = 0; alpha[:n - 1] = 0; alpha[n - 2] = 0.01 * val

    with Python's slice and index semantics for the negative ``n - 1``, ``n - 2``."""
    steps = alpha.shape[1]
    n = shifted.max(1).indices[:, None]  # (B, 1)
    val = alpha.max(1).values[:, None]
    j = torch.arange(steps, device=alpha.device)
    lo = n - 1
    lo = torch.where(lo < 0, lo + steps, lo).clamp(min=0)
    m = n - 2
    m = torch.where(m < 0, m + steps, m)
    out = alpha.masked_fill((j >= n + 3) | (j < lo), 0.0)
    return torch.where(j == m, 0.01 * val, out)


@converts("TTS.tts.layers.tacotron.attentions.OriginalAttention")
def _from_coqui(m: Any) -> nn.Module:
    q: Any = m.query_layer
    i: Any = m.inputs_layer
    n_filters, kernel = 32, 31
    if m.location_attention:
        conv: Any = m.location_layer.location_conv1d
        n_filters, kernel = conv.out_channels, conv.kernel_size[0]
    new = OriginalAttention(
        q.linear_layer.in_features, i.linear_layer.in_features, q.linear_layer.out_features,
        bool(m.location_attention), n_filters, kernel, m.windowing, str(m.norm),
        bool(m.forward_attn), bool(m.trans_agent), bool(m.forward_attn_mask))
    p = m.v.linear_layer.weight
    new = new.to(device=p.device, dtype=p.dtype)
    new.load_state_dict(m.state_dict(), strict=True)
    return new
