"""The decoding state: everything per sequence, held by the caller.

Every attention module has an explicit per-sequence start and step::

    state = layer.start(memory, key_lengths=...)            # once per sequence
    context, weights, state = layer.step(query, state)      # each decoder step
    state = state.reorder(index)                            # beam search: pick hypotheses

A state is a frozen dataclass registered as a pytree whose leaves are tensors (or None):
``torch.compile(fullgraph=True)``, ``torch.export``, ``while_loop`` and ONNX export take it
as an input and an output. ``step`` returns a new state and mutates neither the module nor
the old state, so autograd sees every step's tensors as they were.

A state is a snapshot: it holds what ``start`` computed from the memory and the module's
parameters at that time (prepared keys, folded location filters, transposed weights). A
parameter changed after ``start`` (an optimizer step, a ``.data`` edit) takes effect at the
next ``start``. The modules keep no per-sequence state of their own.

Fields are per-hypothesis (batch first: ``reorder`` indexes them) unless declared with
:func:`shared` (the same for every hypothesis: parameters folded at start, weight-gradient
store tokens), which ``reorder`` passes through.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["DecodingState", "register", "shared"]

S = TypeVar("S", bound="DecodingState")


def shared(default: Any = None) -> Any:
    """A state field that is the same for every hypothesis (not indexed by ``reorder``)."""
    return dataclasses.field(default=default, metadata={"shared": True})


@dataclasses.dataclass(frozen=True)
class DecodingState:
    """Base of the modules' states. Subclasses are frozen dataclasses of tensor (or None)
    fields, each registered as a pytree node with :func:`register`."""

    def replace(self: S, **changes: Any) -> S:
        """A copy with some fields changed (the step's way of returning a new state)."""
        return dataclasses.replace(self, **changes)

    def reorder(self: S, index: Tensor) -> S:
        """Select hypotheses: ``index`` ``(N,)`` long, rows of the current batch (beam search:
        ``N = B * beam``). Per-hypothesis fields are gathered along dim 0 (differentiably:
        gradients flow back to the rows selected); shared fields pass through."""
        if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype != torch.long:
            raise TypeError(
                "reorder: index must be a 1-D torch.long tensor, got "
                + (f"{index.dtype} of shape {tuple(index.shape)}" if isinstance(index, Tensor)
                   else type(index).__name__))
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and not f.metadata.get("shared"):
                changes[f.name] = value.index_select(0, index.to(value.device))
        return dataclasses.replace(self, **changes)


def register(cls: type[S]) -> type[S]:
    """Class decorator for a state dataclass: register it as a pytree node (and with
    ``torch.export`` for serialisation). Use below ``@dataclasses.dataclass(frozen=True)``."""
    torch.export.register_dataclass(cls, serialized_type_name=f"attnkern.{cls.__name__}")
    return cls
