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
7. the most suspected examples as thumbnails (image data only);
8. near duplicates and outliers (features runs).

The files are read by :mod:`.run_files`, the figures drawn by :mod:`.figures`, the thumbnails
made by :mod:`.thumbnails`; this module lays out the page.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..detect.estimate import noise_rate_text
from .figures import (MAX_ANNOTATED_CLASSES, alarm_figure, curves_figure, pr_figure, run_memorization_figure,
                      transition_figure, transition_matrices)
from .markup import STYLE, esc, figure_uri, fmt, image_uri, img, note, pct, section, table
from .run_files import SHOWN_FLAGGED, RunFiles, as_float, estimated_by, has_values, read_run, warned_epoch
from .thumbnails import images_from_dataset, images_from_paths

GRID_SIZE = SHOWN_FLAGGED  # suspected examples shown


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


def noise_section(run: RunFiles) -> str:
    """Requested / actual / estimated noise rates and the per-class estimates."""
    s, det = run.summary, run.detect
    rates = [("setting (requested)", noise_setting(run)), ("actual", s.get("actual_noise_rate")),
             (f"estimated from {estimated_by(det)}",
              noise_rate_text(det) if det.get("noise_rate_check") else det.get("noise_rate_estimate"))]
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
def curves_section(run: RunFiles) -> str:
    """Accuracy, loss and learning-rate curves per epoch."""
    fig = curves_figure(run)
    return "" if fig is None else section("curves", "Training curves", img(figure_uri(fig), "accuracy and loss per epoch"))


# ----------------------------------------------------------------------------- 4. memorization / alarm
def alarm_note(run: RunFiles) -> str:
    """The alarm's message, as a warning when it went off."""
    message, when = run.alarm.get("message"), warned_epoch(run)
    if not message and run.alarm:
        peak = as_float(run.alarm.get("peak_suspect_fit"))
        peak_text = "" if peak != peak else f" (peak suspect fit {pct(peak, 1)})"
        message = (f"The memorization alarm did not go off{peak_text}." if when is None else
                   f"The memorization alarm went off at epoch {when:g}{peak_text}: the model began to fit the "
                   "given labels of examples it had suspected.")
        withdrawn, high = as_float(run.alarm.get("withdrawn_epoch")), as_float(run.alarm.get("final_wrong_high"))
        if when is None and withdrawn == withdrawn:
            message += (f" It sounded at epoch {withdrawn:g} and was withdrawn at the end: the model had come to fit "
                        "more of the examples it suspected than there can be wrong labels (the held-out check of "
                        f"the final model allows at most {pct(high, 1)}), so it was learning hard examples, not "
                        "memorizing.")
    if not message:
        return ""
    return note(str(message), "ok" if when is None else "warn")



def memorization_section(run: RunFiles) -> str:
    """The memorization figure when truth is known, else the alarm curve; "" when neither exists."""
    fig = run_memorization_figure(run)
    if fig is not None:
        text = ("Left: examples whose given label is right. Right: examples whose given label is wrong; "
                "red = the model predicts the wrong given label (memorized).")
        if has_values(run.metrics, "suspect_fit"):
            text += (" Dashed black: the alarm's estimate, computed without the truth (share of the currently "
                     "suspected examples the model fits to their given label).")
        return section("memorization", "Memorization",
                       note(text) + alarm_note(run) + img(figure_uri(fig), "memorization curves"))
    m = run.metrics
    if not (has_values(m, "epoch") and (has_values(m, "suspect_fit") or has_values(m, "num_suspected"))):
        return section("alarm", "Memorization alarm", alarm_note(run)) if alarm_note(run) else ""
    return section("alarm", "Memorization alarm",
                   note("True labels are unknown, so memorization is watched through the suspected examples "
                        "(those whose average prediction so far disagrees with their given label): the share "
                        "the model now fits to their given label rises when it starts to memorize.")
                   + alarm_note(run) + img(figure_uri(alarm_figure(run)), "memorization alarm curve"))


# ----------------------------------------------------------------------------- 5. transition matrices
def transition_section(run: RunFiles) -> str:
    """The actual and estimated transition matrices side by side."""
    matrices = transition_matrices(run)
    if not matrices:
        return ""
    fig = transition_figure(matrices, run.class_names)
    c = max(len(m) for _, m in matrices)
    text = "P(given label | true class): each row sums to 1" + (", cells in %." if c <= MAX_ANNOTATED_CLASSES else ".")
    return section("transition", "Transition matrices", note(text) + img(figure_uri(fig), "transition matrices"))


# ----------------------------------------------------------------------------- 6. detection
def detection_section(run: RunFiles) -> str:
    """The detector's numbers (every scalar of ``summary["detect"]``) and its precision-recall curve."""
    det = run.detect
    if not det and not len(run.issues):
        return ""
    rows = [[k, fmt(v)] for k, v in det.items()
            if (v is None or isinstance(v, (str, int, float, bool))) and k != "noise_rate_estimate"]
    body = table(["", "value"], rows, "narrow") if rows else ""
    fig = pr_figure(run)
    if fig is not None:
        body += img(figure_uri(fig), "precision-recall curve of the detector", "plot half")
    return section("detection", "Detection of wrong labels", f'<div class="side">{body}</div>') if body else ""


# ----------------------------------------------------------------------------- 7. suspected examples
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
    rows = run.issues.top_flagged[:GRID_SIZE]
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
    flagged = run.issues.num_flagged
    intro = f"The {len(rows)} most suspected of {flagged} flagged labels."
    if any(r.get("is_noisy") in ("0", "1") for r in rows):
        intro += " Red frame: the given label is known to be wrong."
    return section("suspects", "Most suspected labels",
                   note(intro) + (note(text) if text else "") + f'<div class="grid">{"".join(cells)}</div>')


def neighbour_graph_section(run: RunFiles, shown: int = 20) -> str:
    """The near duplicates and outliers of ``label_issues.csv`` (features runs: the neighbour
    graph's ``is_near_duplicate`` and ``is_outlier`` columns); "" when it has none."""
    if "is_near_duplicate" not in run.issues.columns:
        return ""
    label = lambda r: r.get("name") or r.get("path") or f"#{r.get('index')}"  # noqa: E731
    by_index = run.issues.partners
    dups = sorted((r for r in run.issues.graph_rows if r.get("is_near_duplicate") == "1"),
                  key=lambda r: as_float(r.get("near_duplicate_score")))
    outs = sorted((r for r in run.issues.graph_rows if r.get("is_outlier") == "1"),
                  key=lambda r: as_float(r.get("outlier_score")))
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
