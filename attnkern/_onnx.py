"""ONNX export: additive attention in standard ONNX operators.

The fused ``attnkern::fwd`` op has no ONNX form, so a model exported to ONNX carries the
reference math instead (the ``(B, Tq, Tk, H)`` tanh tensor included: fine for the
inference-size shapes ONNX deployments run, a decoder step above all). Two routes lead there:

- Exporting a model (``torch.onnx.export(model, args)``, dynamo or TorchScript exporter):
  while the exporter traces the model, :func:`attnkern.additive_attention` computes with
  :func:`attention_standard_ops` instead of the custom op (see :func:`exporting_to_onnx`),
  so the traced graph holds only standard PyTorch ops, which both exporters translate.
- Exporting an ``ExportedProgram`` that already holds ``attnkern::fwd`` (captured earlier
  with ``torch.export.export``): ``torch.onnx.export(ep, custom_translation_table=
  attnkern.onnx_translation_table())`` translates the op with :func:`_fwd_onnx`.

Both follow the reference's semantics: masks combine, a row with no usable key gives zero
context and zero weights (masked scores are filled with the most negative finite value, not
-inf, so an empty row's softmax is finite before the mask zeroes it), NaN in a masked key or
value never reaches the output, and float16/bfloat16 inputs are computed in float32. The
context is one matmul, or with ``causal`` (keys hidden from some queries only) a masked sum
over a ``(B, Tq, Tk, Dv)`` product, so that no hidden value is ever read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .reference import compute_dtype

__all__ = ["attention_standard_ops", "exporting_to_onnx", "onnx_translation_table"]


# Bound once: this check runs on every call of additive_attention (every decoder step).
_is_exporting = torch.compiler.is_exporting  # torch.export, which the dynamo exporter uses
_is_tracing = torch._C._is_tracing  # TorchScript tracing, which the legacy exporter uses


# Dynamo cannot trace _is_tracing; told the result is a constant, it calls this function
# once while tracing (False under torch.compile) instead of tracing into it.
@torch.compiler.assume_constant_result
def exporting_to_onnx() -> bool:
    """True while ``torch.onnx.export`` traces a model (dynamo or TorchScript exporter).

    ``torch.onnx.is_in_onnx_export`` alone costs microseconds (it imports on every call), so
    it is asked only while torch.export or TorchScript traces: about 0.1 us otherwise.
    """
    return (_is_exporting() or _is_tracing()) and torch.onnx.is_in_onnx_export()


def _usable_keys(
    batch_tq_tk: Sequence[Any],
    key_padding_mask: Tensor | None,
    key_lengths: Tensor | None,
    causal: bool,
    device: torch.device,
) -> tuple[Tensor | None, Tensor | None]:
    """``(key_ok, valid)``: key_ok ``(B, Tk)`` bool (padding and lengths) or None;
    valid, broadcastable to ``(B, Tq, Tk)``, True where query i may use key j, or None
    where every key is usable."""
    _, tq, tk = batch_tq_tk
    key_ok = None
    if key_padding_mask is not None:
        key_ok = ~key_padding_mask
    if key_lengths is not None:
        in_length = torch.arange(tk, device=device)[None, :] < key_lengths[:, None]
        key_ok = in_length if key_ok is None else key_ok & in_length
    valid = None if key_ok is None else key_ok[:, None, :]
    if causal:
        i = torch.arange(tq, device=device)[:, None]
        j = torch.arange(tk, device=device)[None, :]
        seen = j <= i + (tk - tq)  # (Tq, Tk)
        valid = seen if valid is None else valid & seen
    return key_ok, valid


def attention_standard_ops(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    key_padding_mask: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """Additive attention written in ops that every ONNX exporter translates.

    Args (validated, as :func:`attnkern.additive_attention` passes them):
        query ``(B, Tq, H)``, key ``(B, Tk, H)``, value ``(B, Tk, Dv)``, weight ``(H,)``,
        key_padding_mask ``(B, Tk)`` bool or None, key_lengths ``(B,)`` int64 or None.

    Returns:
        ``(out, weights)``: ``(B, Tq, Dv)`` and ``(B, Tq, Tk)`` in the input dtype.

    Same values as :func:`attnkern.reference.additive_attention`; it differs in form only:
    a softmax over scores whose masked entries are the dtype's most negative finite value
    (exp of which is exactly 0, and a row of them softmaxes to finite values that the mask
    then zeroes), and the context as one matmul over values whose padded rows are zeroed
    (with ``causal``, a masked sum).
    """
    in_dtype = query.dtype
    acc = compute_dtype(in_dtype)
    q, k, v, w = (t.to(acc) for t in (query, key, value, weight))
    scores = torch.matmul(torch.tanh(q[:, :, None, :] + k[:, None, :, :]), w)  # (B, Tq, Tk)
    key_ok, valid = _usable_keys(scores.shape, key_padding_mask, key_lengths, causal,
                                 q.device)
    if valid is None:
        alpha = torch.softmax(scores, dim=-1)
    else:
        lowest = torch.finfo(acc).min
        alpha = torch.softmax(torch.where(valid, scores, lowest), dim=-1)
        alpha = torch.where(valid, alpha, 0.0)
    if valid is not None and causal:
        # Keys hidden from some queries only: mask per query (as the reference) so that
        # their values are never read, at (B, Tq, Tk, Dv) memory like the tanh tensor's.
        out = torch.where(valid[..., None], alpha[..., None] * v[:, None], 0.0).sum(2)
    else:
        if key_ok is not None:
            v = torch.where(key_ok[:, :, None], v, 0.0)  # padding values are never read
        out = torch.matmul(alpha, v)
    return out.to(in_dtype), alpha.to(in_dtype)


# ------------------------------------------------------------- translation of attnkern::fwd

def _fwd_onnx(
    query: Any,
    key: Any,
    value: Any,
    weight: Any,
    key_padding_mask: Any = None,
    key_lengths: Any = None,
    causal: bool = False,
    return_weights: bool = False,
    key_exp: Any = None,
) -> tuple[Any, Any, Any]:
    """ONNX Script translation of ``attnkern::fwd`` (trace-only: Python runs at export time).

    Returns ``(out, lse, weights)`` as the op does: lse ``(B, Tq)`` in the accumulation
    dtype, ``+inf`` for a row with no usable key; weights ``(B, Tq, Tk)``, or an empty
    ``(0,)`` tensor without ``return_weights``; for a 2-D (one step) query ``(B, H)``,
    computed as ``(B, 1, H)``, the Tq dimension dropped: ``(B, Dv)``, ``(B,)``, ``(B, Tk)``.
    ``key_exp`` (the op's optional cache of ``exp(2 * key)``, where the schema has it)
    changes no value and is ignored.
    """
    import onnx_ir as ir
    import onnxscript

    op: Any = onnxscript.opset18  # untyped here: its type variables reject ir.Value unions

    acc = ir.DataType.DOUBLE if query.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
    lowest = float(torch.finfo(torch.float64 if acc == ir.DataType.DOUBLE
                               else torch.float32).min)

    def const(x: float | int | list[int], dtype: ir.DataType) -> Any:
        return op.Constant(value=ir.tensor(x, dtype=dtype))

    q, k, v, w = (op.Cast(t, to=acc) for t in (query, key, value, weight))
    step = query.shape is not None and len(query.shape) == 2
    if step:
        q = op.Unsqueeze(q, const([1], ir.DataType.INT64))
    hidden = op.Tanh(op.Add(op.Unsqueeze(q, const([2], ir.DataType.INT64)),
                            op.Unsqueeze(k, const([1], ir.DataType.INT64))))
    scores = op.MatMul(hidden, w)  # (B, Tq, Tk)

    zero, one = const(0, ir.DataType.INT64), const(1, ir.DataType.INT64)
    tq = op.Gather(op.Shape(q), one, axis=0)
    tk = op.Gather(op.Shape(k), one, axis=0)
    key_ok = None  # (B, Tk)
    if key_padding_mask is not None:
        key_ok = op.Not(key_padding_mask)
    if key_lengths is not None:
        j = op.Range(zero, tk, one)
        lengths = op.Unsqueeze(op.Cast(key_lengths, to=ir.DataType.INT64),
                               const([1], ir.DataType.INT64))
        in_length = op.Less(op.Unsqueeze(j, const([0], ir.DataType.INT64)), lengths)
        key_ok = in_length if key_ok is None else op.And(key_ok, in_length)
    valid = None if key_ok is None else op.Unsqueeze(key_ok, const([1], ir.DataType.INT64))
    if causal:
        i = op.Unsqueeze(op.Range(zero, tq, one), const([1], ir.DataType.INT64))
        j = op.Unsqueeze(op.Range(zero, tk, one), const([0], ir.DataType.INT64))
        seen = op.LessOrEqual(j, op.Add(i, op.Sub(tk, tq)))  # (Tq, Tk)
        valid = seen if valid is None else op.And(valid, seen)

    masked = scores if valid is None else op.Where(valid, scores, const(lowest, acc))
    alpha = op.Softmax(masked, axis=-1)
    if valid is not None:
        alpha = op.Where(valid, alpha, const(0.0, acc))
    # lse = max + log(sum(exp(s - max))); a row whose max is the fill value has no key.
    axes = const([-1], ir.DataType.INT64)
    row_max = op.ReduceMax(masked, axes, keepdims=1)
    lse = op.Add(op.Squeeze(row_max, axes),
                 op.Log(op.ReduceSum(op.Exp(op.Sub(masked, row_max)), axes, keepdims=0)))
    if valid is not None:
        empty_row = op.Equal(op.Squeeze(row_max, axes), const(lowest, acc))
        lse = op.Where(empty_row, const(float("inf"), acc), lse)

    last = const([-1], ir.DataType.INT64)
    if causal:  # per-query mask, as in attention_standard_ops
        products = op.Mul(op.Unsqueeze(alpha, last),
                          op.Unsqueeze(v, const([1], ir.DataType.INT64)))
        context = op.ReduceSum(op.Where(op.Unsqueeze(valid, last), products, const(0.0, acc)),
                               const([2], ir.DataType.INT64), keepdims=0)
    else:
        if key_ok is not None:
            v = op.Where(op.Unsqueeze(key_ok, last), v, const(0.0, acc))
        context = op.MatMul(alpha, v)
    out = op.CastLike(context, query)
    if return_weights:
        weights = op.CastLike(alpha, query)
    else:
        weights = op.CastLike(op.ConstantOfShape(const([0], ir.DataType.INT64)), query)
    if step:
        tq_axis = const([1], ir.DataType.INT64)
        out, lse = op.Squeeze(out, tq_axis), op.Squeeze(lse, tq_axis)
        if return_weights:
            weights = op.Squeeze(weights, tq_axis)
    return out, lse, weights


def onnx_translation_table() -> dict[Any, Any]:
    """``{torch.ops.attnkern.fwd.default: translation}`` for ``torch.onnx.export``'s
    ``custom_translation_table``: needed only when exporting an ``ExportedProgram`` that
    already holds the op (``torch.onnx.export(model, args)`` of a module needs nothing)."""
    return {torch.ops.attnkern.fwd.default: _fwd_onnx}
