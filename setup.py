"""Builds attnkern._C, the C++ CPU kernels (registered as TORCH_LIBRARY_IMPL(attnkern, CPU)).

    pip install --no-build-isolation -e .

ATTNKERN_NATIVE=0 drops -march=native (for a wheel that must run on other CPUs).
"""

import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

native = os.environ.get("ATTNKERN_NATIVE", "1") != "0"
# -Wno-maybe-uninitialized: GCC 12 warns inside its own AVX-512 headers.
cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno",
             "-Wno-maybe-uninitialized"]
if native:
    cxx_flags.append("-march=native")
if os.environ.get("ATTNKERN_SANITIZE"):
    cxx_flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fopenmp",
                 "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]

setup(
    ext_modules=[
        CppExtension(
            "attnkern._C",
            sorted(glob.glob("csrc/*.cpp")),
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"] + (["-fsanitize=address,undefined"]
                                           if os.environ.get("ATTNKERN_SANITIZE") else []),
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
