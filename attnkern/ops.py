"""Op registration and autograd: the one place where backends meet PyTorch.

Two custom ops in the ``attnkern`` namespace, schema defined once here (from the annotated
Python signatures below):

``attnkern::fwd(query, key, value, weight, key_padding_mask?, key_lengths?, causal,
return_weights) -> (out, lse, weights)``

    query (B, Tq, H), key (B, Tk, H), value (B, Tk, Dv), weight (H,): one float dtype.
    key_padding_mask (B, Tk) bool, True = ignored; key_lengths (B,) int64 in [0, Tk].
    out (B, Tq, Dv) input dtype; lse (B, Tq) log-sum-exp of the usable scores of each row,
    float32 (float64 for float64 inputs), ``+inf`` for a row with no usable key (so that
    ``exp(score - lse)`` is 0 there); weights (B, Tq, Tk) input dtype if return_weights,
    else an empty ``(0,)`` tensor.

``attnkern::bwd(grad_out, grad_weights?, query, key, value, weight, lse, delta,
key_padding_mask?, key_lengths?, causal) -> (grad_query, grad_key, grad_value, grad_weight)``

    grad_out (B, Tq, Dv); grad_weights (B, Tq, Tk) or None; lse as saved by fwd;
    delta (B, Tq) in lse's dtype = rowsum(out * grad_out) + rowsum(weights * grad_weights).
    With p = exp(s - lse) and dp = grad_out . value_j + grad_weights_ij:
    ds = p * (dp - delta), grad_query_i = sum_j ds_ij * w * (1 - t_ij^2) etc.
    Outputs are contiguous, in the input dtype.

Kernels: CPU from the C++ extension (``csrc/``, ``TORCH_LIBRARY_IMPL(attnkern, CPU)``),
CUDA from Triton (decomposed under ``torch.compile`` like ``triton_op``, so Inductor sees
the kernels). Autograd is
registered on ``fwd`` and shared, one implementation, with :class:`AdditiveAttentionFunction`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from torch import Tensor

from .reference import compute_dtype

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # CPU-only installs need no Triton
    HAS_TRITON = False


def _fwd_triton(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    return_weights: bool,
    key_exp: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    return triton_kernels.fwd(
        query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights
    )


def _bwd_triton(
    grad_out: Tensor,
    grad_weights: Tensor | None,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    lse: Tensor,
    delta: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    key_exp: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    return triton_kernels.bwd(
        grad_out, grad_weights, query, key, value, weight, lse, delta,
        key_padding_mask, key_lengths, causal,
    )


def _decompose_on_cuda(body: Any) -> Any:
    """Under torch.compile, inline the Triton body into the graph (so Inductor sees the
    kernels, as ``torch.library.triton_op`` does) -- but only for CUDA tensors: on CPU the op
    stays opaque and runs the C++ kernel. ``torch.export`` keeps the op whole, as triton_op.
    """

    def rule(mode: Any, op: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from torch.export._trace import custom_triton_ops_decomposition_disabled

        tensors = [a for a in args if isinstance(a, Tensor)]
        on_cuda = bool(tensors) and all(t.device.type == "cuda" for t in tensors)
        if not on_cuda or not HAS_TRITON or custom_triton_ops_decomposition_disabled():
            return mode.__torch_dispatch__(op, types, args, kwargs)
        with mode:
            return body(*args, **kwargs)

    return rule


def _eager_cuda(body: Any) -> Any:
    def run(*args: Any) -> Any:
        if not HAS_TRITON:
            raise RuntimeError("attnkern on CUDA needs Triton: `pip install triton`")
        # Plain tensors in eager mode: launch directly, no higher-order-op dispatch.
        with torch._library.triton.set_wrap_triton_enabled(False):
            return body(*args)

    return run


# Schema defined once, from these annotated signatures. CUDA kernels: the Triton launchers
# (registered here); CPU kernels: C++ (TORCH_LIBRARY_IMPL in csrc/).
fwd = torch.library.custom_op("attnkern::fwd", _fwd_triton, mutates_args=(),
                              device_types="cuda")
bwd = torch.library.custom_op("attnkern::bwd", _bwd_triton, mutates_args=(),
                              device_types="cuda")
fwd.register_kernel("cuda")(_eager_cuda(_fwd_triton))
bwd.register_kernel("cuda")(_eager_cuda(_bwd_triton))
if HAS_TRITON:
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    fwd.register_torch_dispatch(FunctionalTensorMode, _decompose_on_cuda(_fwd_triton))
    bwd.register_torch_dispatch(FunctionalTensorMode, _decompose_on_cuda(_bwd_triton))

    # As triton_op does: name the kernels behind each op, so AOTAutograd's compile cache key
    # changes when their source does (its AST scan cannot see through our launchers). Only
    # where CUDA exists: CPU-only imports need not load the kernel module.
    if torch.cuda.is_available():
        _kernels = [obj for obj in vars(importlib.import_module("attnkern.triton_kernels"))
                    .values() if isinstance(obj, triton.runtime.jit.JITFunction)]
        for _name in ("attnkern::fwd", "attnkern::bwd"):
            torch._library.triton.triton_ops_to_kernels[_name] = _kernels


@fwd.register_fake
def _fwd_fake(query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights,
              key_exp=None):
    batch, tq, _ = query.shape
    out = query.new_empty(batch, tq, value.shape[2])
    lse = query.new_empty(batch, tq, dtype=compute_dtype(query.dtype))
    weights = query.new_empty(batch, tq, key.shape[1]) if return_weights else query.new_empty(0)
    return out, lse, weights


@bwd.register_fake
def _bwd_fake(grad_out, grad_weights, query, key, value, weight, lse, delta,
              key_padding_mask, key_lengths, causal, key_exp=None):
    return (
        query.new_empty(query.shape),
        key.new_empty(key.shape),
        value.new_empty(value.shape),
        weight.new_empty(weight.shape),
    )


# --------------------------------------------------------------------------- C++ extension

def _load_extension() -> tuple[bool, str]:
    try:
        importlib.import_module("attnkern._C")  # registers the CPU kernels
        return True, ""
    except ImportError as e:
        return False, str(e)


HAS_CPP, CPP_IMPORT_ERROR = _load_extension()

if not HAS_CPP:
    def _no_cpu_kernel(*args: Any) -> Any:
        raise RuntimeError(
            "attnkern._C (the C++ CPU kernels) is not built: "
            f"{CPP_IMPORT_ERROR}. Build it with `pip install --no-build-isolation -e .`"
        )

    fwd.register_kernel("cpu")(_no_cpu_kernel)
    bwd.register_kernel("cpu")(_no_cpu_kernel)


# ------------------------------------------------------------------------------- autograd

def _setup_context(
    ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]
) -> None:
    query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights = inputs[:8]
    out, lse, weights = output
    ctx.causal = causal
    ctx.return_weights = return_weights
    ctx.interpret = len(inputs) > 8 and bool(inputs[8])
    ctx.num_inputs = len(inputs)
    ctx.save_for_backward(query, key, value, weight, key_padding_mask, key_lengths,
                          out, lse, weights if return_weights else None)
    ctx.mark_non_differentiable(lse)
    if not return_weights:
        ctx.mark_non_differentiable(weights)


def _backward(ctx: Any, grad_out: Tensor | None, grad_lse: Tensor | None,
              grad_weights: Tensor | None) -> tuple[Tensor | None, ...]:
    """The one backward: delta pre-pass here, then the registered bwd op recomputes."""
    query, key, value, weight, mask, lengths, out, lse, weights = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    acc = lse.dtype
    delta = (out.to(acc) * grad_out.to(acc)).sum(-1)
    if not ctx.return_weights:
        grad_weights = None
    elif grad_weights is not None:
        delta = delta + (weights.to(acc) * grad_weights.to(acc)).sum(-1)
    kernel = _bwd_triton if ctx.interpret else bwd
    dq, dk, dv, dw = kernel(grad_out, grad_weights, query, key, value, weight, lse, delta,
                            mask, lengths, ctx.causal)
    return (dq, dk, dv, dw) + (None,) * (ctx.num_inputs - 4)


fwd.register_autograd(_backward, setup_context=_setup_context)


class AdditiveAttentionFunction(torch.autograd.Function):
    """Low-level autograd entry point (flash-attention's ``FlashAttnFunc`` pattern).

    ``AdditiveAttentionFunction.apply(query, key, value, weight, key_padding_mask,
    key_lengths, causal, return_weights)`` with already validated inputs (query 3-D,
    ``key_lengths`` int64) returns ``(out, lse, weights)`` as ``attnkern::fwd`` does.
    ``forward`` calls the registered ``fwd`` op, ``backward`` the registered ``bwd`` op,
    through the same code as the op's own autograd registration. A ninth argument
    ``interpret=True`` runs the Triton launchers directly on CPU tensors (under
    ``TRITON_INTERPRET=1``); that is how the Triton kernels are tested without a GPU.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        query: Tensor,
        key: Tensor,
        value: Tensor,
        weight: Tensor,
        key_padding_mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
        interpret: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        kernel = _fwd_triton if interpret else fwd
        return kernel(query, key, value, weight, key_padding_mask, key_lengths, causal,
                      return_weights)

    setup_context = staticmethod(_setup_context)  # type: ignore[assignment]
    backward = staticmethod(_backward)  # type: ignore[assignment]


def triton_interpret_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
