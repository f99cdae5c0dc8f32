"""Build attnkern._C with AddressSanitizer + UndefinedBehaviorSanitizer into a given
directory, without touching the in-place build of the working tree.

    python tools/build_sanitized.py OUT_DIR [--portable]

Compiles csrc/*.cpp with the production ISA flags (-march=native, so the AVX-512 paths are
the ones checked; --portable drops it to check the generic paths) plus
-fsanitize=address,undefined, and writes OUT_DIR/_C<ext suffix>. Used by tools/sanitize.sh.
"""

from __future__ import annotations

import argparse
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
       "-fno-omit-frame-pointer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--portable", action="store_true", help="no -march=native")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    cflags = ["-O1", "-g", "-fopenmp", *SAN]
    if not args.portable:
        cflags.append("-march=native")
    # Build only (setuptools, not cpp_extension.load): loading an ASan library into a
    # process that did not preload the ASan runtime aborts.
    os.chdir(ROOT)  # sources relative to the repository, as setup.py has them
    setup(
        name="attnkern-sanitized",
        ext_modules=[CppExtension("_C", sorted(glob.glob("csrc/*.cpp")),
                                  extra_compile_args={"cxx": cflags},
                                  extra_link_args=["-fopenmp", *SAN])],
        cmdclass={"build_ext": BuildExtension},
        script_args=["-q", "build_ext", "--build-lib", out,
                     "--build-temp", os.path.join(out, "build")],
    )
    print(glob.glob(os.path.join(out, "_C*.so"))[0])


if __name__ == "__main__":
    main()
