"""The figures of a run, drawn from its files (:class:`~noisylab.report.run_files.RunFiles`):
training curves, memorization and the alarm, transition matrices, the detector's precision-recall
curve. Each returns a matplotlib Figure on an Agg canvas, or None when the run lacks its inputs."""
from __future__ import annotations

import numpy as np

from ..config import ConfigError
from .memorization import MEMO_COLUMNS
from .plots import annotate_matrix, integer_epochs, memorization_figure, new_figure
from .run_files import RunFiles, estimated_by, has_values, warned_epoch

MAX_ANNOTATED_CLASSES = 20  # larger transition matrices get no numbers in their cells
ACCURACY_COLUMNS = {"train_acc": "train (given labels)", "noisy_val_top1": "noisy validation", "test_top1": "test"}
NOT_A_LOSS_TERM = {"train_acc", "train_loss"}
PLOTTED_POINTS = 4000  # points drawn of a precision-recall curve


def curves_figure(run: RunFiles):
    """Accuracy curves, the training loss (with its named terms) and the learning rate, per epoch,
    one panel each; None when ``metrics.csv`` has none of them."""
    m = run.metrics
    if not has_values(m, "epoch"):
        return None
    acc = [c for c in ACCURACY_COLUMNS if has_values(m, c)]
    acc += [c for c in m if c.endswith("_top1") and c not in ACCURACY_COLUMNS and c != "best_test_top1"
            and has_values(m, c)]
    terms = [c for c in m if c.startswith("train_") and c not in NOT_A_LOSS_TERM and has_values(m, c)]
    losses = (["train_loss"] if has_values(m, "train_loss") else []) + terms
    show_lr = has_values(m, "lr") and np.nanmax(m["lr"]) != np.nanmin(m["lr"])
    panels = [p for p, ok in (("acc", acc), ("loss", losses), ("lr", show_lr)) if ok]
    if not panels:
        return None
    fig = new_figure(4.0 * len(panels) + 1.0, 3.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    ep = m["epoch"]
    for ax, panel in zip(axes, panels):
        if panel == "acc":
            for c in acc:
                ax.plot(ep, 100 * m[c], marker=".", label=ACCURACY_COLUMNS.get(c, c))
            ax.set(title="accuracy", ylabel="%")
        elif panel == "loss":
            for c in losses:
                bold = c == "train_loss"
                ax.plot(ep, m[c], lw=2 if bold else 1, ls="-" if bold else "--", label=c)
            ax.set(title="training loss")
        else:
            ax.plot(ep, m["lr"], color="tab:gray")
            ax.set(title="learning rate")
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def overlay_suspect_fit(ax, run: RunFiles) -> None:
    """Draw ``suspect_fit`` (in %) and the alarm epoch onto the axes ``ax``."""
    m = run.metrics
    if has_values(m, "epoch") and has_values(m, "suspect_fit"):
        ax.plot(m["epoch"], 100 * m["suspect_fit"], color="black", ls="--", marker=".",
                label="alarm: suspects fitted to their label")
    when = warned_epoch(run)
    if when is not None:
        ax.axvline(when, color="tab:red", lw=1.5, alpha=0.7, label=f"alarm (epoch {when:g})")



def run_memorization_figure(run: RunFiles):
    """The memorization figure of a run whose truth is known, with the alarm's ``suspect_fit``
    drawn onto its wrong-label panel; None when ``memorization.csv`` is absent."""
    mem = run.memorization
    if not all(has_values(mem, c) for c in ("epoch", *MEMO_COLUMNS)):
        return None
    fig = memorization_figure({run.summary.get("name") or run.folder.name: mem})
    overlay_suspect_fit(fig.axes[1], run)
    fig.axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # beside: the curves stay visible
    fig.set_size_inches(12.5, 3.4)
    fig.tight_layout()
    return fig


def alarm_figure(run: RunFiles):
    """``suspect_fit`` (%, left axis) and ``num_suspected`` (right axis) per epoch."""
    m = run.metrics
    fig = new_figure(10.0, 3.3)
    ax = fig.subplots()
    overlay_suspect_fit(ax, run)
    ax.set(xlabel="epoch", ylabel="suspects fitted (%)", ylim=(-2, 102), title="memorization alarm")
    integer_epochs(ax)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if has_values(m, "num_suspected"):
        right = ax.twinx()
        right.plot(m["epoch"], m["num_suspected"], color="tab:gray", marker=".", label="suspected examples")
        right.set_ylabel("suspected examples")
        right.set_ylim(bottom=0)
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0))  # right of the right axis
    fig.tight_layout()
    return fig



def transition_matrices(run: RunFiles) -> list[tuple[str, np.ndarray]]:
    """``[(title, float [C, C])]``: the actual matrix (truth known) and the detector's estimate."""
    out = []
    if run.truth_known and run.labels is not None and run.labels.clean is not None:
        out.append(("actual noise (rows: true class)", run.labels.transition_matrix))
    est = run.detect.get("transition_estimate")
    if isinstance(est, list) and est:
        try:
            matrix = np.array(est, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"'{run.folder / 'summary.json'}' is damaged (detect.transition_estimate is not "
                              "a matrix of numbers); run the training again or restore the file") from None
        if matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]:
            out.append((f"estimated from {estimated_by(run.detect)} (rows: estimated true class)", matrix))
    return out


def draw_heatmap(fig, ax, matrix: np.ndarray, title: str, names: list[str]) -> None:
    """One transition matrix: rows = true class, columns = given label, cells in % when C <= 20."""
    c = len(matrix)
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    ax.set(xlabel="given label", ylabel="true class")
    if c <= MAX_ANNOTATED_CLASSES:
        annotate_matrix(ax, matrix, names if len(names) == c else [str(k) for k in range(c)])


def transition_figure(matrices: list[tuple[str, np.ndarray]], names: list[str]):
    """The ``(title, matrix)`` pairs of :func:`transition_matrices` side by side."""
    c = max(len(m) for _, m in matrices)
    side = min(6.0, 2.8 + 0.3 * c)
    fig = new_figure(side * len(matrices) + 0.8, side)
    for ax, (title, matrix) in zip(fig.subplots(1, len(matrices), squeeze=False)[0], matrices):
        draw_heatmap(fig, ax, matrix, title, names)
    fig.tight_layout()
    return fig


def precision_recall(quality: np.ndarray, noisy: np.ndarray, flagged: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
    """Precision and recall of flagging the k lowest-``quality`` rows, k = 1..n, and ``(recall,
    precision)`` of the flagged set; ``noisy``, ``flagged``: ``bool [n]``."""
    order = np.argsort(np.nan_to_num(quality, nan=np.inf), kind="stable")
    hits = np.cumsum(noisy[order])
    total = max(int(noisy.sum()), 1)
    precision, recall = hits / np.arange(1, len(quality) + 1), hits / total
    point = None
    if flagged.any():
        point = (float((noisy & flagged).sum() / total), float((noisy & flagged).sum() / flagged.sum()))
    return precision, recall, point


def pr_figure(run: RunFiles):
    """Precision-recall curves of ranking by ascending quality, one per ``part`` (train / val) when
    the file has both; the flagged set marked on each. None when ``is_noisy`` is unknown."""
    issues = run.issues
    known = np.isin(issues.noisy, (0.0, 1.0))
    if not (issues.noisy[known] == 1).any():
        return None
    part = np.where(issues.part == "", "all", issues.part)
    parts = sorted(set(part[known].tolist()))
    groups = {p: known & (part == p) for p in parts} if len(parts) > 1 else {"all": known}
    fig = new_figure(8.0, 3.8)
    ax = fig.subplots()
    for name, rows in groups.items():
        precision, recall, point = precision_recall(issues.quality[rows], issues.noisy[rows] == 1, issues.flagged[rows])
        step = max(1, len(recall) // PLOTTED_POINTS)  # a million-row curve drawn through 4,000 of its points
        line = ax.plot(100 * recall[::step], 100 * precision[::step],
                       label=f"{name}: rank by quality (n={int(rows.sum())})")[0]
        if point is not None:
            ax.plot(100 * point[0], 100 * point[1], "o", ms=9, color=line.get_color(), mec="black",
                    label=f"{name}: flagged set")
        base = 100 * np.mean(issues.noisy[rows] == 1)
        ax.axhline(base, color=line.get_color(), ls=":", lw=1, label=f"{name}: noise rate (chance)")
    ax.set(xlabel="recall (% of wrong labels found)", ylabel="precision (% of flagged that are wrong)",
           xlim=(-2, 102), ylim=(-2, 102), title="finding the wrong labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes: the curves stay visible
    fig.tight_layout()
    return fig

