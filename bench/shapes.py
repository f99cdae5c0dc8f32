"""The benchmark problem sizes, one table for every script.

Smoke mode (``ATTNKERN_BENCH_SMOKE=1``, or ``--smoke``) shrinks the CPU shapes so the whole
suite executes in seconds; its figures mean nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """Problem size; ``step`` = one decoder step (query (B, H), Tq = 1)."""

    B: int
    Tq: int
    Tk: int
    H: int
    Dv: int
    step: bool = False

    @property
    def elements(self) -> int:
        """Score elements B*Tq*Tk*H: one (i, j, h) tanh term each."""
        return self.B * self.Tq * self.Tk * self.H

    @property
    def label(self) -> str:
        tq = "step" if self.step else f"Tq{self.Tq}"
        return f"B{self.B}-{tq}-Tk{self.Tk}-H{self.H}-Dv{self.Dv}"

    @property
    def dims(self) -> tuple[int, int, int, int, int]:
        return self.B, self.Tq, self.Tk, self.H, self.Dv


# The shapes. DECODE (and DECODE-long) use key_lengths drawn in [Tk/2, Tk].
TRAIN = Shape(32, 64, 64, 256, 256)
DECODE = Shape(32, 1, 128, 256, 512, step=True)
MEM = Shape(16, 256, 256, 512, 256)
LONG = Shape(16, 256, 1024, 128, 128)  # GPU: long keys
DECODE_LONG = Shape(8, 1, 8192, 256, 256, step=True)  # GPU: a long decoder memory

# CPU (bench/run.py, the pytest-benchmark suite)
SHAPES = {"TRAIN": TRAIN, "DECODE": DECODE, "MEM": MEM}
SMOKE_SHAPES = {
    "TRAIN": Shape(2, 8, 8, 16, 16),
    "DECODE": Shape(2, 1, 16, 16, 24, step=True),
    "MEM": Shape(2, 16, 16, 32, 16),
}
# GPU (bench/gpu.py; gpu_tune.py, gpu_profile.py and kernel_report.py take subsets)
GPU_SHAPES = {"TRAIN": TRAIN, "LONG": LONG, "MEM": MEM, "DECODE": DECODE,
              "DECODE-long": DECODE_LONG}


def smoke_enabled() -> bool:
    return os.environ.get("ATTNKERN_BENCH_SMOKE", "0") not in ("", "0")


def shapes() -> dict[str, Shape]:
    """The CPU shapes, or their smoke sizes in smoke mode."""
    return SMOKE_SHAPES if smoke_enabled() else SHAPES
