"""One self-contained HTML page about a finished run (``noisylab report RUN_DIR``).

Every plot is a PNG embedded as a ``data:image/png;base64`` URI and the style sheet is inline: no
external CSS, scripts, fonts or links, so the page can be mailed or archived on its own. Each
section appears only when the run folder holds its inputs:

1. header: the run's numbers from ``summary.json`` and its ``config.yaml``;
2. noise: requested, actual and estimated noise rates, per class;
3. curves from ``metrics.csv``: accuracies, losses, learning rate;
4. memorization (``memorization.csv``, truth known) or the memorization alarm (``suspect_fit``);
5. transition matrices: actual (``noisy_labels.npz`` with clean labels) and estimated;
6. detection: the detector's numbers and its precision-recall curve (truth known);
7. the most suspected examples as thumbnails (image data only).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from .memorization import MEMO_COLUMNS
from .plots import integer_epochs, memorization_figure, new_figure
from .summary import read_summary

GRID_SIZE = 24  # suspected examples shown
THUMB_PX = 64  # thumbnail size
MAX_ANNOTATED_CLASSES = 20  # larger transition matrices get no numbers in their cells
ACCURACY_COLUMNS = {"train_acc": "train (given labels)", "noisy_val_top1": "noisy validation", "test_top1": "test"}
NOT_A_LOSS_TERM = {"train_acc", "train_loss"}


# ----------------------------------------------------------------------------- reading the run folder
@dataclass
class RunFiles:
    """What the page is made from, read once from a run folder.

    Attributes:
        folder: the run folder.
        summary: ``summary.json``.
        config_text: ``config.yaml`` as text, or None when absent.
        metrics: ``metrics.csv`` as ``{column: float [E]}`` (nan where a cell is blank), {} when absent.
        memorization: ``memorization.csv`` the same way, {} when absent (truth unknown).
        issues: ``label_issues.csv`` rows as ``{column: text}``, most suspicious first; [] when absent.
        labels: the ``NoisyLabels`` of ``noisy_labels.npz``, or None when absent.
        class_names: C names (class indices as text where no name is known).
    """

    folder: Path
    summary: dict[str, Any]
    config_text: str | None
    metrics: dict[str, np.ndarray]
    memorization: dict[str, np.ndarray]
    issues: list[dict[str, str]]
    labels: Any
    class_names: list[str]

    @property
    def detect(self) -> dict[str, Any]:
        """``summary["detect"]``, or {} when the run has none."""
        d = self.summary.get("detect")
        return d if isinstance(d, dict) else {}

    @property
    def truth_known(self) -> bool:
        """Whether the true labels are known: the engine writes ``actual_noise_rate: null`` when they
        are not (a user's own data, whose label file holds the given labels as "clean" ones)."""
        if "actual_noise_rate" in self.summary:
            return self.summary["actual_noise_rate"] is not None
        return self.labels is not None and self.labels.clean is not None

    @property
    def alarm(self) -> dict[str, Any]:
        """``summary["alarm"]``, or {} when the run has none."""
        a = self.summary.get("alarm")
        return a if isinstance(a, dict) else {}


def _damaged(path: Path, why: str) -> ConfigError:
    return ConfigError(f"'{path}' is damaged ({why}); run the training again or restore the file")


def read_text(path: Path) -> str | None:
    """The text of ``path``, None when it does not exist; ConfigError when it is not text."""
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of the CSV file ``path`` as dicts (blank cells as ""), [] when it does not exist."""
    text = read_text(path)
    if text is None:
        return []
    if "\0" in text:
        raise _damaged(path, "binary data in a CSV file")
    try:
        return [{k: (v or "") for k, v in row.items() if k is not None} for row in csv.DictReader(io.StringIO(text))]
    except csv.Error as err:
        raise _damaged(path, f"CSV error: {err}") from None


def as_float(value: Any) -> float:
    """``float(value)``; nan for blanks and anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def numeric_columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """``{column: float [len(rows)]}`` of CSV rows, nan where a cell is blank or not a number."""
    columns = dict.fromkeys(k for r in rows for k in r)
    return {c: np.array([as_float(r.get(c)) for r in rows]) for c in columns}


def read_labels(path: Path):
    """The ``NoisyLabels`` saved at ``path`` (None when absent); ConfigError when damaged."""
    if not path.is_file():
        return None
    from ..noise import NoiseError, NoisyLabels

    try:
        return NoisyLabels.load(path)
    except NoiseError as err:
        raise ConfigError(str(err)) from None


def num_classes_of(summary: dict[str, Any], labels, issues: list[dict[str, str]]) -> int:
    """C from the label file, the detection estimates or the labels named in ``label_issues.csv``."""
    if labels is not None:
        return labels.num_classes
    det = summary.get("detect") if isinstance(summary.get("detect"), dict) else {}
    for key in ("transition_estimate", "noise_rate_per_class_estimate"):
        if isinstance(det.get(key), list):
            return len(det[key])
    seen = [as_float(r.get(k)) for r in issues for k in ("given_label", "suggested_label", "true_label")]
    seen = [v for v in seen if v == v]
    return int(max(seen)) + 1 if seen else 0


def class_names_of(num_classes: int, labels, issues: list[dict[str, str]]) -> list[str]:
    """Names of the classes: from the label file, else from ``given_name``/``suggested_name`` of
    ``label_issues.csv``, else the class indices."""
    names = [str(c) for c in range(num_classes)]
    if labels is not None and labels.class_names and len(labels.class_names) == num_classes:
        return [str(n) for n in labels.class_names]
    for r in issues:
        for idx, name in (("given_label", "given_name"), ("suggested_label", "suggested_name")):
            k = as_float(r.get(idx))
            if r.get(name) and k == k and 0 <= k < num_classes:
                names[int(k)] = r[name]
    return names


def read_run(folder: str | Path) -> RunFiles:
    """Read everything the page shows from the run folder ``folder``; one ConfigError line when
    the folder is missing or a file in it is damaged."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is a file, not a run folder" if folder.exists() else "does not exist"
        raise ConfigError(f"run folder '{folder}' {problem}; give the folder a training run wrote")
    summary = read_summary(folder)
    issues = read_rows(folder / "label_issues.csv")
    labels = read_labels(folder / "noisy_labels.npz")
    c = num_classes_of(summary, labels, issues)
    return RunFiles(folder=folder, summary=summary, config_text=read_text(folder / "config.yaml"),
                    metrics=numeric_columns(read_rows(folder / "metrics.csv")),
                    memorization=numeric_columns(read_rows(folder / "memorization.csv")),
                    issues=issues, labels=labels, class_names=class_names_of(c, labels, issues))


# ----------------------------------------------------------------------------- HTML and image helpers
def esc(value: Any) -> str:
    return html.escape(str(value))


def pct(value: Any, digits: int = 2) -> str:
    v = as_float(value)
    return "-" if v != v else f"{100 * v:.{digits}f}%"


def fmt(value: Any) -> str:
    """A summary value as short text: floats with 4 decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig, dpi: int = 90) -> str:
    """A matplotlib figure as an embeddable PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return png_uri(buf.getvalue())


def image_uri(image) -> str:
    """A PIL image as an embeddable PNG data URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return png_uri(buf.getvalue())


def img(uri: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" alt="{esc(alt)}" src="{uri}">'


def table(header: list[str], rows: list[list[Any]], css: str = "") -> str:
    """An HTML table; every cell is escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str, css: str = "note") -> str:
    return f'<p class="{css}">{esc(text)}</p>'


# ----------------------------------------------------------------------------- 1. header
def noise_setting(run: RunFiles) -> str | None:
    """``summary["noise"]`` (e.g. "symmetric 0.4, actual 0.3750"), without its "actual" part when the
    true labels are unknown (the engine then compares the given labels with themselves)."""
    line = run.summary.get("noise")
    if line is None:
        return None
    return str(line) if run.truth_known else str(line).split(", actual")[0]


def header_section(run: RunFiles) -> str:
    """Run name, dataset, method, loss, noise, test accuracy best/last, wall time, the config."""
    s = run.summary
    wall = as_float(s.get("wall_time_s"))
    facts = [("dataset", s.get("dataset")), ("method", s.get("method")), ("loss", s.get("loss")),
             ("noise", noise_setting(run)), ("epochs", s.get("epochs")),
             ("test accuracy best", pct(s.get("test_top1_best"))), ("test accuracy last", pct(s.get("test_top1_last"))),
             ("wall time", "-" if wall != wall else f"{wall:.1f} s"), ("run folder", run.folder.resolve())]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(fmt(v))}</dd>" for k, v in facts if v not in (None, "-"))
    config = ("" if run.config_text is None else
              f"<details><summary>config.yaml</summary><pre>{esc(run.config_text)}</pre></details>")
    return (f'<header id="header"><h1>{esc(s.get("name") or run.folder.name)}</h1>'
            f'<dl class="facts">{items}</dl>{config}</header>')


# ----------------------------------------------------------------------------- 2. noise
def actual_per_class(run: RunFiles) -> np.ndarray | None:
    """``[C]`` share of wrong labels among each true class, None when the truth is unknown."""
    if not run.truth_known or run.labels is None or run.labels.clean is None:
        return None
    return 1.0 - np.diag(run.labels.transition_matrix)


def estimated_by(det: dict) -> str:
    """How summary.json's noise estimates were made, in words (runs before 2026-11-25 counted flags)."""
    return "the confident joint" if det.get("noise_estimated_by") == "confident_joint" else "the detector's flags"


def noise_section(run: RunFiles) -> str:
    """Requested / actual / estimated noise rates and the per-class estimates."""
    s, det = run.summary, run.detect
    rates = [("setting (requested)", noise_setting(run)), ("actual", s.get("actual_noise_rate")),
             (f"estimated from {estimated_by(det)}", det.get("noise_rate_estimate"))]
    rates = [(k, v if isinstance(v, str) else pct(v)) for k, v in rates if v is not None]
    if not rates:
        return ""
    body = table(["", "noise rate"], rates, "narrow")
    est = det.get("noise_rate_per_class_estimate")
    if isinstance(est, list) and est:
        actual = actual_per_class(run)
        names = run.class_names if len(run.class_names) == len(est) else [str(c) for c in range(len(est))]
        header = ["class", "estimated"] + (["actual"] if actual is not None and len(actual) == len(est) else [])
        rows = [[names[c], pct(v, 1)] + ([pct(actual[c], 1)] if len(header) == 3 else []) for c, v in enumerate(est)]
        body += ('<h3>Per class</h3><p class="note">Share of wrong labels among the examples of each (estimated) '
                 f'true class.</p><div class="scroll">{table(header, rows, "narrow")}</div>')
    return section("noise", "Noise", body)


# ----------------------------------------------------------------------------- 3. curves
def _has(columns: dict[str, np.ndarray], name: str) -> bool:
    return name in columns and bool(np.isfinite(columns[name]).any())


def curves_section(run: RunFiles) -> str:
    """Accuracy curves, the training loss (with its named terms) and the learning rate, per epoch."""
    m = run.metrics
    if not _has(m, "epoch"):
        return ""
    acc = [c for c in ACCURACY_COLUMNS if _has(m, c)]
    acc += [c for c in m if c.endswith("_top1") and c not in ACCURACY_COLUMNS and c != "best_test_top1" and _has(m, c)]
    terms = [c for c in m if c.startswith("train_") and c not in NOT_A_LOSS_TERM and _has(m, c)]
    losses = (["train_loss"] if _has(m, "train_loss") else []) + terms
    show_lr = _has(m, "lr") and np.nanmax(m["lr"]) != np.nanmin(m["lr"])
    panels = [p for p, ok in (("acc", acc), ("loss", losses), ("lr", show_lr)) if ok]
    if not panels:
        return ""
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
    return section("curves", "Training curves", img(figure_uri(fig), "accuracy and loss per epoch"))


# ----------------------------------------------------------------------------- 4. memorization / alarm
def warned_epoch(run: RunFiles) -> float | None:
    """The epoch the memorization alarm went off, or None."""
    v = as_float(run.alarm.get("warned_epoch"))
    return None if v != v else v


def alarm_note(run: RunFiles) -> str:
    """The alarm's message, as a warning when it went off."""
    message, when = run.alarm.get("message"), warned_epoch(run)
    if not message and run.alarm:
        peak = as_float(run.alarm.get("peak_suspect_fit"))
        peak_text = "" if peak != peak else f" (peak suspect fit {pct(peak, 1)})"
        message = (f"The memorization alarm did not go off{peak_text}." if when is None else
                   f"The memorization alarm went off at epoch {when:g}{peak_text}: the model began to fit the "
                   "given labels of examples it had suspected.")
    if not message:
        return ""
    return note(str(message), "ok" if when is None else "warn")


def overlay_suspect_fit(ax, run: RunFiles) -> None:
    """Draw ``suspect_fit`` (in %) and the alarm epoch onto the axes ``ax``."""
    m = run.metrics
    if _has(m, "epoch") and _has(m, "suspect_fit"):
        ax.plot(m["epoch"], 100 * m["suspect_fit"], color="black", ls="--", marker=".",
                label="alarm: suspects fitted to their label")
    when = warned_epoch(run)
    if when is not None:
        ax.axvline(when, color="tab:red", lw=1.5, alpha=0.7, label=f"alarm (epoch {when:g})")


def memorization_section(run: RunFiles) -> str:
    """The memorization figure when truth is known, else the alarm curve; "" when neither exists."""
    mem = run.memorization
    if all(_has(mem, c) for c in ("epoch", *MEMO_COLUMNS)):
        curves = {run.summary.get("name") or run.folder.name: mem}
        fig = memorization_figure(curves)
        overlay_suspect_fit(fig.axes[1], run)
        fig.axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # beside: the curves stay visible
        fig.set_size_inches(12.5, 3.4)
        fig.tight_layout()
        text = ("Left: examples whose given label is right. Right: examples whose given label is wrong; "
                "red = the model predicts the wrong given label (memorized).")
        if _has(run.metrics, "suspect_fit"):
            text += (" Dashed black: the alarm's estimate, computed without the truth (share of the currently "
                     "suspected examples the model fits to their given label).")
        return section("memorization", "Memorization",
                       note(text) + alarm_note(run) + img(figure_uri(fig), "memorization curves"))
    m = run.metrics
    if not (_has(m, "epoch") and (_has(m, "suspect_fit") or _has(m, "num_suspected"))):
        return section("alarm", "Memorization alarm", alarm_note(run)) if alarm_note(run) else ""
    return section("alarm", "Memorization alarm",
                   note("True labels are unknown, so memorization is watched through the suspected examples "
                        "(those whose average prediction so far disagrees with their given label): the share "
                        "the model now fits to their given label rises when it starts to memorize.")
                   + alarm_note(run) + img(figure_uri(alarm_figure(run)), "memorization alarm curve"))


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
    if _has(m, "num_suspected"):
        right = ax.twinx()
        right.plot(m["epoch"], m["num_suspected"], color="tab:gray", marker=".", label="suspected examples")
        right.set_ylabel("suspected examples")
        right.set_ylim(bottom=0)
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0))  # right of the right axis
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 5. transition matrices
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
        from .plots import annotate_matrix

        annotate_matrix(ax, matrix, names if len(names) == c else [str(k) for k in range(c)])


def transition_section(run: RunFiles) -> str:
    """The actual and estimated transition matrices side by side."""
    matrices = transition_matrices(run)
    if not matrices:
        return ""
    c = max(len(m) for _, m in matrices)
    side = min(6.0, 2.8 + 0.3 * c)
    fig = new_figure(side * len(matrices) + 0.8, side)
    for ax, (title, matrix) in zip(fig.subplots(1, len(matrices), squeeze=False)[0], matrices):
        draw_heatmap(fig, ax, matrix, title, run.class_names)
    fig.tight_layout()
    text = "P(given label | true class): each row sums to 1" + (", cells in %." if c <= MAX_ANNOTATED_CLASSES else ".")
    return section("transition", "Transition matrices", note(text) + img(figure_uri(fig), "transition matrices"))


# ----------------------------------------------------------------------------- 6. detection
def precision_recall(rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
    """Precision and recall of flagging the k lowest-``quality`` rows, k = 1..n, and ``(recall,
    precision)`` of the flagged set (``is_label_issue``); rows need ``quality`` and ``is_noisy``."""
    quality = np.array([as_float(r.get("quality")) for r in rows])
    noisy = np.array([as_float(r.get("is_noisy")) == 1 for r in rows])
    flagged = np.array([as_float(r.get("is_label_issue")) == 1 for r in rows])
    order = np.argsort(np.nan_to_num(quality, nan=np.inf), kind="stable")
    hits = np.cumsum(noisy[order])
    total = max(int(noisy.sum()), 1)
    precision, recall = hits / np.arange(1, len(rows) + 1), hits / total
    point = None
    if flagged.any():
        point = (float((noisy & flagged).sum() / total), float((noisy & flagged).sum() / flagged.sum()))
    return precision, recall, point


def pr_figure(run: RunFiles):
    """Precision-recall curves of ranking by ascending quality, one per ``part`` (train / val) when
    the file has both; the flagged set marked on each. None when ``is_noisy`` is unknown."""
    rows = [r for r in run.issues if r.get("is_noisy") in ("0", "1")]
    if not rows or not any(r["is_noisy"] == "1" for r in rows):
        return None
    parts = sorted({r.get("part") or "all" for r in rows})
    groups = {p: [r for r in rows if (r.get("part") or "all") == p] for p in parts} if len(parts) > 1 else {"all": rows}
    fig = new_figure(8.0, 3.8)
    ax = fig.subplots()
    for name, group in groups.items():
        precision, recall, point = precision_recall(group)
        line = ax.plot(100 * recall, 100 * precision, label=f"{name}: rank by quality (n={len(group)})")[0]
        if point is not None:
            ax.plot(100 * point[0], 100 * point[1], "o", ms=9, color=line.get_color(), mec="black",
                    label=f"{name}: flagged set")
        base = 100 * np.mean([r["is_noisy"] == "1" for r in group])
        ax.axhline(base, color=line.get_color(), ls=":", lw=1, label=f"{name}: noise rate (chance)")
    ax.set(xlabel="recall (% of wrong labels found)", ylabel="precision (% of flagged that are wrong)",
           xlim=(-2, 102), ylim=(-2, 102), title="finding the wrong labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes: the curves stay visible
    fig.tight_layout()
    return fig


def detection_section(run: RunFiles) -> str:
    """The detector's numbers (every scalar of ``summary["detect"]``) and its precision-recall curve."""
    det = run.detect
    if not det and not run.issues:
        return ""
    rows = [[k, fmt(v)] for k, v in det.items()
            if (v is None or isinstance(v, (str, int, float, bool))) and k != "noise_rate_estimate"]
    body = table(["", "value"], rows, "narrow") if rows else ""
    fig = pr_figure(run)
    if fig is not None:
        body += img(figure_uri(fig), "precision-recall curve of the detector", "plot half")
    return section("detection", "Detection of wrong labels", f'<div class="side">{body}</div>') if body else ""


# ----------------------------------------------------------------------------- 7. suspected examples
def thumbnail(image):
    """``image`` (PIL) as RGB, shrunk to fit THUMB_PX, small images enlarged by whole pixels."""
    from PIL import Image

    image = image.convert("RGB")
    image.thumbnail((THUMB_PX, THUMB_PX))
    factor = THUMB_PX // max(image.size)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def array_image(x: Any):
    """One input ``[C, H, W]`` (uint8, or float of any range; 1 or 3 channels) as a PIL image;
    None when it is not an image."""
    from PIL import Image

    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        return None
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    a = a.transpose(1, 2, 0)
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def images_from_paths(run: RunFiles, rows: list[dict[str, str]]) -> tuple[list, str]:
    """The images named in the ``path`` column (relative paths: from the run folder too), and a
    note when some cannot be read."""
    from PIL import Image, UnidentifiedImageError

    images, missing = [], []
    for r in rows:
        path = Path(r.get("path", ""))
        if not path.is_file() and not path.is_absolute() and (run.folder / path).is_file():
            path = run.folder / path
        try:
            with Image.open(path) as im:
                images.append(thumbnail(im))
        except (OSError, UnidentifiedImageError, ValueError):
            images.append(None)
            missing.append(str(path))
    text = (f"{len(missing)} of {len(rows)} images could not be read (moved or deleted?), e.g. '{missing[0]}'"
            if missing else "")
    return images, text


def images_from_dataset(run: RunFiles, rows: list[dict[str, str]]) -> tuple[list, str]:
    """The training inputs at the rows' ``index``, from the dataset rebuilt with the run's config;
    ``([], "")`` for non-image data and ``([], note)`` when the dataset cannot be loaded."""
    try:
        from ..config import load_config
        from ..data import example_paths
        from ..data.prepare import prepare_data

        cfg = load_config(run.folder / "config.yaml")
        labels_file = run.folder / "noisy_labels.npz"
        bundle = prepare_data(cfg, labels_file if labels_file.is_file() else None).bundle
        index = [int(as_float(r.get("index"))) for r in rows]
        if not hasattr(bundle.train_x, "dim"):  # read from files: open them by path
            paths = example_paths(bundle, "train")
            return images_from_paths(run, [{"path": paths[i]} for i in index]) if paths else ([], "")
        if bundle.train_x.dim() != 4:
            return [], ""  # not images (features, 1-D signals)
        return [None if (im := array_image(bundle.train_x[i])) is None else thumbnail(im) for i in index], ""
    except (ValueError, OSError, ImportError, IndexError) as err:
        return [], f"Images not shown: the dataset could not be loaded ({' '.join(str(err).split())})"


def caption(run: RunFiles, r: dict[str, str]) -> str:
    """The file name (else ``#index``), then ``given / suggested / true`` lines of one suspected
    example (class names where known); the full path is the title of its line."""
    def name(col: str) -> str | None:
        v = as_float(r.get(col))
        if v != v:
            return None
        k = int(v)
        return run.class_names[k] if 0 <= k < len(run.class_names) else str(k)

    where = r.get("path") or r.get("name")  # the file a user opens, not a row number
    lines = [Path(where).name if where else f"#{r.get('index', '?')}", f"given: {r.get('given_name') or name('given_label')}",
             f"suggested: {r.get('suggested_name') or name('suggested_label')}"]
    if name("true_label") is not None:
        lines.append(f"true: {name('true_label')}")
    titles = [where or lines[0], *lines[1:]]
    return "".join(f'<span title="{esc(t)}">{esc(line)}</span>' for t, line in zip(titles, lines))


def suspects_section(run: RunFiles) -> str:
    """Thumbnails of the first GRID_SIZE flagged rows of ``label_issues.csv``; "" for non-image data."""
    rows = [r for r in run.issues if r.get("is_label_issue") == "1"][:GRID_SIZE]
    if not rows:
        return ""
    has_path = any(r.get("path") for r in rows)
    images, text = images_from_paths(run, rows) if has_path else images_from_dataset(run, rows)
    if not images or all(im is None for im in images):
        return section("suspects", "Most suspected labels", note(text)) if text else ""
    cells = []
    for r, im in zip(rows, images):
        frame = "noisy" if r.get("is_noisy") == "1" else ""
        alt = f"example {r.get('index')}"
        picture = '<div class="thumb"></div>' if im is None else img(image_uri(im), alt, "thumb")
        cells.append(f'<figure class="{frame}">{picture}<figcaption>{caption(run, r)}</figcaption></figure>')
    flagged = sum(r.get("is_label_issue") == "1" for r in run.issues)
    intro = f"The {len(rows)} most suspected of {flagged} flagged labels."
    if any(r.get("is_noisy") in ("0", "1") for r in rows):
        intro += " Red frame: the given label is known to be wrong."
    return section("suspects", "Most suspected labels",
                   note(intro) + (note(text) if text else "") + f'<div class="grid">{"".join(cells)}</div>')


def neighbour_graph_section(run: RunFiles, shown: int = 20) -> str:
    """The near duplicates and outliers of ``label_issues.csv`` (features runs: the neighbour
    graph's ``is_near_duplicate`` and ``is_outlier`` columns); "" when it has none."""
    if not run.issues or "is_near_duplicate" not in run.issues[0]:
        return ""
    label = lambda r: r.get("name") or r.get("path") or f"#{r.get('index')}"  # noqa: E731
    by_index = {r.get("index"): r for r in run.issues}
    dups = sorted((r for r in run.issues if r.get("is_near_duplicate") == "1"),
                  key=lambda r: as_float(r.get("near_duplicate_score")))
    outs = sorted((r for r in run.issues if r.get("is_outlier") == "1"), key=lambda r: as_float(r.get("outlier_score")))
    body = note(f"{len(dups)} near duplicates (closer to their nearest neighbour than 0.13 of the median "
                f"nearest-neighbour distance) and {len(outs)} outliers (mean distance to their neighbours more "
                "than 1.7 interquartile ranges above the upper quartile), as cleanlab's Datalab defines them.")
    if dups:
        rows = [[label(r), r.get("given_name") or r.get("given_label"),
                 label(by_index.get(r.get("near_duplicate_of"), {"index": r.get("near_duplicate_of")})),
                 fmt(as_float(r.get("near_duplicate_score")))] for r in dups[:shown]]
        body += table(["example", "given", "nearly a copy of", "score"], rows)
    if outs:
        rows = [[label(r), r.get("given_name") or r.get("given_label"), fmt(as_float(r.get("outlier_score")))]
                for r in outs[:shown]]
        body += table(["outlier", "given", "score"], rows)
    return section("graph", "Near duplicates and outliers", body)


# ----------------------------------------------------------------------------- the page
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.3em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; margin: 0.5em 0; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; word-break: break-all; }
pre { background: #f6f6f6; padding: 0.8em; overflow: auto; max-height: 30em; font-size: 0.85em; }
details summary { cursor: pointer; color: #245; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead th { background: #f3f3f3; }
div.scroll { max-height: 22em; overflow-y: auto; display: inline-block; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
img.half { max-width: min(100%, 720px); }
p.note { color: #555; font-size: 0.92em; margin: 0.3em 0; }
p.warn { background: #fff1f0; border-left: 4px solid #d4380d; padding: 0.5em 0.8em; }
p.ok { background: #f0f9eb; border-left: 4px solid #52a33a; padding: 0.5em 0.8em; }
div.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; }
div.grid figure { margin: 0; padding: 6px; border: 2px solid #e4e4e4; border-radius: 4px; text-align: center; }
div.grid figure.noisy { border-color: #d4380d; }
img.thumb, div.thumb { width: 64px; height: 64px; object-fit: contain; background: #eee; }
figcaption { font-size: 0.78em; margin-top: 4px; }
figcaption span { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
div.side { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
footer { margin-top: 3em; color: #888; font-size: 0.85em; }
"""


def render_page(run: RunFiles) -> str:
    """The whole HTML document of ``run``."""
    from .. import __version__

    sections = [header_section(run), noise_section(run), curves_section(run), memorization_section(run),
                transition_section(run), detection_section(run), suspects_section(run), neighbour_graph_section(run)]
    body = "\n".join(s for s in sections if s)
    title = f"noisylab report: {run.summary.get('name') or run.folder.name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f"<footer>written by noisylab {esc(__version__)} from the files of the run folder</footer>\n"
            "</body></html>\n")


def write_html_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the self-contained HTML page of the run folder ``run_dir``.

    Args:
        run_dir: a run folder written by ``noisylab train`` (needs ``summary.json``).
        output: the HTML file to write (default ``run_dir/report.html``); written atomically.

    Returns:
        The path written.

    Raises:
        ConfigError: one line, when the folder is missing or one of its files is damaged.
    """
    from ..checkpoint import atomic_write

    run = read_run(run_dir)
    page = render_page(run)
    path = Path(output) if output is not None else Path(run_dir) / "report.html"
    return atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
