"""Op registration: the one place where backends meet PyTorch.

Two custom ops in the ``attnkern`` namespace, schema defined once here (inferred from the
annotated Python signatures of :func:`_fwd_triton` and :func:`_bwd_triton`):

``attnkern::fwd(query, key, value, weight, key_padding_mask?, key_lengths?, causal,
return_weights, key_exp?) -> (out, lse, weights)``

    query (B, Tq, H), or (B, H) for one decoder step; key (B, Tk, H), value (B, Tk, Dv),
    weight (H,): one float dtype.
    key_padding_mask (B, Tk) bool, True = ignored; key_lengths (B,) int64 in [0, Tk].
    key_exp: ``exp(2 * key)`` as a contiguous (B, Tk, H) tensor in the accumulation dtype,
    prepared once per sequence (:func:`attnkern.prepare_keys`); it only saves the kernel the
    key-side exp work, never changes the result, and takes no gradient (key does).
    out (B, Tq, Dv) input dtype; lse (B, Tq) log-sum-exp of the usable scores of each row,
    float32 (float64 for float64 inputs), ``+inf`` for a row with no usable key (so that
    ``exp(score - lse)`` is 0 there); weights (B, Tq, Tk) input dtype if return_weights,
    else an empty ``(0,)`` tensor. For a 2-D query the Tq dimension is dropped: out (B, Dv),
    lse (B,), weights (B, Tk) (the kernels see (B, 1, H); no unsqueeze/squeeze, and no view
    nodes in the autograd graph, around a decoder step).

``attnkern::bwd(grad_out, grad_weights?, query, key, value, weight, lse, delta?,
key_padding_mask?, key_lengths?, causal, key_exp?, out?, weights?, value_grad=True) ->
(grad_query, grad_key, grad_value, grad_weight)``

    grad_out (B, Tq, Dv); grad_weights (B, Tq, Tk) or None; lse as saved by fwd;
    delta (B, Tq) in lse's dtype = rowsum(out * grad_out) + rowsum(weights * grad_weights),
    or None: then the op computes it from ``out`` (and ``weights`` where grad_weights is
    given), which must be passed (the autograd backward does this: one pass in the C++
    kernel rather than separate ATen ops). For a 2-D query every per-row tensor drops Tq.
    weights, when given in lse's dtype (float32 and float64 inputs), are also p itself: the
    CPU kernel then reads p from them instead of recomputing the scores (tanh once per
    element in the backward, not twice). The Triton kernels use them only for delta.
    With p = exp(s - lse) and dp = grad_out . value_j + grad_weights_ij:
    ds = p * (dp - delta), grad_query_i = sum_j ds_ij * w * (1 - t_ij^2) etc.
    value_grad False: grad_value is an empty ``(0,)`` tensor and the CPU kernel skips the
    value-gradient pass (the autograd backward does this when value takes no gradient).
    Outputs are contiguous, in the input dtype, grad_query in query's shape.

Kernels: CPU from the C++ extension (``csrc/ops.cpp``, ``TORCH_LIBRARY_IMPL(attnkern,
CPU)``), CUDA from Triton (decomposed under ``torch.compile`` like ``triton_op``, so Inductor
sees the kernels). Autograd: one C++ ``torch::autograd::Function`` registered for ``fwd`` on
every device (``csrc/autograd.cpp``, ``TORCH_LIBRARY_IMPL(attnkern, Autograd)``), so a
decoder step runs no Python autograd code. Without the extension the ops run forward only
(the public functional then takes the reference path whenever a gradient is needed).
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
    # The Triton kernels compute exp(2k) in registers: key_exp is not needed there.
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    if query.dim() == 2:  # one decoder step: the launchers take (B, 1, H)
        out, lse, weights = triton_kernels.fwd(
            query.unsqueeze(1), key, value, weight, key_padding_mask, key_lengths, causal,
            return_weights)
        return out.squeeze(1), lse.squeeze(1), weights.squeeze(1) if return_weights else weights
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
    delta: Tensor | None,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    key_exp: Tensor | None = None,
    out: Tensor | None = None,
    weights: Tensor | None = None,
    value_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    if delta is None:
        delta = _delta(grad_out, grad_weights, lse, out, weights)
    if query.dim() == 2:  # one decoder step: the launchers take (B, 1, ...)
        dq, dk, dv, dw = triton_kernels.bwd(
            grad_out.unsqueeze(1), None if grad_weights is None else grad_weights.unsqueeze(1),
            query.unsqueeze(1), key, value, weight, lse.unsqueeze(1), delta.unsqueeze(1),
            key_padding_mask, key_lengths, causal,
        )
        dq = dq.squeeze(1)
    else:
        dq, dk, dv, dw = triton_kernels.bwd(
            grad_out, grad_weights, query, key, value, weight, lse, delta,
            key_padding_mask, key_lengths, causal,
        )
    # The Triton kernels write dv in the same pass as dk; without value_grad it is dropped.
    return dq, dk, dv if value_grad else dv.new_empty(0), dw


def _delta(grad_out: Tensor, grad_weights: Tensor | None, lse: Tensor, out: Tensor | None,
           weights: Tensor | None) -> Tensor:
    """bwd's delta pre-pass where the caller passed delta=None (in lse's dtype)."""
    if out is None or (grad_weights is not None and weights is None):
        raise RuntimeError("attnkern::bwd: delta is None, so out (and weights, with "
                           "grad_weights) must be given")
    acc = lse.dtype
    delta = (out.to(acc) * grad_out.to(acc)).sum(-1)
    if grad_weights is not None:
        assert weights is not None
        delta = delta + (weights.to(acc) * grad_weights.to(acc)).sum(-1)
    return delta


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


# Schema defined once, inferred from the annotated signatures above. A plain library
# definition (not torch.library.custom_op, which would install its own Python autograd
# kernel): autograd is the C++ one in csrc/autograd.cpp.
_lib = torch.library.Library("attnkern", "DEF")  # noqa: TOR901 (kept alive: module global)
for _name, _fn in (("fwd", _fwd_triton), ("bwd", _bwd_triton)):
    _lib.define(_name + torch.library.infer_schema(_fn, mutates_args=()))
fwd = torch.ops.attnkern.fwd.default
bwd = torch.ops.attnkern.bwd.default
# The location layer's windows (attnkern.LocationSensitiveAttention): im2col of a 1-D
# convolution with each channel's taps zero-padded to `taps`, (B, C, T) -> (B * T, C * taps),
# and its adjoint. CPU kernels and autograd in csrc/location.cpp; elsewhere the module builds
# the windows from standard ops.
_lib.define("location_windows(Tensor x, int kernel, int pad, int taps) -> Tensor")
_lib.define("location_windows_backward(Tensor grad, int[] x_size, int kernel, int pad, "
            "int taps) -> Tensor")
location_windows = torch.ops.attnkern.location_windows.default

_lib.impl("fwd", _eager_cuda(_fwd_triton), "CUDA")
_lib.impl("bwd", _eager_cuda(_bwd_triton), "CUDA")
if HAS_TRITON:
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    torch.library.register_torch_dispatch("attnkern::fwd", FunctionalTensorMode,
                                          _decompose_on_cuda(_fwd_triton), lib=_lib)
    torch.library.register_torch_dispatch("attnkern::bwd", FunctionalTensorMode,
                                          _decompose_on_cuda(_bwd_triton), lib=_lib)

    # As triton_op does: name the kernels behind each op, so AOTAutograd's compile cache key
    # changes when their source does (its AST scan cannot see through our launchers). Only
    # where CUDA exists: CPU-only imports need not load the kernel module.
    if torch.cuda.is_available():
        _kernels = [obj for obj in vars(importlib.import_module("attnkern.triton_kernels"))
                    .values() if isinstance(obj, triton.runtime.jit.JITFunction)]
        for _name in ("attnkern::fwd", "attnkern::bwd"):
            torch._library.triton.triton_ops_to_kernels[_name] = _kernels


@torch.library.register_fake("attnkern::fwd", lib=_lib)
def _fwd_fake(query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights,
              key_exp=None):
    rows = query.shape[:-1]  # (B, Tq), or (B,) for a 2-D (one step) query
    out = query.new_empty(*rows, value.shape[2])
    lse = query.new_empty(rows, dtype=compute_dtype(query.dtype))
    weights = query.new_empty(*rows, key.shape[1]) if return_weights else query.new_empty(0)
    return out, lse, weights


@torch.library.register_fake("attnkern::bwd", lib=_lib)
def _bwd_fake(grad_out, grad_weights, query, key, value, weight, lse, delta,
              key_padding_mask, key_lengths, causal, key_exp=None, out=None, weights=None,
              value_grad=True):
    return (
        query.new_empty(query.shape),
        key.new_empty(key.shape),
        value.new_empty(value.shape) if value_grad else value.new_empty(0),
        weight.new_empty(weight.shape),
    )
@torch.library.register_fake("attnkern::location_windows", lib=_lib)
def _location_windows_fake(x, kernel, pad, taps):
    return x.new_empty(x.shape[0] * x.shape[2], x.shape[1] * taps)


@torch.library.register_fake("attnkern::location_windows_backward", lib=_lib)
def _location_windows_backward_fake(grad, x_size, kernel, pad, taps):
    return grad.new_empty(x_size)


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

    _lib.impl("fwd", _no_cpu_kernel, "CPU")
    _lib.impl("bwd", _no_cpu_kernel, "CPU")


class AdditiveAttentionFunction(torch.autograd.Function):
    """Low-level differentiable entry point (flash-attention's ``FlashAttnFunc`` pattern).

    ``AdditiveAttentionFunction.apply(query, key, value, weight, key_padding_mask=None,
    key_lengths=None, causal=False, return_weights=False, key_exp=None)`` with already
    validated inputs (query 3-D, ``key_lengths`` int64) returns ``(out, lse, weights)`` as
    ``attnkern::fwd`` does. ``apply`` calls the registered op, whose autograd (the C++
    Function in ``csrc/autograd.cpp``: delta pre-pass, then ``attnkern::bwd``) is the one
    backward of the package; this class adds no second one.
    """

    @staticmethod
    def forward(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - apply is the entry
        raise RuntimeError("call AdditiveAttentionFunction.apply(...)")

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        weight: Tensor,
        key_padding_mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
        key_exp: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        return fwd(query, key, value, weight, key_padding_mask, key_lengths, causal,
                   return_weights, key_exp)


def triton_interpret_enabled() -> bool:
    """True when TRITON_INTERPRET is set: the Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_TRITON_ON_CPU: list[torch.library.Library] = []


def use_triton_on_cpu() -> None:
    """Run the Triton kernels on CPU tensors, in the Triton interpreter, for this process.

    For testing the Triton kernels without a GPU: needs ``TRITON_INTERPRET=1`` set before
    attnkern is imported. It registers the Triton launchers as the CPU kernels of
    ``attnkern::fwd``/``bwd`` in a separate ``torch.library`` fragment, replacing the C++
    kernels for the rest of the process (every CPU call then runs Triton; PyTorch warns
    once per op), so the calls go through the same op, autograd and validation as on CUDA.
    Until this is called, ``backend="triton"`` on CPU tensors raises.
    """
    if _TRITON_ON_CPU:
        return
    if not HAS_TRITON:
        raise RuntimeError("use_triton_on_cpu() needs Triton: `pip install triton`")
    if not triton_interpret_enabled():
        raise RuntimeError("use_triton_on_cpu() needs TRITON_INTERPRET=1 in the environment "
                           "before attnkern (and triton) are imported")
    lib = torch.library.Library("attnkern", "IMPL")  # noqa: TOR901 (kept alive below)
    lib.impl("fwd", _fwd_triton, "CPU")
    lib.impl("bwd", _bwd_triton, "CPU")
    _TRITON_ON_CPU.append(lib)


def triton_on_cpu() -> bool:
    """Whether :func:`use_triton_on_cpu` has replaced the CPU kernels in this process."""
    return bool(_TRITON_ON_CPU)
