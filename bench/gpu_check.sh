#!/usr/bin/env bash
# One-command GPU check of the Triton backend, <= 8.5 minutes on an H100/H200:
#   0. builds attnkern._C in place if it does not import (the op schemas and autograd live
#      there; a lent machine starts bare, with its own Python and torch),
#   1. bench/gpu.py: TRAIN/LONG/MEM/DECODE, float32 and bfloat16, forward and
#      forward+backward, against eager and torch.compile, with peak memory,
#   2. bench/gpu_decode.py: the tacotron2 attention and torchaudio's Tacotron2 decoder loop,
#      original vs attnkern, eager and captured as one CUDA graph (#23's GPU goals),
#   3. the Triton test files on CUDA (real kernels), then every other GPU-marked test
#      (capture/replay, DDP, ecosystem), with what time is left,
#   4. a short table (bench/gpu_summary.py, the issue's speed goals) printed last.
# Each step has its own time limit, so the script always ends with whatever table ran.
#
#   bash bench/gpu_check.sh [OUT_DIR]     # default OUT_DIR: gpu-check
#   bash bench/gpu_check.sh --dry-run     # print the steps, run nothing (no GPU needed)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY=1
    shift
fi
OUT="${1:-gpu-check}"
PY="${PYTHON:-$(command -v python || command -v python3)}"  # the H200 image has python3 only
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # real kernels
status=0

step() {  # step LIMIT_S CMD...: run CMD under a time limit; a failure fails the script
    local limit=$1
    shift
    echo "== [$(date -u +%H:%M:%S)] $* (limit ${limit}s)"
    if ((DRY)); then
        return 0
    fi
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local rc=$?
    if ((rc != 0)); then
        echo "!! exit $rc: $*"
        status=1
    fi
}

if ((!DRY)); then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" || exit 2
fi
mkdir -p "$OUT"

if ((DRY)) || ! "$PY" -c "import attnkern._C" 2>/dev/null; then
    step 150 env MAX_JOBS="$(nproc)" "$PY" setup.py -q build_ext --inplace
fi

# Timings first (never measured before 2026-12-04); each step saves as it goes.
# torch.compile baselines compile once per (shape, dtype, mode): 14 graphs here.
step 150 "$PY" bench/gpu.py --quick --shapes TRAIN,LONG,MEM,DECODE \
    --baselines eager,compile --out "$OUT"
step 100 "$PY" bench/gpu_decode.py --out "$OUT"
step 70 "$PY" -m pytest -q -p no:cacheprovider tests/test_triton.py \
    tests/test_triton_factorised.py tests/test_edge_cases.py tests/test_hypothesis.py -k triton
step 45 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ \
    --ignore=tests/test_triton.py --ignore=tests/test_triton_factorised.py
if ((DRY)); then
    echo "== $PY bench/gpu_summary.py $OUT/gpu.json"
    exit 0
fi
echo
if [[ -f "$OUT/gpu.json" ]]; then
    "$PY" bench/gpu_summary.py "$OUT/gpu.json" | tee "$OUT/summary.md"
else
    echo "!! no $OUT/gpu.json: the benchmark step produced nothing"
    status=1
fi
exit "$status"
