"""ONNX export: additive attention in standard ONNX operators.

The fused ``attnkern::fwd`` op has no ONNX form, so a model exported to ONNX carries the
reference math instead (the ``(B, Tq, Tk, H)`` tanh tensor included: fine for the
inference-size shapes ONNX deployments run, a decoder step above all). Two routes lead there:

- Exporting a model (``torch.onnx.export(model, args)``, dynamo or TorchScript exporter):
  while the exporter traces the model, :func:`attnkern.additive_attention` computes with
  :func:`attnkern.reference.additive_attention` (written in standard ops, export-friendly)
  instead of the custom op (see :func:`attnkern._compat.exporting_to_onnx`), so the traced
  graph holds only standard PyTorch ops, which both exporters translate.
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

from typing import Any

import torch

from ._compat import exporting_to_onnx

__all__ = ["exporting_to_onnx", "onnx_translation_table"]


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
    if causal:  # per-query mask, as in the reference
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
