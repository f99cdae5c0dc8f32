"""Per-call cost of one decoder step at a tiny shape, where the kernel is negligible and
what is measured is the call path: checks, dispatch, autograd, allocations.

    python bench/percall.py [--threads 1] [--repeats 300] [--tk 8] [--hidden 8] [--batch 1]

B=1, one query step (2-D query ``(B, H)``), Tk=8, H=8, Dv=H, float32, CPU,
``backend="cpp"``. Entries, timed side by side (``bench.cpu_timing.interleaved_medians``:
interleaved rounds, each sample a batch of calls, per-call medians; min = the quietest
sample):

- ``no_grad functional``: ``attnkern.additive_attention(q, k, v, w)`` with grad mode off
  (switched off untimed before each sample: no ``with torch.no_grad()`` per call);
- ``no_grad PreparedKeys``: the same with ``key = attnkern.prepare_keys(k)``;
- ``op alone``: ``torch.ops.attnkern.fwd`` on the same 2-D query, as the functional calls it;
- ``fwd+bwd``: the functional with the four inputs requiring grad, ``.sum().backward()``;
- ``fwd+bwd weights``: the same with ``return_weights=True``, loss over both outputs;
- ``trivial autograd op``: ``(q * 1.0).sum().backward()``, the floor of any autograd call
  on this machine (two ops, their two backward nodes, one grad accumulation; the op's
  fwd+bwd has one node of its own and accumulates into four leaves).

Not a test: figures depend on the machine and its load (printed with them).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

if __name__ == "__main__" and not __package__:  # python bench/percall.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402
from bench.cpu_timing import Entry, Timed, interleaved_medians  # noqa: E402


def entries(batch: int, tk: int, hidden: int) -> dict[str, Entry]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, hidden, generator=g)
    k = torch.randn(batch, tk, hidden, generator=g)
    v = torch.randn(batch, tk, hidden, generator=g)
    w = torch.randn(hidden, generator=g) / hidden**0.5
    pk = attnkern.prepare_keys(k)
    fn = attnkern.additive_attention
    op = torch.ops.attnkern.fwd.default
    qg, kg, vg, wg = (t.clone().requires_grad_() for t in (q, k, v, w))
    qt = q.clone().requires_grad_()

    def no_grad_functional() -> None:
        fn(q, k, v, w, backend="cpp")

    def no_grad_prepared() -> None:
        fn(q, pk, v, w, backend="cpp")

    def op_alone() -> None:
        op(q, k, v, w, None, None, False, False, None)

    def fwd_bwd() -> None:
        fn(qg, kg, vg, wg, backend="cpp").sum().backward()

    def fwd_bwd_weights() -> None:
        out, wts = fn(qg, kg, vg, wg, return_weights=True, backend="cpp")
        (out.sum() + wts.sum()).backward()

    def trivial() -> None:
        (qt * 1.0).sum().backward()

    def no_grad(call: Callable[[], None]) -> tuple[Callable[[], None], Callable[[], None]]:
        # grad mode switched off untimed before each sample (and back on for the others),
        # so the figure is the call's, not a `with torch.no_grad()` block's (~1-3 us here)
        return (lambda: torch.set_grad_enabled(False), call)

    def grad(call: Callable[[], None]) -> tuple[Callable[[], None], Callable[[], None]]:
        return (lambda: torch.set_grad_enabled(True), call)

    return {"no_grad functional": no_grad(no_grad_functional),
            "no_grad PreparedKeys": no_grad(no_grad_prepared),
            "op alone, no_grad": no_grad(op_alone),
            "fwd+bwd": grad(fwd_bwd),
            "fwd+bwd weights": grad(fwd_bwd_weights),
            "trivial autograd op": grad(trivial)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=300, help="samples per entry")
    ap.add_argument("--sample-ms", type=float, default=2.0, help="length of one sample")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tk", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="a few samples (seconds)")
    args = ap.parse_args(argv)
    if not attnkern.ops.HAS_CPP:
        print(f"bench/percall.py times the C++ op: attnkern._C is not built "
              f"({attnkern.ops.CPP_IMPORT_ERROR})", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    repeats = 3 if args.smoke else args.repeats
    load0 = os.getloadavg()[0]
    t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"attnkern per call: B={args.batch} step query, Tk={args.tk}, H=Dv={args.hidden}, "
          f"float32, {torch.get_num_threads()} thread(s), isa {attnkern.cpu_isa()}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"{t0}, {repeats} samples of >= {args.sample_ms} ms each, interleaved; "
          f"load average {load0:.2f}")
    res: dict[str, Timed] = interleaved_medians(
        entries(args.batch, args.tk, args.hidden), repeats=repeats, warmup=200,
        min_sample_s=args.sample_ms / 1e3)
    width = max(len(n) for n in res)
    torch.set_grad_enabled(True)
    print(f"{'':{width}}   median      min  cpu median  calls/sample")
    for name, t in res.items():
        print(f"{name:{width}}  {t.median * 1e6:6.1f} us {t.min * 1e6:6.1f} us "
              f"{t.cpu_median * 1e6:6.1f} us  {t.calls_per_sample:5d}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
