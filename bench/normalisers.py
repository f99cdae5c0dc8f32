"""Whether the attention op should grow a sigmoid normaliser or a score bias (issue 22, item
2): the fused op with its context against the energies plus standard ops, at one decoder
step of the toolkits' sizes, on CPU.

    python bench/normalisers.py [--threads 1] [--repeats 7] [--smoke]

Entries (no_grad, float32, ``backend="cpp"``; side by side, interleaved medians of
``bench.cpu_timing``), query ``(B, A)``, keys ``(B, T, A)``, values ``(B, T, Dv)``:

- ``fused softmax + context``: ``additive_attention(..., return_weights=True)``: what a fused
  sigmoid normaliser (or the op with a score bias) would cost, the same passes;
- ``fused softmax, weights only``: the same op with a zero-width value (no value pass);
- ``context bmm``: ``bmm(weights (B, 1, T), values)`` alone;
- ``sigmoid as built``: ``additive_scores`` + ``v``'s bias, ``sigmoid``, the normalisation
  and the context ``bmm`` (Coqui's ``attention_norm="sigmoid"`` in attnkern today);
- ``forward attention as built``: weights only + the prior product, renormalisation and the
  context ``bmm`` (Coqui's forward attention today; with a score bias it would be the fused
  op with context on ``e + log prior``).

Sizes: Coqui's Tacotron 2 (B16 T120, attention 128, embedding 512) and ESPnet's LAS
(B16 T200, 320, 320). Not a test: figures depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

if __name__ == "__main__" and not __package__:  # python bench/normalisers.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402
from bench.cpu_timing import interleaved_medians  # noqa: E402

SIZES = {"Coqui Tacotron 2 (B16 T120 A128 Dv512)": (16, 120, 128, 512),
         "ESPnet LAS (B16 T200 A320 Dv320)": (16, 200, 320, 320)}


def entries(batch: int, steps: int, dim: int, dv: int) -> dict:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, dim, generator=g)
    k = torch.randn(batch, steps, dim, generator=g)
    v = torch.randn(batch, steps, dv, generator=g)
    w = torch.randn(dim, generator=g) / dim ** 0.5
    bias = torch.randn((), generator=g)
    prior = torch.rand(batch, steps, generator=g)
    empty = k.new_empty(batch, steps, 0)
    weights = torch.rand(batch, steps, generator=g)

    def fused_context() -> None:
        attnkern.additive_attention(q, k, v, w, return_weights=True, backend="cpp")

    def fused_weights() -> None:
        attnkern.additive_attention(q, k, empty, w, return_weights=True, backend="cpp")

    def context_bmm() -> None:
        torch.bmm(weights[:, None], v)

    def sigmoid_built() -> None:
        s = torch.sigmoid(attnkern.additive_scores(q, k, w, backend="cpp") + bias)
        torch.bmm((s / s.sum(1, keepdim=True))[:, None], v)

    def forward_built() -> None:
        _, a = attnkern.additive_attention(q, k, empty, w, return_weights=True, backend="cpp")
        a = (prior + 1e-8) * a
        torch.bmm((a / a.sum(1, keepdim=True))[:, None], v)

    return {"fused softmax + context": fused_context,
            "fused softmax, weights only": fused_weights, "context bmm": context_bmm,
            "sigmoid as built": sigmoid_built, "forward attention as built": forward_built}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = {"smoke (B2 T7 A8 Dv4)": (2, 7, 8, 4)} if args.smoke else SIZES
    repeats = 2 if args.smoke else args.repeats
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, isa {attnkern.cpu_isa()}, load {os.getloadavg()[0]:.2f}")
    print("| size | entry | ms a step (median) |")
    print("|---|---|---|")
    with torch.no_grad():
        for label, shape in sizes.items():
            timed = interleaved_medians(entries(*shape), repeats=repeats)
            for name, t in timed.items():
                print(f"| {label} | {name} | {t.median * 1e3:.3f} |")
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
