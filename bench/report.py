"""bench/run.py's report: the goal table, the Markdown of every timing, the README
results section, and the method. Plots: bench/plots.py.
"""

from __future__ import annotations

import math
import os
from typing import Any

from bench import REPO_ROOT


def fmt_time(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "n/a"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    if n < 2**20:
        return f"{n / 2**10:.1f} KiB"
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def make_row(figure: str, shape: str, ours: float | None, ours_label: str, ours_text: str,
             base: float | None, base_label: str, base_text: str, ratio: float | None,
             goal_op: str, goal: float, ratio_text: str | None = None,
             goal_text: str | None = None) -> dict[str, Any]:
    passed = None
    if ratio is not None and not math.isnan(ratio):
        passed = ratio >= goal if goal_op == ">=" else ratio <= goal
    return {
        "figure": figure, "shape": shape,
        "ours": ours, "ours_label": ours_label, "ours_text": ours_text,
        "baseline": base, "baseline_label": base_label, "baseline_text": base_text,
        "ratio": ratio, "ratio_text": ratio_text or (f"{ratio:.2f}x" if ratio else "n/a"),
        "goal": goal_text or f"{goal_op} {goal:g}x", "goal_op": goal_op, "goal_value": goal,
        "pass": passed,
    }


# ------------------------------------------------------------------------------ output

def markdown(report: dict[str, Any]) -> str:
    env = report["env"]
    lines = [
        "# attnkern CPU benchmark",
        "",
        f"{env['date_utc']} on {env['cpu']}, {env['logical_cpus']} logical CPUs, "
        f"{env['threads']} threads, torch {env['torch']}, float32, C++ path "
        f"{env.get('cpu_isa')} (ATen {env.get('aten_cpu_capability')}); attnkern commit "
        f"{env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}, csrc: "
        f"{env['csrc_commit']}. Command: `{env['command']}`"
        + (" **SMOKE RUN: tiny shapes, the figures mean nothing.**" if report["smoke"] else ""),
        "",
        *goal_table(report),
    ]
    lines += ["", "## All timings (medians, side by side per problem)", "",
              "| problem | backend | median | min | CPU time (all threads) | G score elements/s "
              "| IQR/median | samples x calls |",
              "|---|---|---|---|---|---|---|---|"]
    for key, t in report["timings"].items():
        for n, b in sorted(t["backends"].items(), key=lambda kv: kv[1]["median_s"]):
            lines.append(f"| {key} ({t['shape']}) | {n} | {fmt_time(b['median_s'])} | "
                         f"{fmt_time(b['min_s'])} | {fmt_time(b['cpu_median_s'])} | "
                         f"{b['Gelem_per_s']:.3f} | {b['iqr_rel']:.0%} | "
                         f"{b['samples']} x {b['calls_per_sample']} |")
    mem = report["extra"].get("memory_MEM")
    if mem:
        lines += ["", f"## Extra peak memory, forward+backward, MEM {mem['shape']}", "",
                  "| backend | profiler (PyTorch allocator) | peak RSS growth | reported (max) "
                  "| profiled call |",
                  "|---|---|---|---|---|"]
        for n, f in mem["backends"].items():
            lines.append(f"| {n} | {fmt_bytes(f['profiler_bytes'])} | "
                         f"{fmt_bytes(f['rss_bytes'])} | {fmt_bytes(f['bytes'])} | "
                         f"{f['call_s']:.2f} s |")
    mc = report["extra"].get("memory_vs_tk")
    if mc:
        names = list(mc["bytes"])
        lines += ["", f"## Extra peak memory vs Tk, forward+backward ({mc['shape']})", "",
                  "| Tk | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for i, tk in enumerate(mc["Tk"]):
            lines.append(f"| {tk} | " + " | ".join(fmt_bytes(mc["bytes"][n][i]) for n in names)
                         + " |")
    for key, var in (("time_vs_tk", "Tk"), ("time_vs_h", "H")):
        c = report["extra"].get(key)
        if not c:
            continue
        names = list(c["seconds"])
        lines += ["", f"## Forward time vs {var} ({c['shape']}; minimum of the samples)", "",
                  f"| {var} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for i, x in enumerate(c[var]):
            lines.append(f"| {x} | " + " | ".join(fmt_time(c["seconds"][n][i]) for n in names)
                         + " |")
        lines.append("| linear fit R^2 | " + " | ".join(
            f"{c['fit'][n]['r2']:.4f}" for n in names) + " |")
        lines.append("| log-log slope (upper half) | " + " | ".join(
            f"{c['fit'][n]['loglog_slope_upper']:.2f}" for n in names) + " |")
    probe = report["extra"].get("limit_probe")
    if probe:
        lines += ["", f"limit_probe ({probe.get('build')}): "
                  + (", ".join(f"{t} thread(s): " + ", ".join(f"{k} {v:.2f} G/s"
                                                            for k, v in figs.items())
                               for t, figs in probe["runs"].items()) or "n/a")]
    lines += ["", "## Method", ""] + [f"- {m}" for m in report["method"]]
    return "\n".join(lines) + "\n"


def goal_table(report: dict[str, Any]) -> list[str]:
    lines = ["| figure | shape | attnkern (cpp) | baseline | ratio | goal | result |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        result = {True: "pass", False: "**FAIL**", None: "n/a"}[r["pass"]]
        lines.append(f"| {r['figure']} | {r['shape']} | {r['ours_text']} | {r['baseline_text']} "
                     f"| {r['ratio_text']} | {r['goal']} | {result} |")
    return lines


def readme_fragment(report: dict[str, Any], plot_paths: list[str]) -> str:
    """The README's results section (links relative to the repository root)."""
    env = report["env"]
    load = env.get("loadavg_start"), env.get("loadavg_end")
    lines = [
        "## Results (CPU)",
        "",
        f"Measured {env['date_utc'][:16].replace('T', ' ')} UTC on {env['cpu']} "
        f"({env['logical_cpus']} logical CPUs, shared with other jobs: load average "
        f"{load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end), {env['threads']} threads, "
        f"float32, C++ path {env.get('cpu_isa')} (torch.compile on ATen "
        f"{env.get('aten_cpu_capability')}), torch {env['torch']}, attnkern commit "
        f"{env['git_commit']}. "
        f"Reproduce with `{env['command']}` (about {env['wall_s'] / 60:.0f} min; "
        "`--quick` for fewer repeats); it writes `bench/results/cpu.json` (every sample "
        "count, median and spread, the environment), `bench/results/cpu.md` and the plots.",
        "",
        *goal_table(report),
        "",
        "Speed ratios are between medians measured side by side in one process (backends "
        "interleaved round by round); the baseline is the faster of the two usual spellings "
        "of eager additive attention (`(tanh(q+k) * w).sum(-1)` or `tanh(q+k) @ w`), or of "
        "their torch.compile. Memory: the larger of the PyTorch-allocator peak "
        "(torch.profiler memory events) and the peak-RSS growth, in a fresh process. "
        "The pytest-benchmark suite `pytest bench/ --benchmark-only` times every backend on "
        "the same shapes.",
        "",
    ]
    for path in plot_paths:
        rel = os.path.relpath(path, REPO_ROOT)
        title = os.path.splitext(os.path.basename(path))[0].replace("bench_", "").replace(
            "_", " ")
        lines.append(f"![{title}]({rel})")
    return "\n".join(lines) + "\n"


METHOD = [
    "float32 on CPU; torch.set_num_threads(threads) for every backend (attnkern's OpenMP "
    "kernels, eager ATen and Inductor's generated code alike).",
    "forward = one call under torch.no_grad() (inference; decode steps); forward+backward = "
    "forward with autograd, then backward(grad_out) into all four inputs.",
    "Each problem: the backends are warmed up (torch.compile compiles there, static shapes), "
    "each calibrated to n calls per sample (a sample lasts >= min_sample_s), then in every "
    "round one sample of each backend, the order rotating round by round, so they share the "
    "machine's noise. Figures are medians of the rounds' per-call times; ratios are taken "
    "between medians measured side by side. '(min: ...)' is the same ratio between the "
    "fastest samples (noise from other jobs only adds time, so the minimum is the estimate "
    "closest to an idle machine). The Tk and H curves (small calls, where one descheduled "
    "thread can add milliseconds) use the minimum. CPU time = process CPU seconds per call, "
    "all threads (OpenMP spin-waiting included).",
    "Baselines: eager = `(tanh(q[:, :, None] + k[:, None]) * w).sum(-1)`, masked softmax, "
    "bmm; eager-mm = the same with `tanh(...) @ w[:, None]`; compile / compile-mm = "
    "torch.compile (Inductor, dynamic=False) of those functions. Each goal row compares with "
    "the faster (or for memory, the leaner) of the two spellings.",
    "DECODE masks with key_lengths drawn in [Tk/2, Tk].",
    "Throughput = B*Tq*Tk*H score elements / forward time; limit_probe (the team's ceiling "
    "probe, compiled here with the command at its top) is run in the same process run.",
    "The machine is shared (2 cores, several users): absolute times are noisy; the IQR column "
    "says how noisy; side-by-side ratios are the figures to read.",
]
