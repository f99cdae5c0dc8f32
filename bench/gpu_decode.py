"""Decode loops on CUDA, original against attnkern, eager and replayed as one CUDA graph.

    python bench/gpu_decode.py [--out DIR] [--steps 50] [--batch 1,8]

Two parts, every variant timed with CUDA events (``triton.testing.do_bench`` medians; a
launch-bound loop's event time is its wall time):

- **attention alone** (bench/decoders.py's NVIDIA/tacotron2 ``Attention`` at its sizes, B8
  T120, ``--steps`` steps with the alignment fed back): the original module, attnkern's
  drop-in in the same loop, and attnkern's explicit state (``start`` once, ``step`` per
  step); under no_grad eager, fwd+bwd eager, and the no_grad loop captured whole as one
  CUDA graph (``torch.cuda.graph``) and replayed;
- **whole decoder**: torchaudio's own ``Tacotron2`` (PyPI, random weights) at batch 1 and 8,
  ``infer()`` as users call it (eager; its early-stop test syncs the host each step), and
  its decoder loop (prenet + ``decode`` for ``--steps`` steps, no host sync) eager and
  captured; original against a copy after :func:`attnkern.replace_attention`.

#23's GPU goals read off the table: a decode step >= 2x the original eager (eager), a
captured loop >= 5x the eager original. Writes gpu_decode.json / gpu_decode.md under --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

if __name__ == "__main__" and not __package__:  # python bench/gpu_decode.py
    import _bootstrap  # noqa: F401

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import attnkern  # noqa: E402
from bench.decoders import Tacotron2Attention  # noqa: E402
from bench.gpu_timing import event_ms  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import toolkits  # noqa: E402

DEV = "cuda"


def graphed(fn: Callable[[], Any]) -> Callable[[], None]:
    """fn captured as one CUDA graph (warmed up on a side stream first); returns replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def timed(fns: dict[str, Callable[[], Any]], rep_ms: int) -> dict[str, Any]:
    """Median ms of each (errors recorded, not raised: one failing variant keeps the rest)."""
    out: dict[str, Any] = {}
    for name, fn in fns.items():
        try:
            fn()
            torch.cuda.synchronize()
            out[name] = event_ms(fn, warmup=max(rep_ms // 4, 10), rep=rep_ms)
        except Exception as e:  # noqa: BLE001 - reported in the table
            out[name] = f"{type(e).__name__}: {str(e)[:160]}"
    return out


def attention_part(steps: int, rep_ms: int, B: int = 8, T: int = 120) -> dict[str, Any]:
    torch.manual_seed(0)
    orig = Tacotron2Attention(1024, 512, 128, 32, 31).to(DEV)
    lsa = attnkern.LocationSensitiveAttention(1024, 512, 128, 32, 31).to(DEV)
    lsa.load_state_dict(orig.state_dict(), strict=True)
    g = torch.Generator(device=DEV).manual_seed(2)
    memory = torch.randn(B, T, 512, device=DEV, generator=g)
    hidden = torch.randn(steps, B, 1024, device=DEV, generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), device=DEV, generator=g)
    lengths[0] = T
    mask = torch.arange(T, device=DEV)[None] >= lengths[:, None]
    leaves = [memory, hidden]

    def module_loop(mod: nn.Module) -> Callable[[], list[Tensor]]:
        def go() -> list[Tensor]:
            pm = mod.memory_layer(memory)
            w = memory.new_zeros(B, T)
            cum = memory.new_zeros(B, T)
            outs: list[Tensor] = []
            for h in hidden.unbind(0):
                cat = torch.cat((w.unsqueeze(1), cum.unsqueeze(1)), dim=1)
                ctx, w = mod(h, memory, pm, cat, mask)
                cum = cum + w
                outs += (ctx, w)
            return outs
        return go

    def state_loop() -> list[Tensor]:
        state = lsa.start(memory, key_padding_mask=mask)
        outs: list[Tensor] = []
        for h in hidden.unbind(0):
            ctx, w, state = lsa.step(h, state)
            outs += (ctx, w)
        return outs

    loops = {"original": module_loop(orig), "drop-in": module_loop(lsa), "state": state_loop}

    def no_grad(f: Callable[[], list[Tensor]]) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                f()
        return go

    def fwd_bwd(f: Callable[[], list[Tensor]]) -> Callable[[], None]:
        params = [p for m in (orig, lsa) for p in m.parameters()]

        def go() -> None:
            for t in leaves:
                t.requires_grad_(True)
            torch.autograd.backward(torch.stack([o.sum() for o in f()]).sum())
            for t in leaves + params:
                t.grad = None
        return go

    res: dict[str, Any] = {"shape": f"B{B} T{T} attention 128 memory 512 rnn 1024, {steps} steps"}
    with torch.no_grad():
        ref = loops["original"]()
        for name in ("drop-in", "state"):
            got = loops[name]()
            res[f"max_abs_diff {name}"] = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    res["no_grad eager"] = timed({k: no_grad(f) for k, f in loops.items()}, rep_ms)
    res["fwd+bwd eager"] = timed({k: fwd_bwd(f) for k, f in loops.items()}, rep_ms)
    cap: dict[str, Callable[[], None]] = {}
    for k, f in loops.items():
        try:
            cap[k] = graphed(no_grad(f))
        except Exception as e:  # noqa: BLE001
            res[f"capture error {k}"] = f"{type(e).__name__}: {str(e)[:160]}"
    res["no_grad captured"] = timed(cap, rep_ms)
    return res


def decoder_part(batch: int, steps: int, rep_ms: int, tokens: int = 120) -> dict[str, Any]:
    ta = toolkits.torchaudio_tacotron2()
    torch.manual_seed(0)
    model = ta.Tacotron2(decoder_max_step=steps, gate_threshold=1.5).eval()
    ours = copy.deepcopy(model)
    if not attnkern.replace_attention(ours):
        raise RuntimeError("replace_attention found no attention in torchaudio's Tacotron2")
    model, ours = model.to(DEV), ours.to(DEV)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(tokens * 2 // 3, tokens + 1, (batch,), generator=g)
    lengths[0] = tokens
    lengths = lengths.sort(descending=True).values.to(DEV)
    text = torch.randint(1, 148, (batch, tokens), generator=g).to(DEV)
    with torch.no_grad():
        memory = model.encoder(model.embedding(text).transpose(1, 2), lengths)

    def infer(m: nn.Module) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Reached max decoder steps": on purpose
                m.infer(text, lengths)
        return go

    def decode_loop(m: nn.Module) -> Callable[[], Tensor]:
        dec = m.decoder
        mask = ta._get_mask_from_lengths(lengths)

        def go() -> Tensor:  # infer()'s loop without its host-syncing early stop
            with torch.no_grad():
                x = dec._get_go_frame(memory)
                s = list(dec._initialize_decoder_states(memory))
                pm = s.pop()
                mels = []
                for _ in range(steps):
                    out = dec.decode(dec.prenet(x), *s, memory, pm, mask)
                    x, s = out[0], list(out[2:])
                    mels.append(x)
                return torch.stack(mels)
        return go

    res: dict[str, Any] = {"shape": f"batch {batch}, {tokens} tokens, {steps} steps"}
    loops = {"original": decode_loop(model), "attnkern": decode_loop(ours)}
    torch.manual_seed(3)
    a = loops["original"]()
    torch.manual_seed(3)
    res["max_abs_diff mel"] = float((a - loops["attnkern"]()).abs().max())
    res["infer() eager"] = timed({k: infer(m) for k, m in (("original", model),
                                                           ("attnkern", ours))}, rep_ms)
    res["decode loop eager"] = timed(loops, rep_ms)
    cap: dict[str, Callable[[], None]] = {}
    for k, f in loops.items():
        try:
            cap[k] = graphed(f)
        except Exception as e:  # noqa: BLE001
            res[f"capture error {k}"] = f"{type(e).__name__}: {str(e)[:160]}"
    res["decode loop captured"] = timed(cap, rep_ms)
    return res


def table(parts: list[dict[str, Any]]) -> list[str]:
    """One row per (part, mode, variant): ms and the ratio to that part's eager original."""
    lines = ["| part | mode | variant | ms | vs original eager (same mode) |",
             "|---|---|---|---|---|"]
    for p in parts:
        for mode, r in p.items():
            if "error" in mode:
                lines.append(f"| {p['shape']} | {mode} | | {r} | |")
            if not isinstance(r, dict):
                continue
            base_mode = mode.replace("captured", "eager")
            base = p.get(base_mode, {}).get("original")
            for k, v in r.items():
                if isinstance(v, float):
                    ratio = f"{base / v:.2f}x" if isinstance(base, float) else "n/a"
                    lines.append(f"| {p['shape']} | {mode} | {k} | {v:.3f} | {ratio} |")
                else:
                    lines.append(f"| {p['shape']} | {mode} | {k} | {v} | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--rep-ms", type=int, default=300, help="do_bench time per variant")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu_decode.py needs CUDA (no CUDA device here)", file=sys.stderr)
        return 2
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    parts: list[dict[str, Any]] = []
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("attention", lambda: attention_part(a.steps, a.rep_ms))]
    jobs += [(f"decoder b{b}", lambda b=int(b): decoder_part(b, a.steps, a.rep_ms))
             for b in a.batch.split(",")]
    os.makedirs(a.out, exist_ok=True)
    for name, job in jobs:
        try:
            parts.append(job())
        except Exception as e:  # noqa: BLE001 - one failing part keeps the others
            parts.append({"shape": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
        lines = [f"GPU {env['gpu']}, torch {env['torch']}, {env['date_utc']} UTC, float32; "
                 "do_bench medians (CUDA events)", ""] + table(parts)
        with open(os.path.join(a.out, "gpu_decode.json"), "w") as fh:
            json.dump({"env": env, "parts": parts}, fh, indent=1)
        with open(os.path.join(a.out, "gpu_decode.md"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print(json.dumps(parts[-1], indent=1), flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
