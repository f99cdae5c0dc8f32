"""The one place bench/ touches ``sys.path``: lets ``python bench/<name>.py`` run a script
as ``python -m bench.<name>`` would.

Run as a file, a script has its own directory (bench/) first on ``sys.path``, so
``import bench`` fails and the attnkern found may not be this checkout's. Each script starts
with::

    if __name__ == "__main__" and not __package__:  # python bench/<name>.py
        import _bootstrap  # noqa: F401

which puts the repository root first instead (bench/ itself comes off the path, so every
import goes through the package: ``bench.common``, never a second copy as ``common``).
"""

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH_DIR)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _BENCH_DIR]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
