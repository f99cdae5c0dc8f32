#!/usr/bin/env bash
# The whole test suite (the README's second Quick start command; CI runs it too).
#  1. lint and type-check (ruff, mypy)
#  2. pytest tests/            : reference, C++, module, ops, ecosystem, demo, bench smoke, ...
#  3. TRITON_INTERPRET=1 pytest tests/test_triton*.py + the edge-case and hypothesis files
#     (their `backend` fixture is triton-interpreter there): the Triton kernels on CPU tensors,
#     in a separate invocation so the interpreter setting never leaks into step 2.
# Where CUDA is present, step 2 runs the Triton tests on the GPU as well.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh

echo "== ruff + mypy"
$PY -m ruff check attnkern tests bench
$PY -m mypy attnkern

echo "== pytest (main suite)"
$PY -m pytest tests -p no:cacheprovider "$@"

echo "== pytest (Triton kernels under TRITON_INTERPRET=1)"
TRITON_INTERPRET=1 $PY -m pytest -p no:cacheprovider tests/test_triton*.py \
    tests/test_edge_cases.py tests/test_hypothesis.py "$@"
