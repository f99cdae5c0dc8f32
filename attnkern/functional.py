"""The public functional op: validation, backend selection, then one fused call."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _compat, ops, reference
from ._validation import BACKENDS, check_backend, check_inputs

__all__ = ["PreparedKeys", "additive_attention", "additive_scores", "get_backend", "prepare_keys",
           "resolve_backend", "set_backend", "using_backend"]

_warned: set[str] = set()


class PreparedKeys(NamedTuple):
    """Keys prepared once per sequence, accepted by :func:`additive_attention` as ``key``.

    ``key`` is the (projected) key tensor ``(B, Tk, H)`` itself: gradients flow to it (and
    through it to whatever produced it, e.g. the key projection's weight). ``key_exp`` is
    ``exp(2 * key)`` ``(B, Tk, H)``, contiguous, in the accumulation dtype (float32; float64
    for float64 keys), computed without grad, so that each decoder step skips the key-side
    exp work; None where the backend does not use it (CUDA: the Triton kernels compute it in
    registers). Nothing is cached behind the user's back: a new sequence, a new object.
    """

    key: Tensor
    key_exp: Tensor | None

    @property
    def shape(self) -> torch.Size:
        return self.key.shape

    # A location-aware decoder adds a per-step term to its keys: say how (a NamedTuple
    # would otherwise concatenate, or fail with "can only concatenate tuple").
    def __add__(self, other: object) -> PreparedKeys:  # type: ignore[override]
        raise _arithmetic_error()

    def __radd__(self, other: object) -> PreparedKeys:
        raise _arithmetic_error()

    def __sub__(self, other: object) -> PreparedKeys:
        raise _arithmetic_error()

    def __rsub__(self, other: object) -> PreparedKeys:
        raise _arithmetic_error()

    def __mul__(self, other: object) -> PreparedKeys:  # type: ignore[override]
        raise _arithmetic_error()

    def __rmul__(self, other: object) -> PreparedKeys:  # type: ignore[override]
        raise _arithmetic_error()


def _arithmetic_error() -> TypeError:
    return TypeError(
        "PreparedKeys is not a tensor: to add a term to the keys, add it to .key "
        "(`prepared.key + term`, the (B, Tk, H) key tensor) and pass that sum as the keys; "
        "its prepared exp does not apply to the sum")


# A named pytree node, so torch.export.save / AOTInductor packages can serialise programs
# whose inputs hold PreparedKeys (what AdditiveAttention.project_keys returns).
_compat.register_pytree_namedtuple(PreparedKeys, "attnkern.PreparedKeys")


def prepare_keys(key: Tensor) -> PreparedKeys:
    """Do the per-sequence key-side work once: ``(B, Tk, H)`` key -> :class:`PreparedKeys`.

    Pass the result as ``key`` to every step's :func:`additive_attention` (or as
    ``projected_keys`` to :class:`attnkern.AdditiveAttention`). Results are identical to
    passing ``key`` itself; gradients still flow to ``key``.
    """
    if not isinstance(key, Tensor) or key.dim() != 3 or not key.is_floating_point():
        shape = tuple(key.shape) if isinstance(key, Tensor) else type(key).__name__
        raise ValueError(f"prepare_keys: key must be a floating (B, Tk, H) tensor, got {shape}")
    key_exp = None
    if key.device.type == "cpu":
        with torch.no_grad():
            acc = reference.compute_dtype(key.dtype)
            key_exp = torch.exp(key.detach().to(acc) * 2).contiguous()
    return PreparedKeys(key, key_exp)


# ------------------------------------------------------------------ the default backend

_ENV = "ATTNKERN_BACKEND"


def _env_backend() -> str:
    raw = os.environ.get(_ENV, "")
    name = raw.strip()
    if name and name not in BACKENDS:
        raise ValueError(f"{_ENV} must be one of {', '.join(repr(b) for b in BACKENDS)}, "
                         f"got {name!r}")
    return name or "auto"


# What backend="auto" means: "auto" (CUDA -> triton, CPU -> cpp), or the backend set by
# ATTNKERN_BACKEND (read once, here, at import) or by set_backend(). Process-wide.
_default = _env_backend()


def set_backend(backend: str) -> str:
    """Set what ``backend="auto"`` resolves to, process-wide: ``"auto"`` (the device rule:
    CUDA -> triton, CPU -> cpp), ``"triton"``, ``"cpp"`` or ``"reference"``. Calls naming a
    backend explicitly are not affected. Returns the previous setting.

    The environment variable ``ATTNKERN_BACKEND`` gives the initial setting; it is read once,
    when attnkern is imported (changing it later has no effect: call this instead).
    """
    global _default
    previous, _default = _default, check_backend(backend)
    return previous


def get_backend() -> str:
    """What ``backend="auto"`` resolves to now (see :func:`set_backend`)."""
    return _default


@contextlib.contextmanager
def using_backend(backend: str) -> Iterator[None]:
    """``with attnkern.using_backend("reference"): ...``: :func:`set_backend` for a block,
    the previous setting restored on exit (process-wide, not per thread)."""
    previous = set_backend(backend)
    try:
        yield
    finally:
        set_backend(previous)


_CPU = torch.device("cpu")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype,
                    needs_grad: bool = False) -> str:
    """Pick the implementation for ``backend`` on ``device``.

    Returns ``"op"`` (the registered custom ops: C++ on CPU, Triton on CUDA, differentiable
    through the C++ autograd of ``csrc/autograd.cpp``) or ``"reference"``. ``"auto"`` is
    first replaced by :func:`set_backend`'s setting (``ATTNKERN_BACKEND``). Without the C++
    extension there are no ops: "auto" takes the reference (with a warning), an explicit
    "cpp" or "triton" raises. ``needs_grad`` changes nothing (every op has autograd); it is
    kept for callers.
    """
    backend = _default if backend == "auto" else check_backend(backend)
    if backend == "reference":
        return "reference"
    on_cpu = device == _CPU  # cheaper than device.type
    if backend == "cpp":
        if not on_cpu:
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
        if on_cpu:
            # The Triton interpreter on CPU tensors, once attnkern.testing.use_triton_on_cpu()
            # has made the launchers the CPU kernels of the ops (the Triton tests do).
            testing = sys.modules.get("attnkern.testing")  # never imported: not in use
            if testing is None or not testing.triton_on_cpu():
                raise ValueError(
                    "backend='triton' on CPU tensors runs the Triton kernels in the Triton "
                    "interpreter: set TRITON_INTERPRET=1 before importing attnkern and call "
                    "attnkern.testing.use_triton_on_cpu() (for testing; it replaces the C++ "
                    "CPU kernels in this process)"
                )
        elif device.type != "cuda":
            raise ValueError(f"backend='triton' needs CUDA (or CPU) tensors, got {device}")
        if not ops.HAS_CPP:
            raise RuntimeError(
                "backend='triton' needs the C++ extension attnkern._C (the op schemas and "
                f"autograd), which failed to import ({ops.CPP_IMPORT_ERROR})"
            )
        return "op"
    # auto
    if on_cpu:
        if ops.HAS_CPP:
            return "op"
        _warn_once("cpp", "attnkern._C is not built; using the slow PyTorch reference on CPU. "
                   "Build it with `pip install --no-build-isolation -e .`")
        return "reference"
    if device.type == "cuda" and ops.HAS_TRITON and dtype != torch.float64:
        if ops.HAS_CPP:
            return "op"
        _warn_once("cuda", "attnkern._C (the op schemas and autograd) is not built; using the "
                   "slow PyTorch reference on CUDA. Build it with "
                   "`pip install --no-build-isolation -e .`")
        return "reference"
    if device.type == "cuda" and dtype != torch.float64:
        _warn_once("triton", "Triton is not installed; using the PyTorch reference on CUDA")
    return "reference"


def additive_attention(
    query: Tensor,
    key: Tensor | PreparedKeys,
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
        key: ``(B, Tk, H)`` (already projected), or the :class:`PreparedKeys` of
            :func:`prepare_keys` (per-sequence work done once, for step-wise decoding).
        value: ``(B, Tk, Dv)``.
        weight: ``(H,)``, the score vector ``v``; ``(1, H)`` (an ``nn.Linear(H, 1).weight``)
            too.
        key_padding_mask: ``(B, Tk)`` bool, True marks padding (as nn.MultiheadAttention).
        key_lengths: ``(B,)`` integer tensor; keys ``j >= key_lengths[b]`` are ignored.
        causal: query ``i`` sees keys ``j <= i + (Tk - Tq)``.
        return_weights: also return the attention weights.
        backend: ``"auto"`` (CUDA: triton, CPU: cpp; :func:`set_backend` /
            ``ATTNKERN_BACKEND`` override), ``"triton"``, ``"cpp"`` or ``"reference"``.

    Returns:
        ``(B, Tq, Dv)`` context (``(B, Dv)`` for a 2-D query) in the input dtype; with
        ``return_weights`` a tuple ``(context, weights)``, weights ``(B, Tq, Tk)`` (or
        ``(B, Tk)``). A row with no usable key gives zero context, zero weights and zero
        gradients.

    Raises:
        TypeError, ValueError: malformed inputs, naming the argument and what was seen.
    """
    q, k, v, w, mask, lengths, step, key_exp, impl = _checked_call(
        query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights,
        backend)
    if impl == "op":
        # The op is differentiable (C++ autograd); under no_grad it goes straight to the
        # kernel. It takes a 2-D step query as is: outputs (B, Dv), (B, Tk), no squeeze.
        out, _, weights = ops.fwd(q, k, v, w, mask, lengths, causal, return_weights, key_exp)
    else:  # the reference takes a 2-D query itself
        out, weights = reference.additive_attention(
            q, k, v, w, key_padding_mask=mask, key_lengths=lengths, causal=causal,
            return_weights=True,
        )
    return (out, weights) if return_weights else out


def additive_scores(
    query: Tensor,
    key: Tensor | PreparedKeys,
    weight: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Fused additive energies, without the softmax:
    ``e[b,i,j] = sum_h weight[h] * tanh(query[b,i,h] + key[b,j,h])``.

    What sigmoid normalisation, forward and monotonic attention build on. One fused op
    forward and backward (``attnkern::scores``: C++ on CPU, every ISA path; Triton on
    CUDA), never allocating the ``(B, Tq, Tk, H)`` tanh tensor; ``backend="reference"``
    runs the reference (standard ops, which build it).

    Args:
        query: ``(B, Tq, H)``, or ``(B, H)`` for one decoder step.
        key: ``(B, Tk, H)`` or :class:`PreparedKeys`.
        weight: ``(H,)`` or ``(1, H)``.
        key_padding_mask, key_lengths, causal: which keys each row may use, as in
            :func:`additive_attention`.
        backend: as in :func:`additive_attention` (``"triton"`` on CPU tensors: the
            Triton kernels in the interpreter, after
            :func:`attnkern.testing.use_triton_on_cpu`).

    Returns:
        ``(B, Tq, Tk)`` (``(B, Tk)`` for a 2-D query) in the input dtype; ``-inf`` where a
        key is masked (a constant: no gradient flows there; a softmax over a row of only
        masked keys is NaN, as in PyTorch).
    """
    raw = key.key if type(key) is PreparedKeys else key
    q, k, v, w, mask, lengths, step, key_exp, impl = _checked_call(  # the attention's, no value
        query, key, ops._no_value(raw), weight, key_padding_mask, key_lengths, causal, False,
        backend)
    if impl == "op":
        out: Tensor = ops.scores(q, k, w, mask, lengths, causal, key_exp)
        return out
    return reference.additive_scores(q, k, w, key_padding_mask=mask, key_lengths=lengths,
                                     causal=causal)


_exporting_to_onnx = _compat.exporting_to_onnx


def _checked_call(query: Any, key: Any, value: Any, weight: Any, key_padding_mask: Any,
                  key_lengths: Any, causal: bool, return_weights: bool,
                  backend: str) -> tuple[Any, ...]:
    """What additive_attention and additive_scores do before their kernels: unpack
    :class:`PreparedKeys`, check the inputs (check_inputs), pick the implementation. Returns
    check_inputs' ``(q, k, v, w, mask, lengths, step, key_exp)`` and ``"op"`` or
    ``"reference"``."""
    key_exp = None
    if type(key) is PreparedKeys:
        key, key_exp = key
    checked = check_inputs(query, key, value, weight, key_padding_mask, key_lengths, causal,
                           return_weights, key_exp)
    if _exporting_to_onnx():
        # torch.onnx.export is tracing: the custom ops have no ONNX form, so every backend
        # exports as the reference (standard ops), whether or not it could run here.
        check_backend(backend)
        return (*checked, "reference")
    q, k, v, w = checked[:4]
    return (*checked, _resolve(backend, q, k, v, w))


def _resolve(backend: str, q: Tensor, k: Tensor, v: Tensor, w: Tensor) -> str:
    """resolve_backend for validated inputs, the common case (C++ op on CPU) first: a
    decoder step pays for no device object there."""
    if backend == "auto":
        backend = _default
    if (backend == "auto" or backend == "cpp") and q.is_cpu and ops.HAS_CPP:
        return "op"
    return resolve_backend(backend, q.device, q.dtype)
