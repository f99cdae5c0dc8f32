"""Distributed training with attnkern's modules (issue 23, deliverable 5): a decoder loop with
LocationSensitiveAttention (explicit state, C++ weight-gradient stores) and
AdditiveAttention, trained for 2 SGD steps under DistributedDataParallel and FSDP2
(``fully_shard``) with gloo on CPU, launched by torchrun; gradients of both steps and the
parameters after them equal single-process training on the whole batch. Then repeated DDP
runs that must each exit within a timeout (a hang at teardown was seen once).

``ATTNKERN_DIST_RUNS=20`` runs the teardown loop 20 times (default 2, to keep the suite fast).
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_dist_worker.py"
TIMEOUT_S = 60


def _worker_module():
    spec = importlib.util.spec_from_file_location("_dist_worker", WORKER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(mode: str, out: Path, nproc: int = 2) -> float:
    """Run the worker under torchrun; fail on a non-zero exit or on TIMEOUT_S (a hang).
    Returns the wall time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--nnodes=1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{_free_port()}", str(WORKER),
           "--mode", mode, "--out", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:  # the child group is killed by subprocess.run
        pytest.fail(f"torchrun --mode {mode} did not exit within {TIMEOUT_S} s (hang?):\n"
                    f"{e.stderr!s:.4000}")
    assert proc.returncode == 0, f"torchrun --mode {mode} failed:\n{proc.stderr[-4000:]}"
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def single():
    """Single-process training on the whole batch, in this process."""
    torch.set_num_threads(1)
    return _worker_module().train("single", 0, 1)


def _check_against_single(out: Path, mode: str, single) -> None:
    for rank in range(2):
        got = torch.load(out / f"{mode}{rank}.pt")
        assert got["names"] == single["names"]
        assert len(got["grads"]) == len(single["grads"]) == 2 * len(single["names"])
        names = single["names"] * 2
        for name, g, e in zip(names, got["grads"], single["grads"]):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=lambda m, n=name, r=rank: (
                f"{mode} rank {r} grad of {n}: {m}"))
        for name, p, e in zip(single["names"], got["params"], single["params"]):
            torch.testing.assert_close(p, e, atol=1e-5, rtol=1e-5, msg=lambda m, n=name, r=rank: (
                f"{mode} rank {r} param {n} after 2 steps: {m}"))


def test_single_process_gradients_reach_every_parameter(single):
    # Every parameter gets a non-zero gradient (the LSA weights through the C++ stores), so
    # the comparisons below cover them all.
    for name, g in zip(single["names"] * 2, single["grads"]):
        assert g.abs().sum() > 0, name


def test_a_rank_alone_differs_from_single_process(single):
    # Without the allreduce a rank's gradients (its half of the batch) are far from the
    # whole batch's, the LSA weights fed by the C++ stores included: the comparisons below
    # can fail.
    alone = _worker_module().train("local", 0, 2)
    for name, g, e in zip(single["names"], alone["grads"], single["grads"]):
        assert (g - e).abs().max() > 1e-4, name


def test_ddp_matches_single_process(tmp_path, single):
    # DDP allreduces in hooks on each parameter's AccumulateGrad: the stores' dW arrives in
    # one piece when autograd reaches the weight, so the hook sees the final gradient (a
    # hook that fired early would allreduce a partial one and this would differ).
    torchrun("ddp", tmp_path)
    _check_against_single(tmp_path, "ddp", single)


def test_fsdp2_matches_single_process(tmp_path, single):
    torchrun("fsdp", tmp_path)
    _check_against_single(tmp_path, "fsdp", single)


def test_repeated_ddp_runs_exit_cleanly(tmp_path):
    runs = int(os.environ.get("ATTNKERN_DIST_RUNS", "2"))
    times = []
    for i in range(runs):
        out = tmp_path / str(i)
        out.mkdir()
        times.append(torchrun("ddp", out))
        assert (out / "ddp0.pt").exists() and (out / "ddp1.pt").exists()
    print(f"{runs} DDP runs: max {max(times):.1f} s, median {sorted(times)[runs // 2]:.1f} s")
