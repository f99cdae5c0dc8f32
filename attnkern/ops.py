"""Op registration: the one place where backends meet PyTorch.

Two custom ops in the ``attnkern`` namespace, their schemas written once, with every other
attnkern op's, in ``csrc/schema.cpp`` (``TORCH_LIBRARY(attnkern)``: the C++ autograd needs
them first). What they mean:

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

``attnkern::bwd(grad_out, grad_weights?, query, key, value, weight, out, lse,
key_padding_mask?, key_lengths?, causal, key_exp?, weights?, value_grad=True) ->
(grad_query, grad_key, grad_value, grad_weight)``

    grad_out (B, Tq, Dv); grad_weights (B, Tq, Tk) or None; out and lse as returned by
    fwd. The op computes delta = rowsum(out * grad_out) + rowsum(weights * grad_weights)
    itself (one pass in the C++ kernel), so ``weights`` must be given with grad_weights.
    For a 2-D query every per-row tensor drops Tq.
    weights, when given in lse's dtype (float32 and float64 inputs), are also p itself: the
    CPU kernel then reads p from them instead of recomputing the scores (tanh once per
    element in the backward, not twice). The Triton kernels use them only for delta.
    With p = exp(s - lse) and dp = grad_out . value_j + grad_weights_ij:
    ds = p * (dp - delta), grad_query_i = sum_j ds_ij * w * (1 - t_ij^2) etc.
    value_grad False: grad_value is an empty ``(0,)`` tensor and the CPU kernel skips the
    value-gradient pass (the autograd backward does this when value takes no gradient).
    Outputs are contiguous, in the input dtype, grad_query in query's shape.

``attnkern::scores(query, key, weight, key_padding_mask?, key_lengths?, causal, key_exp?)
-> energies`` and ``attnkern::scores_backward(grad, ...) -> (grad_query, grad_key,
grad_weight)``: the energies ``weight . tanh(query_i + key_j)`` without the softmax,
``(B, Tq, Tk)`` (``(B, Tk)`` for a 2-D query), ``-inf`` where masked; the checks of ``fwd``
(and of ``grad``'s shape). CPU: C++ (csrc/kernels/scores.cpp); CUDA: Triton
(``_scores_fwd_kernel``; backward ``_scores_ds_kernel`` + the attention's
``_bwd_dqdk_kernel``); one C++ autograd on every device.

``attnkern::location_attention(query, processed_memory, attention_weights_cat,
location_filter, memory, weight, key_padding_mask?, key_lengths?, kernel, pad) -> (context,
weights)``: one inference step of location-sensitive attention, CPU only (``csrc/ops.cpp``):
keys ``processed_memory + windows(attention_weights_cat) @ location_filter^T`` (the
location conv and dense folded, :func:`attnkern.modules._family.fold_location_filter`),
then ``fwd``'s step on them; query (B, A), processed_memory (B, T, A),
attention_weights_cat (B, C, T), location_filter (A, C * taps), memory (B, T, Dv), weight
(A,) -> context (B, Dv), weights (B, T). The step's keys live in per-thread scratch, and
keys past a row's last usable one are not computed. No backward: under grad mode an input
that requires grad raises (the modules call it only for inference steps).
``attnkern::location1_attention(query, base, prev, conv_weight, dense_weight, memory,
weight, key_padding_mask?, key_lengths?)``: the same with ``location1_keys``'s one-channel
term (ESPnet ``AttLoc`` / ``AttCovLoc``, SpeechBrain ``LocationAwareAttention``): keys
``base + dense_weight . conv(prev, conv_weight)``, prev (B, T), conv_weight (C, K) with K
odd, dense_weight (A, C).

``attnkern::location_keys(base, x, filter, key_padding_mask?, key_lengths?, kernel, pad)
-> keys``: the differentiable location keys of a training step (C++ autograd), ``base (B, T,
A) + windows(x (B, C, T)) @ filter^T``, the term only up to each batch's end of usable keys
(past it the keys are ``base``: rows the attention never reads), so that a padded tail costs
neither the windows nor the forward's and backward's GEMMs.

``attnkern::rows_linear(x, weight) -> y``: ``x @ weight^T`` for an inference step's few
rows, x (M, K), weight (N, K) (an ``nn.Linear``'s), CPU, float32/float64, no backward (under
grad mode an input that requires grad raises). Up to 16 rows go through
``csrc/kernels/rows_linear.cpp`` (one pass over the weight; the BLAS's small-M GEMM ran at
a fifth of that on AMD Zen 4), more through ``at::matmul``. The weight-gradient store's
``wgrad_record_linear`` uses the same kernels for its forward and ``dx``.

Every op with a key_padding_mask stops at each row's last usable key: a padded tail costs
nothing (csrc/ops.cpp ``make_masks``).

Kernels: CPU from the C++ extension (``csrc/ops.cpp``, ``TORCH_LIBRARY_IMPL(attnkern,
CPU)``), CUDA from Triton (registered here; decomposed under ``torch.compile`` like
``triton_op``, so Inductor sees the kernels). Every kernel checks its own inputs: the C++
one in C++, the Triton one and the fake kernels with :func:`attnkern._validation.
check_op_inputs`, in the same words. Autograd: one C++ ``torch::autograd::Function``
registered for ``fwd`` on every device (``csrc/autograd.cpp``, ``TORCH_LIBRARY_IMPL(attnkern,
Autograd)``), so a decoder step runs no Python autograd code.

Without the extension there are no attnkern ops (``HAS_CPP`` is False, ``fwd`` / ``bwd``
raise): the public functional then runs the reference ("auto" warns once; an explicit
"cpp" or "triton" raises).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
from torch import Tensor

from . import _compat, _validation
from ._validation import check_op_inputs, check_op_rows
from .reference import compute_dtype

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # CPU-only installs need no Triton
    HAS_TRITON = False


def _load_extension() -> tuple[bool, str]:
    try:
        importlib.import_module("attnkern._C")  # the schemas, the CPU kernels, autograd
        return True, ""
    except ImportError as e:
        return False, str(e)


HAS_CPP, CPP_IMPORT_ERROR = _load_extension()


# --------------------------------------------------------------------- Triton (CUDA) kernels

def fwd_triton(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    return_weights: bool,
    key_exp: Tensor | None = None,
    *,
    num_splits: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``attnkern::fwd`` on Triton. ``num_splits`` forces the split-K factor (tests:
    :func:`attnkern.testing.force_num_splits`)."""
    check_op_inputs("attnkern::fwd", query, key, value, weight, key_padding_mask, key_lengths,
                    key_exp)
    # The Triton kernels compute exp(2k) in registers: key_exp is not needed there.
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    if query.dim() == 2:  # one decoder step: the launchers take (B, 1, H)
        out, lse, weights = triton_kernels.fwd(
            query.unsqueeze(1), key, value, weight, key_padding_mask, key_lengths, causal,
            return_weights, num_splits=num_splits)
        return out.squeeze(1), lse.squeeze(1), weights.squeeze(1) if return_weights else weights
    return triton_kernels.fwd(query, key, value, weight, key_padding_mask, key_lengths, causal,
                              return_weights, num_splits=num_splits)


def _check_bwd_rows(grad_out: Tensor, grad_weights: Tensor | None, query: Tensor,
                    key: Tensor, value: Tensor, out: Tensor, lse: Tensor,
                    weights: Tensor | None) -> None:
    op, tk, dv = "attnkern::bwd", key.shape[1], value.shape[2]
    check_op_rows(op, "grad_out", grad_out, query, dv)
    if grad_weights is not None:
        check_op_rows(op, "grad_weights", grad_weights, query, tk)
    check_op_rows(op, "out", out, query, dv)
    check_op_rows(op, "lse", lse, query, None)
    if weights is not None:
        check_op_rows(op, "weights", weights, query, tk)
    if grad_weights is not None and weights is None:
        raise ValueError(f"{op}: grad_weights is given, so weights must be given too (delta = "
                         "rowsum(out * grad_out) + rowsum(weights * grad_weights))")


def bwd_triton(
    grad_out: Tensor,
    grad_weights: Tensor | None,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    out: Tensor,
    lse: Tensor,
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    key_exp: Tensor | None = None,
    weights: Tensor | None = None,
    value_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``attnkern::bwd`` on Triton: the delta pre-pass in torch ops, then the two kernels."""
    check_op_inputs("attnkern::bwd", query, key, value, weight, key_padding_mask, key_lengths,
                    key_exp)
    _check_bwd_rows(grad_out, grad_weights, query, key, value, out, lse, weights)
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    acc = lse.dtype
    delta = (out.to(acc) * grad_out.to(acc)).sum(-1)
    if grad_weights is not None:
        assert weights is not None
        delta = delta + (weights.to(acc) * grad_weights.to(acc)).sum(-1)
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


def _decompose_on_cuda(body: Any) -> Any:
    """Under torch.compile, inline the Triton body into the graph (so Inductor sees the
    kernels, as ``torch.library.triton_op`` does) -- but only for CUDA tensors: on CPU the op
    stays opaque and runs the C++ kernel. ``torch.export`` keeps the op whole, as triton_op.
    """

    def rule(mode: Any, op: Any, types: Any, args: Any, kwargs: Any) -> Any:
        tensors = [a for a in args if isinstance(a, Tensor)]
        on_cuda = bool(tensors) and all(t.device.type == "cuda" for t in tensors)
        if (not on_cuda or not HAS_TRITON
                or _compat.custom_triton_ops_decomposition_disabled()):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        with mode:
            return body(*args, **kwargs)

    return rule


def _eager_cuda(body: Any) -> Any:
    def run(*args: Any) -> Any:
        if not HAS_TRITON:
            raise RuntimeError("attnkern on CUDA needs Triton: `pip install triton`")
        # Plain tensors in eager mode: launch directly, no higher-order-op dispatch.
        with _compat.wrap_triton_disabled():
            return body(*args)

    return run


# ------------------------------------------------------------------------- fake kernels

def _fwd_fake(query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights,
              key_exp=None):
    check_op_inputs("attnkern::fwd", query, key, value, weight, key_padding_mask, key_lengths,
                    key_exp)
    rows = query.shape[:-1]  # (B, Tq), or (B,) for a 2-D (one step) query
    out = query.new_empty(*rows, value.shape[2])
    lse = query.new_empty(rows, dtype=compute_dtype(query.dtype))
    weights = query.new_empty(*rows, key.shape[1]) if return_weights else query.new_empty(0)
    return out, lse, weights


def _bwd_fake(grad_out, grad_weights, query, key, value, weight, out, lse, key_padding_mask,
              key_lengths, causal, key_exp=None, weights=None, value_grad=True):
    check_op_inputs("attnkern::bwd", query, key, value, weight, key_padding_mask, key_lengths,
                    key_exp)
    _check_bwd_rows(grad_out, grad_weights, query, key, value, out, lse, weights)
    return (
        query.new_empty(query.shape),
        key.new_empty(key.shape),
        value.new_empty(value.shape) if value_grad else value.new_empty(0),
        weight.new_empty(weight.shape),
    )


def _location_windows_fake(x, kernel, pad, taps):
    return x.new_empty(x.shape[0] * x.shape[2], x.shape[1] * taps)


def _location_windows_backward_fake(grad, x_size, kernel, pad, taps):
    return grad.new_empty(x_size)


def _location1_keys_fake(base, prev, conv_weight, dense_weight):
    return torch.empty_like(base, memory_format=torch.contiguous_format)


def _location1_keys_backward_fake(grad, prev, conv_weight, dense_weight, prev_grad):
    gprev = prev.new_empty(prev.shape if prev_grad else (0,))
    return gprev, conv_weight.new_empty(conv_weight.shape), dense_weight.new_empty(
        dense_weight.shape)


def _location_attention_fake(query, processed_memory, attention_weights_cat, location_filter,
                             memory, weight, key_padding_mask, key_lengths, kernel, pad):
    check_op_inputs("attnkern::location_attention", query, processed_memory, memory, weight,
                    key_padding_mask, key_lengths, None)
    return (query.new_empty(query.shape[0], memory.shape[2]),
            query.new_empty(query.shape[0], processed_memory.shape[1]))


def _location_keys_fake(base, x, filter, key_padding_mask, key_lengths, kernel, pad):
    return torch.empty_like(base, memory_format=torch.contiguous_format)


def _location1_attention_fake(query, base, prev, conv_weight, dense_weight, memory, weight,
                              key_padding_mask, key_lengths):
    check_op_inputs("attnkern::location1_attention", query, base, memory, weight,
                    key_padding_mask, key_lengths, None)
    return (query.new_empty(query.shape[0], memory.shape[2]),
            query.new_empty(query.shape[0], base.shape[1]))


def _rows_linear_fake(x, weight):
    return x.new_empty(x.shape[0], weight.shape[0])


def _no_value(key: Any) -> Any:
    """The (B, Tk, 0) value the scores ops' checks stand in (the checks of fwd, no value)."""
    return key.new_empty(key.shape[0], key.shape[1], 0) if isinstance(
        key, Tensor) and key.dim() == 3 else key


def _scores_fake(query, key, weight, key_padding_mask, key_lengths, causal, key_exp=None):
    check_op_inputs("attnkern::scores", query, key, _no_value(key), weight, key_padding_mask,
                    key_lengths, key_exp)
    return query.new_empty(*query.shape[:-1], key.shape[1])


def _scores_backward_fake(grad, query, key, weight, key_padding_mask, key_lengths, causal,
                          key_exp=None):
    check_op_inputs("attnkern::scores_backward", query, key, _no_value(key), weight,
                    key_padding_mask, key_lengths, key_exp)
    check_op_rows("attnkern::scores_backward", "grad", grad, query, key.shape[1])
    return query.new_empty(query.shape), key.new_empty(key.shape), weight.new_empty(weight.shape)


def scores_triton(query, key, weight, key_padding_mask, key_lengths, causal, key_exp=None):
    """``attnkern::scores`` on Triton (``triton_kernels._scores_fwd_kernel``): one launch,
    a 2-D step query taken as is (output (B, Tk))."""
    check_op_inputs("attnkern::scores", query, key, _no_value(key), weight, key_padding_mask,
                    key_lengths, key_exp)
    # The Triton kernels compute exp(2k) in registers: key_exp is not needed there (it
    # never changes the result).
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    return triton_kernels.scores_fwd(query, key, weight, key_padding_mask, key_lengths, causal)


def scores_backward_triton(grad, query, key, weight, key_padding_mask, key_lengths, causal,
                           key_exp=None):
    """``attnkern::scores_backward`` on Triton: the masked gradient of the energies into a
    (B, Tq, Tk) fp32 buffer, then the attention's ``_bwd_dqdk_kernel`` (tanh recomputed)."""
    op = "attnkern::scores_backward"
    check_op_inputs(op, query, key, _no_value(key), weight, key_padding_mask, key_lengths,
                    key_exp)
    check_op_rows(op, "grad", grad, query, key.shape[1])
    triton_kernels = importlib.import_module("attnkern.triton_kernels")
    return triton_kernels.scores_bwd(grad, query, key, weight, key_padding_mask, key_lengths,
                                     causal)


def _missing_extension(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(
        "attnkern._C (the C++ extension: the attnkern op schemas, CPU kernels and autograd) "
        f"is not built: {CPP_IMPORT_ERROR}. Build it with `pip install --no-build-isolation "
        "-e .`; without it, use backend='reference'"
    )


fwd: Any
bwd: Any
scores: Any
location_windows: Any
location1_keys: Any
location_attention: Any
location1_attention: Any
location_keys: Any
rows_linear: Any
if HAS_CPP:
    fwd = torch.ops.attnkern.fwd.default
    bwd = torch.ops.attnkern.bwd.default
    scores = torch.ops.attnkern.scores.default
    location_windows = torch.ops.attnkern.location_windows.default
    location1_keys = torch.ops.attnkern.location1_keys.default
    location_attention = torch.ops.attnkern.location_attention.default
    location1_attention = torch.ops.attnkern.location1_attention.default
    location_keys = torch.ops.attnkern.location_keys.default
    rows_linear = torch.ops.attnkern.rows_linear.default

    _lib = torch.library.Library("attnkern", "FRAGMENT")  # noqa: TOR901 (module global)
    _lib.impl("fwd", _eager_cuda(fwd_triton), "CUDA")
    _lib.impl("bwd", _eager_cuda(bwd_triton), "CUDA")
    _lib.impl("scores", _eager_cuda(scores_triton), "CUDA")
    _lib.impl("scores_backward", _eager_cuda(scores_backward_triton), "CUDA")
    for _name, _fake in (("fwd", _fwd_fake), ("bwd", _bwd_fake),
                         ("scores", _scores_fake), ("scores_backward", _scores_backward_fake),
                         ("location_windows", _location_windows_fake),
                         ("location_windows_backward", _location_windows_backward_fake),
                         ("location1_keys", _location1_keys_fake),
                         ("location1_keys_backward", _location1_keys_backward_fake),
                         ("location_attention", _location_attention_fake),
                         ("location1_attention", _location1_attention_fake),
                         ("location_keys", _location_keys_fake),
                         ("rows_linear", _rows_linear_fake)):
        torch.library.register_fake("attnkern::" + _name, _fake, lib=_lib)
    if HAS_TRITON:
        _compat.register_functional_rule("attnkern::fwd", _decompose_on_cuda(fwd_triton), _lib)
        _compat.register_functional_rule("attnkern::bwd", _decompose_on_cuda(bwd_triton), _lib)
        _compat.register_functional_rule("attnkern::scores", _decompose_on_cuda(scores_triton),
                                         _lib)
        _compat.register_functional_rule("attnkern::scores_backward",
                                         _decompose_on_cuda(scores_backward_triton), _lib)
        # Only where CUDA exists: CPU-only imports need not load the kernel module.
        if torch.cuda.is_available():
            _kernels = [obj for obj in vars(importlib.import_module("attnkern.triton_kernels"))
                        .values() if isinstance(obj, triton.runtime.jit.JITFunction)]
            _compat.name_triton_kernels(("attnkern::fwd", "attnkern::bwd", "attnkern::scores",
                                        "attnkern::scores_backward"), _kernels)
else:
    fwd = bwd = scores = location_windows = location1_keys = location_attention = \
        location1_attention = location_keys = rows_linear = _missing_extension


def clear_caches() -> None:
    """Drop attnkern's process-wide caches: the Triton launch plans (a bounded cache of
    tiles and grids per shape) and split-K counters, and the checked ranges of CUDA
    ``key_lengths`` tensors. Never needed for correctness; for benchmarks that time a cold
    start, and long-lived processes that want the memory back."""
    _validation.clear_caches()
    triton_kernels = sys.modules.get("attnkern.triton_kernels")  # never imported: no plans
    if triton_kernels is not None:
        triton_kernels.clear_caches()


class AdditiveAttentionFunction(torch.autograd.Function):
    """Low-level differentiable entry point (flash-attention's ``FlashAttnFunc`` pattern).

    ``AdditiveAttentionFunction.apply(query, key, value, weight, key_padding_mask=None,
    key_lengths=None, causal=False, return_weights=False, key_exp=None)`` with already
    validated inputs (query 3-D, ``key_lengths`` int64) returns ``(out, lse, weights)`` as
    ``attnkern::fwd`` does. ``apply`` calls the registered op, whose autograd (the C++
    Function in ``csrc/autograd.cpp``, which calls ``attnkern::bwd``) is the one
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
