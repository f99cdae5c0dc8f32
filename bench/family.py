"""The attention family against the toolkits' own modules, in decoder loops on CPU.

    python bench/family.py [--repeats 7] [--threads 2] [--smoke] [--only NAME]

Pairs (original vs attnkern, the attnkern module loaded from the original with
``attnkern.from_module``, so both hold the same weights):

- ``espnet-fwd`` / ``espnet-fwd-ta``: ESPnet ``AttForward`` / ``AttForwardTA`` (its Tacotron 2
  sizes: eprojs 512, dunits 1024, att_dim 512, 32 location channels, filts 15; odim 80),
  driven as its decoder does (``reset()``, then ``att_prev`` fed back every step);
- ``coqui-softmax`` / ``coqui-sigmoid`` / ``coqui-fwd-ta``: Coqui ``OriginalAttention``
  with location attention (its Tacotron 2 sizes: query 1024, embedding 512, attention 128,
  32 filters, kernel 31): softmax; sigmoid (Coqui's Tacotron default); softmax with
  forward attention and the transition agent; driven as Coqui's decoder does
  (``init_states``, ``preprocess_inputs`` once, ``forward`` every step);
- ``monotonic``: ``attnkern.MonotonicAttention`` (parallel mode) against a plain-PyTorch
  TF-Addons-style implementation written here (``PlainMonotonic``: the same parameters;
  ``v . tanh(...)`` as a product and a sum, as TF-Addons' ``_bahdanau_score`` does).

Regimes: ``loop50``: 50 decoder steps, B 16, T 120 (a batch of long utterances);
``seq``: a teacher-forced whole sequence, 200 steps, B 4, T 60 (for monotonic attention the
attnkern module's whole-sequence call, ``layer(queries, memory)``); each with forward +
backward (a loss over every step's context and weights) and under ``no_grad``. The real
ESPnet and Coqui modules are loaded from their installed files (tests/toolkits_family.py);
a pair whose toolkit is missing is skipped. Timing: whole loops, interleaved original vs
attnkern in one process (bench/cpu_timing.py), median of ``--repeats``; float32.

Per-step queries are slices of one leaf tensor, unbound once per loop (as a decoder's
stacked states would be): indexing the leaf at every step instead makes each step's
backward zero-fill and add a gradient of the whole leaf's size, O(steps^2) work that is the
same on both sides and was half of the ``seq`` regime's time (bench/decoders.py likewise).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if __name__ == "__main__" and not __package__:  # python bench/family.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402
from bench.cpu_timing import interleaved_medians  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toolkits() -> ModuleType:
    tests = os.path.join(ROOT, "tests")
    if tests not in sys.path:  # toolkits_family imports tests/toolkits.py
        sys.path.insert(0, tests)
    path = os.path.join(tests, "toolkits_family.py")
    spec = importlib.util.spec_from_file_location("_attnkern_toolkits_family", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class PlainMonotonic(nn.Module):
    """Monotonic attention in plain PyTorch, as TF-Addons computes it (parallel mode):
    ``score = sum(v * tanh(keys + W_q q)) + r``, ``p = sigmoid(score)``, the alignment by the
    exclusive safe cumprod / cumsum closed form, context ``alignment @ memory``."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)
        self.v = nn.Parameter(torch.randn(hidden_dim) / hidden_dim ** 0.5)
        self.score_bias = nn.Parameter(torch.zeros(()))

    def step(self, query: Tensor, keys: Tensor, memory: Tensor, prev: Tensor
             ) -> tuple[Tensor, Tensor]:
        score = (self.v * torch.tanh(keys + self.query_proj(query)[:, None])).sum(-1)
        p = torch.sigmoid(score + self.score_bias)
        logs = torch.log(torch.clamp(1 - p, torch.finfo(p.dtype).tiny, 1.0))
        cp = torch.exp(torch.cumsum(F.pad(logs[:, :-1], (1, 0)), 1))
        a = p * cp * torch.cumsum(prev / torch.clamp(cp, 1e-10, 1.0), 1)
        return torch.bmm(a[:, None], memory)[:, 0], a


@dataclass
class Pair:
    name: str
    orig: Callable[[bool, int], list[Tensor]]  # (need_grad, steps) -> outputs of the loop
    ours: Callable[[bool, int], list[Tensor]]
    whole: bool = False  # ours returns (contexts (B, Tq, Dv), alignments (B, Tq, T))


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def espnet_pair(tk: ModuleType, ta: bool, batch: int, steps_t: int) -> Pair | None:
    esp = tk.espnet_attentions()
    if esp is None:
        return None
    torch.manual_seed(0)
    eprojs, dunits, att_dim, chans, filts, odim = 512, 1024, 512, 32, 15, 80
    orig = (esp.AttForwardTA(eprojs, dunits, att_dim, chans, filts, odim) if ta
            else esp.AttForward(eprojs, dunits, att_dim, chans, filts))
    ours = attnkern.from_module(orig)
    g = _g(1)
    enc = torch.randn(batch, steps_t, eprojs, generator=g)
    lens = torch.full((batch,), steps_t, dtype=torch.long)
    lens[batch // 2:] = steps_t * 3 // 4
    zs = torch.randn(400, batch, dunits, generator=g)
    outs = torch.randn(400, batch, odim, generator=g)

    def run(m: nn.Module) -> Callable[[bool, int], list[Tensor]]:
        def loop(grad: bool, steps: int) -> list[Tensor]:
            e = enc.requires_grad_(grad)
            z_all = zs[:steps].requires_grad_(grad).unbind(0)  # once: see the docstring
            m.reset()
            att, res = None, []
            for s in range(steps):
                if ta:
                    c, att = m(e, lens, z_all[s], att, outs[s])
                else:
                    c, att = m(e, lens, z_all[s], att)
                res += [c, att]
            return res
        return loop

    return Pair("espnet-fwd-ta" if ta else "espnet-fwd", run(orig), run(ours))


def coqui_pair(tk: ModuleType, kind: str, batch: int, steps_t: int) -> Pair | None:
    coq = tk.coqui_attentions()
    if coq is None:
        return None
    torch.manual_seed(0)
    norm = "sigmoid" if kind == "sigmoid" else "softmax"
    fwd = kind == "fwd-ta"
    orig = coq.OriginalAttention(1024, 512, 128, True, 32, 31, 0, norm, fwd, fwd, False)
    ours = attnkern.from_module(orig)
    g = _g(2)
    inputs = torch.randn(batch, steps_t, 512, generator=g)
    mask = torch.ones(batch, steps_t, dtype=torch.bool)
    mask[batch // 2:, steps_t * 3 // 4:] = False
    queries = torch.randn(400, batch, 1024, generator=g)

    def run(m: nn.Module) -> Callable[[bool, int], list[Tensor]]:
        def loop(grad: bool, steps: int) -> list[Tensor]:
            x = inputs.requires_grad_(grad)
            q_all = queries[:steps].requires_grad_(grad).unbind(0)
            m.init_states(x)
            processed = m.preprocess_inputs(x)
            res = []
            for s in range(steps):
                res += [m(q_all[s], x, processed, mask), m.attention_weights]
            return res
        return loop

    return Pair(f"coqui-{kind}", run(orig), run(ours))


def monotonic_pair(batch: int, steps_t: int, whole: bool) -> Pair:
    torch.manual_seed(0)
    qd, kd, hd = 1024, 512, 128
    plain = PlainMonotonic(qd, kd, hd)
    ours = attnkern.MonotonicAttention(qd, kd, hd, mode="parallel")
    ours.load_state_dict(plain.state_dict(), strict=True)
    g = _g(3)
    memory = torch.randn(batch, steps_t, kd, generator=g)
    queries = torch.randn(batch, 400, qd, generator=g)

    def run_plain(grad: bool, steps: int) -> list[Tensor]:
        mem = memory.requires_grad_(grad)
        q_all = queries[:, :steps].requires_grad_(grad).unbind(1)
        keys = plain.key_proj(mem)
        prev = mem.new_zeros(batch, steps_t)
        prev[:, 0] = 1
        res = []
        for s in range(steps):
            c, prev = plain.step(q_all[s], keys, mem, prev)
            res += [c, prev]
        return res

    def run_ours(grad: bool, steps: int) -> list[Tensor]:
        mem = memory.requires_grad_(grad)
        q_all = queries[:, :steps].requires_grad_(grad)
        if whole:
            return list(ours(q_all, mem))
        state = ours.start(mem)
        res = []
        for q in q_all.unbind(1):
            c, a, state = ours.step(q, state)
            res += [c, a]
        return res

    return Pair("monotonic", run_plain, run_ours, whole)


def _loss(outs: list[Tensor]) -> Tensor:
    return sum((o.float().square().mean() for o in outs), torch.zeros(()))


def time_pair(pair: Pair, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per loop: {'orig fwd+bwd', 'ours fwd+bwd', 'orig no_grad', ...}."""

    def fwd_bwd(loop: Callable[[bool, int], list[Tensor]]) -> Callable[[], None]:
        return lambda: _loss(loop(True, steps)).backward()

    def no_grad(loop: Callable[[bool, int], list[Tensor]]) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad():
                loop(False, steps)
        return call

    entries = {"orig fwd+bwd": fwd_bwd(pair.orig), "ours fwd+bwd": fwd_bwd(pair.ours),
               "orig no_grad": no_grad(pair.orig), "ours no_grad": no_grad(pair.ours)}
    timed = interleaved_medians(entries, repeats=repeats, min_sample_s=0.0)
    return {k: v.median for k, v in timed.items()}


def check_pair(pair: Pair, steps: int) -> float:
    """Max abs difference of the loops' outputs (same weights, same inputs)."""
    with torch.no_grad():
        a, b = pair.orig(False, steps), pair.ours(False, steps)
    if pair.whole:  # a whole-sequence call: (B, Tq, Dv), (B, Tq, T)
        a = [torch.stack(a[0::2], 1), torch.stack(a[1::2], 1)]
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, one repeat")
    ap.add_argument("--only", default=None, help="run the pairs whose name contains this")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tk = _toolkits()
    if args.smoke:
        regimes = {"loop50": (2, 4, 16), "seq": (1, 3, 12)}
        repeats = 1
    else:
        regimes = {"loop50": (50, 16, 120), "seq": (200, 4, 60)}
        repeats = args.repeats
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, float32, isa "
          f"{attnkern.cpu_isa()}, load {load:.2f}")
    print("| pair | regime | orig fwd+bwd ms | ours | ratio | orig no_grad ms | ours | ratio "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for regime, (steps, batch, steps_t) in regimes.items():
        if args.smoke:
            steps_t = 16 if regime == "loop50" else 12
        pairs = [espnet_pair(tk, False, batch, steps_t), espnet_pair(tk, True, batch, steps_t),
                 coqui_pair(tk, "softmax", batch, steps_t),
                 coqui_pair(tk, "sigmoid", batch, steps_t),
                 coqui_pair(tk, "fwd-ta", batch, steps_t),
                 monotonic_pair(batch, steps_t, whole=regime == "seq")]
        for pair in pairs:
            if pair is None or (args.only and args.only not in pair.name):
                continue
            diff = check_pair(pair, min(steps, 20))
            t = time_pair(pair, steps, repeats)
            r1 = t["orig fwd+bwd"] / t["ours fwd+bwd"]
            r2 = t["orig no_grad"] / t["ours no_grad"]
            print(f"| {pair.name} | {regime} ({steps} steps, B {batch}, T {steps_t}) "
                  f"| {t['orig fwd+bwd'] * 1e3:.1f} | {t['ours fwd+bwd'] * 1e3:.1f} | {r1:.2f}x "
                  f"| {t['orig no_grad'] * 1e3:.1f} | {t['ours no_grad'] * 1e3:.1f} | {r2:.2f}x "
                  f"| {diff:.1e} |", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load at the end {load:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
