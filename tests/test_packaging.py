"""The sdist holds everything needed to build attnkern._C (every csrc source and header)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sdist_holds_every_source_and_header(tmp_path):
    # from a clean copy: an existing attnkern.egg-info/SOURCES.txt would add its files anyway
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".*cache", ".hypothesis",
        ".venv", "demo_out", "results", "img"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
                   cwd=src, check=True, capture_output=True, timeout=300)
    (archive,) = glob.glob(str(tmp_path / "attnkern-*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {os.path.relpath(p, REPO) for pattern in ("csrc/*.cpp", "csrc/*.h", "csrc/*/*.cpp",
                                                       "csrc/*/*.h")
              for p in glob.glob(os.path.join(REPO, pattern))}
    assert {"csrc/kernels/api.h", "csrc/kernels/vec.h", "csrc/isa.cpp"} <= needed
    needed |= {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "attnkern/__init__.py",
               "attnkern/_cpu.py", "attnkern/ops.py", "attnkern/reference.py",
               "attnkern/demo/words.txt"}
    assert needed <= names, sorted(needed - names)
    assert not [n for n in names if n.endswith(".so")]
