# ruff: noqa: B023  (closures over the loop variables are called within their iteration)
"""Tile sweep for the Triton kernels on a GPU: which (BLOCK_M, BLOCK_N, BLOCK_H, warps,
stages) is fastest per shape bucket, each candidate checked against the current table.

    python bench/gpu_tune.py [--budget-s 400]

Prints, per shape and kernel (forward; backward = dk/dv + dq), the current config's median
time and the fastest candidates. The winners go into fwd_config / bwd_config in
attnkern/triton_kernels.py by hand (then bench/kernel_report.py checks spills).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from typing import Any

if __name__ == "__main__" and not __package__:  # python bench/gpu_tune.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import torch

import attnkern
from attnkern import _compat
from attnkern import triton_kernels as tk
from bench.gpu_timing import gpu_ms
from bench.shapes import GPU_SHAPES

SHAPES = [(name, *GPU_SHAPES[name].dims) for name in ("TRAIN", "LONG", "MEM")]  # name, B..Dv


# Short lists around the current table (the full sweep is candidates()): a lease of a few
# minutes covers these.
FOCUS = {
    ("TRAIN", "fwd"): [(16, 32, 4, 8, 2), (16, 32, 8, 8, 2), (32, 64, 8, 8, 2), (16, 64, 4, 8, 2),
                       (32, 32, 8, 8, 2), (64, 32, 4, 8, 2), (16, 32, 4, 4, 2)],
    ("TRAIN", "bwd"): [(16, 32, 8, 8, 1), (16, 64, 4, 8, 1), (32, 32, 4, 8, 1), (16, 32, 8, 4, 1),
                       (16, 16, 8, 4, 1), (32, 32, 8, 8, 1)],
    ("LONG", "fwd"): [(16, 64, 4, 4, 2), (64, 32, 8, 8, 2), (32, 16, 4, 8, 2), (16, 32, 2, 4, 2),
                      (32, 32, 4, 8, 2), (64, 64, 4, 8, 2), (128, 32, 4, 8, 2)],
    ("LONG", "bwd"): [(32, 64, 2, 4, 1), (32, 32, 8, 8, 1), (16, 32, 8, 8, 1), (32, 64, 4, 8, 1)],
    ("MEM", "fwd"): [(16, 32, 4, 8, 2), (16, 64, 4, 4, 2), (64, 32, 8, 8, 2), (32, 32, 8, 8, 2)],
    ("MEM", "bwd"): [(16, 32, 8, 8, 1), (32, 32, 4, 8, 1), (16, 64, 4, 8, 1)],
}


def candidates(kind: str, tq: int) -> list[tk.Config]:
    out = []
    for bm, bn, bh, warps in itertools.product((16, 32, 64, 128), (16, 32, 64), (1, 2, 4, 8),
                                               (4, 8)):
        if bm > max(16, tq):
            continue
        per_thread = bm * bn * bh / (32 * warps)
        if not 8 <= per_thread <= 64:
            continue
        out.append(tk.Config(bm, bn, bh, warps, 2 if kind == "fwd" else 1))
    random.Random(0).shuffle(out)  # a time-boxed sweep samples the whole space
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--budget-s", type=float, default=400)
    p.add_argument("--sweep", action="store_true", help="sample the whole space, not FOCUS")
    a = p.parse_args(argv)
    per_section = a.budget_s / (2 * len(SHAPES))
    orig_fwd, orig_bwd = tk.fwd_config, tk.bwd_config
    summary = []
    for (name, B, Tq, Tk, H, Dv), kind in itertools.product(SHAPES, ("fwd", "bwd")):
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(B, Tq, H, device="cuda", generator=g)
        k = torch.randn(B, Tk, H, device="cuda", generator=g)
        v = torch.randn(B, Tk, Dv, device="cuda", generator=g)
        w = torch.randn(H, device="cuda", generator=g)
        lens = torch.randint(Tk // 2, Tk + 1, (B,), device="cuda", generator=g)
        go = torch.randn(B, Tq, Dv, device="cuda", generator=g)
        out, lse, _ = tk.fwd(q, k, v, w, None, lens, False, False)
        delta = (go * out).sum(-1)

        def run() -> Any:
            # eager launches, as the op's CUDA kernel does (not the traceable wrapper)
            with _compat.wrap_triton_disabled():
                return run_body()

        def run_body() -> Any:
            if kind == "fwd":
                return tk.fwd(q, k, v, w, None, lens, False, False)[:2]
            return tk.bwd(go, None, q, k, v, w, lse, delta, None, lens, False)

        ref = run()
        t_end = time.time() + per_section
        cur = (orig_fwd if kind == "fwd" else orig_bwd)(Tq, Tk, H, Dv)
        results: list[tuple[float, tk.Config]] = []
        pool = (candidates(kind, Tq) if a.sweep
                else [tk.Config(*c) for c in FOCUS.get((name, kind), [])])
        cands = [cur] + [c for c in pool if c != cur]
        for cfg in cands:
            if time.time() > t_end and cfg != cur:
                break
            if kind == "fwd":
                tk.fwd_config = lambda *_a, _c=cfg, **_k: _c  # type: ignore[assignment]
            else:
                tk.bwd_config = lambda *_a, _c=cfg, **_k: _c  # type: ignore[assignment]
            # the launchers cache their plans per shape: drop them so the candidate is used
            attnkern.clear_caches()
            try:
                got = run()
                torch.cuda.synchronize()
                ok = all(torch.allclose(x, y, rtol=1e-4,
                                        atol=1e-4 * max(1.0, y.abs().max().item()))
                         for x, y in zip(got, ref))
                if not ok:
                    print(f"  {name} {kind} {cfg}: MISMATCH", flush=True)
                    continue
                ms = gpu_ms(run)
                results.append((ms, cfg))
            except Exception as e:  # noqa: BLE001  (out of resources etc.)
                print(f"  {name} {kind} {cfg}: {type(e).__name__} {str(e)[:80]}", flush=True)
            finally:
                tk.fwd_config, tk.bwd_config = orig_fwd, orig_bwd
                attnkern.clear_caches()
        cur_ms = next((ms for ms, c in results if c == cur), float("nan"))
        results.sort(key=lambda r: r[0])
        line = (f"{name} B{B}-Tq{Tq}-Tk{Tk}-H{H}-Dv{Dv} {kind}: current {tuple(cur)} "
                f"{cur_ms:.4f} ms; best " + "; ".join(f"{tuple(c)} {ms:.4f}"
                                                      for ms, c in results[:4])
                + f" ({len(results)} tried)")
        print(line, flush=True)
        summary.append(line)
    print("\n".join(["", "SUMMARY"] + summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
