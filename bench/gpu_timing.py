"""The GPU timers (bench/gpu.py, gpu_profile.py, gpu_tune.py), both ``triton.testing.do_bench``
medians in milliseconds: ``event_ms`` times the call as a user runs it (host launches
included), ``gpu_ms`` its replay from a CUDA graph (GPU time alone). The CPU timer:
bench/cpu_timing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def event_ms(fn: Callable[[], Any], warmup: int = 25, rep: int = 100) -> float:
    """Median time of ``fn()`` from CUDA events (do_bench: warmup and rep in milliseconds)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def gpu_ms(fn: Callable[[], Any], warmup: int = 10, rep: int = 50) -> float:
    """Median GPU time of fn replayed from a CUDA graph (no host launch cost in it);
    warmup and rep are do_bench's, in milliseconds."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return event_ms(g.replay, warmup=warmup, rep=rep)
