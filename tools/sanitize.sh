#!/usr/bin/env bash
# Build attnkern._C with AddressSanitizer + UndefinedBehaviorSanitizer and run the C++
# backend's tests under it. Never touches the in-place build of the working tree: the
# package and tests are copied to a scratch directory whose attnkern/ holds the sanitized
# _C, and pytest runs there (so `import attnkern._C` can only find the sanitized one).
#
#   bash tools/sanitize.sh                 # AVX-512 (-march=native) paths, ~10 min here
#   SANITIZE_PORTABLE=1 bash tools/sanitize.sh   # generic (no -march=native) paths
#   SANITIZE_DIR=/tmp/x bash tools/sanitize.sh -x   # extra args go to pytest
#
# Any ASan/UBSan report aborts the process (nonzero exit, report on stderr). Tests that run
# child processes (tests/test_validation.py direct op calls, the memory test) inherit the
# sanitizer environment, so the children are checked too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${SANITIZE_DIR:-$(mktemp -d /tmp/attnkern-sanitize.XXXXXX)}
SHADOW=$WORK/repo
start=$(date +%s)

echo "== sanitize: scratch tree $SHADOW"
rm -rf "$SHADOW"
mkdir -p "$SHADOW"
cp "$ROOT/pyproject.toml" "$SHADOW/"
cp -r "$ROOT/attnkern" "$ROOT/tests" "$SHADOW/"
find "$SHADOW" \( -name '__pycache__' -o -name '*.so' \) -prune -exec rm -rf {} +

echo "== sanitize: building _C with -fsanitize=address,undefined"
portable=()
[[ -n "${SANITIZE_PORTABLE:-}" ]] && portable=(--portable)
lib=$(ls "$WORK"/lib/_C*.so 2>/dev/null | head -1 || true)
if [[ -n "$lib" && -z "$(find "$ROOT/csrc" "$ROOT/tools/build_sanitized.py" -newer "$lib")" \
      && -z "${SANITIZE_PORTABLE:-}" ]]; then
    echo "   reusing $lib (no source is newer)"
else
    $PY "$ROOT/tools/build_sanitized.py" "$WORK/lib" "${portable[@]}" >"$WORK/build.log" 2>&1 \
        || { tail -50 "$WORK/build.log"; exit 1; }
fi
cp "$WORK"/lib/_C*.so "$SHADOW/attnkern/"
echo "   built in $(( $(date +%s) - start )) s"

LIBASAN=$(g++ -print-file-name=libasan.so)
[[ -f "$LIBASAN" ]] || { echo "libasan not found (g++ -print-file-name=libasan.so)"; exit 1; }
# libstdc++ too: python is a C program, so without it ASan cannot resolve the real
# __cxa_throw and the first TORCH_CHECK that throws aborts ("real___cxa_throw != 0").
LIBSTDCXX=$(realpath "$(g++ -print-file-name=libstdc++.so)")
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
# Python and torch leak by design at exit; torch's own libraries are not instrumented.
# Reports also go to files (pytest captures stderr, and an abort loses the capture).
rm -f "$WORK"/asan.* "$WORK"/ubsan.*
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:log_path=$WORK/asan:${ASAN_OPTIONS:-}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$WORK/ubsan:${UBSAN_OPTIONS:-}
export PYTHONPATH=$SHADOW
export PYTHONDONTWRITEBYTECODE=1
cd "$SHADOW"

# Prove the tests will load the sanitized library (it links libasan) before running them.
$PY - <<'EOF'
import attnkern, attnkern._C as C
from attnkern import ops
assert ops.HAS_CPP, ops.CPP_IMPORT_ERROR
maps = open("/proc/self/maps").read()
assert C.__file__.startswith(attnkern.__path__[0]) and "/repo/attnkern/" in C.__file__, C.__file__
assert "libasan" in maps, "ASan runtime not loaded"
print("   sanitized extension:", C.__file__)
EOF

tests=(tests/test_edge_cases.py tests/test_hypothesis.py tests/test_validation.py)
[[ -f tests/test_cpp.py ]] && tests=(tests/test_cpp.py "${tests[@]}")
echo "== sanitize: pytest ${tests[*]} (C++ backend)"
t0=$(date +%s)
# test_cpp.py is all C++; elsewhere select the cpp-parametrized cases and the direct op calls.
rc=0
$PY -m pytest -p no:cacheprovider -q "${tests[@]}" -k "cpp or direct_op" "$@" || rc=$?
reports=$(ls "$WORK"/asan.* "$WORK"/ubsan.* 2>/dev/null || true)
if [[ -n "$reports" ]]; then
    echo "== sanitize: REPORTS"
    for f in $reports; do echo "--- $f"; head -80 "$f"; done
    exit 1
fi
[[ $rc -eq 0 ]] || { echo "== sanitize: pytest failed (rc=$rc), no sanitizer report"; exit $rc; }
echo "== sanitize: no ASan/UBSan report; tests $(( $(date +%s) - t0 )) s, total $(( $(date +%s) - start )) s"
