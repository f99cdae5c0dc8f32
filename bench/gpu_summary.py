"""Short table from bench/gpu.py's gpu.json, with issue 13's speed goals checked.

    python bench/gpu_summary.py gpu-check/gpu.json

Goals: forward >= 2x torch.compile on TRAIN, LONG and MEM; forward + backward >= 2x compile;
a DECODE step >= 2x eager (eager mode, no CUDA graph). "compile" and "eager" are the best of
the baselines that ran (compile / compile-mm, eager / eager-mm).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def best(results: dict[str, Any], names: tuple[str, ...], key: str) -> float | None:
    vals = [results[n][key] for n in names if key in results.get(n, {})]
    return min(vals) if vals else None


def summarise(doc: dict[str, Any]) -> list[str]:
    env = doc.get("env", {})
    lines = [f"{env.get('gpu', '?')}, torch {env.get('torch', '?')}, triton "
             f"{env.get('triton', '?')}, {env.get('date_utc', '?')} UTC", "",
             "| shape | dtype | mode | triton ms | x eager | x compile | goal | peak MiB "
             "(triton / eager) |", "|---|---|---|---|---|---|---|---|"]
    for row in doc.get("rows", []):
        res = row["results"]
        t = res.get("triton", {}).get("ms")
        if t is None:
            lines.append(f"| {row['shape']} | {row['dtype']} | {row['mode']} | "
                         f"{res.get('triton', {}).get('error', 'n/a')} | | | | |")
            continue
        te = best(res, ("eager", "eager-mm"), "ms")
        tc = best(res, ("compile", "compile-mm"), "ms")
        pe = best(res, ("eager", "eager-mm"), "peak_bytes")
        if row["shape"].startswith("DECODE"):
            ok = te is not None and te / t >= 2.0
            goal = f"{'met' if ok else 'MISSED'} (>= 2x eager)"
        else:
            ok = tc is not None and tc / t >= 2.0
            goal = f"{'met' if ok else 'MISSED'} (>= 2x compile)"

        def x(v: float | None, t: float = t) -> str:
            return f"{v / t:.2f}x" if v else "n/a"

        peak = f"{res['triton']['peak_bytes'] / 2**20:.1f} / " + (
            f"{pe / 2**20:.1f}" if pe is not None else "n/a")
        lines.append(f"| {row['shape']} | {row['dtype']} | {row['mode']} | {t:.3f} | {x(te)} | "
                     f"{x(tc)} | {goal} | {peak} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        print("\n".join(summarise(json.load(fh))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
