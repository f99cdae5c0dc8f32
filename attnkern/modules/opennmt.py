"""Drop-in for OpenNMT-py's ``onmt.modules.global_attention.GlobalAttention`` with
``attn_type="mlp"`` (Bahdanau), ``attn_func="softmax"``, no coverage.

Same constructor arguments, submodules (``linear_context``, ``linear_query``, ``v``,
``linear_out``: strict ``load_state_dict`` both ways), ``forward(src, enc_out, src_len=None,
coverage=None)`` and returns: ``attn_h`` ``(B, tgt_len, dim)`` and ``align_vectors`` ``(B,
tgt_len, src_len)`` for a 3-D ``src``, ``(B, dim)`` and ``(B, src_len)`` for one step
``(B, dim)``; ``attn_h = linear_out([c, src])`` (no tanh for mlp). The scores, softmax and
context are one fused call; explicit state: :meth:`GlobalAttention.start` /
:meth:`GlobalAttention.step` with :class:`OpenNMTAttentionState`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._registry import converts
from .._validation import check_backend
from ..functional import PreparedKeys, additive_attention, prepare_keys
from ..state import DecodingState, HoldsState, held, hold, prepared, register, source
from ._family import attend_rows

__all__ = ["GlobalAttention", "OpenNMTAttentionState"]


@register
@dataclasses.dataclass(frozen=True)
class OpenNMTAttentionState(DecodingState):
    """One source batch: memory ``(B, S, dim)`` (``enc_out``, the values), keys ``(B, S,
    dim)`` = ``linear_context(enc_out)``, key_exp (prepared keys) or None, lengths ``(B,)``
    or None (every source position used): the key side, at the ``B`` source rows. ``rows``
    ``(N,)``: each hypothesis's source row after :meth:`reorder` (None: one per row); beam
    search needs no ``tile`` of the memory bank."""

    memory: Tensor = source()
    keys: Tensor = source()
    key_exp: Tensor | None = prepared("keys", at_source=True)
    lengths: Tensor | None = source()
    rows: Tensor | None = None


def _bad(name: str, what: str, got: object) -> ValueError:
    seen = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
    return ValueError(f"{name} must be {what}, got {seen}")


class GlobalAttention(HoldsState, nn.Module):
    """OpenNMT-py ``GlobalAttention(dim, attn_type="mlp")``: ``score(H_j, q) = v .
    tanh(W_q q + b + U H_j)``, softmax over ``j < src_len``, ``c = sum_j a_j H_j``,
    ``attn_h = linear_out([c, q])``.

    Only ``attn_type="mlp"`` with ``attn_func="softmax"`` and no coverage is provided (the
    additive family); other settings raise ``ValueError`` (the default ``attn_type="dot"``
    included: pass ``attn_type="mlp"``).

    Reuse rule for ``forward`` (OpenNMT-py projects ``enc_out`` at every call): the module
    holds the last source's state (``linear_context(enc_out)`` and its prepared form) and
    reuses it while ``enc_out`` and ``src_len`` are the same tensors (objects and versions),
    they and ``linear_context.weight`` are bitwise equal to the copies taken when it was
    made (a ``.data`` edit is seen), grad mode is the same and no backward pass has gone
    through the held keys (:func:`attnkern.state.held`); anything else starts afresh.
    """

    def __init__(self, dim: int, coverage: bool = False, attn_type: str = "dot",
                 attn_func: str = "softmax", *, backend: str = "auto") -> None:
        super().__init__()
        if attn_type != "mlp":
            raise ValueError(f"attn_type: the attnkern GlobalAttention is the additive "
                             f"('mlp') one, got {attn_type!r}")
        if attn_func != "softmax":
            raise ValueError(f"attn_func: only 'softmax' is fused, got {attn_func!r}")
        if coverage:
            raise ValueError("coverage: OpenNMT-py's coverage term is not supported (its "
                             "forward says 'not supported yet' too)")
        self.dim = dim
        self.attn_type = attn_type
        self.attn_func = attn_func
        self.linear_context = nn.Linear(dim, dim, bias=False)
        self.linear_query = nn.Linear(dim, dim, bias=True)
        self.v = nn.Linear(dim, 1, bias=False)
        self.linear_out = nn.Linear(dim * 2, dim, bias=True)
        self.backend = check_backend(backend)
        self._held = None  # the call protocol's one state: see _state_for

    def start(self, enc_out: Tensor, src_len: Tensor | None = None) -> OpenNMTAttentionState:
        """enc_out ``(B, S, dim)``; src_len ``(B,)`` integer or None."""
        if not isinstance(enc_out, Tensor) or enc_out.dim() != 3 or enc_out.shape[2] != self.dim:
            raise _bad("enc_out", f"a (batch, src_len, {self.dim}) tensor", enc_out)
        if src_len is not None and (not isinstance(src_len, Tensor)
                                    or src_len.shape != enc_out.shape[:1]):
            raise _bad("src_len", f"a ({enc_out.shape[0]},) tensor or None", src_len)
        keys = F.linear(enc_out, self.linear_context.weight)
        return OpenNMTAttentionState(memory=enc_out, keys=keys,
                                     key_exp=prepare_keys(keys).key_exp, lengths=src_len)

    def step(self, src: Tensor, state: OpenNMTAttentionState
             ) -> tuple[Tensor, Tensor, OpenNMTAttentionState]:
        """src ``(B, dim)`` (one step) or ``(B, tgt_len, dim)`` -> ``(attn_h, align_vectors,
        state)``, shapes as :meth:`forward`."""
        batch = state.memory.shape[0] if state.rows is None else state.rows.shape[0]
        if (not isinstance(src, Tensor) or src.dim() not in (2, 3) or src.shape[0] != batch
                or src.shape[-1] != self.dim or (state.rows is not None and src.dim() != 2)):
            raise _bad("src", f"a ({batch}, dim={self.dim}) or ({batch}, tgt_len, "
                       f"{self.dim}) tensor (one step, 2-D, after reorder)", src)
        keys: Tensor | PreparedKeys = state.keys
        if state.key_exp is not None:
            keys = PreparedKeys(state.keys, state.key_exp)
        if state.rows is not None:  # hypotheses on the source rows (after reorder)
            context, align = attend_rows(self.linear_query(src), keys, state.memory,
                                         self.v.weight, state.rows, key_lengths=state.lengths,
                                         backend=self.backend)
        else:
            context, align = additive_attention(
                self.linear_query(src), keys, state.memory, self.v.weight,
                key_lengths=state.lengths, return_weights=True, backend=self.backend)
        attn_h = self.linear_out(torch.cat([context, src], -1))
        return attn_h, align, state

    def forward(self, src: Tensor, enc_out: Tensor, src_len: Tensor | None = None,
                coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if coverage is not None:
            raise ValueError("coverage: not supported (OpenNMT-py: 'not supported yet')")
        state = self._state_for(enc_out, src_len)
        attn_h, align, _ = self.step(src, state)
        return attn_h, align

    def _state_for(self, enc_out: Tensor, src_len: Tensor | None) -> OpenNMTAttentionState:
        """The state for a ``forward`` call, by the rule of :func:`attnkern.state.held`
        (the memory: ``enc_out`` and ``src_len``; compared: them and ``linear_context``'s
        weight): OpenNMT's decoders pass the same memory bank at every step."""
        if not isinstance(enc_out, Tensor):
            return self.start(enc_out, src_len)
        tensors = (enc_out,) if src_len is None else (enc_out, src_len)
        compare = (*tensors, self.linear_context.weight)
        grad = torch.is_grad_enabled()
        kept = held(self, tensors, compare, grad)
        if kept is not None:
            return kept.value  # type: ignore[no-any-return]
        state = self.start(enc_out, src_len)
        return hold(self, tensors, compare, state, (state.keys,), grad)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, attn_type='mlp'"


@converts("onmt.modules.global_attention.GlobalAttention")
def _from_global_attention(m: Any) -> nn.Module | None:
    if (getattr(m, "attn_type", None) != "mlp" or getattr(m, "attn_func", None) != "softmax"
            or hasattr(m, "linear_cover")):
        return None  # dot / general / sparsemax / coverage: not additive softmax attention
    new = GlobalAttention(m.dim, attn_type="mlp")
    new.load_state_dict(m.state_dict(), strict=True)
    param = next(m.parameters())
    return new.to(device=param.device, dtype=param.dtype)
