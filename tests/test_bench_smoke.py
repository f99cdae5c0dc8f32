"""The benchmarks execute (seconds-long smoke run; their figures are not checked).

Runs, in subprocesses so nothing leaks into this suite's settings:
``pytest bench/ --benchmark-only --smoke`` and ``python bench/run.py --smoke --out TMP``,
then checks the JSON and Markdown that run.py wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ATTNKERN_BENCH_SMOKE"] = "1"
    env.setdefault("ATTNKERN_BENCH_COMPILE_BACKEND", "eager")  # no Inductor codegen here
    env.pop("ATTNKERN_BACKEND", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def test_pytest_benchmark_suite_smoke(tmp_path):
    report = tmp_path / "bench.json"
    proc = _run(["-m", "pytest", "bench/", "--benchmark-only", "--smoke", "-p", "no:cacheprovider",
                 "-q", f"--benchmark-json={report}"], timeout=120)
    assert " passed" in proc.stdout
    data = json.loads(report.read_text())
    names = {b["name"] for b in data["benchmarks"]}
    # The baselines always run; each shape and mode is there, ids readable.
    for case in ("TRAIN-B2-Tq8-Tk8-H16-Dv16-fwd", "TRAIN-B2-Tq8-Tk8-H16-Dv16-fwdbwd",
                 "DECODE-B2-step-Tk16-H16-Dv24-fwd", "MEM-B2-Tq16-Tk16-H32-Dv16-fwdbwd"):
        for backend in ("eager", "compile"):
            assert f"test_bench[{case}-{backend}]" in names
    for b in data["benchmarks"]:
        assert b["stats"]["median"] > 0
        assert b["extra_info"]["elements"] > 0


def test_run_py_smoke(tmp_path):
    _run(["bench/run.py", "--smoke", "--out", str(tmp_path), "--readme",
          str(tmp_path / "results.md")], timeout=120)
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert report["smoke"] is True
    for key in ("date_utc", "cpu", "threads", "torch", "git_commit", "command"):
        assert key in report["env"]
    assert report["env"]["threads"] == 2
    figures = [r["figure"] for r in report["rows"]]
    assert len(figures) == 8
    for needle in ("forward vs torch.compile", "forward+backward vs torch.compile",
                   "decode step", "extra peak memory", "throughput", "threads",
                   "vs Tk", "vs H"):
        assert any(needle in f for f in figures), (needle, figures)
    for row in report["rows"]:
        for key in ("ours", "baseline", "ratio", "goal", "pass", "baseline_label"):
            assert key in row
    # The baselines are measured whether or not the C++ extension is built.
    train = report["timings"]["TRAIN-fwd"]["backends"]
    assert train["eager"]["median_s"] > 0 and train["compile"]["median_s"] > 0
    mem = report["extra"]["memory_MEM"]["backends"]
    assert mem["eager"]["profiler_bytes"] > 0
    assert set(report["extra"]["time_vs_tk"]["seconds"]) >= {"eager", "compile"}
    assert report["extra"]["memory_vs_tk"]["bytes"]["eager"]
    md = (tmp_path / "cpu.md").read_text()
    assert "| figure |" in md and "decode step latency" in md
    for png in ("bench_time_vs_tk.png", "bench_time_vs_h.png", "bench_memory_vs_tk.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (tmp_path / "results.md").read_text()
    assert "## Results (CPU)" in readme and "bench_time_vs_tk.png" in readme


def test_percall_smoke():
    from attnkern import ops

    if not ops.HAS_CPP:
        pytest.skip(f"attnkern._C not built: {ops.CPP_IMPORT_ERROR}")
    proc = _run(["bench/percall.py", "--smoke"], timeout=120)
    for entry in ("no_grad functional", "no_grad PreparedKeys", "op alone", "fwd+bwd",
                  "trivial autograd op", "load average"):
        assert entry in proc.stdout, (entry, proc.stdout)


def test_toolkits_bench_smoke():
    """bench/toolkits.py runs every toolkit case (a toolkit not installed is a 'skipped' row)."""
    proc = _run(["bench/toolkits.py", "--smoke"], timeout=300)
    for case in ("ESPnet AttLoc", "ESPnet AttLoc (Tacotron 2 sizes)", "ESPnet AttMultiHeadAdd",
                 "SpeechBrain LocationAwareAttention",
                 "OpenNMT GlobalAttention(mlp)", "ESPnet Decoder (AttLoc), whole",
                 "SpeechBrain AttentionalRNNDecoder (location), whole"):
        assert f"| {case} |" in proc.stdout, (case, proc.stdout)
    assert "load" in proc.stdout


def test_beam_bench_smoke():
    """bench/beam.py: the three ways at each beam (or a 'skipped' row without OpenNMT-py)."""
    proc = _run(["bench/beam.py", "--smoke"], timeout=120)
    assert "load" in proc.stdout
    if "skipped" not in proc.stdout:
        for way in ("OpenNMT tiled", "attnkern tiled", "attnkern shared"):
            assert f"| 5 | {way} |" in proc.stdout, (way, proc.stdout)


def test_gpu_bench_table_row_and_cpu_refusal():
    # bench/gpu.py needs CUDA to run; its row formatting (ratios, throughput, a failed
    # backend) is checked here so the script does not rot on CPU-only CI.
    from bench import gpu  # bench/ is a package; the repository root is on sys.path
    row = {"shape": "T", "dims": [2, 4, 8, 16, 8], "dtype": "float32", "mode": "fwd",
           "results": {"triton": {"ms": 0.5, "peak_bytes": 2**20},
                       "eager": {"ms": 2.0, "peak_bytes": 8 * 2**20},
                       "eager-mm": {"error": "OutOfMemoryError"},
                       "compile": {"ms": 1.0, "peak_bytes": 4 * 2**20},
                       "compile-mm": {"ms": 1.5, "peak_bytes": 2**20}}}
    line = gpu.table_row(row)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["T B2-Tq4-Tk8-H16-Dv8", "float32", "fwd"]
    assert cells[3:8] == ["0.500 ms", "2.000 ms", "1.000 ms", "4.00x", "2.00x"]
    assert cells[8] == f"{2 * 4 * 8 * 16 / 0.5e-3 / 1e9:.0f}"
    assert cells[9:] == ["1.0 MiB", "8.0 MiB"]
    row["results"]["triton"] = {"error": "RuntimeError: boom"}
    assert "RuntimeError: boom" in gpu.table_row(row)
    if not gpu.torch.cuda.is_available():
        proc = subprocess.run([sys.executable, "bench/gpu.py", "--quick"], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "needs CUDA" in proc.stderr


def test_e2e_bench_smoke():
    """bench/e2e.py: torchaudio's Tacotron2 infer(), original / attnkern / no attention, with
    the decode step compiled too (or 'skipped' without torchaudio)."""
    proc = _run(["bench/e2e.py", "--smoke", "--compile"], timeout=600)
    assert "load" in proc.stdout
    if "skipped" not in proc.stdout:
        for row in ("| 1 | eager |", "| 8 | eager |", "| 8 | compiled step |",
                    "max abs difference"):
            assert row in proc.stdout, (row, proc.stdout)


def test_normalisers_bench_smoke():
    """bench/normalisers.py: every entry of the score-bias / sigmoid-normaliser decision."""
    from attnkern import ops

    if not ops.HAS_CPP:
        pytest.skip(f"attnkern._C not built: {ops.CPP_IMPORT_ERROR}")
    proc = _run(["bench/normalisers.py", "--smoke"], timeout=120)
    for entry in ("fused softmax + context", "fused softmax, weights only", "context bmm",
                  "sigmoid as built", "forward attention as built", "load at the end"):
        assert entry in proc.stdout, (entry, proc.stdout)


def test_gpu_decode_bench_loops_on_cpu(monkeypatch):
    # bench/gpu_decode.py needs CUDA; its loops (the three attention variants, torchaudio's
    # decoder loop with and without replace_attention) run here on CPU with a one-call
    # timer, so a loop that computes something else than the original fails on CPU CI.
    from bench import gpu_decode as gd
    monkeypatch.setattr(gd, "DEV", "cpu")
    monkeypatch.setattr(gd, "event_ms", lambda fn, warmup=0, rep=0: 1.0)
    monkeypatch.setattr(gd.torch.cuda, "synchronize", lambda: None)

    def no_graphs(fn):
        raise RuntimeError("no CUDA graphs on CPU")
    monkeypatch.setattr(gd, "graphed", no_graphs)
    att = gd.attention_part(3, 1, B=2, T=9)
    assert att["max_abs_diff drop-in"] < 1e-5 and att["max_abs_diff state"] < 1e-5
    assert set(att["fwd+bwd eager"]) == {"original", "drop-in", "state"}
    assert all(v == 1.0 for v in att["fwd+bwd eager"].values())
    assert "no CUDA graphs" in att["capture error state"]
    rows = gd.table([att])
    assert "| fwd+bwd eager | state | 1.000 | 1.00x |" in "\n".join(rows)
    dec = gd.decoder_part(2, 2, 1, tokens=7)  # skips where torchaudio (a test extra) is absent
    assert dec["max_abs_diff mel"] < 1e-4
    assert set(dec["decode loop eager"]) == {"original", "attnkern"}
    if not gd.torch.cuda.is_available():
        proc = subprocess.run([sys.executable, "bench/gpu_decode.py"], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "needs CUDA" in proc.stderr
