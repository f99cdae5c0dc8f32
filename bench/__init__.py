"""attnkern's benchmarks, a package: run each script as ``python -m bench.<name>`` (or
``python bench/<name>.py``, see ``bench/_bootstrap.py``) from the repository root.

- ``shapes``: the one table of problem sizes (CPU, smoke, GPU).
- ``baselines``: the PyTorch baselines and ``BACKENDS``, every backend by name.
- ``common``: inputs, the timed call, peak memory on CPU; ``cpu_timing`` / ``gpu_timing``:
  the timer of each device.
- ``run`` (CLI + measurement), ``report`` (tables, Markdown), ``plots``: the CPU comparison
  with goals; ``memory``: its peak-memory child process.
- ``decoders``: real decoder loops; ``percall``: the per-call cost of one tiny decoder step
  (checks, dispatch, autograd); ``gpu``, ``gpu_summary``, ``gpu_check.sh``,
  ``gpu_profile``, ``gpu_tune``, ``kernel_report``: the Triton backend on (or without) a GPU.
- ``test_bench`` + ``conftest``: the pytest-benchmark suite (``pytest bench/ --benchmark-only``).
"""

import os

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
