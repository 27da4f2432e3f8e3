"""Plots of a run's outputs (matplotlib's object-oriented Agg canvas: no display needed and the
global pyplot backend is left alone)."""
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


def new_figure(width: float, height: float):
    """An empty matplotlib Figure (``width x height`` inches) attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def integer_epochs(ax) -> None:
    """Ticks of the x axis of ``ax`` (epochs) at whole numbers only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def memorization_figure(curves: dict[str, dict[str, np.ndarray]], title: str | None = None):
    """The memorization figure: one row per run (e.g. CE above ELR), two panels per row, like the
    ELR README figure. Left: clean-label examples predicted correctly (green) / wrongly (blue).
    Right: wrong-label examples predicted as the true label (green), memorized (red), other (blue).

    Args:
        curves: ``{row title: {"epoch": [E], "clean_correct": [E], ...}}`` (see MEMO_COLUMNS).
        title: optional title above all rows.

    Returns:
        The matplotlib Figure; ``fig.axes[2 * row + 1]`` is the wrong-label panel of ``row``.
    """
    n = len(curves)
    fig = new_figure(10, 3.2 * n)
    axes = fig.subplots(n, 2, squeeze=False, sharex=True)
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
    for ax in fig.axes:
        integer_epochs(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_memorization(curves: dict[str, dict[str, np.ndarray]], path: str | Path, title: str | None = None) -> Path:
    """Write :func:`memorization_figure` of ``curves`` to the PNG file ``path`` (atomically)."""
    from ..checkpoint import atomic_write

    fig = memorization_figure(curves, title)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    return path


def annotate_matrix(ax, matrix: np.ndarray, labels: list[str]) -> None:
    """Class names on both axes and each non-zero cell's value in % (``<1`` below 0.5%) of a
    heatmap of ``matrix [C, C]`` (rows: true class, columns: given label)."""
    c = len(matrix)
    ax.set_xticks(range(c), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(c), labels, fontsize=8)
    for i in range(c):
        for j in range(c):
            if matrix[i, j] > 0:
                text = f"{100 * matrix[i, j]:.0f}" if matrix[i, j] >= 0.005 else "<1"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if matrix[i, j] > 0.6 else "white")
