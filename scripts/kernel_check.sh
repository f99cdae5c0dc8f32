#!/usr/bin/env bash
# Builds csrc/standalone/kernel_check.cpp with the kernels of two ISA paths (no libtorch:
# torch's headers only) and runs it: forward and backward, float and double, against a naive
# double reference.
#   bash scripts/kernel_check.sh            # x86-64: scalar + avx2, run natively
#   bash scripts/kernel_check.sh aarch64    # scalar + neon, cross-compiled with Debian's
#                                           # g++-aarch64-linux-gnu, run under qemu-aarch64
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
target=${1:-native}
out=$(mktemp -d /tmp/attnkern_kcheck.XXXXXX)
trap 'rm -rf "$out"' EXIT
inc=$($PY -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
flags="-std=c++17 -O3 -fopenmp -ffp-contract=fast -fno-math-errno -mtune=generic -Wall -Wno-maybe-uninitialized"
if [ "$target" = aarch64 ]; then
    CXX=${CXX:-aarch64-linux-gnu-g++}
    flags=${flags/-mtune=generic/}
    isas=("scalar 0 " "neon 3 ")
    run=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
else
    CXX=${CXX:-g++}
    isas=("scalar 0 " "avx2 1 -mavx2 -mfma")
    run=()
fi
objs=()
for spec in "${isas[@]}"; do
    read -r name id isa_flags <<<"$spec"
    for src in csrc/kernels/*.cpp; do
        o="$out/${name}_$(basename "$src" .cpp).o"
        # shellcheck disable=SC2086
        $CXX $flags $isa_flags -DATTNKERN_ISA="$name" -DATTNKERN_ISA_ID="$id" $inc -c "$src" -o "$o" &
        objs+=("$o")
    done
done
# shellcheck disable=SC2086
$CXX $flags $inc -c csrc/standalone/kernel_check.cpp -o "$out/main.o" &
wait
$CXX -fopenmp "$out/main.o" "${objs[@]}" -o "$out/kernel_check"
"${run[@]}" "$out/kernel_check"
