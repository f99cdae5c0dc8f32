#!/usr/bin/env bash
# Idempotent environment setup for a fresh machine of this kind (CPU, Python 3.11):
# installs the pinned CPU PyTorch and the tools, then builds attnkern._C if it is missing or
# older than its sources. Safe to run again: a second run installs and builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
need=()
$PY -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
    || need+=("torch==2.13.0")
for mod_pkg in triton:triton==3.9.0 pytest:pytest pytest_benchmark:pytest-benchmark \
               hypothesis:hypothesis matplotlib:matplotlib tqdm:tqdm numpy:numpy \
               ruff:ruff mypy:mypy setuptools:setuptools wheel:wheel \
               onnx:onnx==1.23.2 onnxscript:onnxscript==0.7.2 onnxruntime:onnxruntime==1.32.0; do
    mod=${mod_pkg%%:*}; pkg=${mod_pkg#*:}
    $PY -c "import $mod" 2>/dev/null || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    $PY -m pip install -q --disable-pip-version-check "${need[@]}"
fi

so=$(ls attnkern/_C*.so 2>/dev/null | head -n 1 || true)
stale=1
if [ -n "$so" ] && $PY -c "import attnkern._C" 2>/dev/null; then
    stale=0
    for src in $(find csrc -type f) setup.py; do
        [ "$src" -nt "$so" ] && stale=1
    done
fi
if [ $stale = 1 ]; then
    echo "setup: building attnkern._C (about a minute)"
    $PY -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
fi
$PY -c "import attnkern._C" || { echo "setup: attnkern._C failed to import" >&2; exit 1; }
