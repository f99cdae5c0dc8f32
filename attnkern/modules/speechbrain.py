"""Drop-ins for SpeechBrain's ``speechbrain.nnet.attention.ContentBasedAttention`` and
``LocationAwareAttention`` (the attentions of its ``AttentionalRNNDecoder``).

Same names, constructor arguments (``scaling`` included), submodules and so ``state_dict``
keys and shapes (strict ``load_state_dict`` both ways), ``forward(enc_states, enc_len,
dec_states) -> (context (B, output_dim), attn (B, T))`` with the ``mlp_out`` projection of
the context, and the per-utterance protocol: ``reset()``, the keys and the mask kept from
the first call after it, ``prev_attn`` (the previous weights, detached, as SpeechBrain keeps
them; readable and assignable, e.g. to permute hypotheses). The score
``scaling * mlp_attn(tanh(...))`` is the fused op's with ``scaling * mlp_attn.weight`` as
its score vector. Explicit state: :meth:`start` / :meth:`step` with
:class:`SpeechBrainAttentionState`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._registry import converts
from .._validation import check_backend
from ..functional import PreparedKeys, prepare_keys
from ..state import DecodingState, batch_store, prepared, register, weight_grad_store
from .espnet import Location1Term, attend

__all__ = ["ContentBasedAttention", "LocationAwareAttention", "SpeechBrainAttentionState"]

_PATH = "speechbrain.nnet.attention"


@register
@dataclasses.dataclass(frozen=True)
class SpeechBrainAttentionState(DecodingState):
    """One utterance: memory ``(B, T, enc_dim)`` (the values), keys ``(B, T, attn_dim)``
    (``mlp_enc(enc_states)``, ``mlp_loc``'s bias folded in), key_exp (content attention's
    prepared keys) or None, padding ``(B, T)`` bool (True = padding: SpeechBrain's
    ``mask == 0``), prev ``(B, T)`` the previous weights (location attention) or None."""

    memory: Tensor
    keys: Tensor
    padding: Tensor
    key_exp: Tensor | None = prepared("keys")
    prev: Tensor | None = None
    # memory's weight-gradient store; reorder drops it (the reordered memory is a new
    # tensor: its gradient flows through index_select)
    values_store: Tensor | None = batch_store()

    def prepared(self) -> Tensor | PreparedKeys:
        return self.keys if self.key_exp is None else PreparedKeys(self.keys, self.key_exp)


def _bad(name: str, what: str, got: object) -> ValueError:
    seen = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
    return ValueError(f"{name} must be {what}, got {seen}")


class _SpeechBrainAttention(nn.Module):
    """The SpeechBrain protocol on top of start / step.

    Reuse rule (SpeechBrain's own): the first ``forward`` after construction or
    :meth:`reset` starts the utterance (keys ``mlp_enc(enc_states)``, the mask from
    ``enc_len``, for location attention ``prev_attn`` uniform over the valid frames); later
    calls reuse the keys and the mask until :meth:`reset`, and take the context from the
    ``enc_states`` they are given (as SpeechBrain's ``bmm(attn, enc_states)`` does).
    """

    _state: SpeechBrainAttentionState | None
    _content_only = False
    mlp_enc: nn.Linear
    mlp_dec: nn.Linear
    mlp_attn: nn.Linear
    mlp_out: nn.Linear

    def _init_common(self, enc_dim: int, dec_dim: int, attn_dim: int, output_dim: int,
                     scaling: float, backend: str) -> None:
        self.enc_dim, self.dec_dim, self.attn_dim, self.output_dim = (
            enc_dim, dec_dim, attn_dim, output_dim)
        self.scaling = scaling
        self.softmax = nn.Softmax(dim=-1)  # SpeechBrain's attribute (no parameters)
        self.backend = check_backend(backend)
        self._state = None

    # SpeechBrain's attributes, read from the held state
    @property
    def precomputed_enc_h(self) -> Tensor | None:
        return None if self._state is None else self._state.keys

    @property
    def mask(self) -> Tensor | None:
        return None if self._state is None else ~self._state.padding

    @property
    def enc_len(self) -> None:
        return None  # SpeechBrain sets it to None in reset() and never again

    def reset(self) -> None:
        """Forget the utterance (SpeechBrain's ``reset``)."""
        self._state = None

    def _key_bias(self) -> Tensor:
        return self.mlp_enc.bias

    def start(self, memory: Tensor, enc_len: Tensor) -> SpeechBrainAttentionState:
        """memory ``(B, T, enc_dim)``; enc_len ``(B,)`` (frames; SpeechBrain's mask: frame j
        is valid where ``j < enc_len``)."""
        if not isinstance(memory, Tensor) or memory.dim() != 3 or memory.shape[2] != self.enc_dim:
            raise _bad("enc_states", f"a (B, T, {self.enc_dim}) tensor", memory)
        batch, steps, _ = memory.shape
        if not isinstance(enc_len, Tensor) or enc_len.shape != (batch,):
            raise _bad("enc_len", f"a ({batch},) tensor", enc_len)
        # length_to_mask(enc_len, max_len=T): arange in enc_len's dtype, < enc_len
        frames = torch.arange(steps, device=enc_len.device, dtype=enc_len.dtype)
        valid = frames < enc_len.unsqueeze(1)
        keys = F.linear(memory, self.mlp_enc.weight, self._key_bias())
        prev = None
        if not self._content_only:
            # SpeechBrain: mask * (1 / enc_len.float()), in the encoder's dtype here
            prev = (valid.to(enc_len.dtype) * (1 / enc_len.float()).unsqueeze(1)).to(memory.dtype)
        key_exp = prepare_keys(keys).key_exp if self._content_only else None
        return SpeechBrainAttentionState(memory=memory, keys=keys, padding=~valid,
                                         key_exp=key_exp, prev=prev,
                                         values_store=weight_grad_store(memory))

    def _query(self, dec_states: Tensor, state: SpeechBrainAttentionState) -> Tensor:
        batch = state.memory.shape[0]
        if not isinstance(dec_states, Tensor) or dec_states.shape != (batch, self.dec_dim):
            raise _bad("dec_states", f"a ({batch}, {self.dec_dim}) tensor", dec_states)
        return self.mlp_dec(dec_states)

    def _keys(self, state: SpeechBrainAttentionState) -> Tensor | PreparedKeys | Location1Term:
        return state.prepared()

    def step(self, dec_states: Tensor, state: SpeechBrainAttentionState
             ) -> tuple[Tensor, Tensor, SpeechBrainAttentionState]:
        """One decoder step: ``(context (B, output_dim), attn (B, T), state)``; the new
        state's prev is ``attn.detach()``."""
        context, attn = attend(
            self._query(dec_states, state), self._keys(state), state.memory,
            self.mlp_attn.weight.view(-1) * self.scaling, state.padding, self.backend,
            state.values_store, state.memory)
        new = state if state.prev is None else state.replace(prev=attn.detach())
        return self.mlp_out(context), attn, new

    def forward(self, enc_states: Tensor, enc_len: Tensor,
                dec_states: Tensor) -> tuple[Tensor, Tensor]:
        state = self._state
        if state is None:
            state = self.start(enc_states, enc_len)
        elif enc_states is not state.memory:
            if not isinstance(enc_states, Tensor) or enc_states.shape != state.memory.shape:
                raise _bad("enc_states", f"{tuple(state.memory.shape)} (this utterance's)",
                           enc_states)
            # SpeechBrain's context reads this call's enc_states
            state = state.replace(memory=enc_states, values_store=None)
        context, attn, self._state = self.step(dec_states, state)
        return context, attn

    def extra_repr(self) -> str:
        return (f"enc_dim={self.enc_dim}, dec_dim={self.dec_dim}, attn_dim={self.attn_dim}, "
                f"output_dim={self.output_dim}, scaling={self.scaling}")


class ContentBasedAttention(_SpeechBrainAttention):
    """SpeechBrain ``ContentBasedAttention`` (Bahdanau): ``attn = softmax(scaling *
    mlp_attn(tanh(mlp_enc(h) + mlp_dec(s))))`` over ``j < enc_len``, ``context =
    mlp_out(attn @ h)``. Keys prepared once per utterance.

    forward: enc_states ``(B, T, enc_dim)``, enc_len ``(B,)``, dec_states ``(B, dec_dim)``
    -> ``(context (B, output_dim), attn (B, T))``.
    """

    _content_only = True

    def __init__(self, enc_dim: int, dec_dim: int, attn_dim: int, output_dim: int,
                 scaling: float = 1.0, *, backend: str = "auto") -> None:
        super().__init__()
        self.mlp_enc = nn.Linear(enc_dim, attn_dim)
        self.mlp_dec = nn.Linear(dec_dim, attn_dim)
        self.mlp_attn = nn.Linear(attn_dim, 1, bias=False)
        self.mlp_out = nn.Linear(enc_dim, output_dim)
        self._init_common(enc_dim, dec_dim, attn_dim, output_dim, scaling, backend)


class LocationAwareAttention(_SpeechBrainAttention):
    """SpeechBrain ``LocationAwareAttention`` (Chorowski et al. 2015): the keys of a step add
    ``mlp_loc(conv_loc(prev_attn))`` (one channel, ``2 * kernel_size + 1`` taps,
    :func:`attnkern.modules.espnet.location_keys`); ``prev_attn`` is the previous step's
    weights, detached (uniform ``1 / enc_len`` on the valid frames at the first step).

    forward: as :class:`ContentBasedAttention`.
    """

    def __init__(self, enc_dim: int, dec_dim: int, attn_dim: int, output_dim: int,
                 conv_channels: int, kernel_size: int, scaling: float = 1.0, *,
                 backend: str = "auto") -> None:
        super().__init__()
        self.mlp_enc = nn.Linear(enc_dim, attn_dim)
        self.mlp_dec = nn.Linear(dec_dim, attn_dim)
        self.mlp_attn = nn.Linear(attn_dim, 1, bias=False)
        self.conv_loc = nn.Conv1d(1, conv_channels, kernel_size=2 * kernel_size + 1,
                                  padding=kernel_size, bias=False)
        self.mlp_loc = nn.Linear(conv_channels, attn_dim)
        # SpeechBrain builds mlp_attn twice (same key, second one kept): done likewise, so a
        # seeded construction draws the same parameters
        self.mlp_attn = nn.Linear(attn_dim, 1, bias=False)
        self.mlp_out = nn.Linear(enc_dim, output_dim)
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self._init_common(enc_dim, dec_dim, attn_dim, output_dim, scaling, backend)

    def _key_bias(self) -> Tensor:
        return self.mlp_enc.bias + self.mlp_loc.bias  # mlp_loc's bias: the same every step

    def _keys(self, state: SpeechBrainAttentionState) -> Tensor | PreparedKeys | Location1Term:
        assert state.prev is not None
        return Location1Term(state.keys, state.prev, self.conv_loc.weight,
                             self.mlp_loc.weight, self.kernel_size)

    @property
    def prev_attn(self) -> Tensor | None:
        """The previous weights ``(B, T)`` the next step's location term reads."""
        return None if self._state is None else self._state.prev

    @prev_attn.setter
    def prev_attn(self, value: Tensor) -> None:
        # Before the first forward SpeechBrain's forward overwrites prev_attn: ignored here.
        if self._state is None:
            return
        shape = self._state.memory.shape[:2]
        if not isinstance(value, Tensor) or value.shape != shape:
            raise _bad("prev_attn", f"a {tuple(shape)} tensor (this utterance's B, T)", value)
        self._state = self._state.replace(prev=value)

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", conv_channels={self.conv_channels}, kernel_size={self.kernel_size}")


def _finish(new: nn.Module, old: nn.Module) -> nn.Module:
    new.load_state_dict(old.state_dict(), strict=True)
    param = next(old.parameters())
    return new.to(device=param.device, dtype=param.dtype)


def _dims(m: Any) -> tuple[int, int, int, int]:
    return (m.mlp_enc.in_features, m.mlp_dec.in_features, m.mlp_enc.out_features,
            m.mlp_out.out_features)


@converts(f"{_PATH}.ContentBasedAttention")
def _from_content(m: Any) -> nn.Module:
    return _finish(ContentBasedAttention(*_dims(m), scaling=m.scaling), m)


@converts(f"{_PATH}.LocationAwareAttention")
def _from_location(m: Any) -> nn.Module:
    conv = m.conv_loc
    return _finish(LocationAwareAttention(*_dims(m), conv.out_channels,
                                          (conv.kernel_size[0] - 1) // 2,
                                          scaling=m.scaling), m)

