"""Input checks shared by every backend: run before any kernel, raise ValueError/TypeError.

Each message names the argument and the shapes/dtypes seen, so a user can fix the call
without reading this file.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from ._compat import values_unavailable
from .reference import compute_dtype

BACKENDS = ("auto", "triton", "cpp", "reference")
_STRIDED = torch.strided
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# What check_inputs returns: validated, normalised arguments, in this order. A plain tuple:
# it is built at every decoder step, and a NamedTuple costs several times more to build and
# to read (unpack it instead).
Checked = tuple[
    Tensor,  # query (B, Tq, H), or (B, H) for one step (the ops take both)
    Tensor,  # key (B, Tk, H)
    Tensor,  # value (B, Tk, Dv)
    Tensor,  # weight (H,)
    Tensor | None,  # key_padding_mask (B, Tk) bool
    Tensor | None,  # key_lengths (B,) int64, contiguous
    bool,  # step: the query is 2-D
    Tensor | None,  # key_exp: exp(2 key) prepared once per sequence, or None
]
_CPU = torch.device("cpu")


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
    key_exp: Tensor | None = None,
) -> Checked:
    """Validate the arguments of ``additive_attention`` and normalise them: returns
    ``(query, key, value, weight, key_padding_mask, key_lengths, step, key_exp)`` (see
    :data:`Checked`).

    Every check of the public path is here, once. The query is passed on as it came,
    ``(B, Tq, H)`` or ``(B, H)`` (one step: the ops take it as is, outputs without Tq).
    ``weight`` may be ``(H,)`` or ``(1, H)``
    (an ``nn.Linear(H, 1).weight``; used as a view, so gradients reach it). ``key_exp``
    comes from :func:`attnkern.prepare_keys`; it is dropped (the kernel then computes it)
    whenever it does not describe the key actually used, e.g. after an autocast cast.

    Under ``torch.autocast`` the float inputs are cast to the autocast dtype (autocast
    produces mixed dtypes, e.g. bfloat16 projections with a float32 score vector); outside
    it, mixed dtypes are an error.
    """
    q, k, v, w = query, key, value, weight
    # Common case first, cheaply (a decoder calls this every step): four dense tensors.
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
            and isinstance(w, Tensor) and q.layout is _STRIDED and k.layout is _STRIDED
            and v.layout is _STRIDED and w.layout is _STRIDED):
        q = _require_tensor("query", query)
        k = _require_tensor("key", key)
        v = _require_tensor("value", value)
        w = _require_tensor("weight", weight)
    if causal is not True and causal is not False:
        _require_bool("causal", causal)
    if return_weights is not True and return_weights is not False:
        _require_bool("return_weights", return_weights)

    qshape, kshape, vshape, wshape = q.shape, k.shape, v.shape, w.shape
    qdim = len(qshape)
    if qdim != 2 and qdim != 3:
        raise ValueError(f"query must be (B, Tq, H) or (B, H), got shape {_shape(q)}")
    if len(kshape) != 3:
        raise ValueError(f"key must be (B, Tk, H), got shape {_shape(k)}")
    if len(vshape) != 3:
        raise ValueError(f"value must be (B, Tk, Dv), got shape {_shape(v)}")
    if len(wshape) != 1:
        if len(wshape) == 2 and wshape[0] == 1:
            w = w[0]  # nn.Linear(H, 1).weight, as the clients store v
            wshape = w.shape
        else:
            raise ValueError(f"weight must be (H,) or (1, H), got shape {_shape(w)}")

    dtype = q.dtype
    if not (k.dtype is dtype and v.dtype is dtype and w.dtype is dtype
            and dtype in FLOAT_DTYPES):
        q, k, v, w = _check_dtypes(q, k, v, w)
        if k is not key:
            key_exp = None  # autocast cast the key: exp(2 key) no longer matches it
        dtype = q.dtype
    # is_cpu first: reading and comparing four devices costs more than the rest here.
    if q.is_cpu and k.is_cpu and v.is_cpu and w.is_cpu:
        device = _CPU
    else:
        device = q.device
        if not (k.device == device and v.device == device and w.device == device):
            for name, t in (("key", k), ("value", v), ("weight", w)):
                if t.device != device:
                    raise ValueError(
                        f"all inputs must be on one device: query is on {device}, {name} is "
                        f"on {t.device} (shapes: query {_shape(q)}, {name} {_shape(t)})"
                    )

    step = qdim == 2
    batch, hidden = qshape[0], qshape[-1]
    kb, tk, kh = kshape
    vb, vt, _ = vshape
    if kb != batch or vb != batch:
        raise ValueError(f"batch sizes differ: {_shapes(q, k, v, w)}")
    if vt != tk:
        raise ValueError(
            f"key and value must have the same number of keys Tk: {_shapes(q, k, v, w)}")
    if kh != hidden or wshape[0] != hidden:
        raise ValueError(
            f"query, key and weight must share the hidden size H: {_shapes(q, k, v, w)}")
    if key_exp is not None and not (
            key_exp.shape == kshape and key_exp.dtype is compute_dtype(dtype)
            and (key_exp.is_cpu if device is _CPU else key_exp.device == device)):
        key_exp = None  # not this key's exp(2 key): let the kernel compute it

    mask = None
    if key_padding_mask is not None:
        mask = _check_mask(key_padding_mask, batch, tk, device, q, k, v, w)

    lengths = None
    if key_lengths is not None:
        lengths = _check_lengths(key_lengths, batch, tk, device, q, k, v, w)

    return q, k, v, w, mask, lengths, step, key_exp


def _shapes(q: Tensor, k: Tensor, v: Tensor, w: Tensor) -> str:
    return f"query {_shape(q)}, key {_shape(k)}, value {_shape(v)}, weight {_shape(w)}"


def _check_dtypes(q: Tensor, k: Tensor, v: Tensor,
                  w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The uncommon case: not one float dtype. Autocast casts; anything else is an error."""
    named = (("query", q), ("key", k), ("value", v), ("weight", w))
    for name, t in named:
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
                f"got {t.dtype} of shape {_shape(t)}"
            )
    cast = _autocast_dtype(q.device.type)
    if cast is None:
        seen = ", ".join(f"{n}={t.dtype}" for n, t in named)
        raise TypeError(
            f"query, key, value and weight must share one dtype, got {seen} "
            "(outside torch.autocast; cast them with .to(dtype))"
        )
    q, k, v, w = (t.to(cast) for _, t in named)
    return q, k, v, w


def _check_mask(key_padding_mask: object, batch: int, tk: int, device: torch.device,
                *qkvw: Tensor) -> Tensor:
    mask = _require_tensor("key_padding_mask", key_padding_mask)
    if mask.dtype != torch.bool:
        raise TypeError(
            f"key_padding_mask must be a bool tensor (True = padding), got {mask.dtype} "
            f"of shape {_shape(mask)}"
        )
    if mask.shape != (batch, tk):
        raise ValueError(
            f"key_padding_mask must be (B, Tk) = ({batch}, {tk}), got shape {_shape(mask)} "
            f"({_shapes(*qkvw)})"
        )
    if mask.device != device:
        raise ValueError(
            f"key_padding_mask is on {mask.device}, the inputs are on {device} "
            f"(key_padding_mask shape {_shape(mask)})"
        )
    return mask


def _check_lengths(key_lengths: object, batch: int, tk: int, device: torch.device,
                   *qkvw: Tensor) -> Tensor:
    lengths = _require_tensor("key_lengths", key_lengths)
    if (lengths.dtype.is_floating_point or lengths.dtype.is_complex
            or lengths.dtype == torch.bool):
        raise TypeError(
            f"key_lengths must be an integer tensor, got {lengths.dtype} "
            f"of shape {_shape(lengths)}"
        )
    if lengths.shape != (batch,):
        raise ValueError(
            f"key_lengths must be (B,) = ({batch},), got shape {_shape(lengths)} "
            f"({_shapes(*qkvw)})"
        )
    if lengths.device != device:
        raise ValueError(
            f"key_lengths is on {lengths.device}, the inputs are on {device} "
            f"(key_lengths shape {_shape(lengths)})"
        )
    if lengths.numel() and not values_unavailable(lengths):
        lo, hi = _lengths_range(lengths)
        if lo < 0 or hi > tk:
            raise ValueError(
                f"key_lengths must lie in [0, Tk={tk}] (key shape {_shape(qkvw[1])}), "
                f"got values in [{lo}, {hi}]"
            )
    # (B,) is tiny: hand every kernel a dense int64 vector (a strided or expanded one,
    # e.g. torch.tensor(n).expand(B), would otherwise be indexed as if contiguous).
    return lengths.to(torch.int64).contiguous()


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


def clear_caches() -> None:
    """Forget the cached ranges of CUDA key_lengths tensors."""
    _RANGES.clear()


# ------------------------------------------------------------- the ops' own input checks

def check_op_inputs(op: str, query: Tensor, key: Tensor, value: Tensor, weight: Tensor,
                    key_padding_mask: Tensor | None, key_lengths: Tensor | None,
                    key_exp: Tensor | None = None) -> None:
    """The checks of ``attnkern::fwd`` / ``bwd`` themselves, for the kernels written in
    Python (Triton) and the fake kernels: word for word the C++ kernel's (``check_inputs``
    in csrc/ops.cpp), which are the functional API's words with the op's stricter contract
    (weight ``(H,)``, key_lengths int64, one dtype). ``op`` prefixes each message.

    Raises ValueError (shapes, devices, length values) or TypeError (dtypes)."""
    q, k, v, w = query, key, value, weight
    # One test of everything first (a decoder step on CUDA pays for this at every step);
    # the ordered checks below only run to name what is wrong.
    if (q is None or k is None or v is None or w is None
            or not _op_inputs_ok(q.shape, k.shape, v.shape, w.shape, q.dtype, k.dtype,
                                 v.dtype, w.dtype, q.device, k.device, v.device, w.device)):
        _raise_op_input_error(op, q, k, v, w)
    device = q.device
    batch, tk, hidden = q.shape[0], k.shape[1], q.shape[-1]
    if key_padding_mask is not None:
        m = key_padding_mask
        if m.dtype != torch.bool:
            raise TypeError(f"{op}: key_padding_mask must be a bool tensor (True = padding), "
                            f"got {m.dtype} of shape {_shape(m)}")
        if m.shape != (batch, tk):
            raise ValueError(f"{op}: key_padding_mask must be (B, Tk) = ({batch}, {tk}), got "
                             f"shape {_shape(m)}")
        if m.device != device:
            raise ValueError(f"{op}: key_padding_mask is on {m.device}, the inputs are on "
                             f"{device} (key_padding_mask shape {_shape(m)})")
    if key_lengths is not None:
        n = key_lengths
        if n.dtype != torch.int64:
            raise TypeError(f"{op}: key_lengths must be an int64 tensor, got {n.dtype} of "
                            f"shape {_shape(n)}")
        if n.shape != (batch,):
            raise ValueError(f"{op}: key_lengths must be (B,) = ({batch},), got shape "
                             f"{_shape(n)}")
        if n.device != device:
            raise ValueError(f"{op}: key_lengths is on {n.device}, the inputs are on {device} "
                             f"(key_lengths shape {_shape(n)})")
        if batch and not values_unavailable(n):
            lo, hi = _lengths_range(n)
            if lo < 0 or hi > tk:
                raise ValueError(f"{op}: key_lengths must lie in [0, Tk={tk}] (key shape "
                                 f"{_shape(k)}), got values in [{lo}, {hi}]")
    if key_exp is not None:
        e, acc = key_exp, compute_dtype(q.dtype)
        if e.device != device:
            raise ValueError(f"{op}: key_exp is on {e.device}, the inputs are on {device} "
                             f"(key_exp shape {_shape(e)})")
        if e.dtype != acc:
            raise TypeError(f"{op}: key_exp must be {acc} (the accumulation dtype), got "
                            f"{e.dtype} of shape {_shape(e)}")
        if e.shape != k.shape:
            raise ValueError(f"{op}: key_exp must be (B, Tk, H) = ({batch}, {tk}, {hidden}), "
                             f"got shape {_shape(e)}")


def _op_inputs_ok(qs: torch.Size, ks: torch.Size, vs: torch.Size, ws: torch.Size,
                  qt: torch.dtype, kt: torch.dtype, vt: torch.dtype, wt: torch.dtype,
                  qd: torch.device, kd: torch.device, vd: torch.device,
                  wd: torch.device) -> bool:
    return (len(ks) == 3 and len(vs) == 3 and len(ws) == 1 and 2 <= len(qs) <= 3
            and qt in FLOAT_DTYPES and kt == qt and vt == qt and wt == qt
            and kd == qd and vd == qd and wd == qd
            and ks[0] == qs[0] and vs[0] == qs[0] and vs[1] == ks[1] and ks[2] == qs[-1]
            and ws[0] == qs[-1])


def _raise_op_input_error(op: str, q: Tensor | None, k: Tensor | None, v: Tensor | None,
                          w: Tensor | None) -> None:
    """The first failing check of query/key/value/weight, in the C++ kernel's order."""
    for name, x in (("query", q), ("key", k), ("value", v), ("weight", w)):
        if x is None:
            raise ValueError(f"{op}: {name} must be a tensor, got None")
    assert q is not None and k is not None and v is not None and w is not None
    if q.dim() not in (2, 3):
        raise ValueError(f"{op}: query must be (B, Tq, H) or (B, H), got shape {_shape(q)}")
    if k.dim() != 3:
        raise ValueError(f"{op}: key must be (B, Tk, H), got shape {_shape(k)}")
    if v.dim() != 3:
        raise ValueError(f"{op}: value must be (B, Tk, Dv), got shape {_shape(v)}")
    if w.dim() != 1:
        raise ValueError(f"{op}: weight must be (H,), got shape {_shape(w)}")
    named = (("query", q), ("key", k), ("value", v), ("weight", w))
    for name, t in named:
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{op}: {name} must be a floating tensor (float16, bfloat16, float32 or "
                f"float64), got {t.dtype} of shape {_shape(t)}")
    if not (k.dtype == q.dtype and v.dtype == q.dtype and w.dtype == q.dtype):
        raise TypeError(f"{op}: query, key, value and weight must share one dtype, got "
                        + ", ".join(f"{n}={t.dtype}" for n, t in named))
    device = q.device
    for name, t in named:
        if t.device != device:
            raise ValueError(
                f"{op}: all inputs must be on one device: query is on {device}, {name} is on "
                f"{t.device} (shapes: query {_shape(q)}, {name} {_shape(t)})")
    if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
        raise ValueError(f"{op}: batch sizes differ: {_shapes(q, k, v, w)}")
    if v.shape[1] != k.shape[1]:
        raise ValueError(
            f"{op}: key and value must have the same number of keys Tk: {_shapes(q, k, v, w)}")
    raise ValueError(
        f"{op}: query, key and weight must share the hidden size H: {_shapes(q, k, v, w)}")


def check_op_rows(op: str, name: str, t: Tensor | None, query: Tensor,
                  last: int | None) -> None:
    """A per-row tensor of ``attnkern::bwd`` (grad_out, grad_weights, out, lse, weights):
    ``(B, Tq, last)`` (``(B, last)`` for a 2-D query), or without ``last`` ``(B, Tq)`` /
    ``(B,)``; floating, on the query's device. The C++ kernel's ``check_rows`` words."""
    if t is None:
        raise ValueError(f"{op}: {name} must be a tensor, got None")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be a floating tensor (float16, bfloat16, float32 "
                        f"or float64), got {t.dtype} of shape {_shape(t)}")
    if t.device != query.device:
        raise ValueError(f"{op}: {name} is on {t.device}, the inputs are on {query.device} "
                         f"({name} shape {_shape(t)})")
    want = tuple(query.shape[:-1]) + (() if last is None else (last,))
    if tuple(t.shape) != want:
        raise ValueError(f"{op}: {name} must be {want}, got shape {_shape(t)}")
