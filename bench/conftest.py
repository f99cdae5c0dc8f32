"""pytest-benchmark suite settings: `pytest bench/ --benchmark-only`.

`--smoke` (or ATTNKERN_BENCH_SMOKE=1) shrinks the shapes and runs each benchmark once, so the
suite executes in seconds (the CI smoke test); in smoke mode torch.compile uses dynamo's
"eager" backend unless ATTNKERN_BENCH_COMPILE_BACKEND says otherwise.
"""

import os

# bench/ is a package: pytest imports this file as bench.conftest, with the repository root
# (the first directory above without an __init__.py) first on sys.path, so `bench.*` and
# this checkout's attnkern import as they are.


def pytest_addoption(parser):
    parser.addoption("--smoke", action="store_true",
                     help="tiny shapes, one round each: check that the benchmarks execute")
    parser.addoption("--bench-threads", type=int, default=2,
                     help="torch.set_num_threads for the benchmarks (default 2)")


def pytest_configure(config):
    if config.getoption("--smoke", default=False):
        os.environ["ATTNKERN_BENCH_SMOKE"] = "1"
    if os.environ.get("ATTNKERN_BENCH_SMOKE", "0") not in ("", "0"):
        os.environ.setdefault("ATTNKERN_BENCH_COMPILE_BACKEND", "eager")
    import torch

    torch.set_num_threads(config.getoption("--bench-threads", default=2))
