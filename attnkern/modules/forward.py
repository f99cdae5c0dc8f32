"""Forward attention (Zhang et al. 2018): drop-ins for ESPnet's ``AttForward`` and
``AttForwardTA`` (``espnet.nets.pytorch_backend.rnn.attentions``).

Both are location-aware additive attention whose softmax weights are multiplied by a
transition prior built from the previous step's weights, clamped and renormalised::

    alpha = softmax(scaling * gvec . tanh(mlp_enc(h) + mlp_dec(z) + mlp_att(conv(a_prev))))
    prior = a_prev + shift(a_prev)                         (AttForward)
          = u * a_prev + (1 - u) * shift(a_prev)           (AttForwardTA, u from mlp_ta)
    w     = L1-normalise(clamp(prior * alpha, 1e-6)),    context = sum_j w_j h_j

The softmax weights come from the fused op (no context computed there: the clamp makes
``w`` a different distribution, so the context is one ``bmm`` with ``w``); the location
convolution and ``mlp_att`` are ESPnet ``AttLoc``'s term,
:func:`attnkern.modules.espnet.location_keys` (from the current weights at every step, so
nothing goes stale). Same constructor arguments, parameter names and
shapes (strict ``load_state_dict`` both ways), forward signature and returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._registry import converts
from .._validation import check_backend
from ..state import DecodingState, register, shared, weight_grad_store
from ._family import context_of, lengths_mask, project_query, query_store, softmax_weights
from .espnet import location_keys

__all__ = ["AttForward", "AttForwardTA", "ForwardAttentionState"]


@register
@dataclasses.dataclass(frozen=True)
class ForwardAttentionState(DecodingState):
    """Per-utterance state of :class:`AttForward` / :class:`AttForwardTA`.

    memory ``(B, T, D)`` (ESPnet's ``enc_h``: the values), keys ``(B, T, att_dim)``
    (``mlp_enc(memory)``, its ``pre_compute_enc_h``), mask ``(B, T)`` bool (True =
    padding), att_prev ``(B, T)`` (the previous step's weights; one-hot at 0 initially),
    trans_agent_prob ``(B, 1)`` (AttForwardTA's ``u``, 0.5 initially; None for AttForward),
    value_store: the memory's weight-gradient store (``attnkern.state.weight_grad_store``; shared).
    """

    memory: Tensor
    keys: Tensor
    mask: Tensor
    att_prev: Tensor
    trans_agent_prob: Tensor | None = None
    value_store: Tensor | None = shared()
    store_of: Tensor | None = shared()  # the tensor value_store was made for
    query_store: Tensor | None = shared()  # mlp_dec's weight-gradient store
    query_of: Tensor | None = shared()  # the weight query_store was made for


def _one_hot_start(memory: Tensor) -> Tensor:
    att = memory.new_zeros(memory.shape[0], memory.shape[1])
    att[:, 0] = 1.0
    return att


class _ForwardAttention(nn.Module):
    """The shared body of AttForward and AttForwardTA (start / step, ESPnet protocol)."""

    _trans_agent = False
    mlp_enc: nn.Linear
    mlp_dec: nn.Linear
    mlp_att: nn.Linear
    loc_conv: nn.Conv2d
    gvec: nn.Linear
    mlp_ta: nn.Linear
    dunits: int
    att_dim: int
    backend: str
    _held: ForwardAttentionState | None

    # --- explicit state ---------------------------------------------------------------

    def start(self, memory: Tensor, key_lengths: Any = None, *,
              key_padding_mask: Tensor | None = None,
              att_prev: Tensor | None = None) -> ForwardAttentionState:
        """Per-utterance work: memory ``(B, T, D)`` (encoder states), key_lengths (B
        ints, list or tensor) or key_padding_mask ``(B, T)`` bool (True = padding),
        att_prev ``(B, T)`` (default one-hot at 0)."""
        if not isinstance(memory, Tensor) or memory.dim() != 3 \
                or memory.shape[2] != self.mlp_enc.in_features:
            raise ValueError(
                f"memory must be (B, T, {self.mlp_enc.in_features}), got "
                f"{tuple(memory.shape) if isinstance(memory, Tensor) else type(memory).__name__}")
        batch, steps = memory.shape[:2]
        if key_padding_mask is not None:
            if key_padding_mask.shape != (batch, steps) or key_padding_mask.dtype != torch.bool:
                raise ValueError(f"key_padding_mask must be ({batch}, {steps}) bool, got "
                                 f"{tuple(key_padding_mask.shape)} {key_padding_mask.dtype}")
            mask = key_padding_mask
        elif key_lengths is not None:
            mask = lengths_mask(key_lengths, batch, steps, memory.device)
        else:
            mask = torch.zeros(batch, steps, dtype=torch.bool, device=memory.device)
        prob = memory.new_full((batch, 1), 0.5) if self._trans_agent else None
        return ForwardAttentionState(
            memory, self.mlp_enc(memory), mask,
            _one_hot_start(memory) if att_prev is None else att_prev, prob,
            weight_grad_store(memory), memory, *query_store(self.mlp_dec))

    def step(self, dec_z: Tensor | None, state: ForwardAttentionState,
             out_prev: Tensor | None = None, *, scaling: float = 1.0,
             last_attended_idx: int | Tensor | None = None, backward_window: int = 1,
             forward_window: int = 3) -> tuple[Tensor, Tensor, ForwardAttentionState]:
        """One decoder step: dec_z ``(B, dunits)`` (None: zeros); out_prev ``(B, odim)``
        (AttForwardTA only). ``last_attended_idx`` (an int, or ``(B,)`` per item: ESPnet
        takes B = 1 only) keeps keys ``[idx - backward_window, idx + forward_window)``.
        Returns ``(context (B, D), weights (B, T), new state)``; the new state's att_prev
        is the weights."""
        memory, att_prev = state.memory, state.att_prev
        batch, steps = memory.shape[:2]
        if dec_z is None:
            dec_z = memory.new_zeros(batch, self.dunits)
        else:
            if dec_z.numel() != batch * self.dunits:
                raise ValueError(f"dec_z must be ({batch}, {self.dunits}), got "
                                 f"{tuple(dec_z.shape)}")
            dec_z = dec_z.view(batch, self.dunits)
        if att_prev.shape != (batch, steps):
            raise ValueError(f"att_prev must be ({batch}, {steps}), got {tuple(att_prev.shape)}")
        # a 1-channel conv ((chans, 1, 1, kernel)) then mlp_att: ESPnet AttLoc's term
        keys = location_keys(state.keys, att_prev, self.loc_conv.weight, self.mlp_att.weight,
                             int(self.loc_conv.padding[1]))
        # softmax cancels gvec's bias; 0 * bias gives it the (zero) gradient it has there
        weight = self.gvec.weight.view(-1)
        if scaling != 1.0:
            weight = weight * scaling
        weight = weight + 0.0 * self.gvec.bias
        mask = state.mask
        if last_attended_idx is not None:
            idx = torch.as_tensor(last_attended_idx, device=memory.device).view(-1, 1)
            j = torch.arange(steps, device=memory.device)
            mask = mask | (j < idx - backward_window) | (j >= idx + forward_window)
        query = project_query(self.mlp_dec, dec_z, state.query_store, state.query_of)
        alpha = softmax_weights(query, keys, weight, mask, self.backend)
        shifted = F.pad(att_prev, (1, 0))[:, :-1]
        prob = state.trans_agent_prob
        if prob is None:
            prior = att_prev + shifted
        else:
            prior = prob * att_prev + (1 - prob) * shifted
        # ESPnet: "clamp is needed to avoid nan gradient", then F.normalize(p=1)
        w = torch.clamp(prior * alpha, 1e-6)
        w = w / w.sum(1, keepdim=True)
        context = context_of(w, memory, state.value_store, state.store_of)
        if prob is not None:
            if out_prev is None:
                raise ValueError("AttForwardTA.step needs out_prev (B, odim)")
            prob = torch.sigmoid(self.mlp_ta(torch.cat([context, out_prev, dec_z], dim=1)))
        return context, w, state.replace(att_prev=w, trans_agent_prob=prob)

    # --- ESPnet's protocol ------------------------------------------------------------

    def reset(self) -> None:
        """Forget the utterance (ESPnet's ``reset``): the next call starts a new one."""
        self._held = None

    def _call(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
              att_prev: Tensor | None, out_prev: Tensor | None, scaling: float,
              last_attended_idx: int | Tensor | None, backward_window: int,
              forward_window: int) -> tuple[Tensor, Tensor]:
        # The one rule (ESPnet's own): the first call after reset() (or construction)
        # starts the utterance from its enc_hs_pad / enc_hs_len; later calls reuse that
        # state's memory, projected keys and mask, until the next reset(). att_prev is the
        # caller's at every call (None: one-hot at 0).
        state = self._held
        if state is None:
            state = self.start(enc_hs_pad, enc_hs_len, att_prev=att_prev)
        elif att_prev is not None:
            state = state.replace(att_prev=att_prev)
        else:
            state = state.replace(att_prev=_one_hot_start(state.memory))
        context, w, state = self.step(
            dec_z, state, out_prev, scaling=scaling, last_attended_idx=last_attended_idx,
            backward_window=backward_window, forward_window=forward_window)
        self._held = state
        return context, w

    # ESPnet's attributes, read from the held state (None after reset())
    @property
    def enc_h(self) -> Tensor | None:
        return None if self._held is None else self._held.memory

    @property
    def pre_compute_enc_h(self) -> Tensor | None:
        return None if self._held is None else self._held.keys

    @property
    def mask(self) -> Tensor | None:
        return None if self._held is None else self._held.mask

    @property
    def h_length(self) -> int | None:
        return None if self._held is None else self._held.memory.shape[1]


def _init_common(self: _ForwardAttention, enc_dim: int, dunits: int, att_dim: int) -> None:
    self.mlp_enc = nn.Linear(enc_dim, att_dim)
    self.mlp_dec = nn.Linear(dunits, att_dim, bias=False)


def _init_location(self: _ForwardAttention, att_dim: int, aconv_chans: int,
                   aconv_filts: int) -> None:
    self.mlp_att = nn.Linear(aconv_chans, att_dim, bias=False)
    self.loc_conv = nn.Conv2d(1, aconv_chans, (1, 2 * aconv_filts + 1),
                              padding=(0, aconv_filts), bias=False)
    self.gvec = nn.Linear(att_dim, 1)


class AttForward(_ForwardAttention):
    """ESPnet ``AttForward(eprojs, dunits, att_dim, aconv_chans, aconv_filts)``.

    ``forward(enc_hs_pad (B, T, eprojs), enc_hs_len (B), dec_z (B, dunits) | None,
    att_prev (B, T) | None, scaling=1.0, last_attended_idx=None, backward_window=1,
    forward_window=3) -> (context (B, eprojs), weights (B, T))``; ``reset()`` per
    utterance. Explicit state: :meth:`start` / :meth:`step`.
    """

    def __init__(self, eprojs: int, dunits: int, att_dim: int, aconv_chans: int,
                 aconv_filts: int, *, backend: str = "auto") -> None:
        super().__init__()
        # parameters created in ESPnet's order (same initial values for the same seed)
        _init_common(self, eprojs, dunits, att_dim)
        _init_location(self, att_dim, aconv_chans, aconv_filts)
        self.dunits, self.eprojs, self.att_dim = dunits, eprojs, att_dim
        self.backend = check_backend(backend)
        self._held = None

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev: Tensor | None, scaling: float = 1.0,
                last_attended_idx: int | Tensor | None = None, backward_window: int = 1,
                forward_window: int = 3) -> tuple[Tensor, Tensor]:
        return self._call(enc_hs_pad, enc_hs_len, dec_z, att_prev, None, scaling,
                          last_attended_idx, backward_window, forward_window)


class AttForwardTA(_ForwardAttention):
    """ESPnet ``AttForwardTA(eunits, dunits, att_dim, aconv_chans, aconv_filts, odim)``:
    forward attention with the transition agent ``u = sigmoid(mlp_ta([c, out_prev, z]))``.

    ``forward(enc_hs_pad, enc_hs_len, dec_z, att_prev, out_prev (B, odim), scaling=1.0,
    last_attended_idx=None, backward_window=1, forward_window=3) -> (context (B, eunits),
    weights (B, T))``; ``reset()`` per utterance (``u`` back to 0.5).
    """

    _trans_agent = True

    def __init__(self, eunits: int, dunits: int, att_dim: int, aconv_chans: int,
                 aconv_filts: int, odim: int, *, backend: str = "auto") -> None:
        super().__init__()
        _init_common(self, eunits, dunits, att_dim)
        self.mlp_ta = nn.Linear(eunits + dunits + odim, 1)
        _init_location(self, att_dim, aconv_chans, aconv_filts)
        self.dunits, self.eunits, self.att_dim = dunits, eunits, att_dim
        self.backend = check_backend(backend)
        self._held = None

    @property
    def trans_agent_prob(self) -> Tensor | float:
        """ESPnet's attribute: 0.5 before the first step of an utterance, then ``(B, 1)``."""
        if self._held is None or self._held.trans_agent_prob is None:
            return 0.5
        return self._held.trans_agent_prob

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev: Tensor | None, out_prev: Tensor, scaling: float = 1.0,
                last_attended_idx: int | Tensor | None = None, backward_window: int = 1,
                forward_window: int = 3) -> tuple[Tensor, Tensor]:
        return self._call(enc_hs_pad, enc_hs_len, dec_z, att_prev, out_prev, scaling,
                          last_attended_idx, backward_window, forward_window)


_ESPNET = ("espnet.nets.pytorch_backend.rnn.attentions",
           "espnet2.legacy.nets.pytorch_backend.rnn.attentions")


def _carry(new: nn.Module, old: nn.Module) -> nn.Module:
    p = next(old.parameters())
    new = new.to(device=p.device, dtype=p.dtype)
    new.load_state_dict(old.state_dict(), strict=True)
    return new


@converts(*(f"{m}.AttForward" for m in _ESPNET))
def _from_espnet_forward(m: Any) -> nn.Module:
    conv: Any = m.loc_conv
    return _carry(AttForward(m.eprojs, m.dunits, m.att_dim, conv.out_channels,
                             conv.padding[1]), m)


@converts(*(f"{m}.AttForwardTA" for m in _ESPNET))
def _from_espnet_forward_ta(m: Any) -> nn.Module:
    conv: Any = m.loc_conv
    ta: Any = m.mlp_ta
    odim = ta.in_features - m.eunits - m.dunits
    return _carry(AttForwardTA(m.eunits, m.dunits, m.att_dim, conv.out_channels,
                               conv.padding[1], odim), m)
