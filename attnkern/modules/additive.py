"""``AdditiveAttention``: the drop-in Bahdanau attention layer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._registry import converts
from .._validation import check_backend
from ..functional import PreparedKeys, additive_attention, prepare_keys
from ..state import (
    DecodingState,
    HoldsState,
    held,
    hold,
    hooks_free,
    prepared,
    register,
    rehold,
    source,
)
from ._checks import check_positive_ints
from ._family import attend_rows

__all__ = ["AdditiveAttention", "AdditiveState", "BahdanauAttention"]


@register
@dataclasses.dataclass(frozen=True)
class AdditiveState(DecodingState):
    """One sequence's decoding state (see attnkern/state.py): ``projected_keys`` ``(B, Tk,
    H)``, ``keys_exp`` their prepared exp (:func:`attnkern.prepare_keys`, or None),
    ``values`` ``(B, Tk, Dv)``, ``key_padding_mask`` ``(B, Tk)`` bool and ``key_lengths``
    ``(B,)``, or None: the key side, at the ``B`` source rows. ``rows`` ``(N,)``: each
    hypothesis's source row after :meth:`reorder` (None: one hypothesis per row); a beam
    search's reorders copy none of the key side."""

    projected_keys: Tensor = source()
    values: Tensor = source()
    keys_exp: Tensor | None = prepared("projected_keys", at_source=True)
    key_padding_mask: Tensor | None = source()
    key_lengths: Tensor | None = source()
    rows: Tensor | None = None

    @property
    def prepared_keys(self) -> PreparedKeys:
        return PreparedKeys(self.projected_keys, self.keys_exp)


def _held_projection(owner: nn.Module, proj: nn.Module, keys: Tensor) -> Tensor | PreparedKeys:
    """``proj(keys)``, kept on ``owner`` for its next call by the rule of
    :func:`attnkern.state.held` (the memory: ``keys``; compared: ``keys`` and ``proj``'s
    parameters), for a decoder that passes the same ``keys`` at every step (as the
    tutorial's module is called). Prepared (:func:`prepare_keys`) on its first reuse. Not
    with hooks on ``proj`` (they run at every call)."""
    if not hooks_free(proj):
        out: Tensor = proj(keys)
        return out
    compare = (keys, *proj.parameters())
    grad = torch.is_grad_enabled()
    kept = held(owner, (keys,), compare, grad)
    if kept is not None:
        if type(kept.value) is PreparedKeys:
            return kept.value
        return rehold(owner, kept, prepare_keys(kept.value))  # reused: prepare it once
    projected: Tensor = proj(keys)
    return hold(owner, (keys,), compare, projected, (projected,), grad)  # type: ignore[no-any-return]


def _state(source: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    return source.state_dict() if isinstance(source, nn.Module) else source


def _check_input(name: str, x: object, ranks: tuple[int, ...], dim: int, form: str,
                 param: Tensor) -> None:
    """Fail before nn.Linear does, with the argument's name and what was seen."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ranks or x.shape[-1] != dim:
        raise ValueError(f"{name} must be {form.format(dim)}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.device != param.device:
        raise ValueError(f"{name} is on {x.device}, the layer's parameters are on {param.device}")
    if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name} has dtype {x.dtype}, the layer's parameters are {param.dtype} "
            "(convert the layer with .to(dtype) or use torch.autocast)"
        )


class AdditiveAttention(HoldsState, nn.Module):
    """Additive (Bahdanau / feedforward / concat / MLP) attention.

    ``score(s_i, h_j) = v . tanh(W_q s_i + b + W_k h_j)``, softmax over the usable keys,
    context = weighted average of the values. The middle is one fused kernel
    (:func:`attnkern.additive_attention`); the projections are plain GEMMs.

    Args:
        query_dim: size of the decoder state ``s`` (the query).
        key_dim: size of the encoder states ``h`` (the keys).
        hidden_dim: size ``H`` of the attention MLP.
        bias: learn the bias ``b`` inside the tanh (on the query projection).
        normalize: weight-normalised score vector ``g * v / ||v||`` with a learned scalar
            ``g`` (as TF-Addons ``BahdanauAttention(normalize=True)``); implies the bias.
        backend: passed to :func:`attnkern.additive_attention`.

    Shapes:
        query ``(B, Tq, query_dim)`` or ``(B, query_dim)``; keys ``(B, Tk, key_dim)``;
        values ``(B, Tk, Dv)`` (default: the keys); context ``(B, Tq, Dv)`` or ``(B, Dv)``;
        weights ``(B, Tq, Tk)`` or ``(B, Tk)``.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden_dim: int,
        *,
        bias: bool = True,
        normalize: bool = False,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_ints(query_dim=query_dim, key_dim=key_dim, hidden_dim=hidden_dim)
        factory = {"device": device, "dtype": dtype}
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.normalize = normalize
        self.backend = check_backend(backend)
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=bias or normalize, **factory)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False, **factory)
        self.v = nn.Parameter(torch.empty(hidden_dim, device=device, dtype=dtype))
        if normalize:
            self.g = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        else:
            self.register_parameter("g", None)
        self._held = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear-style init for the projections and ``v``; ``g = 1/sqrt(H)``, bias 0."""
        self.query_proj.reset_parameters()
        self.key_proj.reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_dim)
        nn.init.uniform_(self.v, -bound, bound)
        if self.g is not None:
            nn.init.constant_(self.g, bound)
            if self.query_proj.bias is not None:
                nn.init.zeros_(self.query_proj.bias)

    def score_vector(self) -> Tensor:
        """The score vector ``v`` of shape ``(H,)`` as used by the kernel."""
        if self.g is None:
            return self.v
        return self.g * self.v / self.v.norm()

    def project_keys(self, keys: Tensor) -> PreparedKeys:
        """Project and prepare the keys once per sequence: ``(B, Tk, key_dim)`` ->
        :class:`attnkern.PreparedKeys` (``.key`` is the ``(B, Tk, hidden_dim)`` projection,
        through which gradients reach ``keys`` and ``key_proj``). Pass it as
        ``projected_keys=`` to every decoder step. To add a per-step term to the keys, add
        it to ``.key`` (``prepared.key + term`` is the keys to pass: the prepared exp no
        longer applies to a sum)."""
        self._check_input("keys", keys, (3,), self.key_dim, "(B, Tk, key_dim={})")
        return prepare_keys(self.key_proj(keys))

    def start(self, keys: Tensor, values: Tensor | None = None, *,
              key_padding_mask: Tensor | None = None,
              key_lengths: Tensor | None = None) -> AdditiveState:
        """Start a sequence: ``keys`` ``(B, Tk, key_dim)`` projected and prepared once,
        ``values`` ``(B, Tk, Dv)`` (default: the keys), ``key_padding_mask`` ``(B, Tk)``
        bool (True = padding) and/or ``key_lengths`` ``(B,)``."""
        prepared = self.project_keys(keys)
        if values is None:
            values = keys
        elif not isinstance(values, Tensor) or values.dim() != 3 or \
                values.shape[:2] != keys.shape[:2]:
            seen = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"values must be (B={keys.shape[0]}, Tk={keys.shape[1]}, Dv) "
                             f"(B, Tk of keys), got {seen}")
        return AdditiveState(prepared.key, values, prepared.key_exp, key_padding_mask,
                             key_lengths)

    def step(self, query: Tensor, state: AdditiveState, *,
             causal: bool = False) -> tuple[Tensor, Tensor, AdditiveState]:
        """One decoder step (or a block of steps): ``query`` ``(B, query_dim)`` (or ``(B,
        Tq, query_dim)``) -> ``(context (B, Dv), weights (B, Tk), state)``; content-based
        attention carries nothing from step to step, so the state comes back unchanged."""
        if not isinstance(state, AdditiveState):
            raise TypeError(f"state must be an AdditiveState (from start()), got "
                            f"{type(state).__name__}")
        self._check_input("query", query, (2, 3), self.query_dim,
                          "(B, Tq, query_dim={0}) or (B, query_dim={0})")
        if state.rows is not None:  # hypotheses on the source rows (after reorder)
            if query.dim() != 2 or causal:
                raise ValueError("a reordered state (beam search) takes one step: query "
                                 f"(N, query_dim), causal=False; got {tuple(query.shape)}, "
                                 f"causal={causal}")
            context, weights = attend_rows(
                self.query_proj(query), state.prepared_keys, state.values,
                self.score_vector(), state.rows, key_padding_mask=state.key_padding_mask,
                key_lengths=state.key_lengths, backend=self.backend)
            return context, weights, state
        context, weights = additive_attention(
            self.query_proj(query), state.prepared_keys, state.values, self.score_vector(),
            key_padding_mask=state.key_padding_mask, key_lengths=state.key_lengths,
            causal=causal, return_weights=True, backend=self.backend)
        return context, weights, state

    @classmethod
    def from_bahdanau_tutorial(cls, source: nn.Module | Mapping[str, Tensor],
                               **kwargs: Any) -> AdditiveAttention:
        """Load the PyTorch seq2seq tutorial's ``BahdanauAttention`` (``Wa``, ``Ua``, ``Va``).

        ``Va(tanh(Wa(q) + Ua(k)))``: both biases land in the query projection (they add
        inside the tanh), ``v = Va.weight[0]``, and ``Va.bias`` is dropped (softmax cancels a
        constant score). Use it as ``layer(query, keys, need_weights=True)`` (values default
        to the keys, as in the tutorial's ``bmm(weights, keys)``). ``source`` is the module
        or its state_dict; ``kwargs`` go to the constructor (``backend=``, ``device=``...).
        """
        sd = _state(source)
        wa, ua = sd["Wa.weight"], sd["Ua.weight"]
        layer = cls(wa.shape[1], ua.shape[1], wa.shape[0], bias=True,
                    **{"device": wa.device, "dtype": wa.dtype, **kwargs})
        with torch.no_grad():
            layer.query_proj.weight.copy_(wa)
            layer.query_proj.bias.copy_(sd["Wa.bias"] + sd["Ua.bias"])
            layer.key_proj.weight.copy_(ua)
            layer.v.copy_(sd["Va.weight"].reshape(-1))
        return layer

    @classmethod
    def from_opennmt_mlp(cls, source: nn.Module | Mapping[str, Tensor],
                         **kwargs: Any) -> AdditiveAttention:
        """Load OpenNMT-py's ``GlobalAttention(dim, attn_type="mlp")`` score parameters.

        ``linear_query`` (with bias) -> ``query_proj``, ``linear_context`` -> ``key_proj``,
        ``v.weight[0]`` -> ``v``. The layer returns OpenNMT's context ``c`` and alignment;
        its output layer ``linear_out(cat([c, source]))`` stays the caller's (as does
        ``coverage``, which this does not support). ``source`` is the module or its
        state_dict; ``kwargs`` go to the constructor.
        """
        sd = _state(source)
        wq, wc = sd["linear_query.weight"], sd["linear_context.weight"]
        layer = cls(wq.shape[1], wc.shape[1], wq.shape[0], bias=True,
                    **{"device": wq.device, "dtype": wq.dtype, **kwargs})
        with torch.no_grad():
            layer.query_proj.weight.copy_(wq)
            layer.query_proj.bias.copy_(sd["linear_query.bias"])
            layer.key_proj.weight.copy_(wc)
            layer.v.copy_(sd["v.weight"].reshape(-1))
        return layer

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any) -> None:
        # Accept v stored as an nn.Linear(H, 1).weight, (1, H), as the clients keep it.
        v = state_dict.get(prefix + "v")
        if isinstance(v, Tensor) and v.dim() == 2 and v.shape[0] == 1:
            state_dict[prefix + "v"] = v.reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _check_input(self, name: str, x: object, ranks: tuple[int, ...], dim: int,
                     form: str) -> None:
        _check_input(name, x, ranks, dim, form, self.key_proj.weight)

    def forward(
        self,
        query: Tensor,
        keys: Tensor | None,
        values: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        causal: bool = False,
        projected_keys: PreparedKeys | Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Return ``(context, weights)``; weights is None unless ``need_weights``.

        ``projected_keys`` (what :meth:`project_keys` returns, or a plain ``(B, Tk,
        hidden_dim)`` tensor) skips the key projection and, prepared, the per-sequence
        key-side work: what a step-wise decoder wants; ``keys`` may then be None if
        ``values`` is given.
        """
        self._check_input("query", query, (2, 3), self.query_dim,
                          "(B, Tq, query_dim={0}) or (B, query_dim={0})")
        if projected_keys is None:
            if keys is None:
                raise ValueError("keys is required unless projected_keys is given")
            self._check_input("keys", keys, (3,), self.key_dim, "(B, Tk, key_dim={})")
            projected_keys = self._projected(keys)
        if values is None:
            if keys is None:
                raise ValueError("values (or keys, its default) is required")
            values = keys
        result = additive_attention(
            self.query_proj(query), projected_keys, values, self.score_vector(),
            key_padding_mask=key_padding_mask, key_lengths=key_lengths, causal=causal,
            return_weights=need_weights, backend=self.backend,
        )
        if need_weights:
            context, weights = result
            return context, weights
        assert isinstance(result, Tensor)
        return result, None

    def _projected(self, keys: Tensor) -> Tensor | PreparedKeys:
        """``key_proj(keys)`` for a call without ``projected_keys``, by the rule of
        :func:`_held_projection` (:meth:`start` / :meth:`step` keep nothing)."""
        return _held_projection(self, self.key_proj, keys)

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}, "
            f"bias={self.query_proj.bias is not None}, normalize={self.normalize}, "
            f"backend={self.backend!r}"
        )


class BahdanauAttention(HoldsState, nn.Module):
    """The PyTorch seq2seq tutorial's ``BahdanauAttention`` on the fused op: same
    constructor (``hidden_size``), parameters and state_dict (``Wa``, ``Ua``, ``Va``, each
    an ``nn.Linear(hidden_size, ...)``), ``forward(query, keys)`` and return values.

    ``Va(tanh(Wa(query) + Ua(keys)))``, softmax over the keys, ``bmm(weights, keys)``:
    query ``(B, 1, H)``, keys ``(B, T, H)`` -> ``(context (B, 1, H), weights (B, 1, T))``.
    ``Va``'s bias shifts every score alike, which the softmax cancels (its gradient is 0,
    as the original's up to rounding). ``Ua(keys)`` follows :func:`_held_projection`'s
    rule (the tutorial's decoder passes the same encoder outputs at every step).
    ``start(keys)`` / ``step(query, state)`` as :class:`AdditiveAttention`.
    """

    def __init__(self, hidden_size: int, *, backend: str = "auto") -> None:
        super().__init__()
        check_positive_ints(hidden_size=hidden_size)
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)
        self.hidden_size = hidden_size
        self.backend = check_backend(backend)
        self._held = None

    def _check(self, name: str, x: object, ranks: tuple[int, ...], form: str) -> None:
        _check_input(name, x, ranks, self.hidden_size, form, self.Ua.weight)

    def forward(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        self._check("query", query, (3,), "(B, 1, hidden_size={})")
        self._check("keys", keys, (3,), "(B, T, hidden_size={})")
        if query.shape[0] != keys.shape[0]:
            raise ValueError(f"query and keys must have the same batch, got query "
                             f"{tuple(query.shape)} and keys {tuple(keys.shape)}")
        context, weights = additive_attention(
            self.Wa(query), _held_projection(self, self.Ua, keys), keys, self.Va.weight,
            return_weights=True, backend=self.backend)
        return context, weights

    def start(self, keys: Tensor) -> AdditiveState:
        """Start a sequence: ``keys`` ``(B, T, hidden_size)`` (also the values)."""
        self._check("keys", keys, (3,), "(B, T, hidden_size={})")
        prepared = prepare_keys(self.Ua(keys))
        return AdditiveState(prepared.key, keys, prepared.key_exp)

    def step(self, query: Tensor, state: AdditiveState) -> tuple[Tensor, Tensor, AdditiveState]:
        """``query`` ``(B, 1, H)`` -> ``(context (B, 1, H), weights (B, 1, T), state)``."""
        self._check("query", query, (2, 3), "(B, 1, hidden_size={})")
        if state.rows is not None:  # hypotheses on the source rows (after reorder)
            if query.dim() == 3 and query.shape[1] != 1:
                raise ValueError("a reordered state (beam search) takes one step: query "
                                 f"(N, 1, hidden_size), got {tuple(query.shape)}")
            context, weights = attend_rows(
                self.Wa(query.reshape(query.shape[0], -1)), state.prepared_keys,
                state.values, self.Va.weight, state.rows,
                key_padding_mask=state.key_padding_mask, key_lengths=state.key_lengths,
                backend=self.backend)
            if query.dim() == 3:
                context, weights = context.unsqueeze(1), weights.unsqueeze(1)
            return context, weights, state
        context, weights = additive_attention(
            self.Wa(query), state.prepared_keys, state.values, self.Va.weight,
            key_padding_mask=state.key_padding_mask, key_lengths=state.key_lengths,
            return_weights=True, backend=self.backend)
        return context, weights, state



@converts("*.BahdanauAttention")
def _from_tutorial(old: Any) -> BahdanauAttention | None:
    """The tutorial's ``BahdanauAttention`` (users copy it into their own module)."""
    wa, ua, va = (getattr(old, n, None) for n in ("Wa", "Ua", "Va"))
    if not (isinstance(wa, nn.Linear) and isinstance(ua, nn.Linear)
            and isinstance(va, nn.Linear) and va.out_features == 1):
        return None
    new = BahdanauAttention(wa.in_features)
    ref = old.state_dict()
    new = new.to(device=wa.weight.device, dtype=wa.weight.dtype)
    new.load_state_dict(ref, strict=True)
    return new
