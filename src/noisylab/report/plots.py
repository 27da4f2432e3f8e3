"""Plots of a run's outputs (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .memorization import MEMO_COLUMNS

COLORS = {"correct": "tab:green", "wrong": "tab:blue", "memorized": "tab:red", "other": "tab:blue"}


def read_memorization_csv(path: str | Path) -> dict[str, np.ndarray]:
    with Path(path).open() as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in ["epoch", *MEMO_COLUMNS]}


def plot_memorization(curves: dict[str, dict[str, np.ndarray]], path: str | Path, title: str | None = None) -> Path:
    """One row per run (e.g. CE above ELR), two panels per row, like the ELR README figure.

    Left: clean-label examples predicted correctly (green) / wrongly (blue).
    Right: wrong-label examples predicted as the true label (green), memorized (red), other (blue).

    Args:
        curves: ``{row title: {"epoch": [E], "clean_correct": [E], ...}}`` (see MEMO_COLUMNS).
        path: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    fig, axes = plt.subplots(n, 2, figsize=(10, 3.2 * n), squeeze=False, sharex=True)
    for row, (name, c) in enumerate(curves.items()):
        ep = c["epoch"]
        ax = axes[row][0]
        ax.plot(ep, 100 * c["clean_correct"], color=COLORS["correct"], label="correct")
        ax.plot(ep, 100 * c["clean_wrong"], color=COLORS["wrong"], label="wrong")
        ax.set_title(f"{name}: clean labels")
        ax.set_ylabel("% of examples")
        ax = axes[row][1]
        ax.plot(ep, 100 * c["noisy_true"], color=COLORS["correct"], label="true label")
        ax.plot(ep, 100 * c["noisy_memorized"], color=COLORS["memorized"], label="memorized (given wrong label)")
        ax.plot(ep, 100 * c["noisy_other"], color=COLORS["other"], label="other")
        ax.set_title(f"{name}: wrong labels")
        for ax in axes[row]:
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
            ax.legend(loc="center right", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    from ..checkpoint import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path
