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
:func:`shared` (the same for every hypothesis: parameters folded at start, the query
weight's gradient store), which ``reorder`` passes through, :func:`source` (the key side
of a content-based state, kept at the ``B`` source rows: ``reorder`` composes the state's
``rows`` field, hypothesis -> source row, instead of copying it per hypothesis; see
:func:`attnkern.modules._family.attend_rows`), or :func:`batch_store` (a weight-gradient
store of a batched operand, which ``reorder`` drops: the reordered rows are a new tensor,
whose gradient plain autograd then carries). A :func:`prepared` field (a key's ``exp(2k)``)
is made from another field, and ``replace`` clears it when that field changes without it.

Weight-gradient stores (Megatron's and zero-bubble's ``WeightGradStore``): a decoder step
``y_s = a_s @ M`` with an operand ``M`` that is the same tensor at every step (the values,
the query layer's weight) records its ``(a_s, dy_s)`` in the store instead of adding a
``dM`` per step, and when autograd reaches ``M`` one GEMM gives the whole gradient,

    dM = sum_s a_s^T dy_s = A^T G      (for an nn.Linear weight y = a @ W^T: dW = G^T A)

the same gradient up to float summation order. The store is a 0-element tensor (the
*token*) whose autograd node holds the records; each step's node has the token as an
input, so the store runs after every step of that backward pass. Records are tagged with
the autograd graph task: a pass that stops short of ``M`` (``torch.autograd.grad`` of
other inputs) leaves nothing for the next. The nodes are C++ (csrc/steps.cpp), so a step
runs no Python autograd code. A store exists only where it pays and is safe (see
:func:`weight_grad_store`); elsewhere the field is None and the step uses plain autograd.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import Tensor

from . import ops
from ._compat import forward_hooks_free as hooks_free
from ._compat import is_eager as eager

__all__ = ["DecodingState", "HoldsState", "batch_store", "eager", "held", "hold", "hooks_free",
           "prepared", "record", "record_linear", "register", "rehold", "same_tensors",
           "shared", "source", "usable", "weight_grad_store"]

S = TypeVar("S", bound="DecodingState")


def shared(default: Any = None) -> Any:
    """A state field that is the same for every hypothesis (not indexed by ``reorder``)."""
    return dataclasses.field(default=default, metadata={"reorder": "keep"})


def source(default: Any = None) -> Any:
    """A key-side state field held at the source rows (keys, their prepared form, values,
    masks, lengths): ``reorder`` leaves it as it is and maps the hypotheses to its rows in
    the state's ``rows`` field instead (beam search on shared keys: no per-beam copies)."""
    return dataclasses.field(default=default, metadata={"reorder": "source"})


def prepared(of: str, *, at_source: bool = False) -> Any:
    """A state field computed from field ``of`` (its keys' ``exp(2k)``): ``replace`` with a
    new ``of`` and no new value for it sets it to None (the op then works from ``of``
    itself), so it never outlives what it was made from. ``at_source``: held at the
    source rows, as :func:`source`; else per hypothesis."""
    meta = {"prepared_from": of}
    if at_source:
        meta["reorder"] = "source"
    return dataclasses.field(default=None, metadata=meta)


def batch_store(default: Any = None) -> Any:
    """A weight-gradient store of a batched operand: ``reorder`` drops it (sets None)."""
    return dataclasses.field(default=default, metadata={"reorder": "drop"})


@dataclasses.dataclass(frozen=True)
class DecodingState:
    """Base of the modules' states. Subclasses are frozen dataclasses of tensor (or None)
    fields, each registered as a pytree node with :func:`register`."""

    # (field, the field it is prepared from) of the class's prepared() fields, by register
    _prepared_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

    def replace(self: S, **changes: Any) -> S:
        """A copy with some fields changed (the step's way of returning a new state). A
        :func:`prepared` field whose source field changes, and that is not given itself,
        becomes None."""
        for name, of in type(self)._prepared_fields:
            if of in changes and name not in changes:
                changes[name] = None
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
        changes: dict[str, Tensor | None] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            rule = f.metadata.get("reorder")
            if rule == "drop":
                changes[f.name] = None
            elif f.name == "rows" and any(g.metadata.get("reorder") == "source"
                                          for g in dataclasses.fields(self)):
                # hypothesis -> source row: composed, the source fields stay where they are
                changes["rows"] = index if value is None else value.index_select(
                    0, index.to(value.device))
            elif isinstance(value, Tensor) and rule is None:
                changes[f.name] = value.index_select(0, index.to(value.device))
        return dataclasses.replace(self, **changes)


def register(cls: type[S]) -> type[S]:
    """Class decorator for a state dataclass: register it as a pytree node (and with
    ``torch.export`` for serialisation). Use below ``@dataclasses.dataclass(frozen=True)``.

    No field name may be a prefix of another (``memory`` and ``memory_store``): torch
    2.13's ``torch.export`` writes the unlifted module's input guards by plain string
    replacement of ``state.<field>`` and produces invalid code otherwise."""
    names = [f.name for f in dataclasses.fields(cls)]
    clash = [(a, b) for a in names for b in names if a != b and b.startswith(a)]
    if clash:
        raise TypeError(f"{cls.__name__}: field {clash[0][0]!r} is a prefix of "
                        f"{clash[0][1]!r} (torch.export cannot guard such a state)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prepared_fields = tuple((f.name, f.metadata["prepared_from"]) for f in fields.values()
                            if "prepared_from" in f.metadata)
    for name, of in prepared_fields:
        if of not in fields:
            raise TypeError(f"{cls.__name__}: field {name!r} is prepared from {of!r}, "
                            "which is not a field")
    cls._prepared_fields = prepared_fields
    torch.export.register_dataclass(cls, serialized_type_name=f"attnkern.{cls.__name__}")
    return cls


# ------------------------------------------------------------------ weight-gradient stores

_PLAIN = (Tensor, torch.nn.Parameter)  # no subclasses (fake, functional, DTensor, ...)


def weight_grad_store(operand: Tensor, linear: bool = False) -> Tensor | None:
    """A new store (its token) for ``operand``, or None where a store does not apply: grad
    mode off, an operand that takes no gradient, not a plain float32/float64 CPU tensor,
    the C++ extension missing, or not eager. ``linear``: the steps compute ``a @ M^T``
    (``M`` an ``nn.Linear`` weight ``(N, K)``); else ``a @ M`` with ``M`` ``(K, N)`` or
    batched ``(B, K, N)``."""
    if not (type(operand) in _PLAIN and operand.requires_grad and torch.is_grad_enabled()
            and operand.is_cpu and operand.dtype in (torch.float32, torch.float64)
            and ops.HAS_CPP and eager()):
        return None
    token: Tensor = torch.ops.attnkern.wgrad_store(operand, linear)
    return token


def usable(token: Tensor | None) -> bool:
    """Whether a step may record into ``token`` now (grad mode on, eager)."""
    return token is not None and torch.is_grad_enabled() and eager()


def record(token: Tensor, y: Tensor, a: Tensor) -> Tensor:
    """``y = a @ M`` computed from ``M.detach()`` -> a copy of ``y`` whose gradient with
    respect to ``M`` goes to the store; ``a`` ``(B, rows, K)``, ``y`` ``(B, rows, N)``, or
    ``(B, K)``, ``(B, N)`` for one row."""
    out: Tensor = torch.ops.attnkern.wgrad_record(y, a, token)
    return out


def record_linear(token: Tensor, x: Tensor, weight: Tensor, weight_t: Tensor) -> Tensor:
    """``x @ W^T`` for a bias-free linear weight ``W`` in one node: forward from
    ``weight_t`` (``W^T`` contiguous: for a decoder step's few rows MKL is about 1.5x faster
    there than from ``W``), backward ``dx = dy @ W``; ``W``'s gradient to the store."""
    out: Tensor = torch.ops.attnkern.wgrad_record_linear(x, weight.detach(), weight_t, token)
    return out


def same_tensors(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> bool:
    """Each pair has the same dtype, shape and contents (bitwise where the C++ extension
    is built: ``attnkern::same_bytes``, a memcmp about 9x faster than ``torch.equal``)."""
    if ops.HAS_CPP:
        same: bool = torch.ops.attnkern.same_bytes(list(a), list(b))
        return same
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------ the call protocols' state


class _Held(NamedTuple):
    refs: tuple[weakref.ref[Tensor], ...]
    versions: tuple[int, ...]
    extra: tuple[Any, ...]
    copies: tuple[Tensor, ...]
    value: Any
    alive: list[bool]  # emptied when a backward pass reaches a watched tensor


class _Forget:
    """A tensor hook marking a held state consumed (a backward pass may free its graph)."""

    def __init__(self, alive: list[bool]) -> None:
        self.alive = alive

    def __call__(self, grad: Tensor) -> None:
        self.alive.clear()


def held(owner: torch.nn.Module, tensors: tuple[Tensor, ...], compare: tuple[Tensor, ...],
         *extra: Any, slot: str = "_held") -> _Held | None:
    """What a toolkit call protocol kept on ``owner`` (by :func:`hold`, in the attribute
    ``slot``; the state is its ``.value``), or None.

    The one rule: it is reused while ``tensors`` (the memory) are the same objects with the
    same versions, ``extra`` (grad mode, ...) is equal, no backward pass has reached the
    tensors it watches, and ``compare`` (the memory and the parameters folded into the
    state) equal the copies taken when it was made, compared bitwise at each call (an edit
    through ``.data``, which no version counter sees, is picked up). Eager mode only. One
    state is kept, read and replaced whole, so threads sharing a module never mix two."""
    h: _Held | None = owner.__dict__.get(slot)  # read once (threads)
    if (h is None or not h.alive or h.extra != extra or len(h.refs) != len(tensors)
            or not eager()):
        return None
    for ref, version, t in zip(h.refs, h.versions, tensors):
        if ref() is not t or t._version != version:
            return None
    return h if same_tensors(h.copies, compare) else None


def hold(owner: torch.nn.Module, tensors: tuple[Tensor, ...], compare: tuple[Tensor, ...],
         value: Any, watch: tuple[Tensor | None, ...], *extra: Any,
         slot: str = "_held") -> Any:
    """Keep ``value`` on ``owner`` for :func:`held` (replacing what was there); ``watch``:
    the tensors whose graph a backward pass consumes. Returns ``value``."""
    if not eager():  # compiled / exported graphs keep nothing between calls
        return value
    alive = [True]
    for t in watch:
        if t is not None and t.requires_grad:
            t.register_hook(_Forget(alive))
    owner.__dict__[slot] = _Held(tuple(weakref.ref(t) for t in tensors),
                                 tuple(t._version for t in tensors), extra,
                                 tuple(t.detach().clone() for t in compare), value, alive)
    return value


def rehold(owner: torch.nn.Module, kept: _Held, value: Any) -> Any:
    """Keep ``value`` in place of ``kept.value`` (same rule and copies: e.g. a prepared
    form of it). A new record from ``kept``, so a record another thread stored meanwhile is
    replaced whole, never given this one's value."""
    owner.__dict__["_held"] = kept._replace(value=value)
    return value


class HoldsState:
    """Mixin for modules with a call protocol that keeps a state (:func:`hold`): copies
    and pickles (deepcopy goes through ``__getstate__``) start without it."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # type: ignore[attr-defined]
        state["_held"] = None
        return state
