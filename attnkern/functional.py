"""The public functional op: validation, backend selection, then one fused call."""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from . import _onnx, ops, reference
from ._validation import Checked, check_backend, check_inputs

__all__ = ["additive_attention", "resolve_backend"]

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Pick the implementation for ``backend`` on ``device``.

    Returns ``"op"`` (the registered custom ops: C++ on CPU, Triton on CUDA),
    ``"interpret"`` (Triton launchers on CPU tensors under ``TRITON_INTERPRET=1``) or
    ``"reference"``.
    """
    backend = check_backend(backend)
    if backend == "auto":
        env = os.environ.get("ATTNKERN_BACKEND", "").strip()
        if env:
            if env not in ("auto", "triton", "cpp", "reference"):
                raise ValueError(
                    "ATTNKERN_BACKEND must be one of 'auto', 'triton', 'cpp', 'reference', "
                    f"got {env!r}"
                )
            backend = env
    if backend == "reference":
        return "reference"
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' runs on CPU tensors, the inputs are on {device}")
        if not ops.HAS_CPP:
            raise RuntimeError(
                "backend='cpp' needs the C++ extension attnkern._C, which failed to import "
                f"({ops.CPP_IMPORT_ERROR}). Build it with `pip install --no-build-isolation -e .`"
            )
        return "op"
    if backend == "triton":
        if not ops.HAS_TRITON:
            raise RuntimeError("backend='triton' needs Triton: `pip install triton`")
        if dtype == torch.float64:
            raise TypeError("backend='triton' supports float32, float16 and bfloat16, got float64")
        if device.type == "cuda":
            return "op"
        if device.type == "cpu":
            if not ops.triton_interpret_enabled():
                raise ValueError(
                    "backend='triton' on CPU tensors runs the Triton interpreter: set "
                    "TRITON_INTERPRET=1 in the environment before importing attnkern"
                )
            return "interpret"
        raise ValueError(f"backend='triton' needs CUDA (or CPU) tensors, got {device}")
    # auto
    if device.type == "cpu":
        if ops.HAS_CPP:
            return "op"
        _warn_once("cpp", "attnkern._C is not built; using the slow PyTorch reference on CPU. "
                   "Build it with `pip install --no-build-isolation -e .`")
        return "reference"
    if device.type == "cuda" and ops.HAS_TRITON and dtype != torch.float64:
        return "op"
    if device.type == "cuda" and dtype != torch.float64:
        _warn_once("triton", "Triton is not installed; using the PyTorch reference on CUDA")
    return "reference"


def _needs_grad(args: Checked) -> bool:
    return torch.is_grad_enabled() and any(
        t.requires_grad for t in (args.query, args.key, args.value, args.weight))


def additive_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weight: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
    return_weights: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused additive (Bahdanau) attention.

    ``e[b,i,j] = sum_h weight[h] * tanh(query[b,i,h] + key[b,j,h])``, softmax over the usable
    keys, context ``out[b,i] = sum_j alpha[b,i,j] * value[b,j]``. The fused backends never
    allocate the ``(B, Tq, Tk, H)`` tanh tensor.

    Args:
        query: ``(B, Tq, H)``, or ``(B, H)`` for one decoder step (already projected).
        key: ``(B, Tk, H)`` (already projected).
        value: ``(B, Tk, Dv)``.
        weight: ``(H,)``, the score vector ``v``.
        key_padding_mask: ``(B, Tk)`` bool, True marks padding (as nn.MultiheadAttention).
        key_lengths: ``(B,)`` integer tensor; keys ``j >= key_lengths[b]`` are ignored.
        causal: query ``i`` sees keys ``j <= i + (Tk - Tq)``.
        return_weights: also return the attention weights.
        backend: ``"auto"`` (CUDA: triton, CPU: cpp; ``ATTNKERN_BACKEND`` overrides),
            ``"triton"``, ``"cpp"`` or ``"reference"``.

    Returns:
        ``(B, Tq, Dv)`` context (``(B, Dv)`` for a 2-D query) in the input dtype; with
        ``return_weights`` a tuple ``(context, weights)``, weights ``(B, Tq, Tk)`` (or
        ``(B, Tk)``). A row with no usable key gives zero context, zero weights and zero
        gradients.

    Raises:
        TypeError, ValueError: malformed inputs, naming the argument and what was seen.
    """
    args = check_inputs(query, key, value, weight, key_padding_mask, key_lengths,
                        causal, return_weights)
    if _onnx.exporting_to_onnx():
        # torch.onnx.export is tracing: the custom ops have no ONNX form, so every backend
        # exports as standard ops (the reference's math), whether or not it could run here.
        check_backend(backend)
        impl = "onnx"
    else:
        impl = resolve_backend(backend, args.query.device, args.query.dtype)
    if impl == "onnx":
        out, weights = _onnx.attention_standard_ops(
            args.query, args.key, args.value, args.weight, args.key_padding_mask,
            args.key_lengths, causal,
        )
    elif impl == "reference":
        result = reference.additive_attention(
            args.query, args.key, args.value, args.weight,
            key_padding_mask=args.key_padding_mask, key_lengths=args.key_lengths,
            causal=causal, return_weights=True,
        )
        out, weights = result
    elif impl == "op" and not _needs_grad(args):
        # Inference (e.g. a decoder step): the op alone; the autograd Function costs ~40 us
        # a call, comparable to a small decode kernel.
        out, _, weights = torch.ops.attnkern.fwd.default(
            args.query, args.key, args.value, args.weight, args.key_padding_mask,
            args.key_lengths, causal, return_weights,
        )
    else:
        out, _, weights = ops.AdditiveAttentionFunction.apply(
            args.query, args.key, args.value, args.weight, args.key_padding_mask,
            args.key_lengths, causal, return_weights, impl == "interpret",
        )
    if args.step:
        out = out.squeeze(1)
        weights = weights.squeeze(1) if return_weights else weights
    return (out, weights) if return_weights else out
