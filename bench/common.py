"""Shared by the pytest-benchmark suite, ``bench/run.py`` and ``bench/memory.py``: inputs,
the calls being timed, and peak-memory measurement on CPU. Shapes: ``bench/shapes.py``;
the CPU timer: ``bench/cpu_timing.py``.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.baselines import AttentionFn
from bench.shapes import Shape


@dataclass
class Inputs:
    query: Tensor
    key: Tensor
    value: Tensor
    weight: Tensor
    key_lengths: Tensor | None
    grad_out: Tensor  # d(loss)/d(context), fixed so backward does the same work every call

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.query, self.key, self.value, self.weight


def make_inputs(shape: Shape, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                requires_grad: bool = False, seed: int = 0) -> Inputs:
    """Random float32 inputs for ``shape``; DECODE-style step shapes get key_lengths."""
    g = torch.Generator().manual_seed(seed)
    qshape = (shape.B, shape.H) if shape.step else (shape.B, shape.Tq, shape.H)
    q = torch.randn(qshape, generator=g)
    k = torch.randn(shape.B, shape.Tk, shape.H, generator=g)
    v = torch.randn(shape.B, shape.Tk, shape.Dv, generator=g)
    w = torch.randn(shape.H, generator=g) / shape.H**0.5
    lengths = None
    if shape.step:
        lengths = torch.randint(shape.Tk // 2, shape.Tk + 1, (shape.B,), generator=g).to(device)
    tensors = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad)
               for t in (q, k, v, w)]
    out_shape = (shape.B, shape.Dv) if shape.step else (shape.B, shape.Tq, shape.Dv)
    grad_out = torch.randn(out_shape, generator=g).to(device=device, dtype=dtype)
    return Inputs(tensors[0], tensors[1], tensors[2], tensors[3], lengths, grad_out)


def make_call(fn: AttentionFn, inputs: Inputs, mode: str) -> Callable[[], None]:
    """The unit of work being timed.

    mode "fwd": forward under ``torch.no_grad()`` (inference, decode steps).
    mode "fwdbwd": forward with autograd, then ``backward(grad_out)`` to all four inputs.
    CUDA calls synchronise so wall time covers the kernels.
    """
    args = inputs.tensors()
    lengths = inputs.key_lengths
    sync = torch.cuda.synchronize if inputs.query.is_cuda else (lambda: None)

    if mode == "fwd":
        def fwd() -> None:
            with torch.no_grad():
                fn(*args, key_lengths=lengths)
            sync()
        return fwd
    if mode == "fwdbwd":
        if not all(t.requires_grad for t in args):
            raise ValueError("mode='fwdbwd' needs inputs made with requires_grad=True")

        def fwdbwd() -> None:
            for t in args:
                t.grad = None
            fn(*args, key_lengths=lengths).backward(inputs.grad_out)
            sync()
        return fwdbwd
    raise ValueError(f"mode must be 'fwd' or 'fwdbwd', got {mode!r}")


# ------------------------------------------------------------------------------- memory

MEMORY_METHOD = (
    "Extra peak memory = the peak of memory in use during one call (forward+backward) above "
    "what was in use before it (inputs and grad_out are allocated beforehand, so outputs, "
    "saved tensors, temporaries, kernel scratch and the four gradients count), measured in a "
    "child process (bench/memory.py; attnkern in a fresh one per shape, after a tiny warm-up "
    "call, so scratch its kernels allocate once and keep is counted) by two methods; the "
    "table reports the larger. "
    "(1) torch.profiler(profile_memory=True): PyTorch's CPU allocator reports every "
    "allocation and free (including those inside C++ ops and autograd) as [memory] events "
    "with signed sizes; the running sum in time order is the live bytes, its maximum the "
    "peak (PyTorch has no CPU max_memory_allocated). It does not see memory a kernel takes "
    "from malloc directly (attnkern's C++ scratch: exp(2k), exp(2q) tables). "
    "(2) peak RSS growth: VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS "
    "before the call, with glibc's mmap threshold pinned at 128 KiB (so large blocks are "
    "returned to the OS on free and cannot hide in a warm heap). It sees everything, at page "
    "granularity."
)


def peak_extra_bytes_profiler(call: Callable[[], None]) -> int:
    """Peak live bytes allocated through PyTorch's CPU allocator during ``call()``, above
    those live before it, from torch.profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic growth
        except OSError:
            return None
    return _libc


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_available() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _glibc() is not None
    except OSError:
        return False


def peak_extra_bytes_rss(call: Callable[[], None]) -> int | None:
    """Peak resident set growth during ``call()`` (Linux only; None elsewhere)."""
    if not rss_available():
        return None
    libc = _glibc()
    gc.collect()
    assert libc is not None
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = _status_kib("VmRSS")
    call()
    return max(0, _status_kib("VmHWM") - base) * 1024
