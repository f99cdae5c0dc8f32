"""Step-invariant operands: their gradient once per sequence, not once per decoder step.

A decoder calls attention once per output step, and some operands of each step are the same
tensor at every step: the values (tacotron2's ``memory``), the query layer's weight, the
location filter. Plain autograd computes each one's gradient at every step (a ``(B, Tk,
Dv)`` ``p_s^T dO_s`` for the values: 2 MB written and 2 MB added per tacotron2 step, more
than the rest of the step's attention backward) and adds it into the operand's gradient
buffer. Here a step ``y_s = a_s @ M`` with a step-invariant ``M`` only hands its ``(a_s,
dy_s)`` to the sequence's accumulator, and when autograd reaches ``M`` one GEMM gives

    dM = sum_s a_s^T dy_s = A^T G      (rows of all steps stacked: A (.., S, K), G (.., S, N))

the same gradient up to float summation order. For an ``nn.Linear``-style operand ``y = a
@ W^T`` the result is its transpose, ``dW = G^T A``. Each step computes ``y_s`` from the
detached ``M``, so its own backward skips the ``dM`` work (the fused op's value pass, the
linear's weight GEMM) and passes only the gradient of ``a_s`` on.

Graph, per operand tensor and sequence (the nodes are C++, csrc/steps.cpp, so a step runs
no Python autograd code)::

    M --attnkern::step_sink--> token (0 elements)
    step s: y_s = attnkern::step_tap(y_s computed from M.detach(), a_s, token)
            or    attnkern::step_linear(x_s, W.detach(), W^T, token)   (a linear weight)

The sink runs after every step's node has run (the token is an input of each), so it sees
every ``(a_s, dy_s)`` of that backward pass. Entries are tagged with the autograd graph task,
so a pass that stops short of ``M`` (``torch.autograd.grad`` of other inputs) leaves
nothing for the next one. Only where it pays and is safe: grad mode on, a plain
float32/float64 CPU tensor that requires grad, the C++ extension built, eager mode without
autocast (not torch.compile, tracing, ONNX export or functorch transforms). Gradients of
gradients (``create_graph=True``) are not supported, as for the fused op itself.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from . import _onnx, ops

__all__ = ["StepCache", "StepOperand", "TransposedWeight", "forget_on_backward", "plain"]

_PLAIN = (Tensor, torch.nn.Parameter)  # no subclasses (fake, functional, DTensor, ...)


class StepCache:
    """A value a module keeps for a few tensors: :meth:`lookup` returns it while those
    tensors are the same objects (weakly referenced) with the same version, storage and
    dtype, and the ``extra`` key (e.g. grad mode) is equal; else None. One tuple, read and
    replaced whole (threads sharing a module never mix two entries). Not part of the
    module's state: copies and pickles start empty.
    """

    def __init__(self) -> None:
        self.value: tuple[tuple[Any, ...], tuple[Any, ...], Any] | None = None

    def lookup(self, tensors: tuple[Tensor, ...], *extra: Any) -> Any:
        hit = self.value
        if hit is None:
            return None
        refs, stamp, value = hit
        for ref, t in zip(refs, tensors):
            if ref() is not t:
                return None
        return value if stamp == (_stamp(tensors), extra) else None

    def store(self, tensors: tuple[Tensor, ...], value: Any, *extra: Any) -> Any:
        self.value = (tuple(weakref.ref(t) for t in tensors), (_stamp(tensors), extra), value)
        return value

    def __getstate__(self) -> dict[str, Any]:
        return {"value": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> StepCache:
        return type(self)()


def _stamp(tensors: tuple[Tensor, ...]) -> tuple[tuple[int, int, torch.dtype], ...]:
    # the version misses edits through .data; the storage pointer catches a .data swap
    return tuple((t._version, t.data_ptr(), t.dtype) for t in tensors)


class Deferred(NamedTuple):
    """A step's handle on a step-invariant operand M: compute from ``detached``, then
    :meth:`tap` the result (or use :meth:`linear`)."""

    detached: Tensor
    token: Tensor

    def tap(self, y: Tensor, a: Tensor) -> Tensor:
        """``y = a @ M`` computed from ``detached`` -> a copy of y whose gradient with
        respect to M is deferred to the sink; ``a`` ``(B, rows, K)``, ``y`` ``(B, rows,
        N)``, or ``(B, K)``, ``(B, N)`` for one row."""
        return torch.ops.attnkern.step_tap(y, a, self.token)

    def linear(self, x: Tensor, weight_t: Tensor) -> Tensor:
        """``x @ W^T`` for a (bias-free) linear weight W, in one node: forward from
        ``weight_t``, W^T contiguous (:class:`TransposedWeight`; for a decoder step's few
        rows MKL is about 1.5x faster there than from ``W``), backward ``dx = dy @ W``;
        W's gradient deferred."""
        return torch.ops.attnkern.step_linear(x, self.detached, weight_t, self.token)


def _eager() -> bool:
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or _onnx.exporting_to_onnx() or torch._C._are_functorch_transforms_active()
                or torch.is_autocast_enabled("cpu"))


class StepOperand:
    """A module's handle on one step-invariant operand (the tensor it saw last, weakly).

    ``attach(M)`` returns a :class:`Deferred` for the same tensor (same object, version
    and storage) as long as some step of its graph is alive, a new one otherwise, and None
    where deferral does not apply (the caller then uses ``M`` as is). ``linear``: the steps
    compute ``a @ M^T`` (an ``nn.Linear`` weight). Not part of the module's state: copies
    and pickles start empty.
    """

    def __init__(self, linear: bool = False) -> None:
        self.linear = linear
        self._last = StepCache()  # M -> weakref to its sink's token

    def attach(self, operand: Tensor) -> Deferred | None:
        if not (type(operand) in _PLAIN and operand.requires_grad and torch.is_grad_enabled()
                and operand.is_cpu and operand.dtype in (torch.float32, torch.float64)
                and ops.HAS_CPP and _eager()):
            return None
        # The steps' nodes hold the token: a backward pass that frees them (no
        # retain_graph) releases it, so the next step starts a new sink; with retain_graph
        # the sink is reused like any node.
        ref = self._last.lookup((operand,))
        token = ref() if ref is not None else None
        if token is None:
            token = torch.ops.attnkern.step_sink(operand, self.linear)
            self._last.store((operand,), weakref.ref(token))
        return Deferred(operand.detach(), token)


def forget_on_backward(tensor: Tensor, cache: StepCache) -> None:
    """Empty ``cache`` when a backward pass reaches ``tensor`` (a tensor shared by several
    steps: the pass may free its graph, so the next step must build a new one)."""
    if tensor.requires_grad:
        ref = weakref.ref(cache)  # the hook must not keep the cache (or its module) alive

        def hook(grad: Tensor) -> None:
            c = ref()
            if c is not None:
                c.value = None

        tensor.register_hook(hook)


def plain(module: nn.Module) -> bool:
    """No forward hooks on ``module``, its children or globally (so computing with its
    parameters directly, or reusing its last output, skips nobody's hook)."""
    return not (nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks
                or any(m._forward_hooks or m._forward_pre_hooks for m in module.modules()))


class TransposedWeight(StepCache):
    """``W.detach().t().contiguous()`` of a weight, kept while the weight is unchanged
    (same object, version, storage and dtype): for decoder steps ``x @ W^T``."""

    def get(self, weight: Tensor) -> Tensor:
        if not _eager():
            return weight.t()
        wt = self.lookup((weight,))
        return wt if wt is not None else self.store((weight,), weight.detach().t().contiguous())
