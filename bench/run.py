"""Side-by-side comparison of attnkern's C++ CPU kernels with the usual PyTorch baselines.

    python bench/run.py                 # the issue's table (float32, 2 threads), ~5 min
    python bench/run.py --quick         # fewer repeats
    python bench/run.py --smoke --out /tmp/x   # tiny shapes, seconds: checks that it runs
    ATEN_CPU_CAPABILITY=avx2 python bench/run.py --isa avx2   # both sides on AVX2

Everything is measured in one process, backends interleaved round by round so that they
share the machine's noise; figures are medians. Writes ``cpu.json`` and ``cpu.md`` to
``--out`` (default ``bench/results/``) and PNG plots to ``--plots`` (default ``docs/img/``
with the default ``--out``, else ``--out``), and prints the Markdown table.

Goals (issue 4), each row: our figure, the baseline's, the ratio, the goal, pass/fail:
forward TRAIN vs torch.compile >= 5x; forward+backward TRAIN vs torch.compile >= 3x; decode
step DECODE vs eager >= 3x; extra peak memory of fwd+bwd on MEM <= 5% of eager's; forward
throughput vs ``limit_probe`` (factorized) >= 0.5; 2 threads vs 1 >= 1.7x; cost linear in
Tk and in H (R^2 of a linear fit >= 0.99).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

if __name__ == "__main__" and not __package__:  # python bench/run.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401

from bench import BENCH_DIR, REPO_ROOT
from bench.plots import plots
from bench.report import METHOD, fmt_bytes, fmt_time, make_row, markdown, readme_fragment


@dataclass
class Config:
    repeats: int  # samples per backend for the goal rows
    curve_repeats: int
    min_sample_s: float  # a sample runs the call enough times to last this long
    tk_sweep: list[int]
    h_sweep: list[int]
    tk_shape: tuple[int, int, int, int]  # (B, Tq, H, Dv) of the Tk sweep
    h_shape: tuple[int, int, int, int]  # (B, Tq, Tk, Dv) of the H sweep
    probe_runs: int


FULL = Config(repeats=15, curve_repeats=11, min_sample_s=0.05,
              tk_sweep=[64 << i for i in range(9)], h_sweep=[32, 64, 128, 256, 512, 1024],
              tk_shape=(4, 16, 128, 64), h_shape=(8, 32, 64, 64), probe_runs=3)
QUICK = Config(repeats=5, curve_repeats=3, min_sample_s=0.03,
               tk_sweep=[64 << i for i in range(9)], h_sweep=[32, 64, 128, 256, 512, 1024],
               tk_shape=(4, 16, 128, 64), h_shape=(8, 32, 64, 64), probe_runs=1)
SMOKE = Config(repeats=1, curve_repeats=1, min_sample_s=0.0, tk_sweep=[16, 32, 64],
               h_sweep=[8, 16, 32], tk_shape=(2, 4, 16, 8), h_shape=(2, 4, 8, 8), probe_runs=1)

R2_GOAL = 0.99


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ environment

def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
        flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
        name = model.group(1).strip() if model else platform.processor() or "unknown"
        if flags and "avx512f" in flags.group(1).split():
            name += " (AVX-512)"
        return name
    except OSError:
        return platform.processor() or platform.machine()


def environment(threads: int) -> dict[str, Any]:
    import torch

    import attnkern

    ext = None
    if attnkern.ops.HAS_CPP:
        so = sys.modules["attnkern._C"].__file__
        ext = {"path": os.path.relpath(so, REPO_ROOT) if so else None,
               "built": datetime.datetime.fromtimestamp(
                   os.path.getmtime(so), datetime.timezone.utc).isoformat(timespec="seconds")
               if so else None}
    dirty = _git("status", "--porcelain", "--", "attnkern", "csrc", "bench")
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "attnkern": attnkern.__version__,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "csrc_commit": _git("log", "-1", "--format=%h %s", "--", "csrc"),
        "extension": ext,
        "cpu_isa": attnkern.cpu_isa() if attnkern.ops.HAS_CPP else None,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        [os.path.relpath(sys.argv[0], REPO_ROOT), *sys.argv[1:]]),
    }


# ------------------------------------------------------------------------------ limit_probe

def find_limit_probe() -> str | None:
    """limit_probe.cpp: $ATTNKERN_LIMIT_PROBE, <repo>/../shared/tools/ (CI clones), or
    /work/shared/tools/."""
    candidates = [os.environ.get("ATTNKERN_LIMIT_PROBE", ""),
                  os.path.join(REPO_ROOT, "..", "shared", "tools", "limit_probe.cpp"),
                  "/work/shared/tools/limit_probe.cpp"]
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def build_limit_probe(src: str, workdir: str) -> tuple[str | None, str]:
    """Compile with the command written at the top of the file; (binary, note)."""
    with open(src) as f:
        head = f.read(2000)
    cmd = ["g++", "-O3", "-march=native", "-pthread", "limit_probe.cpp", "-o", "limit_probe"]
    m = re.search(r"^//\s*(g\+\+[^\n]*?limit_probe\.cpp[^\n]*?)(?:&&|$)", head, re.M)
    if m:
        cmd = shlex.split(m.group(1))
    shutil.copy(src, os.path.join(workdir, "limit_probe.cpp"))
    try:
        out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"build failed: {e}"
    binary = os.path.join(workdir, "limit_probe")
    if out.returncode != 0 or not os.path.exists(binary):
        return None, f"build failed: {out.stderr.strip()[-300:]}"
    return binary, " ".join(cmd)


def run_limit_probe(binary: str, threads: int) -> dict[str, float]:
    """{'direct': Gelem/s, 'factorized': Gelem/s} from one run."""
    out = subprocess.run([binary, str(threads)], capture_output=True, text=True, timeout=300)
    figures = {}
    for name, value in re.findall(r"^(\w+)\s+threads=\d+\s+([0-9.]+)\s*Gelem/s", out.stdout,
                                  re.M):
        figures[name] = float(value)
    return figures


# ------------------------------------------------------------------------------ helpers

def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b x: R^2, and the log-log slope over the upper half of x
    (1.0 for a linear cost once fixed overheads stop mattering)."""
    n = len(xs)
    if n < 2:
        return {"r2": float("nan"), "intercept": float("nan"), "slope": float("nan"),
                "loglog_slope_upper": float("nan")}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if ss_tot else float("nan")
    half = max(2, n // 2)
    lx = [math.log(x) for x in xs[-half:]]
    ly = [math.log(y) for y in ys[-half:]]
    mlx, mly = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mlx) ** 2 for x in lx)
    ll = sum((x - mlx) * (y - mly) for x, y in zip(lx, ly)) / den if den else float("nan")
    return {"r2": r2, "intercept": a, "slope": b, "loglog_slope_upper": ll}




# ------------------------------------------------------------------------------ the run

class Runner:
    def __init__(self, cfg: Config, threads: int) -> None:
        import torch

        import attnkern
        from bench.shapes import shapes

        self.torch = torch
        self.cfg = cfg
        self.threads = threads
        self.shapes = shapes()
        self.has_cpp = attnkern.ops.HAS_CPP
        self.timings: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self.last_min: dict[str, float] = {}

    # -- timing of one problem, several backends side by side
    def time_backends(self, key: str, shape: Any, mode: str, backends: list[str],
                      repeats: int, min_sample_s: float | None = None) -> dict[str, float]:
        from bench.baselines import get_backend
        from bench.common import make_call, make_inputs
        from bench.cpu_timing import interleaved_medians

        names = [b for b in backends if b != "cpp" or self.has_cpp]
        inputs = make_inputs(shape, requires_grad=mode == "fwdbwd")
        entries = {}
        for name in names:
            t0 = time.perf_counter()
            call = make_call(get_backend(name), inputs, mode)
            call()  # torch.compile compiles here, outside the timing
            if name.startswith("compile"):
                log(f"  {name}: compiled for {shape.label} {mode} in "
                    f"{time.perf_counter() - t0:.1f} s")
            entries[name] = call
        timed = interleaved_medians(
            entries, repeats=repeats, warmup=1,
            min_sample_s=self.cfg.min_sample_s if min_sample_s is None else min_sample_s)
        self.timings[key] = {
            "shape": shape.label, "mode": mode, "elements": shape.elements,
            "backends": {n: {"median_s": t.median, "min_s": t.min, "cpu_median_s": t.cpu_median,
                             "iqr_rel": t.spread,
                             "samples": len(t.samples), "calls_per_sample": t.calls_per_sample,
                             "Gelem_per_s": shape.elements / t.median / 1e9}
                         for n, t in timed.items()},
        }
        self.last_min = {n: t.min for n, t in timed.items()}
        return {n: t.median for n, t in timed.items()}

    @staticmethod
    def best(medians: dict[str, float], names: list[str]) -> tuple[str, float | None]:
        have = [(medians[n], n) for n in names if n in medians]
        if not have:
            return "n/a", None
        t, n = min(have)
        return n, t

    def speed_row(self, figure: str, shape_name: str, mode: str, baselines: list[str],
                  all_backends: list[str], goal: float) -> dict[str, float]:
        shape = self.shapes[shape_name]
        log(f"{figure}: {shape_name} {shape.label} ({', '.join(all_backends)})")
        med = self.time_backends(f"{shape_name}-{mode}", shape, mode, all_backends,
                                 self.cfg.repeats)
        ours = med.get("cpp")
        bname, base = self.best(med, baselines)
        ratio = base / ours if ours and base else None
        mins = self.last_min
        _, base_min = self.best(mins, baselines)
        ratio_min = base_min / mins["cpp"] if "cpp" in mins and base_min else None
        row = make_row(
            figure, f"{shape_name} {shape.label}", ours, "cpp", fmt_time(ours), base, bname,
            f"{fmt_time(base)} ({bname})", ratio, ">=", goal,
            ratio_text=(f"{ratio:.2f}x" if ratio else "n/a")
            + (f" (min: {ratio_min:.2f}x)" if ratio_min else ""))
        row["ratio_of_minima"] = ratio_min
        self.rows.append(row)
        return med

    def measure_memory(self, shapes: list[tuple[int, int, int, int, int]], backends: list[str],
                       rss: list[str]) -> list[dict[str, Any]]:
        """bench/memory.py in child processes (see there and common.MEMORY_METHOD): one per
        shape for attnkern (whose kernels keep scratch between calls), one for the rest."""
        results: list[dict[str, Any]] = []
        if "cpp" in backends:
            for s in shapes:
                results += self._memory_child([s], ["cpp"], rss)
        rest = [b for b in backends if b != "cpp"]
        if rest:
            results += self._memory_child(shapes, rest, rss)
        return results

    def _memory_child(self, shapes: list[tuple[int, int, int, int, int]], backends: list[str],
                      rss: list[str]) -> list[dict[str, Any]]:
        cmd = [sys.executable, os.path.join(BENCH_DIR, "memory.py"),
               "--threads", str(self.threads), "--backends", ",".join(backends),
               "--rss", ",".join(rss)]
        for s in shapes:
            cmd += ["--shape", ",".join(str(x) for x in s)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"bench/memory.py failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])["results"]

    def memory_row(self) -> None:
        shape = self.shapes["MEM"]
        # eager (the `* w).sum` spelling) takes tens of seconds here and the same ~6 GiB as
        # eager-mm: profiler figure only (its RSS pass would add another such call).
        names = ["cpp", "eager-mm", "eager"]
        log(f"memory: MEM {shape.label} fwd+bwd ({', '.join(names)}), in a child process")
        res = self.measure_memory([(shape.B, shape.Tq, shape.Tk, shape.H, shape.Dv)], names,
                                  ["cpp", "eager-mm"])
        figures = {r["backend"]: r for r in res}
        for f in figures.values():
            f["bytes"] = max(f["profiler_bytes"], f["rss_bytes"] or 0)
        for name, f in figures.items():
            log(f"  {name}: {fmt_bytes(f['profiler_bytes'])} (profiler), "
                f"{fmt_bytes(f['rss_bytes'])} (RSS), one profiled call {f['call_s']:.2f} s")
        self.extra["memory_MEM"] = {"shape": shape.label, "backends": figures}
        ours = figures.get("cpp", {}).get("bytes")
        base, bname = min((figures[n]["bytes"], n) for n in ("eager", "eager-mm")
                          if n in figures)
        ratio = ours / base if ours is not None and base else None
        self.rows.append(make_row(
            "extra peak memory, forward+backward", f"MEM {shape.label}", ours, "cpp",
            fmt_bytes(ours), base, bname, f"{fmt_bytes(base)} ({bname})", ratio, "<=", 0.05,
            ratio_text=f"{ratio:.2%}" if ratio is not None else "n/a",
            goal_text="<= 5% of eager's"))

    def probe_and_threads_rows(self, fwd_train: dict[str, float]) -> None:
        from bench.baselines import get_backend
        from bench.common import make_call, make_inputs
        from bench.cpu_timing import interleaved_medians

        shape = self.shapes["TRAIN"]
        src = find_limit_probe()
        probe: dict[str, Any] = {"source": src, "runs": {}}
        factorized = None
        with tempfile.TemporaryDirectory() as tmp:
            binary, note = build_limit_probe(src, tmp) if src else (None, "not found")
            probe["build"] = note
            if binary:
                runs: dict[int, list[dict[str, float]]] = {1: [], self.threads: []}
                for _ in range(self.cfg.probe_runs):
                    for t in runs:
                        runs[t].append(run_limit_probe(binary, t))
                for t, rs in runs.items():
                    probe["runs"][str(t)] = {
                        k: statistics.median(r[k] for r in rs if k in r)
                        for k in ("direct", "factorized") if any(k in r for r in rs)}
                factorized = probe["runs"][str(self.threads)].get("factorized")
        self.extra["limit_probe"] = probe
        log(f"limit_probe: {probe['runs'] or probe['build']}")
        ours_t = fwd_train.get("cpp")
        ours = shape.elements / ours_t if ours_t else None
        ratio = ours / (factorized * 1e9) if ours and factorized else None
        min_t = self.timings.get("TRAIN-fwd", {}).get("backends", {}).get("cpp", {}).get("min_s")
        ratio_min = shape.elements / min_t / (factorized * 1e9) if min_t and factorized else None
        self.rows.append(make_row(
            "forward throughput (score elements/s) vs limit_probe factorized",
            f"TRAIN {shape.label}", ours, "cpp",
            f"{ours / 1e9:.2f} G/s" if ours else "n/a", factorized, "limit_probe",
            f"{factorized:.2f} G/s" if factorized else "n/a", ratio, ">=", 0.5,
            ratio_text=(f"{ratio:.2f}" if ratio else "n/a")
            + (f" (min: {ratio_min:.2f})" if ratio_min else ""), goal_text=">= 0.5 (aim)"))
        self.rows[-1]["ratio_of_minima"] = ratio_min

        # Thread scaling of the C++ forward, 1 and N threads interleaved.
        t1 = tn = ratio_min = None
        if self.has_cpp:
            log(f"threads: cpp forward TRAIN, 1 vs {self.threads} threads")
            inputs = make_inputs(shape)
            call = make_call(get_backend("cpp"), inputs, "fwd")
            torch = self.torch
            timed = interleaved_medians(
                {"1": (lambda: torch.set_num_threads(1), call),
                 str(self.threads): (lambda: torch.set_num_threads(self.threads), call)},
                repeats=self.cfg.repeats, min_sample_s=self.cfg.min_sample_s)
            torch.set_num_threads(self.threads)
            t1, tn = timed["1"].median, timed[str(self.threads)].median
            ratio_min = timed["1"].min / timed[str(self.threads)].min
        ratio = t1 / tn if t1 and tn else None
        pr = probe["runs"]
        probe_scaling = None
        if "1" in pr and str(self.threads) in pr and pr["1"].get("factorized"):
            probe_scaling = pr[str(self.threads)]["factorized"] / pr["1"]["factorized"]
        self.extra["thread_scaling"] = {"cpp_1_thread_s": t1, f"cpp_{self.threads}_threads_s": tn,
                                        "limit_probe_factorized_scaling": probe_scaling}
        self.rows.append(make_row(
            f"{self.threads} threads vs 1 thread (cpp forward)", f"TRAIN {shape.label}",
            tn, f"cpp {self.threads}T", fmt_time(tn), t1, "cpp 1T", f"{fmt_time(t1)} (1 thread)",
            ratio, ">=", 1.7,
            ratio_text=(f"{ratio:.2f}x" if ratio else "n/a")
            + (f" (min: {ratio_min:.2f}x)" if ratio_min else "")
            + (f" (limit_probe: {probe_scaling:.2f}x)" if probe_scaling else "")))
        self.rows[-1]["ratio_of_minima"] = ratio_min

    def curves(self) -> None:
        from bench.shapes import Shape

        backends = ["cpp", "eager", "compile"]
        def sweep(name: str, shapes: list[Shape]) -> dict[str, list[float]]:
            curve: dict[str, list[float]] = {}
            for shape in shapes:
                log(f"time vs {name}: {shape.label}")
                # short samples, many of them: the minimum then finds undisturbed calls
                self.time_backends(f"{name.lower()}-{getattr(shape, name)}", shape, "fwd",
                                   backends, self.cfg.curve_repeats,
                                   min_sample_s=self.cfg.min_sample_s / 10)
                for n, t in self.last_min.items():
                    curve.setdefault(n, []).append(t)
            return curve

        B, Tq, H, Dv = self.cfg.tk_shape
        tk_curve = sweep("Tk", [Shape(B, Tq, tk, H, Dv) for tk in self.cfg.tk_sweep])
        B2, Tq2, Tk2, Dv2 = self.cfg.h_shape
        h_curve = sweep("H", [Shape(B2, Tq2, Tk2, h, Dv2) for h in self.cfg.h_sweep])
        self.extra["time_vs_tk"] = {
            "shape": f"B{B}-Tq{Tq}-H{H}-Dv{Dv}", "Tk": self.cfg.tk_sweep, "mode": "fwd",
            "statistic": "min", "seconds": tk_curve,
            "fit": {n: linear_fit([float(x) for x in self.cfg.tk_sweep], ys)
                    for n, ys in tk_curve.items()}}
        self.extra["time_vs_h"] = {
            "shape": f"B{B2}-Tq{Tq2}-Tk{Tk2}-Dv{Dv2}", "H": self.cfg.h_sweep, "mode": "fwd",
            "statistic": "min", "seconds": h_curve,
            "fit": {n: linear_fit([float(x) for x in self.cfg.h_sweep], ys)
                    for n, ys in h_curve.items()}}
        for var, key, label in (("Tk", "time_vs_tk", self.extra["time_vs_tk"]["shape"]),
                                ("H", "time_vs_h", self.extra["time_vs_h"]["shape"])):
            fits = self.extra[key]["fit"]
            ours = fits.get("cpp")
            base = fits.get("eager")
            r2 = ours["r2"] if ours else None
            sweep = self.cfg.tk_sweep if var == "Tk" else self.cfg.h_sweep
            self.rows.append(make_row(
                f"forward cost vs {var} ({sweep[0]}..{sweep[-1]}) is linear",
                label, r2, "cpp",
                f"R^2 {r2:.4f}, log-log slope {ours['loglog_slope_upper']:.2f}" if ours else "n/a",
                base["r2"] if base else None, "eager",
                f"R^2 {base['r2']:.4f}, slope {base['loglog_slope_upper']:.2f} (eager)"
                if base else "n/a", r2, ">=", R2_GOAL, ratio_text="-",
                goal_text=f"linear: R^2 >= {R2_GOAL}"))

    def memory_curve(self) -> None:
        B, Tq, H, Dv = self.cfg.tk_shape
        log(f"memory vs Tk: B{B}-Tq{Tq}-H{H}-Dv{Dv}, Tk {self.cfg.tk_sweep}, in a child process")
        names = ["cpp", "eager", "eager-mm"]
        res = self.measure_memory([(B, Tq, tk, H, Dv) for tk in self.cfg.tk_sweep], names,
                                  names)
        curve: dict[str, list[int]] = {}
        for r in res:  # in sweep order per backend
            curve.setdefault(r["backend"], []).append(
                max(r["profiler_bytes"], r["rss_bytes"] or 0))
        self.extra["memory_vs_tk"] = {"shape": f"B{B}-Tq{Tq}-H{H}-Dv{Dv}", "mode": "fwdbwd",
                                      "Tk": self.cfg.tk_sweep, "bytes": curve}

    def run(self, skip_curves: bool = False) -> None:
        fwd = self.speed_row("forward vs torch.compile", "TRAIN", "fwd",
                             ["compile", "compile-mm"],
                             ["cpp", "compile", "compile-mm", "eager", "eager-mm"], 5.0)
        self.probe_and_threads_rows(fwd)
        self.speed_row("forward+backward vs torch.compile", "TRAIN", "fwdbwd",
                       ["compile", "compile-mm"],
                       ["cpp", "compile", "compile-mm", "eager", "eager-mm"], 3.0)
        self.speed_row("decode step latency vs eager", "DECODE", "fwd", ["eager", "eager-mm"],
                       ["cpp", "eager", "eager-mm", "compile", "compile-mm"], 3.0)
        self.memory_row()
        if not skip_curves:
            self.curves()
            self.memory_curve()
        # table order = the issue's
        order = ["forward vs", "forward+backward", "decode", "extra peak", "forward throughput",
                 "threads", "forward cost vs Tk", "forward cost vs H"]
        self.rows.sort(key=lambda r: next(
            (i for i, o in enumerate(order) if o in r["figure"]), len(order)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 1 repeat (seconds)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", default=None, help="directory for cpu.json and cpu.md "
                        "(default bench/results/)")
    parser.add_argument("--plots", default=None, help="directory for the PNG plots (default "
                        "docs/img/ with the default --out, else --out)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-curves", action="store_true", help="skip the Tk/H sweeps")
    parser.add_argument("--readme", default=None,
                        help="also write the README results section here (e.g. docs/results.md)")
    parser.add_argument("--isa", default=None, choices=["auto", "avx512", "avx2", "neon", "scalar"],
                        help="C++ path to measure (sets ATTNKERN_CPU_ISA; default: as the "
                        "environment says, else the best this CPU has)")
    args = parser.parse_args(argv)
    if args.isa is not None:
        os.environ["ATTNKERN_CPU_ISA"] = args.isa
        if "attnkern" in sys.modules:  # imported already (tests): apply it now
            sys.modules["attnkern._cpu"].select(args.isa)

    if args.smoke:
        os.environ["ATTNKERN_BENCH_SMOKE"] = "1"
        os.environ.setdefault("ATTNKERN_BENCH_COMPILE_BACKEND", "eager")
    out_dir = args.out or os.path.join(BENCH_DIR, "results")
    plot_dir = args.plots or (os.path.join(REPO_ROOT, "docs", "img") if args.out is None
                              else out_dir)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(plot_dir, exist_ok=True)

    import torch

    from bench.common import MEMORY_METHOD

    torch.set_num_threads(args.threads)
    cfg = SMOKE if args.smoke else QUICK if args.quick else FULL
    t_start = time.perf_counter()
    report: dict[str, Any] = {"env": environment(args.threads), "smoke": args.smoke,
                              "quick": args.quick}
    from bench.baselines import compile_backend

    report["config"] = {**cfg.__dict__, "compile_backend": compile_backend(),
                        "shapes": {n: s.label for n, s in Runner(cfg, args.threads).shapes.items()}}
    runner = Runner(cfg, args.threads)
    if not runner.has_cpp:
        log("attnkern._C is not built: the attnkern columns read n/a "
            "(build: pip install --no-build-isolation -e .)")
    runner.run(skip_curves=args.no_curves)
    report["rows"] = runner.rows
    report["timings"] = runner.timings
    report["extra"] = runner.extra
    report["method"] = METHOD + [MEMORY_METHOD]
    report["env"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["env"]["wall_s"] = round(time.perf_counter() - t_start, 1)

    md = markdown(report)
    with open(os.path.join(out_dir, "cpu.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    with open(os.path.join(out_dir, "cpu.md"), "w") as f:
        f.write(md)
    written = plots(report, plot_dir)
    if args.readme:
        with open(args.readme, "w") as f:
            f.write(readme_fragment(report, written))
    print(md)
    log(f"wrote {os.path.join(out_dir, 'cpu.json')}, cpu.md and {len(written)} plots to "
        f"{plot_dir} in {report['env']['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
