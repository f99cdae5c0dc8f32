"""Location-sensitive attention (Chorowski et al. 2015, as Tacotron 2 uses it) on the fused op.

``e[b, j] = v . tanh(W_q h_b + W_m m_bj + U f_bj)`` with location features
``f = conv([previous weights, cumulative weights])``, softmax over the unmasked encoder
steps, context ``sum_j alpha_bj memory_bj``.

Two checkpoint-compatible drop-ins share the math (:class:`_LocationAttention`):

- :class:`LocationSensitiveAttention`, NVIDIA/tacotron2's ``model.Attention``
  (``query_layer.linear_layer.weight``, ``memory_layer.linear_layer.weight``,
  ``v.linear_layer.weight``, ``location_layer.location_conv.conv.weight``,
  ``location_layer.location_dense.linear_layer.weight``);
- :class:`TorchaudioAttention`, torchaudio's ``models.tacotron2._Attention`` (the same
  parameters as plain ``nn.Linear`` / ``nn.Conv1d``: ``query_layer.weight``, ...).

A decoder step, the data path: this file (the query layer, the location keys) ->
attnkern/state.py (the weight-gradient stores) -> attnkern/functional.py -> the op.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._compat import module_attr
from .._registry import converts
from .._validation import check_backend
from ..state import (
    DecodingState,
    HoldsState,
    batch_store,
    eager,
    held,
    hold,
    hooks_free,
    record_linear,
    register,
    shared,
    usable,
    weight_grad_store,
)
from ._checks import check_dims, check_positive_ints
from ._family import (
    _LinearNorm,
    fold_location_filter,
    inference_linear,
    location_attention,
    location_term,
)

__all__ = ["LocationSensitiveAttention", "LocationState", "TorchaudioAttention"]


@register
@dataclasses.dataclass(frozen=True)
class LocationState(DecodingState):
    """One utterance's decoding state (see attnkern/state.py).

    Per hypothesis: ``memory`` ``(B, T, embedding_dim)``, ``processed_memory`` ``(B, T,
    attention_dim)``, ``previous_weights`` and ``cumulative_weights`` ``(B, T)`` (the
    previous step's and the running sum: the location features' two channels),
    ``key_padding_mask`` ``(B, T)`` bool (True = padding) and ``key_lengths`` ``(B,)``, or
    None. Shared: ``location_filter`` ``(attention_dim, 2 * taps)`` (the location conv and
    dense folded, :meth:`_LocationAttention.location_filter`), ``query_weight_t``
    ``(attention_rnn_dim, attention_dim)`` (``W_q^T`` contiguous, or None with hooks on
    the query layer), ``grad_store_query`` (``W_q``'s weight-gradient store); ``grad_store_memory``
    (``memory``'s; dropped by ``reorder``).
    """

    memory: Tensor
    processed_memory: Tensor
    previous_weights: Tensor
    cumulative_weights: Tensor
    key_padding_mask: Tensor | None = None
    key_lengths: Tensor | None = None
    location_filter: Tensor | None = shared()
    query_weight_t: Tensor | None = shared()
    grad_store_query: Tensor | None = shared()
    grad_store_memory: Tensor | None = batch_store()


class _Prepared(NamedTuple):
    """What a step takes from the state besides its tensors (see :class:`LocationState`)."""

    location_filter: Tensor
    query_weight_t: Tensor | None
    grad_store_query: Tensor | None
    grad_store_memory: Tensor | None


class _LocationAttention(HoldsState, nn.Module):
    """The math both drop-ins share; subclasses lay out the parameters (their state_dict)
    and say where each weight is (:meth:`_weights`)."""

    location_conv: nn.Conv1d  # set by subclasses (the conv whose padding counts)
    query_linear: nn.Module  # the module that computes the query (its hooks are honoured)

    def _setup(self, attention_rnn_dim: int, embedding_dim: int, attention_dim: int,
               n_filters: int, kernel_size: int, backend: str) -> None:
        self.attention_rnn_dim, self.embedding_dim = attention_rnn_dim, embedding_dim
        self.attention_dim = attention_dim
        self._kernel = kernel_size
        self.score_mask_value = -float("inf")  # the originals' attribute, kept for users
        self.backend = check_backend(backend)
        self._held = None

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(W_q (A, rnn), W_m (A, emb), v (1, A), conv (F, 2, kernel), dense (A, F))."""
        raise NotImplementedError

    # ------------------------------------------------------------------ per utterance

    def location_filter(self) -> Tensor:
        """``U = dense.W @ conv.W`` ``(attention_dim, 2 * taps)``: the (bias-free) location
        conv followed by the dense layer, one linear map of each ``(2, taps)`` window.

        Each channel's taps are zero-padded to ``taps`` so that the GEMMs' inner size ``2 *
        taps`` is a multiple of 16 (62 -> 64 for tacotron2's 2 x 31): the backward's two
        GEMMs run about 25% faster at 64 than at 62 (MKL, AVX2). Computed fresh at each call
        (from the current parameters): :meth:`start` does it once per utterance.
        """
        _, _, _, conv, dense = self._weights()
        return fold_location_filter(conv, dense)

    def _prepare(self, memory: Tensor, transpose: bool = True) -> _Prepared:
        # transpose: keep W_q^T (start); the call protocol uses W_q as it is at each call
        # instead, so that nothing it keeps can go stale without a 512 KB comparison
        wq = self._weights()[0]
        direct = hooks_free(self.query_linear) and eager()  # no hooks: W_q used directly
        wq_t = wq.detach().t().contiguous() if direct and transpose else None
        return _Prepared(
            self.location_filter(), wq_t,
            weight_grad_store(wq, linear=True) if direct else None,
            weight_grad_store(memory))

    def start(self, memory: Tensor, *, key_padding_mask: Tensor | None = None,
              key_lengths: Tensor | None = None,
              processed_memory: Tensor | None = None) -> LocationState:
        """Start an utterance: ``memory`` ``(B, T, embedding_dim)``; ``key_padding_mask``
        ``(B, T)`` bool (True = padding; tacotron2's ``mask``) and/or ``key_lengths``
        ``(B,)``; ``processed_memory`` (default ``memory_layer(memory)``). The state
        starts with zero previous and cumulative weights, as tacotron2's decoder does."""
        self._check("memory", memory, (None, None, self.embedding_dim),
                    "(B, T, embedding_dim={2})")
        batch, steps = memory.shape[:2]
        if processed_memory is None:
            processed_memory = self.memory_projection(memory)
        self._check("processed_memory", processed_memory, (batch, steps, self.attention_dim),
                    "(B={0}, T={1}, attention_dim={2}) (memory_layer(memory))")
        zeros = memory.new_zeros(batch, steps)
        p = self._prepare(memory)
        return LocationState(memory, processed_memory, zeros, zeros, key_padding_mask,
                             key_lengths, p.location_filter, p.query_weight_t, p.grad_store_query,
                             p.grad_store_memory)

    def memory_projection(self, memory: Tensor) -> Tensor:
        """``processed_memory = memory_layer(memory)`` ``(B, T, attention_dim)``."""
        out: Tensor = self.memory_layer(memory)  # type: ignore[operator]
        return out

    def step(self, attention_hidden_state: Tensor,
             state: LocationState) -> tuple[Tensor, Tensor, LocationState]:
        """One decoder step: ``attention_hidden_state`` ``(B, attention_rnn_dim)`` ->
        ``(attention_context (B, embedding_dim), attention_weights (B, T), new state)``;
        the new state's previous weights are these, its cumulative weights add them."""
        if not isinstance(state, LocationState):
            raise TypeError(f"state must be a LocationState (from start()), got "
                            f"{type(state).__name__}")
        if state.location_filter is None:
            raise ValueError("state has no location_filter: make it with start()")
        memory = state.memory
        w = self._weights()  # once per step (five weights, eleven attribute hops)
        self._check("attention_hidden_state", attention_hidden_state,
                    (memory.shape[0], self.attention_rnn_dim),
                    "(B={0}, attention_rnn_dim={1}) (the state's batch)", w[0])
        cat = torch.stack((state.previous_weights, state.cumulative_weights), 1)
        context, weights = self._attend(
            attention_hidden_state, memory, state.processed_memory, cat,
            state.key_padding_mask, state.key_lengths,
            _Prepared(state.location_filter, state.query_weight_t, state.grad_store_query,
                      state.grad_store_memory), w)
        return context, weights, state.replace(
            previous_weights=weights, cumulative_weights=state.cumulative_weights + weights)

    # ------------------------------------------------------------------ a step

    def location_keys(self, processed_memory: Tensor, attention_weights_cat: Tensor,
                      location_filter: Tensor | None = None) -> Tensor:
        """``processed_memory + location_dense(location_conv(attention_weights_cat))``:
        ``(B, T, attention_dim)``, one GEMM of the unfolded windows with
        :meth:`location_filter` (computed here if not given), added by ``addmm``."""
        combined = self.location_filter() if location_filter is None else location_filter
        # (B, 2, T) -> windows (B * T, 2 * taps) by one C++ op on CPU in eager mode (standard
        # ops in exported / compiled graphs), then one addmm onto processed_memory
        return location_term(processed_memory, attention_weights_cat, combined, self._kernel,
                             (self._kernel - 1) // 2)  # both layouts pad the conv so

    def _attend(self, hidden: Tensor, memory: Tensor, processed_memory: Tensor, cat: Tensor,
                mask: Tensor | None, lengths: Tensor | None, prepared: _Prepared,
                weights5: tuple[Tensor, ...] | None = None) -> tuple[Tensor, Tensor]:
        wq, _, v, _, _ = self._weights() if weights5 is None else weights5
        wq_t, q_store = prepared.query_weight_t, prepared.grad_store_query
        query_linear = self.query_linear
        if not hooks_free(query_linear):  # hooks to run: call the layer
            query = query_linear(hidden)
        elif usable(q_store):
            if wq_t is None:  # W_q as it is now (the call protocol)
                query = record_linear(q_store, hidden, wq, wq.detach().t())  # type: ignore[arg-type]
            else:  # the state's W_q^T, and W_q as it was then
                query = record_linear(q_store, hidden, wq_t.t(), wq_t)  # type: ignore[arg-type]
        elif wq_t is None:  # W_q as it is now (an inference step's rows: rows_linear)
            query = inference_linear(query_linear, hidden)
        elif wq.requires_grad and torch.is_grad_enabled():
            query = F.linear(hidden, wq)
        else:  # inference: from the state's contiguous W_q^T (~1.3x faster than F.linear)
            query = hidden @ wq_t
        # an inference step on CPU is one C++ op (location term and attention); otherwise the
        # location keys, then the fused op (memory's gradient through its store, if any)
        return location_attention(
            query, processed_memory, cat, prepared.location_filter, self._kernel,
            (self._kernel - 1) // 2, memory, v, key_padding_mask=mask, key_lengths=lengths,
            backend=self.backend, token=prepared.grad_store_memory, value_of=memory)

    # ------------------------------------------------------------------ tacotron2's protocol

    def forward(
        self,
        attention_hidden_state: Tensor,
        memory: Tensor,
        processed_memory: Tensor,
        attention_weights_cat: Tensor,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """``(attention_context (B, embedding_dim), attention_weights (B, T))`` as the
        original's ``forward``: ``attention_hidden_state`` ``(B, attention_rnn_dim)``,
        ``memory`` ``(B, T, embedding_dim)``, ``processed_memory`` ``(B, T,
        attention_dim)``, ``attention_weights_cat`` ``(B, 2, T)`` (previous and cumulative
        weights), ``mask`` ``(B, T)`` bool (True = padding) or None. A row whose steps are
        all masked gives zeros (the originals give NaN there).

        The rule for the state this protocol keeps (at most one, for the last utterance):
        the next call reuses what it prepared (the folded location filter, the
        weight-gradient stores) while ``memory`` and ``W_q`` are the same tensors (objects
        and versions) in the same grad mode, no backward pass has reached the prepared
        tensors, and the location conv and dense weights folded into the filter equal the
        module's, compared bitwise at each call (so an edit through ``.data``, which no
        version counter sees, is picked up at the next call). Otherwise it prepares anew.
        ``W_q`` and everything else are read at every call. :meth:`start` / :meth:`step`
        keep no state at all.
        """
        w = self._weights()  # once per call (each lookup goes through nn.Module.__getattr__)
        self._check_step(attention_hidden_state, memory, processed_memory,
                         attention_weights_cat, mask, w[0])
        prepared = self._held_state(memory, w)
        return self._attend(attention_hidden_state, memory, processed_memory,
                            attention_weights_cat, mask, None, prepared, w)

    def _held_state(self, memory: Tensor, w: tuple[Tensor, ...]) -> _Prepared:
        # the rule of attnkern.state.held: memory and W_q (whose store the state holds) the
        # same tensors, the folded location weights bitwise equal, same grad mode, not
        # consumed by a backward pass; W_q itself is read at every call
        wq, _, _, conv, dense = w
        grad = torch.is_grad_enabled()
        kept = held(self, (memory, wq), (conv, dense), grad)
        if kept is not None:
            return kept.value  # type: ignore[no-any-return]
        prepared = self._prepare(memory, transpose=False)
        return hold(self, (memory, wq), (conv, dense), prepared,  # type: ignore[no-any-return]
                    (prepared.location_filter, prepared.grad_store_query,
                     prepared.grad_store_memory), grad)

    # ------------------------------------------------------------------ checks

    def _check(self, name: str, x: object, dims: tuple[int | None, ...], form: str,
               like: Tensor | None = None) -> None:
        check_dims(name, x, dims, form, self._weights()[0] if like is None else like)

    def _check_step(self, hidden: Tensor, memory: Tensor, processed_memory: Tensor,
                    cat: Tensor, mask: Tensor | None, like: Tensor) -> None:
        self._check("memory", memory, (None, None, self.embedding_dim),
                    "(B, T, embedding_dim={2})", like)
        b, t = memory.shape[:2]
        self._check("attention_hidden_state", hidden, (b, self.attention_rnn_dim),
                    "(B={0}, attention_rnn_dim={1}) (B of memory)", like)
        self._check("processed_memory", processed_memory, (b, t, self.attention_dim),
                    "(B={0}, T={1}, attention_dim={2}) (B, T of memory)", like)
        self._check("attention_weights_cat", cat, (b, 2, t),
                    "(B={0}, {1}, T={2}) (previous and cumulative weights; B, T of memory)",
                    like)
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or \
                    tuple(mask.shape) != (b, t):
                seen = (f"{mask.dtype} of shape {tuple(mask.shape)}" if isinstance(mask, Tensor)
                        else type(mask).__name__)
                raise ValueError(f"mask must be a bool tensor of shape (B={b}, T={t}) (True = "
                                 f"padding) or None, got {seen}")


def _check_geometry(attention_rnn_dim: int, embedding_dim: int, attention_dim: int,
                    n_filters: int, kernel_size: int) -> None:
    check_positive_ints(attention_rnn_dim=attention_rnn_dim, embedding_dim=embedding_dim,
                        attention_dim=attention_dim,
                        attention_location_n_filters=n_filters,
                        attention_location_kernel_size=kernel_size)
    if kernel_size % 2 == 0:
        # padding (k - 1) // 2 gives T - 1 location features for an even k: the originals
        # then fail adding them to the T encoder steps.
        raise ValueError(
            f"attention_location_kernel_size must be odd (the location features keep the T "
            f"encoder steps only for an odd kernel), got {kernel_size}")


# ---------------------------------------------------------------------- NVIDIA/tacotron2


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


class LocationSensitiveAttention(_LocationAttention):
    """Location-sensitive additive attention: NVIDIA/tacotron2's ``model.Attention`` on the
    fused op (same constructor arguments, ``forward``, ``memory_layer``, state_dict).

    Args:
        attention_rnn_dim: size of the attention RNN state (the query).
        embedding_dim: size of the encoder outputs (``memory``).
        attention_dim: size of the attention MLP.
        attention_location_n_filters: channels of the location convolution.
        attention_location_kernel_size: its kernel size (odd: an even one raises).
        backend: passed to :func:`attnkern.additive_attention` (keyword only; an addition
            to tacotron2's arguments).

    Use it as tacotron2's decoder does (``processed_memory = attn.memory_layer(memory)``
    once, then ``attn(attention_hidden_state, memory, processed_memory,
    attention_weights_cat, mask)`` each step), or with the explicit state: ``state =
    attn.start(memory, key_padding_mask=mask)``, then ``context, weights, state =
    attn.step(attention_hidden_state, state)``.
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
        _check_geometry(attention_rnn_dim, embedding_dim, attention_dim,
                        attention_location_n_filters, attention_location_kernel_size)
        self.query_layer = _LinearNorm(attention_rnn_dim, attention_dim, bias=False,
                                       w_init_gain="tanh")
        self.memory_layer = _LinearNorm(embedding_dim, attention_dim, bias=False,
                                        w_init_gain="tanh")
        self.v = _LinearNorm(attention_dim, 1, bias=False)
        self.location_layer = _LocationLayer(attention_location_n_filters,
                                             attention_location_kernel_size, attention_dim)
        self._setup(attention_rnn_dim, embedding_dim, attention_dim,
                    attention_location_n_filters, attention_location_kernel_size, backend)

    @property
    def location_conv(self) -> nn.Conv1d:  # type: ignore[override]
        return self.location_layer.location_conv.conv

    @property
    def query_linear(self) -> nn.Module:  # type: ignore[override]
        return module_attr(self, "query_layer")  # type: ignore[no-any-return]

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        a = module_attr
        loc = a(self, "location_layer")
        return (a(self, "query_layer", "linear_layer", "weight"),
                a(self, "memory_layer", "linear_layer", "weight"),
                a(self, "v", "linear_layer", "weight"), a(loc, "location_conv", "conv", "weight"),
                a(loc, "location_dense", "linear_layer", "weight"))


# ---------------------------------------------------------------------- torchaudio


class _TorchaudioLocationLayer(nn.Module):
    """torchaudio's ``_LocationLayer``: ``location_conv`` (Conv1d) and ``location_dense``."""

    def __init__(self, attention_n_filter: int, attention_kernel_size: int,
                 attention_hidden_dim: int) -> None:
        super().__init__()
        self.location_conv = nn.Conv1d(2, attention_n_filter, attention_kernel_size,
                                       padding=(attention_kernel_size - 1) // 2, bias=False)
        self.location_dense = nn.Linear(attention_n_filter, attention_hidden_dim, bias=False)
        nn.init.xavier_uniform_(self.location_conv.weight)
        nn.init.xavier_uniform_(self.location_dense.weight, gain=nn.init.calculate_gain("tanh"))

    def forward(self, attention_weights_cat: Tensor) -> Tensor:
        return self.location_dense(self.location_conv(attention_weights_cat).transpose(1, 2))


class TorchaudioAttention(_LocationAttention):
    """torchaudio's ``models.tacotron2._Attention`` on the fused op: same constructor
    arguments (``attention_rnn_dim, encoder_embedding_dim, attention_hidden_dim,
    attention_location_n_filter, attention_location_kernel_size``), ``forward``, and
    state_dict (``query_layer.weight``, ``memory_layer.weight``, ``v.weight``,
    ``location_layer.location_conv.weight``, ``location_layer.location_dense.weight``).
    ``start`` / ``step`` as :class:`LocationSensitiveAttention`."""

    def __init__(
        self,
        attention_rnn_dim: int,
        encoder_embedding_dim: int,
        attention_hidden_dim: int,
        attention_location_n_filter: int,
        attention_location_kernel_size: int,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_geometry(attention_rnn_dim, encoder_embedding_dim, attention_hidden_dim,
                        attention_location_n_filter, attention_location_kernel_size)
        gain = nn.init.calculate_gain("tanh")
        self.query_layer = nn.Linear(attention_rnn_dim, attention_hidden_dim, bias=False)
        self.memory_layer = nn.Linear(encoder_embedding_dim, attention_hidden_dim, bias=False)
        self.v = nn.Linear(attention_hidden_dim, 1, bias=False)
        for lin, g in ((self.query_layer, gain), (self.memory_layer, gain), (self.v, 1.0)):
            nn.init.xavier_uniform_(lin.weight, gain=g)
        self.location_layer = _TorchaudioLocationLayer(
            attention_location_n_filter, attention_location_kernel_size, attention_hidden_dim)
        self._setup(attention_rnn_dim, encoder_embedding_dim, attention_hidden_dim,
                    attention_location_n_filter, attention_location_kernel_size, backend)

    @property
    def location_conv(self) -> nn.Conv1d:  # type: ignore[override]
        return self.location_layer.location_conv

    @property
    def query_linear(self) -> nn.Module:  # type: ignore[override]
        return module_attr(self, "query_layer")  # type: ignore[no-any-return]

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        a = module_attr
        loc = a(self, "location_layer")
        return (a(self, "query_layer", "weight"), a(self, "memory_layer", "weight"),
                a(self, "v", "weight"), a(loc, "location_conv", "weight"),
                a(loc, "location_dense", "weight"))


# ---------------------------------------------------------------------- loaders


def _load(new: _LocationAttention, old: nn.Module) -> _LocationAttention:
    ref = old.state_dict()
    first = next(iter(ref.values()))
    new = new.to(device=first.device, dtype=first.dtype)
    new.load_state_dict(ref, strict=True)
    return new


def _geometry(conv: nn.Conv1d, query: nn.Linear, memory: nn.Linear) -> tuple[int, ...]:
    return (query.in_features, memory.in_features, query.out_features, conv.out_channels,
            conv.kernel_size[0])


@converts("model.Attention")
def _from_nvidia(old: Any) -> LocationSensitiveAttention | None:
    """NVIDIA/tacotron2's ``model.Attention`` (its own module name is just ``model``: the
    layout is checked before anything is converted)."""
    try:
        conv = old.location_layer.location_conv.conv
        geo = _geometry(conv, old.query_layer.linear_layer, old.memory_layer.linear_layer)
    except AttributeError:
        return None
    return _load(LocationSensitiveAttention(*geo), old)  # type: ignore[return-value]


@converts("torchaudio.models.tacotron2._Attention")
def _from_torchaudio(old: Any) -> TorchaudioAttention:
    """torchaudio's ``models.tacotron2._Attention``."""
    geo = _geometry(old.location_layer.location_conv, old.query_layer, old.memory_layer)
    return _load(TorchaudioAttention(*geo), old)  # type: ignore[return-value]
