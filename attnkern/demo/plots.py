"""The two figures: an attention heatmap and exact match against sentence length (PNG, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_accuracy", "plot_attention"]

_SPACE, _END = "\u2423", "</s>"  # visible space, end of sentence


def _labels(text: str) -> list[str]:
    return [(_SPACE if ch == " " else ch) for ch in text] + [_END]


def plot_attention(weights: Sequence[Sequence[float]], source: str, output: str,
                   path: str | Path) -> Path:
    """Heatmap of ``weights`` ``(decoder steps, encoder positions)``: decoder step on the
    horizontal axis, encoder position on the vertical, lighter = more attention."""
    import numpy as np

    w = np.asarray(weights, dtype=float)
    steps, positions = w.shape
    x_labels = _labels(output)[:steps]
    y_labels = _labels(source)[:positions]
    width = max(5.0, 0.26 * steps + 3.0)
    height = max(4.0, 0.26 * positions + 2.2)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(w.T, cmap="gray", vmin=0.0, vmax=1.0, aspect="equal",
                      interpolation="nearest", origin="upper")
    ax.set_xticks(range(len(x_labels)), x_labels, fontsize=9, rotation=90)
    ax.set_yticks(range(len(y_labels)), y_labels, fontsize=9)
    ax.set_xlabel("decoder step (output character)")
    ax.set_ylabel("encoder position (input character)")
    ax.set_title(f"attention weights\n{source!r} -> {output!r}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy(curves: Mapping[str, Mapping[int, float]], path: str | Path,
                  title: str = "held-out exact match vs sentence length") -> Path:
    """One line per model: exact-match accuracy (%) against the number of words."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = ["o", "s", "^", "D"]
    for (name, by_words), marker in zip(curves.items(), markers * 4):
        xs = sorted(by_words)
        ax.plot(xs, [100.0 * by_words[x] for x in xs], marker=marker, label=name)
    ax.set_xlabel("sentence length (words)")
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(-3, 103)
    all_x = sorted({x for c in curves.values() for x in c})
    if all_x:
        ax.set_xticks(all_x)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
