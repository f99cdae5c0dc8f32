"""GPU comparison: the Triton backend against eager PyTorch and torch.compile, on CUDA.

    python bench/gpu.py [--out DIR] [--quick] [--shapes TRAIN,LONG] [--baselines eager,compile]

For each shape and mode (forward under no_grad; forward + backward into all four inputs)
it times attnkern's Triton backend, the two eager spellings and their torch.compile with
``triton.testing.do_bench`` (CUDA events, median of the repeats), measures the peak CUDA
memory of one call above what was allocated before it, and prints a Markdown table
(also written with the raw numbers as gpu.json / gpu.md under --out). Throughput is
B*Tq*Tk*H score elements per second, to hold against the roofline in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

if __name__ == "__main__" and not __package__:  # python bench/gpu.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import torch

from bench.baselines import get_backend
from bench.gpu_timing import event_ms
from bench.shapes import GPU_SHAPES

# (name, B, Tq, Tk, H, Dv); Tq None = one decoder step (2-D query); lengths in [Tk/2, Tk]
SHAPES = [(name, s.B, None if s.step else s.Tq, s.Tk, s.H, s.Dv)
          for name, s in GPU_SHAPES.items()]
# bench.baselines.BACKENDS names: attnkern's Triton backend and the four baselines, which
# run on the device of their inputs (CUDA here)
BACKENDS = ("triton", "eager", "eager-mm", "compile", "compile-mm")


def make(B: int, Tq: int | None, Tk: int, H: int, Dv: int, dtype: torch.dtype,
         grad: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(0)
    qs = (B, H) if Tq is None else (B, Tq, H)
    ts = [torch.randn(s, device="cuda", generator=g, dtype=dtype)
          for s in (qs, (B, Tk, H), (B, Tk, Dv), (H,))]
    for t in ts:
        t.requires_grad_(grad)
    lengths = torch.randint(Tk // 2, Tk + 1, (B,), device="cuda", generator=g)
    return ts, lengths


def run_one(fn: Any, args: list[torch.Tensor], lengths: torch.Tensor, mode: str,
            rep_ms: int) -> dict[str, float]:
    q, k, v, w = args
    go = None

    def call() -> None:
        nonlocal go
        if mode == "fwd":
            with torch.no_grad():
                fn(q, k, v, w, lengths)
        else:
            out = fn(q, k, v, w, lengths)
            if go is None:
                go = torch.randn_like(out)
            torch.autograd.grad(out, (q, k, v, w), go)

    call()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    ms = event_ms(call, warmup=max(rep_ms // 4, 10), rep=rep_ms)
    return {"ms": ms, "peak_bytes": float(peak)}


def _best(results: dict[str, Any], names: list[str]) -> tuple[float | None, float | None]:
    """(fastest median ms, smallest peak bytes) among the named baselines that ran."""
    ok = [results[n] for n in names if "ms" in results.get(n, {})]
    if not ok:
        return None, None
    return min(r["ms"] for r in ok), min(r["peak_bytes"] for r in ok)


def table_row(row: dict[str, Any]) -> str:
    B, Tq, Tk, H, Dv = row["dims"]
    R = row["results"]
    head = (f"| {row['shape']} B{B}-Tq{Tq or 'step'}-Tk{Tk}-H{H}-Dv{Dv} | {row['dtype']} "
            f"| {row['mode']} ")
    t = R["triton"].get("ms")
    if t is None:
        return head + f"| {R['triton'].get('error')} |||||||||"
    te, pe = _best(R, ["eager", "eager-mm"])
    tc, _ = _best(R, ["compile", "compile-mm"])

    def ms(x: float | None) -> str:
        return f"{x:.3f} ms" if x is not None else "n/a"

    def ratio(x: float | None) -> str:
        return f"{x / t:.2f}x" if x else "n/a"

    elems = B * (Tq or 1) * Tk * H
    return (head + f"| {ms(t)} | {ms(te)} | {ms(tc)} | {ratio(te)} | {ratio(tc)} | "
            f"{elems / (t * 1e-3) / 1e9:.0f} | {R['triton']['peak_bytes'] / 2**20:.1f} MiB | "
            f"{(pe or 0) / 2**20:.1f} MiB |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--quick", action="store_true", help="shorter repeats")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--shapes", default=",".join(s[0] for s in SHAPES),
                   help="comma-separated subset of " + ",".join(s[0] for s in SHAPES))
    p.add_argument("--baselines", default="eager,eager-mm,compile,compile-mm",
                   help="comma-separated subset of eager,eager-mm,compile,compile-mm "
                        "(each compile baseline compiles once per shape, dtype and mode)")
    a = p.parse_args(argv)
    shapes = [s for s in SHAPES if s[0] in a.shapes.split(",")]
    keep = {"triton", *a.baselines.split(",")}
    if not torch.cuda.is_available():
        print("bench/gpu.py needs CUDA (no CUDA device here)", file=sys.stderr)
        return 2
    rep = 100 if a.quick else 400
    res: list[dict[str, Any]] = []
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    lines = [f"GPU {env['gpu']}, torch {env['torch']}, triton {env.get('triton')}, "
             f"{env['date_utc']} UTC; medians of CUDA-event timings (do_bench)", "",
             "| shape | dtype | mode | triton | eager (best) | compile (best) | vs eager | "
             "vs compile | G elem/s | triton peak | eager peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dt_name in a.dtypes.split(","):
        dtype = getattr(torch, dt_name)
        for name, B, Tq, Tk, H, Dv in shapes:
            for mode in ("fwd", "fwdbwd"):
                if Tq is None and mode == "fwdbwd":
                    continue
                row: dict[str, Any] = {"shape": name, "dims": [B, Tq, Tk, H, Dv],
                                       "dtype": dt_name, "mode": mode, "results": {}}
                for bname in BACKENDS:
                    if bname not in keep:
                        continue
                    fn = get_backend(bname)
                    torch.cuda.empty_cache()
                    args, lengths = make(B, Tq, Tk, H, Dv, dtype, mode == "fwdbwd")
                    r: dict[str, Any]
                    try:
                        r = run_one(fn, args, lengths, mode, rep)
                    except Exception as e:  # e.g. out of memory for an eager baseline
                        r = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                    row["results"][bname] = r
                    del args
                res.append(row)
                lines.append(table_row(row))
                print(lines[-1], flush=True)
                save(a.out, env, res, lines)  # after every row: a time limit keeps what ran
    save(a.out, env, res, lines)
    print("\n".join(lines))
    return 0


def save(out: str, env: dict[str, Any], res: list[dict[str, Any]], lines: list[str]) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu.json"), "w") as fh:
        json.dump({"env": env, "rows": res}, fh, indent=1)
    with open(os.path.join(out, "gpu.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
