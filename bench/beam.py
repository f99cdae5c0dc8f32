"""Beam search on shared keys vs OpenNMT-py's tiled memory bank: time per step, key-side bytes.

    python bench/beam.py [--beams 5,10] [--steps 30] [--repeats 7] [--threads 2] [--smoke]

OpenNMT-py's beam search tiles the memory bank (and its lengths) per beam once
(``tile(enc_out, beam)``) and calls ``GlobalAttention(attn_type="mlp")`` on it at every
step, which projects the whole tiled bank each call. Three ways, one process, interleaved,
median of ``--repeats`` (NMT default shape: B16, S50, d256; float32, CPU, no_grad as a
search runs):

- ``OpenNMT tiled``: OpenNMT-py's own module on the tiled bank;
- ``attnkern tiled``: the attnkern drop-in (``from_module``) called the same way (its call
  protocol projects the tiled bank once and reuses it);
- ``attnkern shared``: the drop-in's explicit state, ``start`` on the ``B`` source rows,
  ``reorder(index)`` every step: the key side stays at ``B`` rows and each source's
  ``beam`` hypotheses are one fused call's query rows.

Every step also reorders (a random pick among each source's own hypotheses, as a search's
top-k does): OpenNMT reorders its decoder state, not the bank; the shared state composes
``rows``. "key side" is the bytes of the tensors each way holds for the keys and values
(memory bank, projected keys, their prepared exp) across the search; OpenNMT's per-call
projection of the tiled bank is transient and not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import Tensor

if __name__ == "__main__" and not __package__:  # python bench/beam.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import toolkits  # noqa: E402


def _bytes(*ts: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def run(batch: int, src: int, dim: int, beam: int, steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    orig = toolkits.opennmt_global_attention().GlobalAttention(dim, attn_type="mlp")
    ours = attnkern.from_module(orig)
    g = torch.Generator().manual_seed(1)
    enc = torch.randn(batch, src, dim, generator=g)
    lens = torch.linspace(src, max(1, src // 2), batch).round().long()
    n = batch * beam
    queries = torch.randn(steps, n, dim, generator=g)
    picks = [(torch.arange(batch).unsqueeze(1) * beam
              + torch.randint(0, beam, (batch, beam), generator=g)).view(-1)
             for _ in range(steps)]
    expand = torch.arange(batch).repeat_interleave(beam)
    held: dict[str, int] = {}

    def tiled(module: torch.nn.Module, name: str) -> None:
        bank, bank_len = enc[expand], lens[expand]  # OpenNMT's tile, once per search
        for s in range(steps):
            out, _ = module(queries[s], bank, src_len=bank_len)
            out.index_select(0, picks[s])  # the decoder state's reorder
        extra = 0
        if module is ours and ours._held is not None:  # its projected, prepared keys
            st = ours._held.value
            extra = _bytes(st.keys, st.key_exp)
        held[name] = _bytes(bank) + extra

    def shared() -> None:
        state = ours.start(enc, lens).reorder(expand)
        for s in range(steps):
            out, _, state = ours.step(queries[s], state)
            out.index_select(0, picks[s])
            state = state.reorder(picks[s])
        held["attnkern shared"] = _bytes(state.memory, state.keys, state.key_exp, state.rows)

    ways = {"OpenNMT tiled": lambda: tiled(orig, "OpenNMT tiled"),
            "attnkern tiled": lambda: tiled(ours, "attnkern tiled"),
            "attnkern shared": shared}
    times: dict[str, list[float]] = {k: [] for k in ways}
    with torch.no_grad():
        for fn in ways.values():
            fn()  # warm-up
        for _ in range(repeats):
            for k, fn in ways.items():
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) / steps)
    return {k: (statistics.median(v), held[k]) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beams", default="5,10")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 steps, 1 repeat")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, src, dim = (2, 5, 8) if args.smoke else (16, 50, 256)
    steps, repeats = (2, 1) if args.smoke else (args.steps, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# beam search attention steps: B{batch} S{src} d{dim}, {steps} steps, median of "
          f"{repeats}, {args.threads} threads, load {load:.2f}, cpu isa {attnkern.cpu_isa()}")
    print("| beam | way | ms per step | vs OpenNMT | key side held (MB) |")
    print("|---|---|---|---|---|")
    for beam in (int(b) for b in args.beams.split(",")):
        try:
            r = run(batch, src, dim, beam, steps, repeats)
        except BaseException as e:  # pytest.skip's exception: OpenNMT-py not installed
            if isinstance(e, KeyboardInterrupt):
                raise
            print(f"| {beam} | skipped ({str(e).splitlines()[0]}) | | | |")
            continue
        base = r["OpenNMT tiled"][0]
        for k, (t, nbytes) in r.items():
            print(f"| {beam} | {k} | {t * 1e3:.3f} | {base / t:.2f}x | {nbytes / 2**20:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
