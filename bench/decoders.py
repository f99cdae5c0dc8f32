"""Real decoders, step by step: three attention modules people already run, original vs
attnkern, in a 50-step decoder loop (forward+backward, and under no_grad).

    python bench/decoders.py [--steps 50] [--repeats 15] [--threads 2] [--smoke]

The originals are re-implemented here from their public sources (our code, written from
reading them; what is kept is said in each class):

- ``TutorialBahdanauAttention``: pytorch/tutorials,
  ``intermediate_source/seq2seq_translation_tutorial.py``, ``BahdanauAttention``.
- ``Tacotron2Attention``: NVIDIA/tacotron2, ``model.py`` ``Attention`` + ``LocationLayer``
  (``layers.py`` ``LinearNorm``/``ConvNorm``), driven as its ``Decoder`` does
  (``processed_memory = memory_layer(memory)`` once, ``attention_weights_cat`` =
  previous and cumulative weights fed back every step).
- ``OpenNMTGlobalAttention``: OpenNMT/OpenNMT-py, ``onmt/modules/global_attention.py``
  ``GlobalAttention(dim, attn_type="mlp")`` (softmax, no coverage), one step per call as its
  RNN decoders call it.

attnkern variants: "drop-in" keeps the client's module, its parameters and forward
signature, and calls :func:`attnkern.additive_attention` inside (so per-call work the
signature forces, e.g. OpenNMT projecting the memory bank at every step, stays);
"from_module" is ``attnkern.from_module(original)`` (the tutorial's ``BahdanauAttention``
drop-in) called as the original; "state" is the explicit decoding state (``start`` once,
``step`` each decoder step); "module" uses the attnkern layer
(:class:`attnkern.AdditiveAttention` loaded with its recipe, keys projected and prepared
once per sequence; for Tacotron 2 :class:`attnkern.LocationSensitiveAttention`, loaded
from the original's state_dict).

Per-step queries are slices of one leaf tensor (unbound once per loop, as a decoder's
stacked states would be). Timing: each variant's whole loop (including the once-per-sequence
key projection, and the backward of a loss over every step's context and weights),
interleaved across variants in one process, median of ``--repeats``; float32,
``backend="cpp"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if __name__ == "__main__" and not __package__:  # python bench/decoders.py: see bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import attnkern  # noqa: E402

BACKEND = "cpp"


# ------------------------------------------------------------------ the original modules

class BahdanauAttention(nn.Module):
    """pytorch/tutorials seq2seq ``BahdanauAttention``: ``Va(tanh(Wa(query) + Ua(keys)))``,
    softmax over the keys, ``bmm(weights, keys)``. query (B, 1, H), keys (B, T, H) ->
    context (B, 1, H), weights (B, 1, T). Kept as is (no mask: the tutorial has none)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
        scores = scores.squeeze(2).unsqueeze(1)
        weights = F.softmax(scores, dim=-1)
        context = torch.bmm(weights, keys)
        return context, weights


class LinearNorm(nn.Module):
    """tacotron2 ``layers.LinearNorm`` (Xavier-uniform init with a gain)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True,
                 w_init_gain: str = "linear") -> None:
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
        nn.init.xavier_uniform_(self.linear_layer.weight,
                                gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_layer(x)


class ConvNorm(nn.Module):
    """tacotron2 ``layers.ConvNorm`` (stride 1, dilation 1 as the attention uses it)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 padding: int | None = None, bias: bool = True,
                 w_init_gain: str = "linear") -> None:
        super().__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size,
                              padding=padding, bias=bias)
        nn.init.xavier_uniform_(self.conv.weight, gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, signal: Tensor) -> Tensor:
        return self.conv(signal)


class LocationLayer(nn.Module):
    """tacotron2 ``model.LocationLayer``: conv over (previous, cumulative) weights, dense."""

    def __init__(self, attention_n_filters: int, attention_kernel_size: int,
                 attention_dim: int) -> None:
        super().__init__()
        padding = int((attention_kernel_size - 1) / 2)
        self.location_conv = ConvNorm(2, attention_n_filters, kernel_size=attention_kernel_size,
                                      padding=padding, bias=False)
        self.location_dense = LinearNorm(attention_n_filters, attention_dim, bias=False,
                                         w_init_gain="tanh")

    def forward(self, attention_weights_cat: Tensor) -> Tensor:
        processed_attention = self.location_conv(attention_weights_cat)
        processed_attention = processed_attention.transpose(1, 2)
        return self.location_dense(processed_attention)


class Tacotron2Attention(nn.Module):
    """tacotron2 ``model.Attention`` (kept whole: same layers, the ``alignment.data``
    in-place mask fill with -inf, softmax over time, bmm with the memory)."""

    def __init__(self, attention_rnn_dim: int, embedding_dim: int, attention_dim: int,
                 attention_location_n_filters: int,
                 attention_location_kernel_size: int) -> None:
        super().__init__()
        self.query_layer = LinearNorm(attention_rnn_dim, attention_dim, bias=False,
                                      w_init_gain="tanh")
        self.memory_layer = LinearNorm(embedding_dim, attention_dim, bias=False,
                                       w_init_gain="tanh")
        self.v = LinearNorm(attention_dim, 1, bias=False)
        self.location_layer = LocationLayer(attention_location_n_filters,
                                            attention_location_kernel_size, attention_dim)
        self.score_mask_value = -float("inf")

    def get_alignment_energies(self, query: Tensor, processed_memory: Tensor,
                               attention_weights_cat: Tensor) -> Tensor:
        processed_query = self.query_layer(query.unsqueeze(1))
        processed_attention_weights = self.location_layer(attention_weights_cat)
        energies = self.v(torch.tanh(
            processed_query + processed_attention_weights + processed_memory))
        return energies.squeeze(-1)

    def forward(self, attention_hidden_state: Tensor, memory: Tensor, processed_memory: Tensor,
                attention_weights_cat: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        alignment = self.get_alignment_energies(attention_hidden_state, processed_memory,
                                                attention_weights_cat)
        if mask is not None:
            alignment.data.masked_fill_(mask, self.score_mask_value)
        attention_weights = F.softmax(alignment, dim=1)
        attention_context = torch.bmm(attention_weights.unsqueeze(1), memory)
        return attention_context.squeeze(1), attention_weights


def sequence_mask(lengths: Tensor, max_len: int) -> Tensor:
    """OpenNMT-py ``onmt.utils.misc.sequence_mask``: True for the valid positions."""
    return torch.arange(0, max_len, device=lengths.device).type_as(lengths) \
        .repeat(lengths.numel(), 1).lt(lengths.unsqueeze(1))


class OpenNMTGlobalAttention(nn.Module):
    """OpenNMT-py ``GlobalAttention(dim, attn_type="mlp")``, softmax, no coverage: score
    ``v(tanh(linear_query(q) + linear_context(h)))``, masked by ``src_len``, softmax,
    context ``c = bmm(align, memory_bank)``, output ``linear_out(cat([c, q]))`` (with bias,
    no tanh for mlp). One step: source (B, dim) -> (attn_h (B, dim), align (B, S))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear_context = nn.Linear(dim, dim, bias=False)
        self.linear_query = nn.Linear(dim, dim, bias=True)
        self.v = nn.Linear(dim, 1, bias=False)
        self.linear_out = nn.Linear(dim * 2, dim, bias=True)

    def score(self, h_t: Tensor, h_s: Tensor) -> Tensor:
        src_batch, src_len, _ = h_s.size()
        tgt_batch, tgt_len, _ = h_t.size()
        dim = self.dim
        wq = self.linear_query(h_t.view(-1, dim)).view(tgt_batch, tgt_len, 1, dim)
        wq = wq.expand(tgt_batch, tgt_len, src_len, dim)
        uh = self.linear_context(h_s.contiguous().view(-1, dim)).view(src_batch, 1, src_len, dim)
        uh = uh.expand(src_batch, tgt_len, src_len, dim)
        wquh = torch.tanh(wq + uh)
        return self.v(wquh.view(-1, dim)).view(tgt_batch, tgt_len, src_len)

    def forward(self, source: Tensor, memory_bank: Tensor,
                src_len: Tensor | None = None) -> tuple[Tensor, Tensor]:
        one_step = source.dim() == 2
        if one_step:
            source = source.unsqueeze(1)
        batch, source_l, dim = memory_bank.size()
        _, target_l, _ = source.size()
        align = self.score(source, memory_bank)
        if src_len is not None:
            mask = sequence_mask(src_len, max_len=align.size(-1)).unsqueeze(1)
            align.masked_fill_(~mask, -float("inf"))
        align_vectors = F.softmax(align.view(batch * target_l, source_l), -1)
        align_vectors = align_vectors.view(batch, target_l, source_l)
        c = torch.bmm(align_vectors, memory_bank)
        concat_c = torch.cat([c, source], 2).view(batch * target_l, dim * 2)
        attn_h = self.linear_out(concat_c).view(batch, target_l, dim)
        if one_step:
            attn_h, align_vectors = attn_h.squeeze(1), align_vectors.squeeze(1)
        return attn_h, align_vectors


TutorialBahdanauAttention = BahdanauAttention  # the tutorial's own class name is the one above


# ------------------------------------------------------------- attnkern drop-in variants

class TutorialDropIn(TutorialBahdanauAttention):
    """The tutorial's module and parameters, the fused op inside (``Va.bias`` cancels in
    the softmax; ``Ua(keys)`` is still recomputed per call, as the signature asks)."""

    def forward(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        context, weights = attnkern.additive_attention(
            self.Wa(query), self.Ua(keys), keys, self.Va.weight, return_weights=True,
            backend=BACKEND)
        return context, weights


class OpenNMTDropIn(OpenNMTGlobalAttention):
    """OpenNMT's module and parameters, the fused op inside (one step or Tq steps)."""

    def forward(self, source: Tensor, memory_bank: Tensor,
                src_len: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c, align = attnkern.additive_attention(
            self.linear_query(source), self.linear_context(memory_bank), memory_bank,
            self.v.weight, key_lengths=src_len, return_weights=True, backend=BACKEND)
        return self.linear_out(torch.cat([c, source], -1)), align


# ------------------------------------------------------------------------ the loops

@dataclass
class Client:
    """One client: its inputs and, per variant, a function running the whole loop and
    returning every step's outputs (and the tensors whose gradients are compared)."""

    name: str
    shape: str
    make_inputs: Callable[[], dict[str, Tensor]]
    variants: dict[str, Callable[[dict[str, Tensor], int], list[Tensor]]]
    params: dict[str, nn.Module]


def _randn(*shape: int, g: torch.Generator, grad: bool = True, scale: float = 1.0) -> Tensor:
    return (torch.randn(*shape, generator=g) * scale).requires_grad_(grad)


def tutorial_client(B: int = 32, T: int = 30, H: int = 128, seed: int = 0) -> Client:
    torch.manual_seed(seed)
    orig = TutorialBahdanauAttention(H)
    drop = TutorialDropIn(H)
    drop.load_state_dict(orig.state_dict())
    layer = attnkern.AdditiveAttention.from_bahdanau_tutorial(orig, backend=BACKEND)
    converted = attnkern.from_module(orig)
    converted.backend = BACKEND

    def inputs() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed + 1)
        return {"keys": _randn(B, T, H, g=g), "queries": _randn(64, B, 1, H, g=g)}

    def run_module(mod: nn.Module) -> Callable[[dict[str, Tensor], int], list[Tensor]]:
        def loop(x: dict[str, Tensor], steps: int) -> list[Tensor]:
            outs = []
            for query in x["queries"].unbind(0)[:steps]:
                outs += mod(query, x["keys"])
            return outs
        return loop

    def run_layer(x: dict[str, Tensor], steps: int) -> list[Tensor]:
        keys = x["keys"]
        pk = layer.project_keys(keys)  # once per sequence
        outs: list[Tensor] = []
        for query in x["queries"].unbind(0)[:steps]:
            outs += layer(query, None, keys, projected_keys=pk, need_weights=True)
        return outs

    def run_layer_per_call(x: dict[str, Tensor], steps: int) -> list[Tensor]:
        outs: list[Tensor] = []
        for query in x["queries"].unbind(0)[:steps]:  # the tutorial's call, keys every step
            outs += layer(query, x["keys"], need_weights=True)
        return outs

    def run_state(x: dict[str, Tensor], steps: int) -> list[Tensor]:
        state = layer.start(x["keys"])  # once per sequence
        outs: list[Tensor] = []
        for query in x["queries"].unbind(0)[:steps]:
            context, weights, state = layer.step(query, state)
            outs += (context, weights)
        return outs

    return Client("pytorch/tutorials seq2seq BahdanauAttention", f"B{B} T{T} H{H}", inputs,
                  {"original": run_module(orig), "drop-in": run_module(drop),
                   "from_module": run_module(converted), "state": run_state,
                   "module": run_layer, "module, keys per call": run_layer_per_call},
                  {"original": orig, "drop-in": drop, "from_module": converted,
                   "state": layer, "module": layer, "module, keys per call": layer})


def tacotron2_client(B: int = 8, T: int = 120, attention_dim: int = 128,
                     embedding_dim: int = 512, rnn_dim: int = 1024, n_filters: int = 32,
                     kernel: int = 31, seed: int = 0) -> Client:
    torch.manual_seed(seed)
    orig = Tacotron2Attention(rnn_dim, embedding_dim, attention_dim, n_filters, kernel)
    lsa = attnkern.LocationSensitiveAttention(rnn_dim, embedding_dim, attention_dim,
                                              n_filters, kernel, backend=BACKEND)
    lsa.load_state_dict(orig.state_dict(), strict=True)

    def inputs() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed + 2)
        lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
        lengths[0] = T
        return {"memory": _randn(B, T, embedding_dim, g=g),
                "hidden": _randn(64, B, rnn_dim, g=g),
                "mask": torch.arange(T)[None] >= lengths[:, None]}

    def run(mod: nn.Module) -> Callable[[dict[str, Tensor], int], list[Tensor]]:
        def loop(x: dict[str, Tensor], steps: int) -> list[Tensor]:
            memory = x["memory"]
            processed_memory = mod.memory_layer(memory)  # once per utterance
            weights = memory.new_zeros(B, T)
            cum = memory.new_zeros(B, T)
            outs: list[Tensor] = []
            for hidden in x["hidden"].unbind(0)[:steps]:  # the decoder's alignment feedback
                cat = torch.cat((weights.unsqueeze(1), cum.unsqueeze(1)), dim=1)
                context, weights = mod(hidden, memory, processed_memory, cat, x["mask"])
                cum = cum + weights
                outs += (context, weights)
            return outs
        return loop

    def run_state(x: dict[str, Tensor], steps: int) -> list[Tensor]:
        state = lsa.start(x["memory"], key_padding_mask=x["mask"])  # once per utterance
        outs: list[Tensor] = []
        for hidden in x["hidden"].unbind(0)[:steps]:
            context, weights, state = lsa.step(hidden, state)
            outs += (context, weights)
        return outs

    return Client("NVIDIA/tacotron2 location-sensitive Attention",
                  f"B{B} T{T} attention {attention_dim} memory {embedding_dim}", inputs,
                  {"original": run(orig), "drop-in": run(lsa), "state": run_state},
                  {"original": orig, "drop-in": lsa, "state": lsa})


def opennmt_client(B: int = 16, S: int = 50, d: int = 256, seed: int = 0) -> Client:
    torch.manual_seed(seed)
    orig = OpenNMTGlobalAttention(d)
    drop = OpenNMTDropIn(d)
    drop.load_state_dict(orig.state_dict())
    layer = attnkern.AdditiveAttention.from_opennmt_mlp(orig, backend=BACKEND)
    linear_out = orig.linear_out  # the caller's output layer, shared with the original

    def inputs() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed + 3)
        lengths = torch.randint(S // 2, S + 1, (B,), generator=g)
        lengths[0] = S
        return {"memory_bank": _randn(B, S, d, g=g), "sources": _randn(64, B, d, g=g),
                "src_len": lengths}

    def run_module(mod: nn.Module) -> Callable[[dict[str, Tensor], int], list[Tensor]]:
        def loop(x: dict[str, Tensor], steps: int) -> list[Tensor]:
            outs: list[Tensor] = []
            for source in x["sources"].unbind(0)[:steps]:
                outs += mod(source, x["memory_bank"], x["src_len"])
            return outs
        return loop

    def run_layer(x: dict[str, Tensor], steps: int) -> list[Tensor]:
        bank = x["memory_bank"]
        pk = layer.project_keys(bank)  # once per sequence
        outs: list[Tensor] = []
        for source in x["sources"].unbind(0)[:steps]:
            c, align = layer(source, None, bank, projected_keys=pk, key_lengths=x["src_len"],
                             need_weights=True)
            outs += (linear_out(torch.cat([c, source], -1)), align)
        return outs

    def run_layer_per_call(x: dict[str, Tensor], steps: int) -> list[Tensor]:
        outs: list[Tensor] = []
        for source in x["sources"].unbind(0)[:steps]:  # OpenNMT's call: the bank every step
            c, align = layer(source, x["memory_bank"], key_lengths=x["src_len"],
                             need_weights=True)
            outs += (linear_out(torch.cat([c, source], -1)), align)
        return outs

    return Client('OpenNMT-py GlobalAttention(attn_type="mlp")', f"B{B} S{S} d{d}", inputs,
                  {"original": run_module(orig), "drop-in": run_module(drop),
                   "module": run_layer, "module, keys per call": run_layer_per_call},
                  {"original": orig, "drop-in": drop, "module": layer,
                   "module, keys per call": layer})


CLIENTS = {"tutorial": tutorial_client, "tacotron2": tacotron2_client,
           "opennmt": opennmt_client}


# ------------------------------------------------------------------------- the timer

def time_loops(client: Client, steps: int, repeats: int) -> dict[tuple[str, str], float]:
    """Median seconds of each (variant, mode) loop, interleaved across variants."""
    x = client.make_inputs()
    g = torch.Generator().manual_seed(9)
    cotangents = None
    times: dict[tuple[str, str], list[float]] = {}

    def fwd_bwd(loop: Callable[..., list[Tensor]]) -> None:
        nonlocal cotangents
        outs = loop(x, steps)
        if cotangents is None:
            cotangents = [torch.randn(o.shape, generator=g) for o in outs]
        torch.autograd.backward(outs, cotangents)

    def no_grad(loop: Callable[..., list[Tensor]]) -> None:
        with torch.no_grad():
            loop(x, steps)

    for r in range(repeats + 1):  # round 0 warms up
        for mode, run in (("fwd+bwd", fwd_bwd), ("no_grad", no_grad)):
            for name, loop in client.variants.items():
                for t in x.values():
                    t.grad = None
                t0 = time.perf_counter()
                run(loop)
                dt = time.perf_counter() - t0
                if r:
                    times.setdefault((name, mode), []).append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--smoke", action="store_true", help="2 steps, 1 repeat, tiny shapes")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, repeats = (2, 1) if args.smoke else (args.steps, args.repeats)
    small = {"tutorial": dict(B=2, T=5, H=8), "opennmt": dict(B=2, S=5, d=8),
             "tacotron2": dict(B=2, T=9, attention_dim=8, embedding_dim=6, rnn_dim=7,
                               n_filters=3, kernel=5)}
    print(f"torch {torch.__version__}, {args.threads} threads, float32, backend={BACKEND}, "
          f"{steps} steps, median of {repeats}; load average {os.getloadavg()[0]:.2f}")
    print("| client (shape) | variant | fwd+bwd ms | speed-up | no_grad ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for key in args.clients.split(","):
        client = CLIENTS[key](**(small[key] if args.smoke else {}))
        med = time_loops(client, steps, repeats)
        base_fb, base_ng = med[("original", "fwd+bwd")], med[("original", "no_grad")]
        for name in client.variants:
            fb, ng = med[(name, "fwd+bwd")], med[(name, "no_grad")]
            print(f"| {client.name} ({client.shape}) | {name} | {fb * 1e3:.2f} | "
                  f"{base_fb / fb:.2f}x | {ng * 1e3:.2f} | {base_ng / ng:.2f}x |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
