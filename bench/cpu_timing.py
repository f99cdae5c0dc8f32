"""The CPU timer (bench/run.py): several calls timed side by side, interleaved round by
round so that they share the machine's noise. The GPU timer: bench/gpu_timing.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass
class Timed:
    """Per-call seconds of one entry of :func:`interleaved_medians`."""

    samples: list[float]
    calls_per_sample: int
    cpu_samples: list[float]  # process CPU seconds per call (all threads), same samples

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        """Least-disturbed sample: noise from other jobs only ever adds time."""
        return min(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (a noise indicator)."""
        if len(self.samples) < 4:
            return 0.0
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median


Entry = Callable[[], None] | tuple[Callable[[], None], Callable[[], None]]


def interleaved_medians(entries: Mapping[str, Entry], *, repeats: int, warmup: int = 1,
                        min_sample_s: float = 0.02) -> dict[str, Timed]:
    """Time several calls side by side so they share the machine's noise.

    ``entries`` maps a name to a call, or to ``(setup, call)`` where ``setup`` runs untimed
    before each sample (e.g. ``torch.set_num_threads``). Each entry is warmed up, then
    calibrated to ``n`` calls per sample (a sample lasts >= ``min_sample_s``); then
    ``repeats`` rounds time one sample of every entry, the order rotating each round.
    Returns per-call seconds (sample time / n) for every sample.
    """
    norm = {name: (e if isinstance(e, tuple) else (_noop, e)) for name, e in entries.items()}
    counts: dict[str, int] = {}
    for name, (setup, call) in norm.items():
        setup()
        for _ in range(warmup):
            call()
        n = 1
        while True:
            t = _sample(call, n)
            if t >= min_sample_s or n >= 1 << 16:
                break
            n = max(n + 1, min(n * 10, int(n * min_sample_s / max(t, 1e-9) * 1.2) + 1))
        counts[name] = n
    samples: dict[str, list[float]] = {name: [] for name in norm}
    cpu: dict[str, list[float]] = {name: [] for name in norm}
    names = list(norm)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            setup, call = norm[name]
            setup()
            c0 = time.process_time()
            samples[name].append(_sample(call, counts[name]) / counts[name])
            cpu[name].append((time.process_time() - c0) / counts[name])
    return {name: Timed(samples[name], counts[name], cpu[name]) for name in names}


def _noop() -> None:
    pass


def _sample(call: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - t0
