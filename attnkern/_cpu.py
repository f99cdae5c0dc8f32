"""Which ISA path the C++ CPU kernels use.

One build of ``attnkern._C`` holds the kernels compiled once per ISA (``scalar``, ``avx2``
= AVX2 + FMA, ``avx512`` = AVX-512 F/DQ/BW/VL on x86-64; ``neon`` and ``scalar`` on
aarch64). At import the best path this CPU (and OS) can run is chosen, unless the
environment variable ``ATTNKERN_CPU_ISA`` forces one:

    ATTNKERN_CPU_ISA = auto (also unset or empty) | avx512 | avx2 | neon | scalar

Forcing a path makes results bitwise reproducible across machines that can run it (tests,
benchmarks). An unknown value raises ``ValueError`` naming the allowed ones; forcing a path
this CPU cannot run (or this build lacks) raises ``RuntimeError`` naming what the CPU has.
Both are raised by ``import attnkern``, before any kernel runs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

ISAS = ("avx512", "avx2", "neon", "scalar")
ENV = "ATTNKERN_CPU_ISA"


def _extension() -> ModuleType | None:
    try:
        return importlib.import_module("attnkern._C")
    except ImportError:
        return None


def requested_isa(value: str | None = None) -> str:
    """The path ``ATTNKERN_CPU_ISA`` (or ``value``) asks for: one of ``ISAS`` or "auto"."""
    raw = os.environ.get(ENV, "") if value is None else value
    name = raw.strip().lower()
    if name in ("", "auto"):
        return "auto"
    if name not in ISAS:
        raise ValueError(
            f"{ENV}={raw!r}: unknown ISA; use one of auto, {', '.join(ISAS)} (or leave it unset)"
        )
    return name


def select(value: str | None = None) -> str:
    """Applies ``ATTNKERN_CPU_ISA`` (or ``value``) to the extension; returns the path in use."""
    name = requested_isa(value)
    ext = _extension()
    if ext is None:  # no C++ kernels: nothing to select (backend="cpp" raises on use)
        return name
    available = tuple(ext.available_isas())
    if name == "auto":
        name = available[0]
    elif name not in available:
        raise RuntimeError(
            f"{ENV}={name}: this CPU cannot run the {name!r} kernels"
            + ("" if name in ext.built_isas() else " (not in this build)")
            + f"; it has {', '.join(available)} (build holds {', '.join(ext.built_isas())})"
        )
    ext.set_isa(name)
    return name


def cpu_isa() -> str:
    """The ISA path the C++ CPU kernels run: "avx512" | "avx2" | "neon" | "scalar".

    Raises RuntimeError if the C++ extension is not built.
    """
    ext = _extension()
    if ext is None:
        raise RuntimeError("attnkern._C (the C++ CPU kernels) is not built")
    return str(ext.get_isa())


select()
