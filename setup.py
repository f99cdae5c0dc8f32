"""Builds attnkern._C, the C++ CPU kernels (registered as TORCH_LIBRARY_IMPL(attnkern, CPU)).

    pip install --no-build-isolation -e .        # or: python setup.py build_ext --inplace
    pip wheel --no-build-isolation .             # a wheel that runs on any x86-64 CPU

One build holds every ISA path (PyTorch's CPU_CAPABILITY scheme): csrc/kernels/*.cpp are
compiled once per ISA, each time with only that ISA's flags, generic tuning and their own
namespace (attnkern::scalar, attnkern::avx2, attnkern::avx512; attnkern::neon on aarch64);
the glue (csrc/*.cpp: op registration, checks, dispatch) is built for the baseline ISA.
attnkern/_cpu.py picks the path at import (ATTNKERN_CPU_ISA forces one).

Environment:
  ATTNKERN_NATIVE=1       add -march=native to every file (a local build for this CPU only)
  ATTNKERN_CXXFLAGS="..." extra flags for every file, last (CI: -mtune=sapphirerapids)
  ATTNKERN_SANITIZE=1     ASan + UBSan build (tools/sanitize.sh builds and tests it in a scratch copy)
"""

import glob
import os
import platform
import shlex

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

# -Wno-maybe-uninitialized: GCC 12 warns inside its own AVX-512 headers.
base_flags = ["-O3", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno",
              "-Wno-maybe-uninitialized", "-mtune=generic"]
link_flags = ["-fopenmp"]
if os.environ.get("ATTNKERN_SANITIZE"):
    base_flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp",
                  "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    link_flags += ["-fsanitize=address,undefined"]
native = os.environ.get("ATTNKERN_NATIVE", "0") not in ("", "0")
# A native build's paths may all use this CPU's instructions (attnkern._C.native_build).
tail_flags = (["-march=native", "-DATTNKERN_NATIVE_BUILD=1"] if native else []) + shlex.split(
    os.environ.get("ATTNKERN_CXXFLAGS", ""))

# (name, id, flags) per ISA path; ids match ATTNKERN_ISA_* in csrc/kernels/common.h.
machine = platform.machine().lower()
if machine in ("x86_64", "amd64"):
    ISAS = [("scalar", 0, []),
            ("avx2", 1, ["-mavx2", "-mfma"]),
            ("avx512", 2, ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw",
                           "-mavx512vl"])]
elif machine in ("aarch64", "arm64"):
    ISAS = [("scalar", 0, []), ("neon", 3, [])]  # Advanced SIMD is baseline on ARMv8-A
else:
    ISAS = [("scalar", 0, [])]

KERNEL_SOURCES = sorted(glob.glob("csrc/kernels/*.cpp"))
HEADERS = sorted(glob.glob("csrc/*.h") + glob.glob("csrc/kernels/*.h"))


class BuildExt(BuildExtension):
    """Compiles csrc/kernels once per ISA (own flags and namespace), then links them with
    the glue into one extension."""

    def build_extension(self, ext):
        objects = []
        for name, isa_id, flags in ISAS:
            # BuildExtension has already added torch's flags (ABI, extension name) to ext.
            cxx = list(ext.extra_compile_args["cxx"]) + flags + [
                f"-DATTNKERN_ISA={name}", f"-DATTNKERN_ISA_ID={isa_id}"] + tail_flags
            objects += self.compiler.compile(
                KERNEL_SOURCES, output_dir=os.path.join(self.build_temp, "isa_" + name),
                include_dirs=ext.include_dirs, extra_postargs={"cxx": cxx},
                depends=HEADERS)
        ext.extra_objects = objects
        super().build_extension(ext)


setup(
    ext_modules=[
        CppExtension(
            "attnkern._C",
            sorted(glob.glob("csrc/*.cpp")),  # glue only: baseline ISA
            extra_compile_args={"cxx": base_flags + tail_flags},
            extra_link_args=link_flags,
            depends=HEADERS + KERNEL_SOURCES,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
