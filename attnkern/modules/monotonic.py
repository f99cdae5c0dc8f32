"""Monotonic attention (Raffel et al. 2017) with TF-Addons' semantics
(``tfa.seq2seq.BahdanauMonotonicAttention`` and ``monotonic_attention``).

At decoder step i the attention moves left to right from where it was, stopping at key j
with probability ``p_ij = sigmoid(e_ij + r)`` (``e`` additive energies, ``r`` a learned
score bias). The expected (soft) alignment used for training is

    q_ij = (1 - p_{i,j-1}) q_{i,j-1} + a_{i-1,j},      a_ij = p_ij q_ij

("recursive": this recurrence; "parallel": its closed form with an exclusive cumulative
product, numerically safe in float32; "hard": the test-time rule, attend to the first key
at or after the previous one whose ``p > 0.5``, linear time and online).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_backend
from ..functional import PreparedKeys, additive_scores, prepare_keys
from ..reference import compute_dtype
from ..state import DecodingState, prepared, register, shared, weight_grad_store
from ._family import context_of, lengths_mask

__all__ = ["MonotonicAttention", "MonotonicState", "monotonic_alignment", "safe_cumprod"]

_MODES = ("recursive", "parallel", "hard")


def safe_cumprod(x: Tensor, dim: int = -1, exclusive: bool = False) -> Tensor:
    """``cumprod(x)`` as ``exp(cumsum(log(clamp(x, tiny, 1))))`` (TF-Addons'
    ``safe_cumprod``): no underflow to 0 from a long product of small factors, and a
    gradient that stays finite where a factor is 0. ``exclusive``: the product of the
    factors before each position (1 at the first)."""
    tiny = torch.finfo(x.dtype).tiny
    logs = torch.log(torch.clamp(x, tiny, 1.0))
    if exclusive:
        logs = F.pad(logs.narrow(dim, 0, logs.shape[dim] - 1), _pad_front(logs.dim(), dim))
    return torch.exp(torch.cumsum(logs, dim))


def _pad_front(ndim: int, dim: int) -> tuple[int, ...]:
    dim = dim % ndim
    pad = [0, 0] * (ndim - dim)
    pad[-2] = 1  # F.pad lists the last dimension first: one element before, along dim
    return tuple(pad)


def monotonic_alignment(p_choose: Tensor, previous_alignment: Tensor,
                        mode: str = "parallel") -> Tensor:
    """The alignment ``a_i`` of monotonic attention from the stopping probabilities.

    Args:
        p_choose: ``(B, T)`` probabilities ``p_ij`` of stopping at key j (in [0, 1]).
        previous_alignment: ``(B, T)`` the previous step's alignment ``a_{i-1}`` (one-hot
            at 0 for the first step).
        mode: ``"recursive"`` (the recurrence, a loop over T), ``"parallel"`` (closed
            form: ``p * cp * cumsum(a_prev / clamp(cp, 1e-10, 1))`` with ``cp`` the
            exclusive safe cumprod of ``1 - p``) or ``"hard"`` (``p`` is thresholded at 0.5;
            attend to the first key at or after the previous position that is chosen).

    Returns ``(B, T)`` in the input dtype (float16/bfloat16 computed in float32).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    for name, t in (("p_choose", p_choose), ("previous_alignment", previous_alignment)):
        if not isinstance(t, Tensor) or t.dim() != 2 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating (B, T) tensor, got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if p_choose.shape != previous_alignment.shape:
        raise ValueError(f"p_choose {tuple(p_choose.shape)} and previous_alignment "
                         f"{tuple(previous_alignment.shape)} must have the same shape (B, T)")
    dtype = p_choose.dtype
    acc = compute_dtype(dtype)
    p, prev = p_choose.to(acc), previous_alignment.to(acc)
    if mode == "recursive":
        # q_j = (1 - p_{j-1}) q_{j-1} + a_prev_j, q_{-1} = 0
        shifted = F.pad(1 - p[:, :-1], (1, 0), value=1.0)
        q = [prev[:, 0]]
        for j in range(1, p.shape[1]):
            q.append(shifted[:, j] * q[-1] + prev[:, j])
        out = p * torch.stack(q, 1) if q else p.clone()
    elif mode == "parallel":
        cp = safe_cumprod(1 - p, dim=1, exclusive=True)
        out = p * cp * torch.cumsum(prev / torch.clamp(cp, 1e-10, 1.0), dim=1)
    else:
        chosen = (p > 0.5).to(acc) * torch.cumsum(prev, dim=1)
        # exclusive cumprod of binary factors: exact, 1 up to the first chosen key
        excl = torch.cumprod(F.pad(1 - chosen[:, :-1], (1, 0), value=1.0), dim=1)
        out = chosen * excl
    return out.to(dtype)


@register
@dataclasses.dataclass(frozen=True)
class MonotonicState(DecodingState):
    """Per-sequence state of :class:`MonotonicAttention`: keys ``(B, T, H)`` (projected
    memory), values ``(B, T, Dv)``, mask ``(B, T)`` bool (True = padding), alignment
    ``(B, T)`` (the previous step's; one-hot at 0 initially), key_exp ``exp(2 keys)``
    (:func:`attnkern.prepare_keys` on CPU, else None: replace it with ``keys``, or set it
    to None), value_store (the values' weight-gradient store, shared)."""

    keys: Tensor
    values: Tensor
    mask: Tensor
    alignment: Tensor
    key_exp: Tensor | None = prepared("keys")
    value_store: Tensor | None = shared()
    store_of: Tensor | None = shared()  # the tensor value_store was made for


class MonotonicAttention(nn.Module):
    """Bahdanau monotonic attention (TF-Addons ``BahdanauMonotonicAttention``).

    ``e_ij = v . tanh(W_q s_i + W_k h_j [+ b]) + r``, ``p_ij = sigmoid(e_ij + noise)``
    (``noise ~ sigmoid_noise * N(0, 1)``, in training mode only; "hard": ``p = e > 0``),
    alignment from :func:`monotonic_alignment`, context ``sum_j a_ij h_j``.

    Args:
        query_dim, key_dim, hidden_dim: sizes of the query, the memory and the MLP
            (TF-Addons' ``units``).
        mode: ``"parallel"`` (default), ``"recursive"`` or ``"hard"``.
        sigmoid_noise: standard deviation of the pre-sigmoid noise (training only).
        score_bias_init: initial value of the learned score bias ``r`` (TF-Addons suggests
            e.g. -4 so that attention starts by moving on).
        normalize: weight-normalised ``v`` (``g v / ||v||``, ``g = sqrt(1/hidden_dim)``
            initially) and a bias ``b`` inside the tanh, as TF-Addons' ``normalize=True``.
        backend: passed to the fused energies, :func:`attnkern.additive_scores`.

    Parameters: ``query_proj.weight`` ``(H, query_dim)``, ``key_proj.weight`` ``(H,
    key_dim)`` (no biases), ``v`` ``(H,)``, ``score_bias`` ``()``; with normalize ``g``
    ``()`` and ``b`` ``(H,)``.

    Use: ``state = layer.start(memory, key_lengths=...)``, then ``context, alignment,
    state = layer.step(query, state)`` each step; or ``layer(query, memory)`` with query
    ``(B, Tq, query_dim)`` for a teacher-forced whole sequence (energies of all steps at
    once, the alignment recursion over the steps), or ``(B, query_dim)`` for one step.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, *,
                 mode: str = "parallel", sigmoid_noise: float = 0.0,
                 score_bias_init: float = 0.0, normalize: bool = False,
                 backend: str = "auto", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, val in (("query_dim", query_dim), ("key_dim", key_dim),
                          ("hidden_dim", hidden_dim)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not sigmoid_noise >= 0:
            raise ValueError(f"sigmoid_noise must be >= 0, got {sigmoid_noise!r}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.mode, self.sigmoid_noise = mode, float(sigmoid_noise)
        self.backend = check_backend(backend)
        self.score_bias_init, self.normalize = float(score_bias_init), normalize
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False, **factory)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False, **factory)
        self.v = nn.Parameter(torch.empty(hidden_dim, **factory))
        self.score_bias = nn.Parameter(torch.empty((), **factory))
        if normalize:
            self.g = nn.Parameter(torch.empty((), **factory))
            self.b = nn.Parameter(torch.empty(hidden_dim, **factory))
        else:
            self.register_parameter("g", None)
            self.register_parameter("b", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear-style init of the projections and ``v``; ``r = score_bias_init``;
        ``g = sqrt(1 / hidden_dim)``, ``b = 0``."""
        self.query_proj.reset_parameters()
        self.key_proj.reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_dim)
        nn.init.uniform_(self.v, -bound, bound)
        nn.init.constant_(self.score_bias, self.score_bias_init)
        if self.g is not None and self.b is not None:
            nn.init.constant_(self.g, math.sqrt(1.0 / self.hidden_dim))
            nn.init.zeros_(self.b)

    def score_vector(self) -> Tensor:
        """``v`` ``(H,)``, weight-normalised with ``normalize``."""
        if self.g is None:
            return self.v
        return self.g * self.v / self.v.norm()

    def start(self, memory: Tensor, key_lengths: Tensor | None = None, *,
              key_padding_mask: Tensor | None = None,
              values: Tensor | None = None) -> MonotonicState:
        """memory ``(B, T, key_dim)``; values ``(B, T, Dv)`` (default: memory);
        key_lengths ``(B,)`` or key_padding_mask ``(B, T)`` bool (True = padding)."""
        if not isinstance(memory, Tensor) or memory.dim() != 3 \
                or memory.shape[2] != self.key_dim:
            raise ValueError(f"memory must be (B, T, key_dim={self.key_dim}), got "
                             f"{tuple(memory.shape) if isinstance(memory, Tensor) else memory}")
        batch, steps = memory.shape[:2]
        if values is None:
            values = memory
        elif values.dim() != 3 or values.shape[:2] != (batch, steps):
            raise ValueError(f"values must be ({batch}, {steps}, Dv), got {tuple(values.shape)}")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (batch, steps) or key_padding_mask.dtype != torch.bool:
                raise ValueError(f"key_padding_mask must be ({batch}, {steps}) bool, got "
                                 f"{tuple(key_padding_mask.shape)} {key_padding_mask.dtype}")
            mask = key_padding_mask
        else:
            mask = (lengths_mask(key_lengths, batch, steps, memory.device)
                    if key_lengths is not None else
                    torch.zeros(batch, steps, dtype=torch.bool, device=memory.device))
        keys = self.key_proj(memory)
        if self.b is not None:
            keys = keys + self.b
        alignment = memory.new_zeros(batch, steps)
        alignment[:, 0] = 1.0  # TF-Addons' initial_alignments: one-hot at 0
        # the keys are the same every step: their exp(2k) once (the op's tanh from it)
        key_exp = prepare_keys(keys).key_exp
        return MonotonicState(keys, values, mask, alignment, key_exp,
                              weight_grad_store(values), values)

    def _p_choose(self, score: Tensor) -> Tensor:
        # masked keys' scores are -inf (additive_scores): p = 0 there in every mode
        if self.sigmoid_noise > 0 and self.training:
            score = score + self.sigmoid_noise * torch.randn_like(score)
        if self.mode == "hard":
            return (score > 0).to(score.dtype)
        return torch.sigmoid(score)

    def step(self, query: Tensor, state: MonotonicState) -> tuple[Tensor, Tensor, MonotonicState]:
        """query ``(B, query_dim)`` -> ``(context (B, Dv), alignment (B, T), new state)``."""
        if not isinstance(query, Tensor) or query.dim() != 2 or query.shape[1] != self.query_dim \
                or query.shape[0] != state.keys.shape[0]:
            raise ValueError(f"query must be ({state.keys.shape[0]}, {self.query_dim}), got "
                             f"{tuple(query.shape) if isinstance(query, Tensor) else query}")
        score = additive_scores(
            self.query_proj(query), PreparedKeys(state.keys, state.key_exp),
            self.score_vector(), key_padding_mask=state.mask, backend=self.backend)
        score = score + self.score_bias
        p = self._p_choose(score)
        alignment = monotonic_alignment(p, state.alignment, self.mode)
        context = context_of(alignment, state.values, state.value_store, state.store_of)
        return context, alignment, state.replace(alignment=alignment)

    def forward(self, query: Tensor, memory: Tensor, previous_alignment: Tensor | None = None,
                *, key_lengths: Tensor | None = None, key_padding_mask: Tensor | None = None,
                values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """query ``(B, Tq, query_dim)`` (a whole teacher-forced sequence) or ``(B,
        query_dim)`` (one step from ``previous_alignment``, default one-hot at 0).
        Returns ``(context, alignments)``: ``(B, Tq, Dv)``, ``(B, Tq, T)`` (or ``(B, Dv)``,
        ``(B, T)``)."""
        state = self.start(memory, key_lengths, key_padding_mask=key_padding_mask,
                           values=values)
        if previous_alignment is not None:
            state = state.replace(alignment=previous_alignment)
        if query.dim() == 2:
            context, alignment, _ = self.step(query, state)
            return context, alignment
        if query.dim() != 3 or query.shape[2] != self.query_dim:
            raise ValueError(f"query must be (B, Tq, {self.query_dim}) or (B, {self.query_dim}),"
                             f" got {tuple(query.shape)}")
        # every step's energies in one call; the alignment recursion is over the steps
        scores = additive_scores(
            self.query_proj(query), PreparedKeys(state.keys, state.key_exp),
            self.score_vector(), key_padding_mask=state.mask, backend=self.backend)
        scores = scores + self.score_bias  # (B, Tq, T)
        p_all = self._p_choose(scores)
        alignment, rows = state.alignment, []
        for i in range(query.shape[1]):
            alignment = monotonic_alignment(p_all[:, i], alignment, self.mode)
            rows.append(alignment)
        alignments = torch.stack(rows, 1) if rows else p_all.new_zeros(p_all.shape)
        return torch.bmm(alignments, state.values), alignments

    def extra_repr(self) -> str:
        return (f"query_dim={self.query_dim}, key_dim={self.key_dim}, "
                f"hidden_dim={self.hidden_dim}, mode={self.mode!r}, "
                f"sigmoid_noise={self.sigmoid_noise}, score_bias_init={self.score_bias_init}, "
                f"normalize={self.normalize}")
