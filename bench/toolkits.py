"""The real toolkits' attention modules vs their attnkern drop-ins, in decoder loops.

    python bench/toolkits.py [--steps 50] [--repeats 7] [--threads 2] [--only NAME,..] [--smoke]

Each case builds the toolkit's own module (ESPnet, SpeechBrain, OpenNMT-py, installed with
``scripts/install_toolkits.sh``; imported as tests/toolkits.py does), converts it with
:func:`attnkern.from_module`, and runs the same ``--steps``-step loop on both with the
toolkit's own call protocol (``reset()``, ``att_prev`` fed back; SpeechBrain's
``prev_attn``), at the issue's default shapes (LAS: B16, T200, 320-d encoder, decoder and
attention, 10 filters x 201 taps; NMT: B16, S50, d256; ESPnet's TTS Tacotron 2 ``AttLoc``:
B16, T120, 512-d encoder, 1024-d decoder, att_dim 512, 32 filters x 31 taps). Timed: the
whole loop, from the ``reset()`` (so the once-per-utterance key projection counts) through
the backward of a loss on every step's context ("fwd+bwd"), or the loop under
``torch.no_grad()``; original and drop-in interleaved in one process, median of
``--repeats``; float32, CPU. Per-step decoder states are slices of one leaf tensor, unbound
once per loop (indexing the leaf at each step would add an O(steps^2) zero-fill to both
sides' backward). A toolkit that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

if __name__ == "__main__" and not __package__:  # python bench/toolkits.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import toolkits  # noqa: E402


def _replaced(decoder: nn.Module) -> nn.Module:
    """A copy of a toolkit's decoder with its attention replaced in place."""
    ours = copy.deepcopy(decoder)
    if not attnkern.replace_attention(ours):
        raise RuntimeError(f"replace_attention found nothing in {type(decoder).__name__}")
    return ours


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]  # the toolkit's module (an attention, or a decoder)
    loop: Callable[[nn.Module, dict[str, Tensor], int], list[Tensor]]
    inputs: Callable[[], dict[str, Tensor]]
    convert: Callable[[nn.Module], nn.Module] = attnkern.from_module


def _espnet_loop(kind: str) -> Callable[[nn.Module, dict[str, Tensor], int], list[Tensor]]:
    def loop(m: nn.Module, x: dict[str, Tensor], steps: int) -> list[Tensor]:
        m.reset()
        att = None
        outs = []
        for dec in x["dec"].unbind(0)[:steps]:  # once per loop: see the docstring
            c, att = m(x["enc"], x["lens"].tolist(), dec, att)  # ESPnet: a list
            outs.append(c)
        return outs

    return loop


def _speechbrain_loop(m: nn.Module, x: dict[str, Tensor], steps: int) -> list[Tensor]:
    m.reset()
    outs = []
    for dec in x["dec"].unbind(0)[:steps]:
        c, _ = m(x["enc"], x["lens"], dec)
        outs.append(c)
    return outs


def _opennmt_loop(m: nn.Module, x: dict[str, Tensor], steps: int) -> list[Tensor]:
    outs = []
    for dec in x["dec"].unbind(0)[:steps]:
        h, _ = m(dec, x["enc"], src_len=x["lens"])
        outs.append(h)
    return outs


def _espnet_decoder_loop(m: nn.Module, x: dict[str, Tensor], steps: int) -> list[Tensor]:
    # teacher forcing over `steps` target tokens: ESPnet's Decoder.forward -> (loss, acc, ppl)
    loss, _, _ = m(x["enc"], x["lens"], list(x["ys"]))
    return [loss]


def _speechbrain_decoder_loop(m: nn.Module, x: dict[str, Tensor], steps: int) -> list[Tensor]:
    out, attn = m(x["emb"], x["enc"], x["wav_len"])
    return [out, attn]


def _decoder_inputs(batch: int, frames: int, enc_dim: int, steps: int, odim: int,
                    emb: int) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        lens = torch.linspace(frames, max(1, frames * 3 // 4), batch).round().long()
        return {"enc": torch.randn(batch, frames, enc_dim, generator=g).requires_grad_(),
                "lens": lens, "wav_len": lens.double() / frames,
                "ys": torch.randint(0, odim - 1, (batch, steps), generator=g),
                "emb": torch.randn(batch, steps, emb, generator=g).requires_grad_()}

    return make


def _inputs(batch: int, frames: int, enc_dim: int, dec_dim: int, steps: int,
            float_lens: bool = False) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        lens = torch.linspace(frames, max(1, frames * 3 // 4), batch).round().long()
        return {"enc": torch.randn(batch, frames, enc_dim, generator=g).requires_grad_(),
                "lens": lens,
                "dec": torch.randn(steps, batch, dec_dim, generator=g).requires_grad_()}

    return make


def cases(smoke: bool, steps: int) -> list[Case]:
    if smoke:
        B, T, E, A, C, F_, S, D = 2, 9, 8, 8, 3, 2, 7, 8
    else:
        B, T, E, A, C, F_, S, D = 16, 200, 320, 320, 10, 100, 50, 256
    las = _inputs(B, T, E, E, steps)
    nmt = _inputs(B, S, D, D, steps)
    # ESPnet's TTS Tacotron 2 AttLoc: eprojs 512, dunits 1024, att_dim 512, 32 x 31 taps
    te, td, ta, tc, tf, tt = (8, 8, 8, 3, 2, 9) if smoke else (512, 1024, 512, 32, 15, 120)
    tts = _inputs(B, tt, te, td, steps)

    def esp(name: str, *args: int) -> Callable[[], nn.Module]:
        return lambda: getattr(toolkits.espnet_attentions(), name)(*args)

    def sb(name: str, *args: int) -> Callable[[], nn.Module]:
        return lambda: getattr(toolkits.speechbrain_attention(), name)(*args)

    odim, emb = (6, 5) if smoke else (100, 128)  # a character vocabulary
    dec_in = _decoder_inputs(B, T, E, steps, odim, emb)

    def espnet_decoder(name: str, *args: int) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            att = getattr(toolkits.espnet_attentions(), name)(*args)
            return toolkits.espnet_decoders().Decoder(E, odim, "lstm", 1, E, odim - 1,
                                                      odim - 1, nn.ModuleList([att]))
        return build

    def sb_decoder(attn_type: str) -> Callable[[], nn.Module]:
        return lambda: toolkits.speechbrain_rnn().AttentionalRNNDecoder(
            rnn_type="lstm", attn_type=attn_type, hidden_size=E, attn_dim=A, num_layers=1,
            enc_dim=E, input_size=emb, channels=C, kernel_size=2 * F_ + 1, scaling=1.0)

    return [
        Case("ESPnet AttAdd", esp("AttAdd", E, E, A), _espnet_loop("add"), las),
        Case("ESPnet AttLoc", esp("AttLoc", E, E, A, C, F_), _espnet_loop("loc"), las),
        Case("ESPnet AttLoc (Tacotron 2 sizes)", esp("AttLoc", te, td, ta, tc, tf),
             _espnet_loop("loc"), tts),
        Case("ESPnet AttCov", esp("AttCov", E, E, A), _espnet_loop("cov"), las),
        Case("ESPnet AttCovLoc", esp("AttCovLoc", E, E, A, C, F_), _espnet_loop("covloc"), las),
        Case("ESPnet AttLocRec", esp("AttLocRec", E, E, A, C, F_), _espnet_loop("locrec"), las),
        Case("ESPnet AttMultiHeadAdd", esp("AttMultiHeadAdd", E, E, 4, A, A),
             _espnet_loop("mha"), las),
        Case("SpeechBrain ContentBasedAttention", sb("ContentBasedAttention", E, E, A, A),
             _speechbrain_loop, las),
        Case("SpeechBrain LocationAwareAttention",
             sb("LocationAwareAttention", E, E, A, A, C, F_), _speechbrain_loop, las),
        Case("OpenNMT GlobalAttention(mlp)",
             lambda: toolkits.opennmt_global_attention().GlobalAttention(D, attn_type="mlp"),
             _opennmt_loop, nmt),
        # whole decoders, the attention replaced by attnkern.replace_attention
        Case("ESPnet Decoder (AttLoc), whole", espnet_decoder("AttLoc", E, E, A, C, F_),
             _espnet_decoder_loop, dec_in, _replaced),
        Case("ESPnet Decoder (AttAdd), whole", espnet_decoder("AttAdd", E, E, A),
             _espnet_decoder_loop, dec_in, _replaced),
        Case("SpeechBrain AttentionalRNNDecoder (location), whole",
             sb_decoder("location"), _speechbrain_decoder_loop, dec_in, _replaced),
        Case("SpeechBrain AttentionalRNNDecoder (content), whole",
             sb_decoder("content"), _speechbrain_decoder_loop, dec_in, _replaced),
    ]


def _time(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_case(case: Case, steps: int, repeats: int) -> dict[str, float] | str:
    try:
        torch.manual_seed(0)
        original = case.build()
    except BaseException as e:  # pytest.skip's exception included: not installed here
        if isinstance(e, KeyboardInterrupt):
            raise
        return f"skipped ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    ours = case.convert(original)
    x = case.inputs()
    weights = [torch.randn_like(c) for c in case.loop(original, x, steps)]

    def train(m: nn.Module) -> Callable[[], None]:
        def go() -> None:
            for t in x.values():
                t.grad = None
            m.zero_grad(set_to_none=True)
            outs = case.loop(m, x, steps)
            sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        return go

    def infer(m: nn.Module) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                case.loop(m, x, steps)
        return go

    result: dict[str, float] = {}
    for mode, make in (("fwd+bwd", train), ("no_grad", infer)):
        fns = {"original": make(original), "attnkern": make(ours)}
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                times[k].append(_time(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        result[f"{mode} original ms"] = med["original"] * 1e3
        result[f"{mode} attnkern ms"] = med["attnkern"] * 1e3
        result[f"{mode} speedup"] = med["original"] / med["attnkern"]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated substrings of case names")
    ap.add_argument("--smoke", action="store_true", help="3 steps, 1 repeat, tiny shapes")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, repeats = (3, 1) if args.smoke else (args.steps, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# toolkit attention loops: {steps} steps, median of {repeats}, "
          f"{args.threads} threads, load {load:.2f}, cpu isa {attnkern.cpu_isa()}")
    print("| module | fwd+bwd original / attnkern (ms) | speedup | no_grad original / "
          "attnkern (ms) | speedup |")
    print("|---|---|---|---|---|")
    only = [s for s in args.only.split(",") if s]
    for case in cases(args.smoke, steps):
        if only and not any(s.lower() in case.name.lower() for s in only):
            continue
        r = run_case(case, steps, repeats)
        if isinstance(r, str):
            print(f"| {case.name} | {r} | | | |")
            continue
        print(f"| {case.name} | {r['fwd+bwd original ms']:.2f} / {r['fwd+bwd attnkern ms']:.2f}"
              f" | {r['fwd+bwd speedup']:.2f}x | {r['no_grad original ms']:.2f} / "
              f"{r['no_grad attnkern ms']:.2f} | {r['no_grad speedup']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
