"""Drop-ins for ESPnet's RNN attentions (``espnet.nets.pytorch_backend.rnn.attentions``, also
found as ``espnet2.legacy.nets.pytorch_backend.rnn.attentions``): ``AttAdd``, ``AttLoc``,
``AttCov``, ``AttCovLoc``, ``AttLocRec``, ``AttMultiHeadAdd``.

Each class has ESPnet's name, constructor arguments, submodules (so ``state_dict`` keys and
shapes: strict ``load_state_dict`` both ways), ``forward`` signature and return values and
per-utterance protocol (``reset()``, ``att_prev`` in and out). ESPnet's score is
``scaling * gvec(tanh(mlp_enc(h) + mlp_dec(z) [+ location term]))`` with a softmax over the
valid frames; here ``scaling * gvec.weight`` is the score vector of one fused
:func:`attnkern.additive_attention` call (the softmax is shift invariant, so ``gvec``'s bias
changes nothing: its gradient is exactly zero here, where ESPnet's is rounding noise).

Explicit state (``start`` / ``step``, :class:`EspnetAttentionState`) carries the utterance;
the ESPnet ``forward`` holds one state with ESPnet's own reuse rule (see
:class:`_EspnetAttention`).

Location term (``AttLoc``, ``AttCovLoc``: one channel, ``2F+1`` taps, ``C`` filters): the
bias-free conv followed by the bias-free ``mlp_att`` is a linear map of each window, and
:func:`location_keys` picks how to apply it from the geometry (see there).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .._compat import is_eager as _eager
from .._registry import converts
from .._validation import check_backend
from ..functional import PreparedKeys, prepare_keys
from ..state import DecodingState, batch_store, register, shared, weight_grad_store
from ..state import prepared as _prepared
from ._family import (
    _inference_step_op,
    attention_with_store,
    fold_location_filter,
    location_term,
    project_query,
    query_store,
)

__all__ = ["AttAdd", "AttCov", "AttCovLoc", "AttLoc", "AttLocRec", "AttMultiHeadAdd",
           "EspnetAttentionState", "EspnetMultiHeadState", "location_keys"]

_PATHS = ("espnet.nets.pytorch_backend.rnn.attentions",
          "espnet2.legacy.nets.pytorch_backend.rnn.attentions")


def _names(cls: str) -> tuple[str, ...]:
    return tuple(f"{p}.{cls}" for p in _PATHS)


# ---------------------------------------------------------------- the location term

def _location1_op_applies(prev: Tensor, kernel: int, padding: int) -> bool:
    """Whether ``attnkern::location1_keys`` can run this conv: CPU, eager, the C++ extension
    built, ``kernel = 2 * padding + 1`` (the op's 'same' padding)."""
    return prev.is_cpu and ops.HAS_CPP and _eager() and kernel == 2 * padding + 1


def _op_beats_folded(kernel: int, n_filters: int, attention_dim: int) -> bool:
    """The op's conv and dense term against the folded GEMM's padded taps: the op where it
    does at most half the multiply-adds (its dense term is not a tuned GEMM: 1.6x the time
    per multiply-add at ESPnet's Tacotron 2 AttLoc, 32 x 31 taps, att_dim 512)."""
    taps = -(-kernel // 16) * 16
    return 2 * (kernel * n_filters + n_filters * attention_dim) <= taps * attention_dim


class Location1Term(NamedTuple):
    """The keys ``base + dense(conv(prev))`` not yet computed: :func:`location_keys`'
    arguments, so that :func:`attend` can run an inference step as one op."""

    base: Tensor
    prev: Tensor
    conv_weight: Tensor
    dense_weight: Tensor
    padding: int


def attend(query: Tensor, keys: Tensor | PreparedKeys | Location1Term, memory: Tensor,
           weight: Tensor, key_padding_mask: Tensor | None, backend: str,
           token: Tensor | None, value_of: Tensor | None, *,
           key_lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`attnkern.modules._family.attention_with_store` on ``keys``, which may be a
    :class:`Location1Term`: an inference step on CPU (see
    :func:`attnkern.modules._family.location_attention`) is then one C++ op,
    ``attnkern::location1_attention`` (or ``location_attention`` with the folded filter, by
    :func:`location_keys`' rule), else the keys are computed first."""
    if isinstance(keys, Location1Term):
        base, prev, conv_weight, dense_weight, padding = keys
        n_filters, kernel = conv_weight.shape[0], conv_weight.shape[-1]
        if (_location1_op_applies(prev, kernel, padding) and _inference_step_op(
                backend, query, (query, base, prev, conv_weight, dense_weight, memory, weight),
                key_padding_mask, key_lengths)):
            context: Tensor
            weights: Tensor
            if _op_beats_folded(kernel, n_filters, dense_weight.shape[0]):
                context, weights = ops.location1_attention(
                    query, base, prev, conv_weight.reshape(n_filters, kernel), dense_weight,
                    memory, weight.view(-1), key_padding_mask, key_lengths)
                return context, weights
            filt = fold_location_filter(conv_weight.reshape(n_filters, 1, kernel), dense_weight)
            batch, steps = prev.shape
            context, weights = ops.location_attention(
                query, base, prev.view(batch, 1, steps), filt, memory, weight.view(-1),
                key_padding_mask, key_lengths, kernel, padding)
            return context, weights
        keys = location_keys(*keys)
    return attention_with_store(query, keys, memory, weight, key_padding_mask, backend, token,
                                value_of, key_lengths=key_lengths)


def location_keys(base: Tensor, prev: Tensor, conv_weight: Tensor, dense_weight: Tensor,
                  padding: int) -> Tensor:
    """``base + dense(conv(prev))`` for a 1-channel location conv without biases.

    base ``(B, T, A)``; prev ``(B, T)``; conv_weight ``(C, 1, K)`` (or ESPnet's Conv2d
    ``(C, 1, 1, K)``), ``K = 2 * padding + 1``; dense_weight ``(A, C)``. Returns
    ``(B, T, A)``.

    On CPU (eager, the C++ extension built) one op does it, ``attnkern::location1_keys``
    (csrc/kernels/location1.cpp): the conv as a register-blocked correlation per batch item
    and the dense term added while ``base`` is copied; its backward reads the gradient once
    for both ``grad_conv`` and ``grad_dense``. Elsewhere (compile, export, CUDA) standard ops:
    the conv then the dense ``C -> A`` by one ``baddbmm`` (``T K C + T C A`` multiply-adds per
    row), or, when that does more than half the work, the two folded into one ``(A, K)``
    filter on the unfolded ``K``-tap windows (``T K A``; 16x the work at the LAS default 201
    taps, 10 filters, A = 320, 1.1x at tacotron2's 2 x 31 x 32).

    Where the op would do more than half the multiply-adds of the folded ``(A, K)`` filter
    (ESPnet's Tacotron 2 ``AttLoc``: 32 filters x 31 taps, att_dim 512), that filter as one
    GEMM on the windows instead (:func:`attnkern.modules._family.location_term`): B16 T120,
    1 thread, 1.2 against 2.1 ms forward, 4.1 against 8.7 ms forward+backward.

    Why the op (LAS default B16, T200, A320, 10 x 201; 2 threads, Sapphire Rapids): oneDNN's
    1-channel conv runs at a few GFLOP/s (1.1 ms forward, 2.2 ms backward a step) and the
    baddbmm's ``N = 10`` GEMMs and the add cost several passes over the 4 MB ``(B, T, A)``
    tensors: 5.8 ms forward+backward, 1.9 ms forward for the standard path. Predicted for the
    op: the conv at ~0.1 ms a direction and one pass over ``(B, T, A)`` for each of forward
    and backward, ~2 ms forward+backward. Measured: see docs/results.md.
    """
    n_filters = conv_weight.shape[0]
    kernel = conv_weight.shape[-1]
    attention_dim = dense_weight.shape[0]
    batch, steps = prev.shape
    if _location1_op_applies(prev, kernel, padding):
        if _op_beats_folded(kernel, n_filters, attention_dim):
            return ops.location1_keys(base, prev, conv_weight.reshape(n_filters, kernel),
                                      dense_weight)
        filt = fold_location_filter(conv_weight.reshape(n_filters, 1, kernel), dense_weight)
        return location_term(base, prev.view(batch, 1, steps), filt, kernel, padding)
    if kernel * n_filters + n_filters * attention_dim < kernel * attention_dim // 2:
        # as a (1, K) Conv2d: oneDNN's 2-D kernel measured ~10% faster here (fwd+bwd)
        conv = F.conv2d(prev.view(batch, 1, 1, steps),
                        conv_weight.reshape(n_filters, 1, 1, kernel),
                        padding=(0, padding)).view(batch, n_filters, steps)
        return torch.baddbmm(base, conv.transpose(1, 2),
                             dense_weight.t().unsqueeze(0).expand(batch, -1, -1))
    folded = dense_weight @ conv_weight.reshape(n_filters, kernel)  # (A, K)
    windows = F.pad(prev, (padding, padding)).unfold(1, kernel, 1)  # (B, T, K)
    return torch.baddbmm(base, windows, folded.t().unsqueeze(0).expand(batch, -1, -1))


def _location_conv(prev: Tensor, conv_weight: Tensor, padding: int) -> Tensor:
    """The 1-channel location conv alone: prev ``(B, T)``, conv_weight ``(C, 1, [1,] K)``,
    ``K = 2 * padding + 1`` -> ``(B, T, C)``.

    On CPU (eager, the C++ extension built) ``attnkern::location1_keys`` with a zero base
    and an identity dense term (``C x C`` extra multiply-adds a frame against the conv's
    ``K x C``): at ESPnet's LAS default (B16, T200, 10 x 201; 2 threads, Sapphire Rapids)
    0.55 against oneDNN's 0.83 ms forward, 2.1 against 3.2 ms forward+backward.
    """
    n_filters, kernel = conv_weight.shape[0], conv_weight.shape[-1]
    if _location1_op_applies(prev, kernel, padding):
        batch, steps = prev.shape
        eye = torch.eye(n_filters, dtype=prev.dtype, device=prev.device)
        return ops.location1_keys(prev.new_zeros(batch, steps, n_filters), prev,
                                  conv_weight.reshape(n_filters, kernel), eye)
    conv = F.conv1d(prev.unsqueeze(1), conv_weight.reshape(n_filters, 1, kernel),
                    padding=padding)
    return conv.transpose(1, 2)


def _window_mask(last_attended_idx: int | Tensor, backward_window: int, forward_window: int,
                 state: EspnetAttentionState) -> Tensor:
    """ESPnet's monotonic attention constraint as a key padding mask ``(B, T)``, True
    outside ``[idx - backward_window, idx + forward_window)``."""
    batch, steps = state.memory.shape[:2]
    device = state.memory.device
    if isinstance(last_attended_idx, Tensor):
        if last_attended_idx.dtype.is_floating_point or last_attended_idx.numel() not in (1, batch):
            raise _fail("last_attended_idx", f"an int or a (B={batch},) integer tensor",
                        last_attended_idx)
        idx = last_attended_idx.to(device).view(-1, 1)
    elif isinstance(last_attended_idx, int) and not isinstance(last_attended_idx, bool):
        idx = torch.tensor([[last_attended_idx]], device=device)
    else:
        raise _fail("last_attended_idx", f"an int or a (B={batch},) integer tensor",
                    last_attended_idx)
    for name, win in (("backward_window", backward_window), ("forward_window", forward_window)):
        if not isinstance(win, int) or isinstance(win, bool):
            raise _fail(name, "an int", win)
    frames = torch.arange(steps, device=device)
    return (frames < idx - backward_window) | (frames >= idx + forward_window)


# ---------------------------------------------------------------- state

@register
@dataclasses.dataclass(frozen=True)
class EspnetAttentionState(DecodingState):
    """One utterance of an ESPnet single-head attention.

    memory ``(B, T, eprojs)`` (the values: ESPnet's ``enc_h``); keys ``(B, T, att_dim)``
    (``mlp_enc(enc_h)``, biases that are constant over the utterance folded in); key_exp
    (the fused op's prepared keys, content-only classes) or None; lengths ``(B,)`` int64;
    prev ``(B, T)``: the previous weights (``AttLoc``, ``AttLocRec``) or the sum of all
    previous weights (``AttCov``, ``AttCovLoc``), None for ``AttAdd``; att_h, att_c ``(B,
    att_dim)``: ``AttLocRec``'s LSTM state, else None.
    """

    memory: Tensor
    keys: Tensor
    lengths: Tensor
    key_exp: Tensor | None = _prepared("keys")
    prev: Tensor | None = None
    att_h: Tensor | None = None
    att_c: Tensor | None = None
    # memory's weight-gradient store; reorder drops it (the reordered memory is a new
    # tensor: its gradient flows through index_select)
    values_store: Tensor | None = batch_store()
    query_store: Tensor | None = shared()  # mlp_dec's weight-gradient store
    query_of: Tensor | None = shared()  # the weight query_store was made for

    def prepared(self) -> Tensor | PreparedKeys:
        return self.keys if self.key_exp is None else PreparedKeys(self.keys, self.key_exp)


@register
@dataclasses.dataclass(frozen=True)
class EspnetMultiHeadState(DecodingState):
    """One utterance of ``AttMultiHeadAdd``: per head (tuples of ``aheads`` tensors) keys
    ``(B, T, att_dim_k)``, their prepared form (or None) and values ``(B, T, att_dim_v)``;
    lengths ``(B,)``. One tensor per head, so that a step's head uses its operands whole
    (a slice of a stacked tensor would cost a full-size zero gradient per head and step);
    :meth:`reorder` selects rows of each."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    lengths: Tensor
    key_exp: tuple[Tensor, ...] | None = _prepared("keys")
    # each head's values' weight-gradient store (or None); reorder drops them
    stores: tuple[Tensor | None, ...] | None = batch_store()

    def reorder(self, index: Tensor) -> EspnetMultiHeadState:
        if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype != torch.long:
            raise TypeError("reorder: index must be a 1-D torch.long tensor, got "
                            + (f"{index.dtype} of shape {tuple(index.shape)}"
                               if isinstance(index, Tensor) else type(index).__name__))
        index = index.to(self.lengths.device)

        def pick(ts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(t.index_select(0, index) for t in ts)

        return dataclasses.replace(
            self, keys=pick(self.keys), values=pick(self.values),
            lengths=self.lengths.index_select(0, index),
            key_exp=None if self.key_exp is None else pick(self.key_exp), stores=None)


# ---------------------------------------------------------------- checks

def _lin(m: nn.Module) -> nn.Linear:
    assert isinstance(m, nn.Linear)  # ModuleList items are nn.Linear here
    return m


def _fail(name: str, what: str, got: object) -> ValueError:
    seen = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
    return ValueError(f"{name} must be {what}, got {seen}")


def _lengths(enc_hs_len: Any, batch: int, steps: int, device: torch.device) -> Tensor:
    try:
        lengths = torch.as_tensor(enc_hs_len, device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"enc_hs_len must be a list or tensor of {batch} lengths, got "
                        f"{type(enc_hs_len).__name__}") from e
    if lengths.dim() != 1 or lengths.shape[0] != batch or lengths.is_floating_point():
        raise _fail("enc_hs_len", f"{batch} integer lengths", lengths)
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"enc_hs_len must be in [1, {steps}] (enc_hs_pad has T_max = "
                         f"{steps}), got {lengths.tolist()}")
    return lengths.long()


def _uniform(lengths: Tensor, steps: int, like: Tensor) -> Tensor:
    """ESPnet's initial weights: ``1 / length`` on the valid frames, 0 on padding."""
    valid = (torch.arange(steps, device=lengths.device) < lengths.unsqueeze(-1)).to(like.dtype)
    return valid / lengths.to(like.dtype).unsqueeze(-1)


# ---------------------------------------------------------------- single head

class _EspnetAttention(nn.Module):
    """The ESPnet protocol on top of :meth:`start` / :meth:`step`.

    Reuse rule (ESPnet's own): the first ``forward`` after construction or :meth:`reset`
    starts an utterance from the ``enc_hs_pad`` / ``enc_hs_len`` it is given (keys
    ``mlp_enc(enc_hs_pad)``, the mask from the lengths) and the module holds that one
    state; later calls use it (the encoder states passed then are not read, as in ESPnet)
    until :meth:`reset`. With ``han_mode=True`` the keys and values are recomputed from
    ``enc_hs_pad`` at every call (the lengths stay those of the first call, as ESPnet's
    mask does). ``att_prev`` is the caller's: what ``forward`` returns, fed back.
    """

    _state: EspnetAttentionState | None
    mlp_enc: nn.Linear
    mlp_dec: nn.Linear
    gvec: nn.Linear

    def __init__(self, eprojs: int, dunits: int, att_dim: int, han_mode: bool,
                 backend: str) -> None:
        super().__init__()
        self.dunits = dunits
        self.eprojs = eprojs
        self.att_dim = att_dim
        self.han_mode = han_mode
        self.backend = check_backend(backend)
        self._state = None

    # ESPnet attributes, read from the held state
    @property
    def enc_h(self) -> Tensor | None:
        return None if self._state is None else self._state.memory

    @property
    def h_length(self) -> int | None:
        return None if self._state is None else self._state.memory.shape[1]

    @property
    def pre_compute_enc_h(self) -> Tensor | None:
        return None if self._state is None else self._state.keys

    @property
    def mask(self) -> Tensor | None:
        """ESPnet's pad mask ``(B, T)``, True = padding."""
        s = self._state
        if s is None:
            return None
        steps = s.memory.shape[1]
        return torch.arange(steps, device=s.lengths.device) >= s.lengths.unsqueeze(-1)

    def reset(self) -> None:
        """Forget the utterance (as ESPnet's ``reset``)."""
        self._state = None

    def _key_bias(self) -> Tensor:
        """mlp_enc's bias, plus ``0 * gvec.bias`` so that gvec's bias has its (exactly
        zero) gradient like every other parameter."""
        bias: Tensor = self.mlp_enc.bias
        gbias = self.gvec.bias
        if gbias is not None and gbias.requires_grad and torch.is_grad_enabled():
            bias = bias + gbias * 0
        return bias

    _content_only = False

    def start(self, memory: Tensor, *, key_lengths: Any = None,
              att_prev: Tensor | None = None) -> EspnetAttentionState:
        """One utterance: memory ``(B, T, eprojs)``; key_lengths ``(B,)`` (a list too; all
        frames when None); att_prev ``(B, T)`` the first previous weights (ESPnet's uniform
        over the valid frames when None)."""
        if not isinstance(memory, Tensor) or memory.dim() != 3 or memory.shape[2] != self.eprojs:
            raise _fail("enc_hs_pad", f"a (B, T_max, {self.eprojs}) tensor", memory)
        batch, steps, _ = memory.shape
        if key_lengths is None:
            key_lengths = [steps] * batch
        lengths = _lengths(key_lengths, batch, steps, memory.device)
        keys = F.linear(memory, self.mlp_enc.weight, self._folded_bias())
        key_exp = prepare_keys(keys).key_exp if self._content_only else None
        query_store_, query_of = query_store(self.mlp_dec)
        return EspnetAttentionState(memory=memory, keys=keys, lengths=lengths, key_exp=key_exp,
                                    prev=self._initial_prev(lengths, steps, memory, att_prev),
                                    values_store=weight_grad_store(memory),
                                    query_store=query_store_, query_of=query_of)

    def _folded_bias(self) -> Tensor:
        return self._key_bias()

    def _initial_prev(self, lengths: Tensor, steps: int, memory: Tensor,
                      att_prev: Tensor | None) -> Tensor | None:
        return None

    def _query(self, dec_z: Tensor | None, state: EspnetAttentionState) -> Tensor:
        batch = state.memory.shape[0]
        if dec_z is None:
            dec_z = state.memory.new_zeros(batch, self.dunits)
        elif not isinstance(dec_z, Tensor) or dec_z.numel() != batch * self.dunits:
            raise _fail("dec_z", f"a (B={batch}, {self.dunits}) tensor", dec_z)
        else:
            dec_z = dec_z.view(batch, self.dunits)
        # the weight's gradient through the state's store; an inference step's rows by
        # attnkern::rows_linear
        return project_query(self.mlp_dec, dec_z, state.query_store, state.query_of)

    def _weight(self, scaling: float) -> Tensor:
        return self.gvec.weight.view(-1) * scaling

    def _attend(self, query: Tensor, keys: Tensor | PreparedKeys | Location1Term,
                state: EspnetAttentionState, scaling: float,
                window: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return attend(query, keys, state.memory, self._weight(scaling), window, self.backend,
                      state.values_store, state.memory, key_lengths=state.lengths)

    def _utterance(self, enc_hs_pad: Tensor, enc_hs_len: Any) -> EspnetAttentionState:
        state = self._state
        if state is None:
            state = self.start(enc_hs_pad, key_lengths=enc_hs_len)
        elif self.han_mode:
            fresh = self.start(enc_hs_pad, key_lengths=state.lengths)
            state = fresh.replace(prev=state.prev)
        self._state = state
        return state

    def _check_prev(self, name: str, prev: Tensor, state: EspnetAttentionState) -> Tensor:
        if not isinstance(prev, Tensor) or prev.shape != state.memory.shape[:2]:
            raise _fail(name, f"a (B, T_max) = {tuple(state.memory.shape[:2])} tensor", prev)
        return prev

    def extra_repr(self) -> str:
        return f"eprojs={self.eprojs}, dunits={self.dunits}, att_dim={self.att_dim}"


class AttAdd(_EspnetAttention):
    """ESPnet ``AttAdd``: ``w = softmax(scaling * gvec(tanh(mlp_enc(h) + mlp_dec(z))))``,
    ``c = sum_t w_t h_t``. Keys prepared once per utterance (:func:`attnkern.prepare_keys`).

    forward: enc_hs_pad ``(B, T_max, eprojs)``, enc_hs_len ``(B,)`` list or tensor, dec_z
    ``(B, dunits)`` or None, att_prev (unused) -> ``(c (B, eprojs), w (B, T_max))``.
    """

    _content_only = True

    def __init__(self, eprojs: int, dunits: int, att_dim: int, han_mode: bool = False, *,
                 backend: str = "auto") -> None:
        super().__init__(eprojs, dunits, att_dim, han_mode, backend)
        self.mlp_enc = nn.Linear(eprojs, att_dim)
        self.mlp_dec = nn.Linear(dunits, att_dim, bias=False)
        self.gvec = nn.Linear(att_dim, 1)

    def step(self, dec_z: Tensor | None, state: EspnetAttentionState, *,
             scaling: float = 2.0) -> tuple[Tensor, Tensor, EspnetAttentionState]:
        """One decoder step: ``(context (B, eprojs), weights (B, T), state)``."""
        context, weights = self._attend(self._query(dec_z, state), state.prepared(), state,
                                        scaling)
        return context, weights, state

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev: Any, scaling: float = 2.0) -> tuple[Tensor, Tensor]:
        context, weights, _ = self.step(dec_z, self._utterance(enc_hs_pad, enc_hs_len),
                                        scaling=scaling)
        return context, weights


class AttLoc(_EspnetAttention):
    """ESPnet ``AttLoc`` (location-aware, Chorowski et al. 2015): the keys of each step are
    ``mlp_enc(h) + mlp_att(loc_conv(att_prev))``, one channel (the previous weights),
    ``2 * aconv_filts + 1`` taps (:func:`location_keys`).

    forward: as ``AttAdd`` plus att_prev ``(B, T_max)`` or None (uniform over the valid
    frames), ``last_attended_idx`` / windows (ESPnet's monotonic constraint, B = 1 as in
    ESPnet; :meth:`step` takes one index per item) -> ``(c (B, eprojs), w (B, T_max))``.
    """

    def __init__(self, eprojs: int, dunits: int, att_dim: int, aconv_chans: int,
                 aconv_filts: int, han_mode: bool = False, *, backend: str = "auto") -> None:
        super().__init__(eprojs, dunits, att_dim, han_mode, backend)
        self.mlp_enc = nn.Linear(eprojs, att_dim)
        self.mlp_dec = nn.Linear(dunits, att_dim, bias=False)
        self.mlp_att = nn.Linear(aconv_chans, att_dim, bias=False)
        self.loc_conv = nn.Conv2d(1, aconv_chans, (1, 2 * aconv_filts + 1),
                                  padding=(0, aconv_filts), bias=False)
        self.gvec = nn.Linear(att_dim, 1)
        self.aconv_chans = aconv_chans
        self.aconv_filts = aconv_filts

    def _initial_prev(self, lengths: Tensor, steps: int, memory: Tensor,
                      att_prev: Tensor | None) -> Tensor | None:
        return _uniform(lengths, steps, memory) if att_prev is None else att_prev

    def _location(self, state: EspnetAttentionState, prev: Tensor) -> Location1Term:
        return Location1Term(state.keys, prev, self.loc_conv.weight, self.mlp_att.weight,
                             self.aconv_filts)

    def step(self, dec_z: Tensor | None, state: EspnetAttentionState, *,
             scaling: float = 2.0, last_attended_idx: int | Tensor | None = None,
             backward_window: int = 1, forward_window: int = 3
             ) -> tuple[Tensor, Tensor, EspnetAttentionState]:
        """One decoder step from ``state.prev``; the new state's prev is this step's weights.

        ``last_attended_idx`` (an int, or ``(B,)`` one per item; ESPnet takes B = 1 only):
        the monotonic constraint, only frames ``[idx - backward_window, idx +
        forward_window)`` are attended (a window with no valid frame gives zero weights
        where ESPnet's softmax gives NaN)."""
        assert state.prev is not None
        window = None
        if last_attended_idx is not None:
            window = _window_mask(last_attended_idx, backward_window, forward_window, state)
        keys = self._location(state, state.prev)
        context, weights = self._attend(self._query(dec_z, state), keys, state, scaling,
                                        window)
        return context, weights, state.replace(prev=weights)

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev: Tensor | None, scaling: float = 2.0,
                last_attended_idx: int | None = None, backward_window: int = 1,
                forward_window: int = 3) -> tuple[Tensor, Tensor]:
        state = self._utterance(enc_hs_pad, enc_hs_len)
        if last_attended_idx is not None and state.memory.shape[0] != 1:
            # ESPnet's own error (its _apply_attention_constraint)
            raise NotImplementedError("Batch attention constraining is not yet supported.")
        if att_prev is None:
            att_prev = _uniform(state.lengths, state.memory.shape[1], state.memory)
        prev = self._check_prev("att_prev", att_prev, state)
        context, weights, _ = self.step(dec_z, state.replace(prev=prev), scaling=scaling,
                                        last_attended_idx=last_attended_idx,
                                        backward_window=backward_window,
                                        forward_window=forward_window)
        return context, weights

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", aconv_chans={self.aconv_chans}, aconv_filts={self.aconv_filts}")


class AttCov(_EspnetAttention):
    """ESPnet ``AttCov`` (coverage, See et al. 2017): keys ``mlp_enc(h) + wvec(sum of the
    previous weights)`` (wvec's bias folded into the keys once per utterance).

    forward: att_prev_list: list of ``(B, T_max)`` or None -> ``(c, att_prev_list + [w])``
    (the list passed in is extended in place, as ESPnet does).
    """

    def __init__(self, eprojs: int, dunits: int, att_dim: int, han_mode: bool = False, *,
                 backend: str = "auto") -> None:
        super().__init__(eprojs, dunits, att_dim, han_mode, backend)
        self.mlp_enc = nn.Linear(eprojs, att_dim)
        self.mlp_dec = nn.Linear(dunits, att_dim, bias=False)
        self.wvec = nn.Linear(1, att_dim)
        self.gvec = nn.Linear(att_dim, 1)

    def _folded_bias(self) -> Tensor:
        return self._key_bias() + self.wvec.bias

    def _initial_prev(self, lengths: Tensor, steps: int, memory: Tensor,
                      att_prev: Tensor | None) -> Tensor | None:
        return _uniform(lengths, steps, memory) if att_prev is None else att_prev

    def _coverage_keys(self, state: EspnetAttentionState, coverage: Tensor) -> Location1Term:
        # keys + coverage (x) wvec as a 1-tap, 1-filter location term: on CPU the
        # location1_keys op writes the keys in one pass and its backward reads their
        # gradient once for coverage's and wvec's (a K = 1 baddbmm: a copy, then two GEMVs
        # on the gradient; 2.5 against 1.6 ms forward+backward a step at the LAS default)
        return Location1Term(state.keys, coverage, coverage.new_ones(1, 1, 1),
                             self.wvec.weight, 0)

    def step(self, dec_z: Tensor | None, state: EspnetAttentionState, *,
             scaling: float = 2.0) -> tuple[Tensor, Tensor, EspnetAttentionState]:
        """One step from ``state.prev`` (the coverage: sum of the previous weights); the new
        state's coverage adds this step's weights."""
        assert state.prev is not None
        keys = self._coverage_keys(state, state.prev)
        context, weights = self._attend(self._query(dec_z, state), keys, state, scaling)
        return context, weights, state.replace(prev=state.prev + weights)

    def _coverage(self, att_prev_list: list[Tensor] | None,
                  state: EspnetAttentionState) -> tuple[list[Tensor], Tensor]:
        if att_prev_list is None:
            att_prev_list = [_uniform(state.lengths, state.memory.shape[1], state.memory)]
        if not isinstance(att_prev_list, list) or not att_prev_list:
            raise TypeError("att_prev_list must be a non-empty list of (B, T_max) tensors or "
                            f"None, got {type(att_prev_list).__name__}")
        coverage = sum(att_prev_list)  # ESPnet's sum, in its order
        return att_prev_list, self._check_prev("att_prev_list", coverage, state)  # type: ignore[arg-type]

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev_list: list[Tensor] | None,
                scaling: float = 2.0) -> tuple[Tensor, list[Tensor]]:
        state = self._utterance(enc_hs_pad, enc_hs_len)
        att_prev_list, coverage = self._coverage(att_prev_list, state)
        keys = self._keys_for(state, coverage)
        context, weights = self._attend(self._query(dec_z, state), keys, state, scaling)
        att_prev_list += [weights]
        return context, att_prev_list

    def _keys_for(self, state: EspnetAttentionState, coverage: Tensor) -> Location1Term:
        return self._coverage_keys(state, coverage)


class AttCovLoc(AttCov):
    """ESPnet ``AttCovLoc``: location-aware attention on the coverage (the sum of the
    previous weights) as its one channel (:func:`location_keys`)."""

    def __init__(self, eprojs: int, dunits: int, att_dim: int, aconv_chans: int,
                 aconv_filts: int, han_mode: bool = False, *, backend: str = "auto") -> None:
        _EspnetAttention.__init__(self, eprojs, dunits, att_dim, han_mode, backend)
        self.mlp_enc = nn.Linear(eprojs, att_dim)
        self.mlp_dec = nn.Linear(dunits, att_dim, bias=False)
        self.mlp_att = nn.Linear(aconv_chans, att_dim, bias=False)
        self.loc_conv = nn.Conv2d(1, aconv_chans, (1, 2 * aconv_filts + 1),
                                  padding=(0, aconv_filts), bias=False)
        self.gvec = nn.Linear(att_dim, 1)
        self.aconv_chans = aconv_chans
        self.aconv_filts = aconv_filts

    def _folded_bias(self) -> Tensor:
        return self._key_bias()

    def _coverage_keys(self, state: EspnetAttentionState, coverage: Tensor) -> Location1Term:
        return Location1Term(state.keys, coverage, self.loc_conv.weight, self.mlp_att.weight,
                             self.aconv_filts)

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", aconv_chans={self.aconv_chans}, aconv_filts={self.aconv_filts}")


class AttLocRec(_EspnetAttention):
    """ESPnet ``AttLocRec``: ``att_h = att_lstm(max_t relu(loc_conv(att_prev)))`` is added to
    the query; the keys are content-only (prepared once per utterance).

    forward: att_prev_states ``(w (B, T_max), (h, c) (B, att_dim) each)`` or None ->
    ``(c, (w, (att_h, att_c)))``.
    """

    _content_only = True

    def __init__(self, eprojs: int, dunits: int, att_dim: int, aconv_chans: int,
                 aconv_filts: int, han_mode: bool = False, *, backend: str = "auto") -> None:
        super().__init__(eprojs, dunits, att_dim, han_mode, backend)
        self.mlp_enc = nn.Linear(eprojs, att_dim)
        self.mlp_dec = nn.Linear(dunits, att_dim, bias=False)
        self.loc_conv = nn.Conv2d(1, aconv_chans, (1, 2 * aconv_filts + 1),
                                  padding=(0, aconv_filts), bias=False)
        self.att_lstm = nn.LSTMCell(aconv_chans, att_dim, bias=False)
        self.gvec = nn.Linear(att_dim, 1)
        self.aconv_chans = aconv_chans
        self.aconv_filts = aconv_filts

    def _initial_prev(self, lengths: Tensor, steps: int, memory: Tensor,
                      att_prev: Tensor | None) -> Tensor | None:
        return _uniform(lengths, steps, memory) if att_prev is None else att_prev

    def start(self, memory: Tensor, *, key_lengths: Any = None,
              att_prev: Tensor | None = None) -> EspnetAttentionState:
        state = super().start(memory, key_lengths=key_lengths, att_prev=att_prev)
        zeros = memory.new_zeros(memory.shape[0], self.att_dim)
        return state.replace(att_h=zeros, att_c=zeros)

    def step(self, dec_z: Tensor | None, state: EspnetAttentionState, *,
             scaling: float = 2.0) -> tuple[Tensor, Tensor, EspnetAttentionState]:
        """One step from ``state.prev`` and the LSTM state; returns the new ones."""
        assert state.prev is not None and state.att_h is not None and state.att_c is not None
        conv = _location_conv(state.prev, self.loc_conv.weight, self.aconv_filts)
        pooled = F.relu(conv).max(dim=1).values  # ESPnet's max_pool1d over all frames
        att_h, att_c = self.att_lstm(pooled, (state.att_h, state.att_c))
        query = self._query(dec_z, state) + att_h
        context, weights = self._attend(query, state.prepared(), state, scaling)
        return context, weights, state.replace(prev=weights, att_h=att_h, att_c=att_c)

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev_states: Any, scaling: float = 2.0
                ) -> tuple[Tensor, tuple[Tensor, tuple[Tensor, Tensor]]]:
        state = self._utterance(enc_hs_pad, enc_hs_len)
        if att_prev_states is None:
            batch = state.memory.shape[0]
            prev = _uniform(state.lengths, state.memory.shape[1], state.memory)
            att_h = state.memory.new_zeros(batch, self.att_dim)
            att_c = state.memory.new_zeros(batch, self.att_dim)
        else:
            try:
                prev, (att_h, att_c) = att_prev_states
            except (TypeError, ValueError) as e:
                raise TypeError("att_prev_states must be (att_prev, (att_h, att_c)) or None, "
                                f"got {type(att_prev_states).__name__}") from e
            self._check_prev("att_prev_states[0]", prev, state)
        context, weights, new = self.step(
            dec_z, state.replace(prev=prev, att_h=att_h, att_c=att_c), scaling=scaling)
        assert new.att_h is not None and new.att_c is not None
        return context, (weights, (new.att_h, new.att_c))

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", aconv_chans={self.aconv_chans}, aconv_filts={self.aconv_filts}")


# ---------------------------------------------------------------- multi-head

class AttMultiHeadAdd(nn.Module):
    """ESPnet ``AttMultiHeadAdd``: per head ``w_h = softmax(scaling * gvec_h(tanh(mlp_k_h(h)
    + mlp_q_h(z))))`` with ``scaling = 1 / sqrt(att_dim_k)``, ``c = mlp_o(cat_h sum_t w_ht
    mlp_v_h(h_t))``.

    One fused call per head: each head has its own score vector ``gvec_h`` and the fused op
    takes one score vector for the whole batch (heads as batch rows would need a per-row
    score vector). Keys, their prepared form and the values are per utterance; each head's
    values take their gradient through a weight-gradient store (one GEMM at backward).

    Reuse rule (ESPnet's): the first ``forward`` after construction or :meth:`reset` starts
    the utterance; later calls reuse it until :meth:`reset` (every call with ``han_mode``).

    forward: enc_hs_pad ``(B, T_max, eprojs)``, enc_hs_len, dec_z ``(B, dunits)`` or None,
    att_prev (unused) -> ``(c (B, eprojs), [w_h (B, T_max)] * aheads)``.
    """

    _state: EspnetMultiHeadState | None

    def __init__(self, eprojs: int, dunits: int, aheads: int, att_dim_k: int, att_dim_v: int,
                 han_mode: bool = False, *, backend: str = "auto") -> None:
        super().__init__()
        self.mlp_q = nn.ModuleList()
        self.mlp_k = nn.ModuleList()
        self.mlp_v = nn.ModuleList()
        self.gvec = nn.ModuleList()
        for _ in range(aheads):
            self.mlp_q += [nn.Linear(dunits, att_dim_k)]
            self.mlp_k += [nn.Linear(eprojs, att_dim_k, bias=False)]
            self.mlp_v += [nn.Linear(eprojs, att_dim_v, bias=False)]
            self.gvec += [nn.Linear(att_dim_k, 1)]
        self.mlp_o = nn.Linear(aheads * att_dim_v, eprojs, bias=False)
        self.dunits = dunits
        self.eprojs = eprojs
        self.aheads = aheads
        self.att_dim_k = att_dim_k
        self.att_dim_v = att_dim_v
        self.scaling = 1.0 / math.sqrt(att_dim_k)
        self.han_mode = han_mode
        self.backend = check_backend(backend)
        self._state = None

    def reset(self) -> None:
        """Forget the utterance (as ESPnet's ``reset``)."""
        self._state = None

    def start(self, memory: Tensor, *, key_lengths: Any = None) -> EspnetMultiHeadState:
        """One utterance: memory ``(B, T, eprojs)``, key_lengths ``(B,)`` (all frames when
        None)."""
        if not isinstance(memory, Tensor) or memory.dim() != 3 or memory.shape[2] != self.eprojs:
            raise _fail("enc_hs_pad", f"a (B, T_max, {self.eprojs}) tensor", memory)
        batch, steps, _ = memory.shape
        lengths = _lengths([steps] * batch if key_lengths is None else key_lengths, batch,
                           steps, memory.device)
        heads = self.aheads
        w_k = torch.cat([_lin(m).weight for m in self.mlp_k])  # (heads * dk, eprojs)
        w_v = torch.cat([_lin(m).weight for m in self.mlp_v])
        # one GEMM each for all heads, then one contiguous tensor per head
        keys_all = (memory @ w_k.t()).view(batch, steps, heads, -1)
        gbias: list[Tensor] = [b for g in self.gvec if (b := _lin(g).bias) is not None]
        if torch.is_grad_enabled() and any(b.requires_grad for b in gbias):
            keys_all = keys_all + torch.cat(gbias).sum() * 0  # gvec biases: zero gradients
        keys = tuple(k.contiguous() for k in keys_all.unbind(2))
        values = tuple(v.contiguous()
                       for v in (memory @ w_v.t()).view(batch, steps, heads, -1).unbind(2))
        exps = [prepare_keys(k).key_exp for k in keys]
        key_exp = None if any(e is None for e in exps) else tuple(
            e for e in exps if e is not None)
        return EspnetMultiHeadState(keys=keys, values=values, lengths=lengths, key_exp=key_exp,
                                    stores=tuple(weight_grad_store(v) for v in values))

    def step(self, dec_z: Tensor | None, state: EspnetMultiHeadState
             ) -> tuple[Tensor, list[Tensor], EspnetMultiHeadState]:
        """One decoder step: ``(c (B, eprojs), [w_h (B, T)] * aheads, state)``."""
        heads, batch = len(state.keys), state.lengths.shape[0]
        if dec_z is None:
            dec_z = state.keys[0].new_zeros(batch, self.dunits)
        elif not isinstance(dec_z, Tensor) or dec_z.numel() != batch * self.dunits:
            raise _fail("dec_z", f"a (B={batch}, {self.dunits}) tensor", dec_z)
        else:
            dec_z = dec_z.view(batch, self.dunits)
        # one small GEMM per head (concatenating the heads' W_q would copy them every step)
        queries = [_lin(m)(dec_z) for m in self.mlp_q]
        contexts, weights = [], []
        stores = state.stores or (None,) * heads
        for h in range(heads):
            keys: Tensor | PreparedKeys = state.keys[h]
            if state.key_exp is not None:
                keys = PreparedKeys(state.keys[h], state.key_exp[h])
            # the values' gradient through the head's store: one GEMM at backward instead
            # of a value pass per step
            c, w = attention_with_store(
                queries[h], keys, state.values[h],
                _lin(self.gvec[h]).weight.view(-1) * self.scaling, None, self.backend,
                stores[h], state.values[h], key_lengths=state.lengths)
            contexts.append(c)
            weights.append(w)
        return self.mlp_o(torch.cat(contexts, dim=1)), weights, state

    def forward(self, enc_hs_pad: Tensor, enc_hs_len: Any, dec_z: Tensor | None,
                att_prev: Any, **kwargs: Any) -> tuple[Tensor, list[Tensor]]:
        state = self._state
        if state is None:
            state = self.start(enc_hs_pad, key_lengths=enc_hs_len)
        elif self.han_mode:
            state = self.start(enc_hs_pad, key_lengths=state.lengths)
        self._state = state
        context, weights, _ = self.step(dec_z, state)
        return context, weights

    def extra_repr(self) -> str:
        return (f"eprojs={self.eprojs}, dunits={self.dunits}, aheads={self.aheads}, "
                f"att_dim_k={self.att_dim_k}, att_dim_v={self.att_dim_v}")


# ---------------------------------------------------------------- loaders

def _finish(new: nn.Module, old: nn.Module) -> nn.Module:
    new.load_state_dict(old.state_dict(), strict=True)
    param = next(old.parameters())
    return new.to(device=param.device, dtype=param.dtype)


def _loc_args(m: Any) -> tuple[int, int]:
    conv = m.loc_conv
    return conv.out_channels, (conv.kernel_size[1] - 1) // 2


@converts(*_names("AttAdd"))
def _from_att_add(m: Any) -> nn.Module:
    return _finish(AttAdd(m.eprojs, m.dunits, m.att_dim, m.han_mode), m)


@converts(*_names("AttCov"))
def _from_att_cov(m: Any) -> nn.Module:
    return _finish(AttCov(m.eprojs, m.dunits, m.att_dim, m.han_mode), m)


@converts(*_names("AttLoc"))
def _from_att_loc(m: Any) -> nn.Module:
    return _finish(AttLoc(m.eprojs, m.dunits, m.att_dim, *_loc_args(m), m.han_mode), m)


@converts(*_names("AttCovLoc"))
def _from_att_cov_loc(m: Any) -> nn.Module:
    return _finish(AttCovLoc(m.eprojs, m.dunits, m.att_dim, *_loc_args(m), m.han_mode), m)


@converts(*_names("AttLocRec"))
def _from_att_loc_rec(m: Any) -> nn.Module:
    return _finish(AttLocRec(m.eprojs, m.dunits, m.att_dim, *_loc_args(m), m.han_mode), m)


@converts(*_names("AttMultiHeadAdd"))
def _from_att_multi_head_add(m: Any) -> nn.Module:
    return _finish(AttMultiHeadAdd(m.eprojs, m.dunits, m.aheads, m.att_dim_k, m.att_dim_v,
                                   m.han_mode), m)
