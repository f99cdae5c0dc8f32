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

Graph, per operand tensor and sequence::

    M --_OperandSink--> token (0 elements)
    step s: y_s = _DeferredGrad(y_s computed from M.detach(), a_s, token)

The sink runs after every step's node has run (the token is an input of each), so it sees
every ``(a_s, dy_s)`` of that backward pass. Entries are tagged with the autograd graph task,
so a pass that stops short of ``M`` (``torch.autograd.grad`` of other inputs) leaves
nothing for the next one; once a sink has run, the next step starts a new one (the graph
above ``M`` may have been freed). Only where it pays and is safe: grad mode on, a plain
float32/float64 CPU tensor that requires grad, eager mode without autocast (not
torch.compile, tracing, ONNX export or functorch transforms). Not twice-differentiable
(``once_differentiable``: a clear error, as for the fused op itself).
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import _onnx

__all__ = ["StepCache", "StepOperand", "TransposedWeight", "forget_on_backward", "plain"]

_task_id = torch._C._current_graph_task_id
_PLAIN = (Tensor, torch.nn.Parameter)  # no subclasses (fake, functional, DTensor, ...)


class _Accumulator:
    """The steps' ``(a, dy)`` pairs for one operand, until its sink consumes them."""

    __slots__ = ("batched", "consumed", "entries", "linear", "transposed")

    def __init__(self, linear: bool, batched: bool) -> None:
        self.linear = linear  # y = a @ M^T (nn.Linear's weight) rather than y = a @ M
        self.batched = batched  # M (B, K, N): a step's a (B, rows, K), or (B, K) for one row
        self.consumed = False
        self.entries: list[tuple[int, Tensor, Tensor]] = []
        self.transposed: Tensor | None = None  # M^T, contiguous (see Deferred.linear)

    def add(self, a: Tensor, grad: Tensor) -> None:
        if self.batched and a.dim() == 2:
            a, grad = a.unsqueeze(1), grad.unsqueeze(1)
        self.entries.append((_task_id(), a, grad))

    def take(self) -> Tensor | None:
        """dM of this backward pass's steps, as one (batched) GEMM."""
        self.consumed = True
        task = _task_id()
        mine = [(a, g) for t, a, g in self.entries if t == task]
        self.entries = [e for e in self.entries if e[0] != task]
        if not mine:
            return None
        a = torch.cat([a for a, _ in mine], -2)  # (.., S rows, K)
        g = torch.cat([g for _, g in mine], -2).to(a.dtype)  # (.., S rows, N)
        return g.mT @ a if self.linear else a.mT @ g


class _OperandSink(torch.autograd.Function):
    """M -> a 0-element token; its backward returns M's whole gradient."""

    @staticmethod
    def forward(ctx: Any, operand: Tensor, acc: _Accumulator) -> Tensor:
        ctx.acc = acc
        return operand.new_empty(0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, _token_grad: Tensor) -> tuple[Tensor | None, None]:
        return ctx.acc.take(), None


class _DeferredGrad(torch.autograd.Function):
    """One step: y passes through; backward hands (a, dy) to the accumulator."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, a: Tensor, token: Tensor, acc: _Accumulator) -> Tensor:
        ctx.save_for_backward(a)
        ctx.acc = acc
        ctx.token = token  # the sink lives as long as some step's graph does
        return y.clone()  # a new tensor, as the op's own output (in-place ops allowed on it)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, Tensor, None]:
        (a,) = ctx.saved_tensors
        ctx.acc.add(a, grad)
        return grad, None, ctx.token.new_empty(0), None


class _DeferredLinear(torch.autograd.Function):
    """One step's ``y = x @ W^T`` with W's gradient deferred, in one node: forward from a
    contiguous ``W^T`` (for a decoder step's few rows MKL is about 1.5x faster there than
    from ``W``), backward ``dx = dy @ W``; ``(x, dy)`` go to the accumulator."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, weight_t: Tensor, token: Tensor,
                acc: _Accumulator) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.acc = acc
        ctx.token = token
        return x @ weight_t

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, Tensor, None]:
        x, weight = ctx.saved_tensors
        ctx.acc.add(x, grad)
        dx = grad @ weight if ctx.needs_input_grad[0] else None
        return dx, None, None, ctx.token.new_empty(0), None


class Deferred(NamedTuple):
    """A step's handle: compute ``y`` from ``detached``, then pass it through :meth:`tap`."""

    detached: Tensor
    token: Tensor
    acc: _Accumulator

    def tap(self, y: Tensor, a: Tensor) -> Tensor:
        """``y = a @ M`` (``a @ M^T`` for a linear weight) computed from ``detached`` -> y
        whose gradient with respect to M is deferred to the sink; ``a`` ``(.., rows, K)``,
        ``y`` ``(.., rows, N)`` (``(B, K)``, ``(B, N)`` for one row of a batched M)."""
        return _DeferredGrad.apply(y, a, self.token, self.acc)

    def linear(self, x: Tensor) -> Tensor:
        """``x @ W^T`` for a linear-weight operand W (bias-free), W's gradient deferred."""
        acc = self.acc
        if acc.transposed is None:  # once per sink: per weight version and utterance
            acc.transposed = self.detached.t().contiguous()
        return _DeferredLinear.apply(x, self.detached, acc.transposed, self.token, acc)


def _eager() -> bool:
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or _onnx.exporting_to_onnx() or torch._C._are_functorch_transforms_active()
                or torch.is_autocast_enabled("cpu"))


class StepOperand:
    """A module's handle on one step-invariant operand (the tensor it saw last, weakly).

    ``attach(M)`` returns a :class:`Deferred` for the same tensor (same object, same
    version, sink not yet run) as long as some step of its graph is alive, a new one
    otherwise, and None where deferral does not apply (the caller then uses ``M`` as is).
    ``linear``: the steps compute ``a @ M^T`` (an ``nn.Linear`` weight). Not part of the
    module's state: copies and pickles start empty.
    """

    def __init__(self, linear: bool = False) -> None:
        self.linear = linear
        # (weakref to M, its _version, weakref to the token, accumulator): one tuple, read
        # and replaced whole (threads sharing a module never mix two sequences).
        self._last: tuple[Any, int, Any, _Accumulator] | None = None

    def attach(self, operand: Tensor) -> Deferred | None:
        if not (type(operand) in _PLAIN and operand.requires_grad and torch.is_grad_enabled()
                and operand.is_cpu and operand.dtype in (torch.float32, torch.float64)
                and _eager()):
            return None
        last = self._last
        if (last is not None and last[0]() is operand and last[1] == operand._version
                and not last[3].consumed):
            token = last[2]()
            if token is not None:
                return Deferred(operand.detach(), token, last[3])
        acc = _Accumulator(self.linear, operand.dim() == 3)
        token = _OperandSink.apply(operand, acc)
        self._last = (weakref.ref(operand), operand._version, weakref.ref(token), acc)
        return Deferred(operand.detach(), token, acc)

    def __getstate__(self) -> dict[str, Any]:
        return {"linear": self.linear, "_last": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> StepOperand:
        return StepOperand(self.linear)


class StepCache:
    """A module's per-sequence value (``.value``), e.g. a tensor shared by an utterance's
    steps; not part of the module's state: copies and pickles start empty."""

    def __init__(self) -> None:
        self.value: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"value": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> StepCache:
        return StepCache()


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
    (same object, version, storage and dtype): for inference steps ``x @ W^T``."""

    def get(self, weight: Tensor) -> Tensor:
        if not _eager():
            return weight.t()
        key = (weight._version, weight.data_ptr(), weight.dtype)
        hit = self.value
        if hit is not None and hit[0] is weight and hit[1] == key:
            return hit[2]
        wt = weight.detach().t().contiguous()
        self.value = (weight, key, wt)
        return wt

    def __deepcopy__(self, memo: dict[int, Any]) -> TransposedWeight:
        return TransposedWeight()
