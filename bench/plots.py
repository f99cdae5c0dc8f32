"""bench/run.py's PNG plots: forward time vs Tk and vs H, extra peak memory vs Tk."""

from __future__ import annotations

import os
from typing import Any


def plots(report: dict[str, Any], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    styles = {"cpp": ("attnkern cpp", "C0", "o"),
              "eager": ("eager PyTorch, (tanh * w).sum", "C3", "s"),
              "eager-mm": ("eager PyTorch, tanh @ w", "C1", "v"),
              "compile": ("torch.compile", "C2", "^")}
    env = report["env"]
    subtitle = f"{env['cpu']}, {env['threads']} threads, float32, {env['date_utc'][:10]}"
    for key, var, fname in (("time_vs_tk", "Tk", "bench_time_vs_tk.png"),
                            ("time_vs_h", "H", "bench_time_vs_h.png")):
        c = report["extra"].get(key)
        if not c:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.8))
        xs = c[var]
        for n, ys in c["seconds"].items():
            label, color, marker = styles.get(n, (n, None, "x"))
            fit = c["fit"][n]
            ax.loglog(xs, [y * 1e3 for y in ys], marker=marker, color=color,
                      label=f"{label} (linear fit R$^2$={fit['r2']:.3f})")
        if "cpp" in c["seconds"]:  # slope-1 guide through cpp's last point
            y_end = c["seconds"]["cpp"][-1] * 1e3
            ax.loglog(xs, [y_end * x / xs[-1] for x in xs], ":", color="gray",
                      label="linear (slope 1)")
        _log_ticks(ax, xs)
        ax.set_xlabel(var)
        ax.set_ylabel("forward time per call, min of samples (ms)")
        ax.set_title(f"Forward time vs {var} ({c['shape']})\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    mc = report["extra"].get("memory_vs_tk")
    if mc:
        fig, ax = plt.subplots(figsize=(7, 4.8))
        for n, ys in mc["bytes"].items():
            label, color, marker = styles.get(n, (n, None, "x"))
            ax.loglog(mc["Tk"], [max(y, 1) / 2**20 for y in ys], marker=marker, color=color,
                      label=label)
        _log_ticks(ax, mc["Tk"])
        ax.set_xlabel("Tk")
        ax.set_ylabel("extra peak memory, forward+backward (MiB)")
        ax.set_title(f"Extra peak memory vs Tk ({mc['shape']})\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "bench_memory_vs_tk.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _log_ticks(ax: Any, xs: list[int]) -> None:
    """Label the log x axis with the swept values themselves."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(x) for x in xs])
