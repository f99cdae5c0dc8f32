"""Input checks shared by every backend: run before any kernel, raise ValueError/TypeError.

Each message names the argument and the shapes/dtypes seen, so a user can fix the call
without reading this file.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
from torch import Tensor

BACKENDS = ("auto", "triton", "cpp", "reference")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Checked(NamedTuple):
    """Validated, normalised arguments (query always 3-D, lengths int64, masks bool)."""

    query: Tensor  # (B, Tq, H)
    key: Tensor  # (B, Tk, H)
    value: Tensor  # (B, Tk, Dv)
    weight: Tensor  # (H,)
    key_padding_mask: Tensor | None  # (B, Tk) bool
    key_lengths: Tensor | None  # (B,) int64, contiguous
    step: bool  # the query was 2-D


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))  # "(2, 3)", "(4,)", "()"


def _typename(x: object) -> str:
    # numpy 2 calls its scalar bool "bool": say numpy.bool so the message is not "got bool".
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _require_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        hint = " (convert it with torch.as_tensor)" if x is not None else ""
        raise TypeError(f"{name} must be a torch.Tensor, got {_typename(x)}{hint}")
    if x.layout != torch.strided:
        raise TypeError(
            f"{name} must be a dense (strided) tensor, got layout {x.layout} "
            f"of shape {_shape(x)}"
        )
    return x


def _require_bool(name: str, x: object) -> None:
    # Python bool only: a tensor or numpy scalar here is almost always a mistaken argument.
    if not isinstance(x, bool):
        raise TypeError(f"{name} must be a Python bool, got {_typename(x)} ({x!r:.40})")


def check_backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}, got {_typename(backend)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def check_inputs(
    query: object,
    key: object,
    value: object,
    weight: object,
    key_padding_mask: object = None,
    key_lengths: object = None,
    causal: object = False,
    return_weights: object = False,
) -> Checked:
    """Validate the arguments of ``additive_attention`` and normalise them.

    Under ``torch.autocast`` the float inputs are cast to the autocast dtype (autocast
    produces mixed dtypes, e.g. bfloat16 projections with a float32 score vector); outside
    it, mixed dtypes are an error.
    """
    q = _require_tensor("query", query)
    k = _require_tensor("key", key)
    v = _require_tensor("value", value)
    w = _require_tensor("weight", weight)
    _require_bool("causal", causal)
    _require_bool("return_weights", return_weights)

    if q.dim() not in (2, 3):
        raise ValueError(f"query must be (B, Tq, H) or (B, H), got shape {_shape(q)}")
    if k.dim() != 3:
        raise ValueError(f"key must be (B, Tk, H), got shape {_shape(k)}")
    if v.dim() != 3:
        raise ValueError(f"value must be (B, Tk, Dv), got shape {_shape(v)}")
    if w.dim() != 1:
        raise ValueError(f"weight must be (H,), got shape {_shape(w)}")

    named = (("query", q), ("key", k), ("value", v), ("weight", w))
    for name, t in named:
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
                f"got {t.dtype} of shape {_shape(t)}"
            )
    for name, t in named[1:]:
        if t.device != q.device:
            raise ValueError(
                f"all inputs must be on one device: query is on {q.device}, {name} is on "
                f"{t.device} (shapes: query {_shape(q)}, {name} {_shape(t)})"
            )

    dtypes = {t.dtype for _, t in named}
    if len(dtypes) > 1:
        cast = _autocast_dtype(q.device.type)
        if cast is None:
            seen = ", ".join(f"{n}={t.dtype}" for n, t in named)
            raise TypeError(
                f"query, key, value and weight must share one dtype, got {seen} "
                "(outside torch.autocast; cast them with .to(dtype))"
            )
        q, k, v, w = (t.to(cast) for _, t in named)

    step = q.dim() == 2
    q3 = q.unsqueeze(1) if step else q
    batch, _, hidden = q3.shape
    shapes = f"query {_shape(q)}, key {_shape(k)}, value {_shape(v)}, weight {_shape(w)}"
    if k.shape[0] != batch or v.shape[0] != batch:
        raise ValueError(f"batch sizes differ: {shapes}")
    if v.shape[1] != k.shape[1]:
        raise ValueError(f"key and value must have the same number of keys Tk: {shapes}")
    if k.shape[2] != hidden or w.shape[0] != hidden:
        raise ValueError(f"query, key and weight must share the hidden size H: {shapes}")
    tk = k.shape[1]

    mask = None
    if key_padding_mask is not None:
        mask = _require_tensor("key_padding_mask", key_padding_mask)
        if mask.dtype != torch.bool:
            raise TypeError(
                f"key_padding_mask must be a bool tensor (True = padding), got {mask.dtype} "
                f"of shape {_shape(mask)}"
            )
        if mask.shape != (batch, tk):
            raise ValueError(
                f"key_padding_mask must be (B, Tk) = ({batch}, {tk}), got shape {_shape(mask)} "
                f"({shapes})"
            )
        if mask.device != q.device:
            raise ValueError(
                f"key_padding_mask is on {mask.device}, the inputs are on {q.device} "
                f"(key_padding_mask shape {_shape(mask)})"
            )

    lengths = None
    if key_lengths is not None:
        lengths = _require_tensor("key_lengths", key_lengths)
        if (lengths.dtype.is_floating_point or lengths.dtype.is_complex
                or lengths.dtype == torch.bool):
            raise TypeError(
                f"key_lengths must be an integer tensor, got {lengths.dtype} "
                f"of shape {_shape(lengths)}"
            )
        if lengths.shape != (batch,):
            raise ValueError(
                f"key_lengths must be (B,) = ({batch},), got shape {_shape(lengths)} ({shapes})"
            )
        if lengths.device != q.device:
            raise ValueError(
                f"key_lengths is on {lengths.device}, the inputs are on {q.device} "
                f"(key_lengths shape {_shape(lengths)})"
            )
        if not _values_unavailable(lengths) and lengths.numel():
            lo, hi = _lengths_range(lengths)
            if lo < 0 or hi > tk:
                raise ValueError(
                    f"key_lengths must lie in [0, Tk={tk}] (key shape {_shape(k)}), "
                    f"got values in [{lo}, {hi}]"
                )
        # (B,) is tiny: hand every kernel a dense int64 vector (a strided or expanded one,
        # e.g. torch.tensor(n).expand(B), would otherwise be indexed as if contiguous).
        lengths = lengths.to(torch.int64).contiguous()

    return Checked(q3, k, v, w, mask, lengths, step)


# Range of each CUDA key_lengths tensor seen, keyed by id and checked against a weak
# reference (an id can be reused) and the version counter (bumped by any in-place write):
# reading the range is a device sync on CUDA, and a decoder passes the same lengths at every
# step.
_RANGES: dict[int, tuple[weakref.ref[Tensor], int, int, int]] = {}


def _lengths_range(t: Tensor) -> tuple[int, int]:
    # On CPU there is no sync to save: reading the range is cheaper than caching it.
    return _cached_range(t) if t.is_cuda else _read_range(t)


def _cached_range(t: Tensor) -> tuple[int, int]:
    try:
        version = t._version
    except RuntimeError:  # inference tensors have no version counter: no caching
        return _read_range(t)
    hit = _RANGES.get(id(t))
    if hit is not None and hit[0]() is t and hit[1] == version:
        return hit[2], hit[3]
    lo, hi = _read_range(t)
    if len(_RANGES) >= 256:
        _RANGES.clear()
    _RANGES[id(t)] = (weakref.ref(t), version, lo, hi)
    return lo, hi


def _read_range(t: Tensor) -> tuple[int, int]:
    if t.is_cuda:
        lo, hi = torch.stack(torch.aminmax(t)).tolist()  # one device-to-host copy, not two
        return int(lo), int(hi)
    return int(t.min()), int(t.max())


def _values_unavailable(t: Tensor) -> bool:
    """Value checks read the data (a host sync): skip them where there is no data (meta and
    fake tensors) and where a sync is not allowed (torch.compile, CUDA-graph capture). The
    C++ kernels check the range again (TORCH_CHECK) when they run."""
    if torch.compiler.is_compiling() or t.device.type == "meta":
        return True
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(t, FakeTensor):
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()
