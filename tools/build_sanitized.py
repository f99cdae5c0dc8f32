"""Build attnkern._C with AddressSanitizer + UndefinedBehaviorSanitizer into a given
directory, without touching the in-place build of the working tree.

    python tools/build_sanitized.py OUT_DIR [--portable]

Runs setup.py's own build (every ISA path, the glue at the baseline) with
ATTNKERN_SANITIZE=1 (-fsanitize=address,undefined) and, unless --portable, ATTNKERN_NATIVE=1,
into scratch directories, and writes OUT_DIR/_C<ext suffix>. Used by tools/sanitize.sh.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--portable", action="store_true", help="without ATTNKERN_NATIVE=1")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    env = dict(os.environ, ATTNKERN_SANITIZE="1")
    env["ATTNKERN_NATIVE"] = "0" if args.portable else "1"
    # Build only (not cpp_extension.load): loading an ASan library into a process that did
    # not preload the ASan runtime aborts.
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext",
                    "--build-lib", os.path.join(out, "build-lib"),
                    "--build-temp", os.path.join(out, "build")],
                   cwd=ROOT, env=env, check=True)
    (so,) = glob.glob(os.path.join(out, "build-lib", "attnkern", "_C*.so"))
    dst = os.path.join(out, os.path.basename(so))
    shutil.copy2(so, dst)
    print(dst)


if __name__ == "__main__":
    main()
