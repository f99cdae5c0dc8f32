"""The baselines, written the way a PyTorch user writes additive attention.

``eager_attention`` is the textbook version (PyTorch seq2seq tutorial, OpenNMT-py, Keras):
broadcast ``q + k`` into a ``(B, Tq, Tk, H)`` tensor, ``tanh``, project with the score vector
``w`` as ``(hidden * w).sum(-1)``, masked softmax, ``bmm`` with the values.
``eager_attention_mm`` is the other common spelling, ``hidden @ w`` with ``w`` viewed
``(H, 1)``. They differ in speed (eager: the matmul is faster; torch.compile: the
``* w).sum`` form fuses into one reduction and never writes the tanh tensor), so the
comparison runner takes the faster of the two as each baseline's figure.
``compiled_attention(variant)`` is ``torch.compile`` of the same function.

All callables here share one signature::

    fn(query, key, value, weight, key_lengths=None) -> context
    query (B, Tq, H) or (B, H) for one decoder step; key (B, Tk, H); value (B, Tk, Dv);
    weight (H,); key_lengths (B,) int64 or None; context (B, Tq, Dv) or (B, Dv).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
from torch import Tensor

import attnkern

AttentionFn = Callable[..., Tensor]


def eager_attention(query: Tensor, key: Tensor, value: Tensor, weight: Tensor,
                    key_lengths: Tensor | None = None) -> Tensor:
    """Textbook eager additive attention (materialises the (B, Tq, Tk, H) tanh tensor)."""
    step = query.dim() == 2
    if step:
        query = query.unsqueeze(1)
    hidden = torch.tanh(query.unsqueeze(2) + key.unsqueeze(1))  # (B, Tq, Tk, H)
    scores = (hidden * weight).sum(-1)  # (B, Tq, Tk)
    return _masked_softmax_bmm(scores, value, key_lengths, step)


def eager_attention_mm(query: Tensor, key: Tensor, value: Tensor, weight: Tensor,
                       key_lengths: Tensor | None = None) -> Tensor:
    """Same as :func:`eager_attention`, scores as a matmul with ``weight`` viewed (H, 1)."""
    step = query.dim() == 2
    if step:
        query = query.unsqueeze(1)
    hidden = torch.tanh(query.unsqueeze(2) + key.unsqueeze(1))  # (B, Tq, Tk, H)
    scores = (hidden @ weight.unsqueeze(-1)).squeeze(-1)  # (B, Tq, Tk)
    return _masked_softmax_bmm(scores, value, key_lengths, step)


def _masked_softmax_bmm(scores: Tensor, value: Tensor, key_lengths: Tensor | None,
                        step: bool) -> Tensor:
    """scores (B, Tq, Tk), value (B, Tk, Dv) -> (B, Tq, Dv), or (B, Dv) when ``step``."""
    if key_lengths is not None:
        pad = torch.arange(value.shape[1], device=value.device) >= key_lengths.unsqueeze(-1)
        scores = scores.masked_fill(pad.unsqueeze(1), float("-inf"))
    alpha = torch.softmax(scores, dim=-1)
    context = torch.bmm(alpha, value)  # (B, Tq, Dv)
    return context.squeeze(1) if step else context


def compile_backend() -> str:
    """Inductor normally; ATTNKERN_BENCH_COMPILE_BACKEND overrides it (the smoke test uses
    "eager" there, as Inductor's C++ codegen takes tens of seconds per graph on 2 cores)."""
    return os.environ.get("ATTNKERN_BENCH_COMPILE_BACKEND", "inductor")


@functools.cache
def compiled_attention(variant: str = "mul") -> AttentionFn:
    """``torch.compile`` of :func:`eager_attention` (``variant="mul"``) or of
    :func:`eager_attention_mm` (``"mm"``), static shapes (one graph per shape, as a training
    loop with fixed shapes gets). Call it once per shape (and grad mode) before timing."""
    # Sweeps visit more shapes than dynamo's default recompile limit (8); past it dynamo
    # would silently fall back to eager and the "compiled" figures would lie.
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, 256)
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = 4096
    fn = eager_attention if variant == "mul" else eager_attention_mm
    return torch.compile(fn, dynamic=False, backend=compile_backend())


def attnkern_attention(backend: str) -> AttentionFn:
    """``attnkern.additive_attention`` with a fixed backend, in the shared signature."""

    def run(query: Tensor, key: Tensor, value: Tensor, weight: Tensor,
            key_lengths: Tensor | None = None) -> Tensor:
        return attnkern.additive_attention(query, key, value, weight, key_lengths=key_lengths,
                                           backend=backend)  # type: ignore[return-value]

    run.__name__ = f"attnkern_{backend}"
    return run


# name -> (factory, device); the factory is called lazily so that nothing compiles or
# imports Triton unless that backend is benchmarked.
BACKENDS: dict[str, tuple[Callable[[], AttentionFn], str]] = {
    "cpp": (lambda: attnkern_attention("cpp"), "cpu"),
    "reference": (lambda: attnkern_attention("reference"), "cpu"),
    "eager": (lambda: eager_attention, "cpu"),
    "eager-mm": (lambda: eager_attention_mm, "cpu"),
    "compile": (lambda: compiled_attention("mul"), "cpu"),
    "compile-mm": (lambda: compiled_attention("mm"), "cpu"),
    "triton": (lambda: attnkern_attention("triton"), "cuda"),
    "eager-cuda": (lambda: eager_attention, "cuda"),
    "compile-cuda": (lambda: compiled_attention("mul"), "cuda"),
}


def backend_available(name: str) -> tuple[bool, str]:
    """(available, reason if not) for a backend of :data:`BACKENDS`."""
    _, device = BACKENDS[name]
    if device == "cuda" and not torch.cuda.is_available():
        return False, "needs CUDA"
    if name == "cpp" and not attnkern.ops.HAS_CPP:
        return False, f"attnkern._C not built ({attnkern.ops.CPP_IMPORT_ERROR})"
    if name == "triton" and not attnkern.ops.HAS_TRITON:
        return False, "Triton not installed"
    return True, ""


def get_backend(name: str) -> AttentionFn:
    return BACKENDS[name][0]()
