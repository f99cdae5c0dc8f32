"""The motivating demo: a character-level seq2seq that reverses every word of a sentence
("the cat sat on the mat" -> "eht tac tas no eht tam"), with :class:`attnkern.AdditiveAttention`
and without it. Run ``python -m attnkern.demo --help``.

Modules: :mod:`.data` (word list split, sentence sampler, batches), :mod:`.model` (GRU
encoder, attention decoder, checkpoints), :mod:`.train` (training loop incl. DDP, batched
greedy evaluation), :mod:`.plots` (heatmap, accuracy vs length), :mod:`.cli` (the command).
"""

from .data import reverse_words
from .model import ModelConfig, Seq2Seq

__all__ = ["ModelConfig", "Seq2Seq", "reverse_words"]
