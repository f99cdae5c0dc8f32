"""Training loop (single process or DistributedDataParallel) and batched evaluation."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .data import SentenceSampler, decode_ids, make_batch, reverse_words
from .model import Seq2Seq

__all__ = [
    "DistInfo", "EvalResult", "TrainResult", "evaluate", "init_distributed", "lr_at",
    "translate", "train",
]


@dataclass
class DistInfo:
    """Where this process sits in a ``torchrun`` job (world 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when torchrun's variables are set (gloo on CPU, NCCL on CUDA)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, True)


def lr_at(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to 5%."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.02)
    t = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t)))


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    stopped_by_time: bool = False


class _NoBar:
    """Stands in for a tqdm bar when tqdm (the `demo` extra) is missing or progress is off."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: object) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, dynamic_ncols=True, mininterval=0.5)
    return _NoBar()


def train(
    model: Seq2Seq,
    sampler: SentenceSampler,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    clip: float = 1.0,
    device: torch.device | str = "cpu",
    dist_info: DistInfo | None = None,
    progress: bool = True,
    desc: str = "train",
    curriculum: float = 0.0,
    time_limit: float | None = None,
    log: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Teacher-forced training with Adam and a warm-up + cosine schedule.

    Under torchrun each rank draws its own sentences (the sampler is seeded per rank) and
    uses ``batch_size // world_size`` of them; DDP averages the gradients, so the update
    matches one process with the full batch. ``curriculum``: over that fraction of the
    steps the longest sentence grows from 2 words to ``sampler.max_words`` (short sentences
    are cheap and teach the reversal; long ones teach keeping track of the words).

    ``time_limit`` (seconds, single process only): the schedule runs on
    ``max(step / steps, elapsed / time_limit)``, so on a machine too slow for ``steps`` the
    learning rate still anneals and training ends on time (with fewer steps).
    """
    dist_info = dist_info or DistInfo()
    device = torch.device(device)
    model.to(device).train()
    net: nn.Module = model
    if dist_info.initialized and dist_info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    per_rank = max(1, batch_size // dist_info.world_size)
    if dist_info.world_size > 1:
        time_limit = None  # ranks must agree on the number of steps
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = TrainResult()
    queue: list[list[str]] = []
    bar = _progress_bar(steps, desc, progress and dist_info.is_main)
    t0 = time.perf_counter()
    smooth = None
    full_words = sampler.max_words
    step = 0
    while step < steps:
        frac = step / steps
        if time_limit:
            frac = max(frac, (time.perf_counter() - t0) / time_limit)
            if frac >= 1.0:
                result.stopped_by_time = True
                break
        if not queue:
            if curriculum > 0 and frac < curriculum:
                sampler.max_words = min(full_words,
                                        2 + int((full_words - 1) * frac / curriculum))
            else:
                sampler.max_words = full_words
            queue = sampler.batches(per_rank)
        batch = make_batch(queue.pop()).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(frac, lr)
        logits = net(batch.src, batch.src_lengths, batch.tgt_in)
        loss = model.loss(logits, batch.tgt_out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        value = float(loss.detach())
        result.losses.append(value)
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        bar.update(1)
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{smooth:.4f}")
        if log is not None:
            log(step, value)
        step += 1
    bar.close()
    sampler.max_words = full_words
    result.seconds = time.perf_counter() - t0
    result.steps = step
    model.eval()
    return result


def translate(model: Seq2Seq, sentences: Sequence[str], *, batch_size: int = 256,
              device: torch.device | str = "cpu") -> list[str]:
    """Greedy outputs for normalised ``sentences``, decoded in length-sorted batches."""
    model.eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    outputs: list[str] = [""] * len(sentences)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = make_batch([sentences[i] for i in idx]).to(device)
        ids, _ = model.greedy(batch.src, batch.src_lengths)
        for row, i in enumerate(idx):
            outputs[i] = decode_ids(ids[row].tolist())
    return outputs


@dataclass
class EvalResult:
    exact: float                     # fraction of sentences exactly right
    char: float                      # fraction of target characters (and EOS) right
    by_words: dict[int, float]       # exact match by number of words
    n: int
    errors: list[tuple[str, str, str]]   # (input, expected, got), a few


def char_accuracy(expected: str, got: str) -> tuple[int, int]:
    """Correct positions (the EOS slot included) out of ``len(expected) + 1``."""
    exp, out = expected + "\0", got + "\0"
    return sum(a == b for a, b in zip(exp, out)), len(exp)


def evaluate(model: Seq2Seq, sentences: Sequence[str], *, batch_size: int = 256,
             device: torch.device | str = "cpu") -> EvalResult:
    outputs = translate(model, sentences, batch_size=batch_size, device=device)
    right = total = 0
    hits: dict[int, list[int]] = {}
    errors: list[tuple[str, str, str]] = []
    for s, got in zip(sentences, outputs):
        exp = reverse_words(s)
        r, n = char_accuracy(exp, got)
        right, total = right + r, total + n
        ok = got == exp
        hits.setdefault(len(s.split(" ")), []).append(int(ok))
        if not ok and len(errors) < 10:
            errors.append((s, exp, got))
    exact = sum(sum(v) for v in hits.values()) / max(1, len(sentences))
    by_words = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
    return EvalResult(exact, right / max(1, total), by_words, len(sentences), errors)


