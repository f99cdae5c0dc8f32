"""Character-level encoder-decoder, with or without :class:`attnkern.AdditiveAttention`.

Encoder: embedding + bidirectional GRU over the source characters (packed, so padding never
reaches a real position). Decoder: a GRU cell fed the previous character and the previous
context ("input feeding", Luong et al. 2015), so it knows where it looked last step.

- ``attention=True``: each step the decoder state queries the encoder states with additive
  attention; keys are projected once per batch (``project_keys``) and padding is excluded
  with ``key_lengths``.
- ``attention=False`` (the baseline): same sizes, but the context is the same fixed vector at
  every step (the encoder's final states), so the whole sentence must squeeze through it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkern import AdditiveAttention

from .data import BOS, EOS, PAD, VOCAB_SIZE

__all__ = ["ModelConfig", "Seq2Seq", "load_checkpoint", "positions", "save_checkpoint"]


@dataclass
class ModelConfig:
    vocab_size: int = VOCAB_SIZE
    embed_dim: int = 64
    enc_hidden: int = 128     # per direction; encoder states are 2 * enc_hidden wide
    dec_hidden: int = 256
    attn_hidden: int = 128
    pos_dim: int = 0          # sinusoidal position features appended to keys and values
    value_embed: bool = False  # append the source character embedding to the values
    attn_normalize: bool = False  # weight-normalised score vector (learned sharpness)
    attention: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Sinusoidal features ``(1, length, dim)`` of the positions 0..length-1."""
    half = dim // 2
    freq = torch.exp(-math.log(1000.0) * torch.arange(half, device=device, dtype=torch.float32)
                     / max(1, half))
    angle = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freq
    pe = torch.cat([angle.sin(), angle.cos()], dim=-1)
    if pe.shape[-1] < dim:
        pe = torch.cat([pe, pe.new_zeros(length, dim - pe.shape[-1])], dim=-1)
    return pe.to(dtype)[None]


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        ctx_dim = 2 * cfg.enc_hidden + cfg.pos_dim + (cfg.embed_dim if cfg.value_embed else 0)
        self.ctx_dim = ctx_dim
        self.src_embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.encoder = nn.GRU(cfg.embed_dim, cfg.enc_hidden, batch_first=True,
                              bidirectional=True)
        self.init_state = nn.Linear(2 * cfg.enc_hidden, cfg.dec_hidden)
        self.tgt_embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.cell = nn.GRUCell(cfg.embed_dim + ctx_dim, cfg.dec_hidden)
        self.attention: AdditiveAttention | None = (
            AdditiveAttention(cfg.dec_hidden, ctx_dim, cfg.attn_hidden,
                              normalize=cfg.attn_normalize) if cfg.attention else None
        )
        self.combine = nn.Linear(cfg.dec_hidden + ctx_dim, cfg.dec_hidden)
        self.out = nn.Linear(cfg.dec_hidden, cfg.vocab_size)

    # encoder ---------------------------------------------------------------------------

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """src ``(B, S)``, src_lengths ``(B,)`` -> encoder states ``(B, S, 2*enc_hidden)``
        (zero at padding), summary ``(B, 2*enc_hidden)``, initial decoder state
        ``(B, dec_hidden)``."""
        emb = self.src_embed(src)
        packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, h_n = self.encoder(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        summary = torch.cat([h_n[0], h_n[1]], dim=-1)  # last forward + first backward state
        state = torch.tanh(self.init_state(summary))
        extra_s, extra_v = [], []
        if self.config.pos_dim:
            pe = positions(src.shape[1], self.config.pos_dim, states.device, states.dtype)
            extra_s.append(pe.expand(src.shape[0], -1, -1))
            extra_v.append(summary.new_zeros(summary.shape[0], self.config.pos_dim))
        if self.config.value_embed:
            extra_s.append(emb)
            extra_v.append(summary.new_zeros(summary.shape[0], self.config.embed_dim))
        if extra_s:
            states = torch.cat([states, *extra_s], dim=-1)
            summary = torch.cat([summary, *extra_v], dim=-1)
        return states, summary, state

    # decoder ---------------------------------------------------------------------------

    def _step(self, y_emb: Tensor, ctx: Tensor, state: Tensor, memory: dict,
              need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """One decoder step: ``(B, E), (B, C), (B, D)`` -> new state, new context, weights."""
        state = self.cell(torch.cat([y_emb, ctx], dim=-1), state)
        if self.attention is None:
            return state, memory["summary"], None
        # 2-D query: one decoder step attends over all encoder positions.
        ctx, weights = self.attention(
            state, None, memory["states"], projected_keys=memory["keys"],
            key_lengths=memory["lengths"], need_weights=need_weights,
        )
        return state, ctx, weights

    def _memory(self, src: Tensor, src_lengths: Tensor) -> tuple[dict, Tensor]:
        states, summary, state = self.encode(src, src_lengths)
        memory: dict[str, Any] = {"states": states, "summary": summary,
                                  "lengths": src_lengths}
        if self.attention is not None:
            memory["keys"] = self.attention.project_keys(states)  # once per batch
        return memory, state

    def _logits(self, states: Tensor, ctxs: Tensor) -> Tensor:
        return self.out(torch.tanh(self.combine(torch.cat([states, ctxs], dim=-1))))

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, vocab)`` for tgt_in ``(B, T)`` (BOS + target)."""
        memory, state = self._memory(src, src_lengths)
        ctx = torch.zeros_like(memory["summary"])
        y_emb = self.tgt_embed(tgt_in)
        states, ctxs = [], []
        for t in range(tgt_in.shape[1]):
            state, ctx, _ = self._step(y_emb[:, t], ctx, state, memory)
            states.append(state)
            ctxs.append(ctx)
        # The output layer runs once over all steps (one GEMM, not T small ones).
        return self._logits(torch.stack(states, 1), torch.stack(ctxs, 1))

    def loss(self, logits: Tensor, tgt_out: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor, max_len: int | None = None,
               need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Batched greedy decoding -> ids ``(B, T)`` (EOS then PAD after each sentence's
        end) and, with need_weights, attention ``(B, T, S)``. A row stops at EOS or after
        ``min(2 * src_length + 2, max_len)`` steps.

        Every row is computed exactly as it would be alone: the encoder is packed, the
        attention ignores keys past ``src_lengths``, and finished rows only get padded.
        """
        b = src.shape[0]
        # Each row's own limit (never the batch's padded length): the same in any batch.
        row_limit = 2 * src_lengths.to(src.device) + 2
        if max_len is not None:
            row_limit = row_limit.clamp(max=max_len)
        steps = int(row_limit.max())
        memory, state = self._memory(src, src_lengths)
        ctx = torch.zeros_like(memory["summary"])
        y = torch.full((b,), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(b, dtype=torch.bool, device=src.device)
        ids, weights = [], []
        for t in range(steps):
            done = done | (row_limit <= t)
            state, ctx, w = self._step(self.tgt_embed(y), ctx, state, memory, need_weights)
            y = self._logits(state, ctx).argmax(-1)
            y = y.masked_fill(done, PAD)
            ids.append(y)
            if w is not None:
                weights.append(w)
            done = done | (y == EOS)
            if bool(done.all()):
                break
        out = torch.stack(ids, 1)
        return out, (torch.stack(weights, 1) if weights else None)


CHECKPOINT_FORMAT = "attnkern-demo/1"


def save_checkpoint(path: str, models: dict[str, Seq2Seq], meta: dict | None = None) -> None:
    """Write ``models`` (name -> model: config + weights) and ``meta`` to ``path``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "models": {name: {"config": m.config.to_dict(),
                          "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()}}
                   for name, m in models.items()},
        "meta": meta or {},
    }
    torch.save(payload, path)


def load_checkpoint(path: str, device: torch.device | str = "cpu"
                    ) -> tuple[dict[str, Seq2Seq], dict]:
    """Read a checkpoint written by :func:`save_checkpoint` -> (models in eval mode, meta)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an attnkern demo checkpoint ({CHECKPOINT_FORMAT})")
    models = {}
    for name, entry in payload["models"].items():
        model = Seq2Seq(ModelConfig(**entry["config"]))
        model.load_state_dict(entry["state_dict"])
        models[name] = model.to(device).eval()
    return models, payload.get("meta", {})
