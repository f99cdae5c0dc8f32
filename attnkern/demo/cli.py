"""``python -m attnkern.demo``: train, score, translate, plot.

Also runs under ``torchrun --nproc_per_node=N -m attnkern.demo`` (gloo on CPU, NCCL on
CUDA): every rank trains on its own sentences, DDP averages the gradients, rank 0 reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .data import SentenceSampler, make_batch, normalize_sentence, split_words
from .model import ModelConfig, Seq2Seq, load_checkpoint, save_checkpoint
from .train import DistInfo, evaluate, init_distributed, train, translate

__all__ = ["DEFAULTS", "build_parser", "main", "reverse_sentences"]

DEFAULT_SENTENCE = "the cat sat on the mat"
MAX_WORDS = 8   # held-out sentences have 1..MAX_WORDS words, as the task says
TRAIN_MAX_WORDS = 8  # longest training sentence; longer inputs are decoded in chunks of it
LONG_BIAS = 1.0  # weight n ** LONG_BIAS for an n-word training sentence
ZIPF = 0.5  # share of training words drawn by frequency (real text repeats short words)
EVAL_SEED = 777  # the held-out sentences are the same for every run

DEFAULTS: dict[str, Any] = {
    "steps": 1000,
    "batch_size": 64,
    "lr": 5e-3,
    "curriculum": 0.3,
    "eval_size": 1600,
    "time_budget": 230.0,
}
MODEL: dict[str, Any] = {"embed_dim": 32, "enc_hidden": 64, "dec_hidden": 128, "attn_hidden": 64,
         "pos_dim": 16, "value_embed": True}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m attnkern.demo",
        description="Character-level seq2seq that reverses every word of a sentence, with "
                    "attnkern.AdditiveAttention, against the same model without attention.",
    )
    p.add_argument("--sentence", action="append", metavar="TEXT",
                   help=f"sentence to reverse (repeatable; default {DEFAULT_SENTENCE!r}); "
                        "the first one is drawn in the attention heatmap")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps for each model (default {DEFAULTS['steps']})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the no-attention baseline and its accuracy-vs-length plot")
    p.add_argument("--out", default="demo_out", help="output folder (default %(default)s)")
    p.add_argument("--save", metavar="PATH", help="write a checkpoint of the trained model(s)")
    p.add_argument("--load", metavar="PATH",
                   help="load a checkpoint written by --save instead of training")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help="sentences per step, over all ranks (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                   help="peak Adam learning rate (default %(default)s)")
    p.add_argument("--eval-size", type=int, default=DEFAULTS["eval_size"],
                   help="held-out sentences scored (default %(default)s)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="cap on the training time of both models together: past it the "
                        "schedule anneals early and training stops (default: "
                        f"{DEFAULTS['time_budget']:.0f} s when --steps is not given, else none; "
                        "0 = none; single process only)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: all cores, shared among local ranks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def reverse_sentences(model: Seq2Seq, sentences: list[str], *,
                      device: torch.device | str = "cpu") -> list[str]:
    """Model outputs for normalised sentences; ones longer than :data:`TRAIN_MAX_WORDS`
    words are decoded in chunks of that many words (the task never crosses a word
    boundary)."""
    limit = TRAIN_MAX_WORDS
    chunks, owners = [], []
    for i, s in enumerate(sentences):
        words = s.split(" ")
        for start in range(0, len(words), limit):
            chunks.append(" ".join(words[start:start + limit]))
            owners.append(i)
    outs = translate(model, chunks, device=device)
    joined: list[list[str]] = [[] for _ in sentences]
    for i, out in zip(owners, outs):
        joined[i].append(out)
    return [" ".join(parts) for parts in joined]


def _attention_map(model: Seq2Seq, sentence: str, device: torch.device
                   ) -> tuple[list[list[float]], str]:
    from .data import decode_ids

    batch = make_batch([sentence]).to(device)
    ids, weights = model.greedy(batch.src, batch.src_lengths, need_weights=True)
    out = decode_ids(ids[0].tolist())
    assert weights is not None
    steps = min(len(out) + 1, weights.shape[1])  # through the EOS step
    return weights[0, :steps].float().cpu().tolist(), out


def _pick_device(arg: str | None, local_rank: int) -> torch.device:
    if arg is None:
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(arg)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if "LOCAL_RANK" in os.environ else 0)
    return device


def _default_threads() -> int:
    """All cores (shared among local ranks), but one thread when the machine is already busy:
    the ops here are small, and an OpenMP thread that the OS deschedules stalls every one of
    them (measured: 10x slower steps with 2 threads on a busy 2-core box)."""
    local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = os.cpu_count() or 1
    threads = max(1, cores // local_world)
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        busy = 0.0
    if threads > 1 and busy > 0.5 * cores:
        threads = 1
    return threads


def _pct(x: float) -> str:
    return f"{100.0 * x:5.1f}%"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sentences = [normalize_sentence(s) for s in (args.sentence or [DEFAULT_SENTENCE])]
    except ValueError as exc:
        build_parser().error(str(exc))
    if args.steps is not None and args.steps < 1:
        build_parser().error(f"--steps must be >= 1, got {args.steps}")
    budget = args.time_budget
    if budget is None:
        budget = DEFAULTS["time_budget"] if args.steps is None else 0.0
    steps = DEFAULTS["steps"] if args.steps is None else args.steps

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(args.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    threads = args.threads or _default_threads()
    torch.set_num_threads(threads)
    dist_info: DistInfo = init_distributed(device)
    main_rank = dist_info.is_main

    def say(msg: str = "") -> None:
        if main_rank:
            print(msg, flush=True)

    # Without the C++ extension the layer falls back to the reference; say so once, plainly.
    warnings.filterwarnings("ignore", message="attnkern._C is not built")
    from attnkern.functional import resolve_backend

    backend = resolve_backend("auto", device, torch.float32)
    backend_name = {"op": "cpp" if device.type == "cpu" else "triton"}.get(backend, backend)
    say(f"attnkern demo: reverse every word | device {device}, {threads} thread(s), "
        f"attention backend {backend_name}"
        + (f", {dist_info.world_size} processes" if dist_info.world_size > 1 else ""))

    train_words, heldout_words = split_words()
    eval_sentences = []
    eval_sampler = SentenceSampler(heldout_words, seed=EVAL_SEED)
    for i in range(args.eval_size):
        eval_sentences.append(eval_sampler.sentence(1 + i % MAX_WORDS))

    models: dict[str, Seq2Seq] = {}
    seconds: dict[str, float] = {}
    if args.load:
        models, meta = load_checkpoint(args.load, device)
        if "attention" not in models:
            build_parser().error(f"{args.load} has no attention model")
        if args.no_baseline:
            models.pop("baseline", None)
        say(f"loaded {args.load} (trained {meta.get('steps', '?')} steps); skipping training")
    else:
        runs = [("attention", True)] + ([] if args.no_baseline else [("baseline", False)])
        t_start = time.perf_counter()
        for name, attention in runs:
            torch.manual_seed(args.seed)
            model = Seq2Seq(ModelConfig(attention=attention, **MODEL))
            n_params = sum(p.numel() for p in model.parameters())
            say(f"training {'attention' if attention else 'no-attention baseline'} model: "
                f"{n_params:,} parameters, {steps} steps x {args.batch_size} sentences")
            limit = None
            if budget > 0:
                used = time.perf_counter() - t_start
                # The attention model is the slower one per step: give it the larger share.
                limit = budget * 0.62 if attention and len(runs) > 1 else budget - used
            # Each rank draws its own sentences: the data is sharded by rank.
            sampler = SentenceSampler(train_words, max_words=TRAIN_MAX_WORDS,
                                      long_bias=LONG_BIAS, zipf=ZIPF,
                                      seed=args.seed * 1000 + dist_info.rank)
            result = train(model, sampler, steps=steps, batch_size=args.batch_size,
                           lr=args.lr, curriculum=DEFAULTS["curriculum"], device=device,
                           dist_info=dist_info, progress=not args.quiet,
                           desc="attention" if attention else "no attention",
                           time_limit=limit)
            if result.stopped_by_time:
                say(f"  time budget reached: stopped after {result.steps} of {steps} steps "
                    "(the machine is slower or busier than planned)")
                steps = result.steps  # same budget for the baseline
            models[name], seconds[name] = model, result.seconds

    if main_rank:
        _report(args, steps, sentences, eval_sentences, models, seconds, device)
    if dist_info.initialized:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def _report(args: argparse.Namespace, steps: int, sentences: list[str], eval_sentences: list[str],
            models: dict[str, Seq2Seq], seconds: dict[str, float], device: torch.device) -> None:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {"attention": "attention", "baseline": "no attention"}
    print(f"held-out: {len(eval_sentences)} sentences of 1-{MAX_WORDS} words never seen in "
          "training")
    curves = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        res = evaluate(model, eval_sentences, device=device)
        took = f", trained in {seconds[name]:.0f} s" if name in seconds else ""
        print(f"  {labels[name]:<13} exact match {_pct(res.exact)}  character accuracy "
              f"{_pct(res.char)}  (scored in {time.perf_counter() - t0:.1f} s{took})")
        curves[f"{labels[name]} ({100 * res.exact:.1f}%)"] = res.by_words

    attention = models["attention"]
    outputs = reverse_sentences(attention, sentences, device=device)
    for s, o in zip(sentences, outputs):
        print(f"{s} -> {o}")

    written: list[Path] = []
    try:
        from .plots import plot_accuracy, plot_attention
    except ImportError:  # matplotlib is the `demo` extra
        print("matplotlib is not installed (pip install 'attnkern[demo]'): no plots written")
    else:
        example = " ".join(sentences[0].split(" ")[:TRAIN_MAX_WORDS])
        weights, out = _attention_map(attention, example, device)
        written.append(plot_attention(weights, example, out, out_dir / "attention.png"))
        if "baseline" in models:
            written.append(plot_accuracy(curves, out_dir / "accuracy_vs_length.png"))
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(args.save, models, {"steps": steps, "seed": args.seed})
        written.append(Path(args.save))
    if written:
        print("wrote " + ", ".join(str(p) for p in written))
    sys.stdout.flush()
