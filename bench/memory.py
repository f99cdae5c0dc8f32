"""Extra peak memory of forward+backward, measured in a fresh process.

    python bench/memory.py --threads 2 --shape 16,256,256,512,256 --backends cpp,eager-mm \
        --rss cpp,eager-mm

Prints one JSON object: ``{"results": [{"shape", "backend", "profiler_bytes", "rss_bytes",
"call_s"}, ...]}``. ``bench/run.py`` calls it so that the GiB-sized eager runs and the glibc
setting the RSS cross-check needs (a fixed mmap threshold) never touch the process that
times things, and runs attnkern in a fresh process per shape, so scratch memory its
kernels keep between calls is counted. See ``bench.common.MEMORY_METHOD`` for the method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

if __name__ == "__main__" and not __package__:  # python bench/memory.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", action="append", required=True,
                        help="B,Tq,Tk,H,Dv (repeatable)")
    parser.add_argument("--backends", required=True, help="comma-separated backend names")
    parser.add_argument("--rss", default="", help="backends that also get the RSS cross-check")
    args = parser.parse_args(argv)

    import torch

    from bench.baselines import backend_available, get_backend
    from bench.common import (
        make_call,
        make_inputs,
        peak_extra_bytes_profiler,
        peak_extra_bytes_rss,
    )
    from bench.shapes import Shape

    torch.set_num_threads(args.threads)
    rss_for = set(filter(None, args.rss.split(",")))
    results = []
    tiny = Shape(1, 4, 8, 16, 8)
    for name in args.backends.split(","):
        if not backend_available(name)[0]:
            continue
        fn = get_backend(name)
        # Load code pages, start the thread pool: one-time costs that are not the call's.
        warm = make_inputs(tiny, requires_grad=True)
        make_call(fn, warm, "fwdbwd")()
        for spec in args.shape:
            B, Tq, Tk, H, Dv = (int(x) for x in spec.split(","))
            shape = Shape(B, Tq, Tk, H, Dv)
            inputs = make_inputs(shape, requires_grad=True)
            call = make_call(fn, inputs, "fwdbwd")
            # RSS first: the first call at this size also pays for any scratch a kernel
            # allocates once and keeps (attnkern caches per-thread scratch blocks).
            rss = peak_extra_bytes_rss(call) if name in rss_for else None
            t0 = time.perf_counter()
            peak = peak_extra_bytes_profiler(call)
            results.append({"shape": shape.label, "backend": name, "profiler_bytes": peak,
                            "rss_bytes": rss, "call_s": time.perf_counter() - t0})
            del inputs, call
    json.dump({"results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
