"""A whole model with its attention swapped: torchaudio's ``Tacotron2.infer()``.

    python bench/e2e.py [--batch 1,8] [--steps 200] [--tokens 120] [--repeats 5]
                        [--threads 2] [--compile] [--smoke]

torchaudio's own ``Tacotron2`` class (from PyPI, imported as tests/toolkits.py does; random
weights, no downloads) at its default sizes, ``eval()``, run through ``infer(tokens,
lengths)`` for exactly ``--steps`` decoder steps (``gate_threshold`` above 1: the gate never
stops it, so every variant does the same work). Variants, interleaved round by round in one
process, medians of ``--repeats``:

- ``original``: the model as torchaudio builds it;
- ``attnkern``: a copy after :func:`attnkern.replace_attention` (its ``_Attention`` ->
  :class:`attnkern.TorchaudioAttention`; the decoder's own code unchanged);
- ``no attention``: a copy whose attention returns fixed zero tensors, the floor that any
  attention leaves: ``original - no attention`` is the attention's share of the step;
- with ``--compile``: both models with ``decoder.decode`` (one decoder step) compiled by
  ``torch.compile`` (inductor, the first call's compilation untimed).

Also timed, on the same shapes: the attention alone in the decoder's call protocol (50
steps, the alignment fed back), whose speed-up ``a`` gives with the share ``s`` the Amdahl
bound of the whole model, ``1 / ((1 - s) + s / a)``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

if __name__ == "__main__" and not __package__:  # python bench/e2e.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402
from bench.cpu_timing import interleaved_medians  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import toolkits  # noqa: E402


class ZeroAttention(nn.Module):
    """Returns fixed zero tensors of the attention's output shapes: costs (almost) nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.memory_layer = nn.Identity()  # the decoder projects the memory once with it

    def forward(self, hidden: Tensor, memory: Tensor, processed_memory: Tensor,
                cat: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return memory[:, 0].detach() * 0.0, cat[:, 0].detach() * 0.0


def build(steps: int, seed: int = 0, **sizes: int) -> nn.Module:
    ta = toolkits.torchaudio_tacotron2()
    torch.manual_seed(seed)
    model = ta.Tacotron2(decoder_max_step=steps, gate_threshold=1.5, **sizes)
    return model.eval()


def variants(model: nn.Module) -> dict[str, nn.Module]:
    ours = copy.deepcopy(model)
    if not attnkern.replace_attention(ours):
        raise RuntimeError("replace_attention found no attention in torchaudio's Tacotron2")
    zero = copy.deepcopy(model)
    zero.decoder.attention_layer = ZeroAttention()
    return {"original": model, "attnkern": ours, "no attention": zero}


def compiled(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    out.decoder.decode = torch.compile(out.decoder.decode)  # one decoder step
    return out


def inputs(batch: int, tokens: int, n_symbol: int = 148, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(tokens * 2 // 3, tokens + 1, (batch,), generator=g)
    lengths[0] = tokens
    lengths = lengths.sort(descending=True).values  # the encoder packs sorted sequences
    return torch.randint(1, n_symbol, (batch, tokens), generator=g), lengths


def infer(model: nn.Module, x: tuple[Tensor, Tensor]) -> Tensor:
    torch.manual_seed(3)  # the prenet's dropout is on at inference too: same draws
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Reached max decoder steps": on purpose
        mel, _, _ = model.infer(*x)
    return mel


def attention_alone(model: nn.Module, ours: nn.Module, x: tuple[Tensor, Tensor],
                    repeats: int, steps: int = 50) -> float:
    """Speed-up of the attention alone (no_grad), the decoder's protocol, same shapes."""
    with torch.no_grad():
        memory = model.encoder(model.embedding(x[0]).transpose(1, 2), x[1])
    mask = torch.arange(memory.shape[1])[None] >= x[1][:, None]
    hidden = torch.randn(steps, memory.shape[0], model.decoder.attention_rnn_dim,
                         generator=torch.Generator().manual_seed(4))

    def loop(att: nn.Module) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                pm = att.memory_layer(memory)
                w = memory.new_zeros(memory.shape[:2])
                cum = torch.zeros_like(w)
                for h in hidden:
                    cat = torch.stack((w, cum), 1)
                    _, w = att(h, memory, pm, cat, mask)
                    cum = cum + w
        return go

    t = medians({"original": loop(model.decoder.attention_layer),
                 "attnkern": loop(ours.decoder.attention_layer)}, repeats)
    return t["original"] / t["attnkern"]


def medians(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of one call of each, interleaved (the first call, compilation
    included, is the untimed warm-up)."""
    timed = interleaved_medians(fns, repeats=repeats, min_sample_s=0.0)  # one call a sample
    return {k: t.median for k, t in timed.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time decoder.decode compiled")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 3 steps, 1 repeat")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes: dict[str, int] = {}
    steps, tokens, repeats = args.steps, args.tokens, args.repeats
    if args.smoke:
        sizes = dict(encoder_embedding_dim=16, symbol_embedding_dim=16, decoder_rnn_dim=16,
                     attention_rnn_dim=16, attention_hidden_dim=8, prenet_dim=8,
                     postnet_embedding_dim=8, attention_location_n_filter=4)
        steps, tokens, repeats = 3, 7, 1
    print(f"torch {torch.__version__}, {args.threads} threads, float32, isa "
          f"{attnkern.cpu_isa()}, {steps} decoder steps, {tokens} tokens, median of "
          f"{repeats}; load {os.getloadavg()[0]:.2f}")
    print("| batch | mode | original s | attnkern s | no attention s | speed-up | attention "
          "share before / after | attention alone | Amdahl bound | of the bound |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        model = build(steps, **sizes)
    except BaseException as e:  # pytest.skip's exception included: torchaudio not installed
        if isinstance(e, KeyboardInterrupt):
            raise
        print(f"skipped ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        return 0
    models = variants(model)
    for batch in (int(b) for b in args.batch.split(",")):
        x = inputs(batch, tokens)
        mel = {k: infer(m, x) for k, m in models.items() if k != "no attention"}
        diff = (mel["attnkern"] - mel["original"]).abs().max().item()
        a = attention_alone(model, models["attnkern"], x, max(repeats, 3))
        modes = [("eager", models)]
        if args.compile:
            modes.append(("compiled step", {k: compiled(m) for k, m in models.items()}))
        for mode, ms in modes:
            t = medians({k: (lambda m=m, x=x: infer(m, x)) for k, m in ms.items()}, repeats)
            orig, ours, zero = t["original"], t["attnkern"], t["no attention"]
            s_before = max(orig - zero, 0.0) / orig
            s_after = max(ours - zero, 0.0) / ours
            bound = 1.0 / ((1 - s_before) + s_before / a)
            print(f"| {batch} | {mode} | {orig:.3f} | {ours:.3f} | {zero:.3f} | "
                  f"{orig / ours:.2f}x | {s_before:.0%} / {s_after:.0%} | {a:.2f}x | "
                  f"{bound:.2f}x | {orig / ours / bound:.0%} |", flush=True)
        print(f"(batch {batch}: max abs difference of the mel outputs, eager: {diff:.1e})")
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
