"""Data for the demo: sentences of English words, and the same sentences with every word
reversed ("the cat sat" -> "eht tac tas").

Words come from the built-in list (:mod:`attnkern.demo.words`), split once into training
words and held-out words; held-out sentences use only words the model never saw, so a good
score means it learned to reverse, not to memorise.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import torch
from torch import Tensor

from .words import WORDS

__all__ = [
    "ALPHABET", "BOS", "EOS", "PAD", "VOCAB_SIZE", "Batch", "SentenceSampler", "decode_ids",
    "encode", "make_batch", "normalize_sentence", "reverse_words", "split_words",
]

PAD, BOS, EOS = 0, 1, 2
ALPHABET = " '" + "abcdefghijklmnopqrstuvwxyz"
_SPECIAL = 3
_INDEX = {ch: i + _SPECIAL for i, ch in enumerate(ALPHABET)}
VOCAB_SIZE = _SPECIAL + len(ALPHABET)

# Fixed, independent of --seed: every run is scored on the same unseen words.
SPLIT_SEED = 20240521
HELDOUT_FRACTION = 0.1


def reverse_words(sentence: str) -> str:
    """The target: each word's characters reversed, word order and spacing kept."""
    return " ".join(word[::-1] for word in sentence.split(" "))


def normalize_sentence(text: str) -> str:
    """Lowercase, single spaces; ValueError naming any character the model cannot read."""
    sentence = " ".join(text.lower().split())
    if not sentence:
        raise ValueError(f"sentence {text!r} is empty")
    bad = sorted({ch for ch in sentence if ch not in _INDEX})
    if bad:
        raise ValueError(
            f"sentence {text!r} has characters the demo model does not know: {bad!r} "
            f"(it reads lowercase letters, apostrophes and spaces)"
        )
    return sentence


def encode(text: str) -> list[int]:
    """Character ids of ``text`` (no BOS/EOS)."""
    return [_INDEX[ch] for ch in text]


def decode_ids(ids: Sequence[int]) -> str:
    """Characters of ``ids`` up to the first EOS; PAD/BOS are skipped."""
    out = []
    for i in ids:
        if i == EOS:
            break
        if i >= _SPECIAL:
            out.append(ALPHABET[i - _SPECIAL])
    return "".join(out)


def split_words(
    words: Sequence[str] = WORDS, fraction: float = HELDOUT_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[str], list[str]]:
    """Disjoint ``(train_words, heldout_words)``; ``fraction`` of the list is held out.

    Both keep the order of ``words`` (most frequent first), which ``zipf`` sampling uses.
    """
    unique = list(dict.fromkeys(words))
    shuffled = sorted(unique)
    rng = random.Random(seed)
    rng.shuffle(shuffled)
    n_held = max(1, round(len(unique) * fraction))
    held = set(shuffled[:n_held])
    return [w for w in unique if w not in held], [w for w in unique if w in held]


class SentenceSampler:
    """Random sentences of ``min_words..max_words`` words drawn uniformly from ``words``.

    ``long_bias``: the number of words ``n`` is drawn with weight ``n ** long_bias``
    (0 = uniform; 1 = proportional to length, i.e. more practice on long sentences).
    ``zipf``: the share of words drawn by frequency rank (weight ``1 / (rank + 10)``, words
    in frequency order) instead of uniformly, so that short common words ("a", "to", "the")
    and repeated words show up as often as in real sentences.
    """

    def __init__(
        self, words: Sequence[str], *, min_words: int = 1, max_words: int = 8, seed: int = 0,
        long_bias: float = 0.0, zipf: float = 0.0,
    ) -> None:
        if not words:
            raise ValueError("words is empty")
        if not 1 <= min_words <= max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
        self.words = list(words)
        self.min_words, self.max_words = min_words, max_words
        self.long_bias = long_bias
        self.zipf = zipf
        self._cum = list(itertools.accumulate(1.0 / (r + 10) for r in range(len(self.words))))
        self.rng = random.Random(seed)

    def sentence(self, n_words: int | None = None) -> str:
        if n_words is None:
            counts = range(self.min_words, self.max_words + 1)
            if self.long_bias:
                n_words = self.rng.choices(counts, [n ** self.long_bias for n in counts])[0]
            else:
                n_words = self.rng.randint(self.min_words, self.max_words)
        return " ".join(self._word() for _ in range(n_words))

    def _word(self) -> str:
        if self.zipf and self.rng.random() < self.zipf:
            return self.rng.choices(self.words, cum_weights=self._cum)[0]
        return self.rng.choice(self.words)

    def sentences(self, n: int) -> list[str]:
        return [self.sentence() for _ in range(n)]

    def batches(self, batch_size: int, pool: int = 8) -> list[list[str]]:
        """``pool`` batches from ``pool * batch_size`` sentences sorted by length, in random
        order: similar lengths share a batch, so little decoding is spent on padding."""
        items = sorted(self.sentences(batch_size * pool), key=len)
        out = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        self.rng.shuffle(out)
        return out


class Batch:
    """Padded tensors for a list of sentences.

    src ``(B, S)`` character ids + EOS, PAD after; src_lengths ``(B,)`` int64 (with EOS);
    tgt_in ``(B, T)`` BOS + reversed sentence (teacher forcing input); tgt_out ``(B, T)``
    reversed sentence + EOS, PAD after (ignored by the loss).
    """

    def __init__(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor,
                 sentences: list[str]) -> None:
        self.src, self.src_lengths = src, src_lengths
        self.tgt_in, self.tgt_out = tgt_in, tgt_out
        self.sentences = sentences

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.src_lengths.to(device), self.tgt_in.to(device),
                     self.tgt_out.to(device), self.sentences)


def make_batch(sentences: Sequence[str]) -> Batch:
    """Encode sentences (already normalised) into a :class:`Batch`."""
    srcs = [encode(s) + [EOS] for s in sentences]
    tgts = [encode(reverse_words(s)) for s in sentences]
    b, s_max, t_max = len(srcs), max(map(len, srcs)), max(map(len, tgts)) + 1
    src = torch.full((b, s_max), PAD, dtype=torch.long)
    tgt_in = torch.full((b, t_max), PAD, dtype=torch.long)
    tgt_out = torch.full((b, t_max), PAD, dtype=torch.long)
    for i, (s, t) in enumerate(zip(srcs, tgts)):
        src[i, :len(s)] = torch.tensor(s)
        tgt_in[i, :len(t) + 1] = torch.tensor([BOS] + t)
        tgt_out[i, :len(t) + 1] = torch.tensor(t + [EOS])
    lengths = torch.tensor([len(s) for s in srcs], dtype=torch.long)
    return Batch(src, lengths, tgt_in, tgt_out, list(sentences))
