"""The demo's built-in English word list, read from the package data file ``words.txt``.

``WORDS``: about 6,000 lowercase words in frequency order (the sampler draws by rank).
"""

from __future__ import annotations

from importlib import resources


def _load() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("words.txt").read_text(encoding="utf-8")
    return tuple(w for w in (line.strip() for line in text.splitlines())
                 if w and not w.startswith("#"))


WORDS: tuple[str, ...] = _load()
