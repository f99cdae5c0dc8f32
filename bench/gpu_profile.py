# ruff: noqa: B023  (closures over the loop variables are called within their iteration)
"""Where the time of a Triton-backend call goes on a GPU: host overhead vs kernels.

    python bench/gpu_profile.py

For a few shapes: wall time per call (host clock, synchronised), the GPU time of the same
call replayed from a CUDA graph (no host overhead), the raw forward launcher alone, and the
torch.profiler table of the CUDA kernels it runs.
"""

from __future__ import annotations

import sys
import time

if __name__ == "__main__" and not __package__:  # python bench/gpu_profile.py: bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import torch
from torch.profiler import ProfilerActivity, profile

import attnkern
from attnkern import triton_kernels as tk
from bench.gpu_timing import event_ms, gpu_ms
from bench.shapes import GPU_SHAPES

# name, B, Tq, Tk, H, Dv, mode; DECODE as a (B, 1, H) query
CASES = [(name, *GPU_SHAPES[name].dims, mode)
         for name, mode in (("TRAIN", "fwd"), ("TRAIN", "fwdbwd"), ("DECODE", "fwd"),
                            ("LONG", "fwd"), ("LONG", "fwdbwd"))]


def main() -> int:
    torch.manual_seed(0)
    for name, B, Tq, Tk, H, Dv, mode in CASES:
        q = torch.randn(B, Tq, H, device="cuda")
        k = torch.randn(B, Tk, H, device="cuda")
        v = torch.randn(B, Tk, Dv, device="cuda")
        w = torch.randn(H, device="cuda")
        lens = torch.randint(Tk // 2, Tk + 1, (B,), device="cuda")
        grad = mode == "fwdbwd"
        for t in (q, k, v, w):
            t.requires_grad_(grad)
        go = torch.randn(B, Tq, Dv, device="cuda")

        def call() -> None:
            if grad:
                o = attnkern.additive_attention(q, k, v, w, key_lengths=lens, backend="triton")
                torch.autograd.grad(o, (q, k, v, w), go)
            else:
                with torch.no_grad():
                    attnkern.additive_attention(q, k, v, w, key_lengths=lens, backend="triton")

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        n = 50
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / n * 1e3
        # host time alone: how long the Python call takes to return (kernels queued)
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        host = (time.perf_counter() - t0) / n * 1e3
        torch.cuda.synchronize()
        ev = event_ms(call, warmup=25, rep=100)
        raw = None
        if not grad:
            qd, kd, vd, wd = (t.detach() for t in (q, k, v, w))
            raw = event_ms(lambda: tk.fwd(qd, kd, vd, wd, None, lens, False, False),
                           warmup=25, rep=100)
        graph_ms = None
        if not grad:
            try:
                graph_ms = gpu_ms(call, warmup=25, rep=100)
            except Exception as e:  # noqa: BLE001
                print("graph capture failed:", type(e).__name__, str(e)[:200])
        print(f"\n=== {name} B{B}-Tq{Tq}-Tk{Tk}-H{H}-Dv{Dv} {mode}: wall {wall:.3f} ms/call, "
              f"host-only {host:.3f} ms/call, do_bench {ev:.3f} ms, raw fwd launcher "
              f"{raw if raw is None else round(raw, 4)} ms, graph replay "
              f"{graph_ms if graph_ms is None else round(graph_ms, 4)} ms", flush=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                call()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10,
                                        max_name_column_width=60), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
