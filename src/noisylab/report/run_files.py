"""The files of a run folder, read once for the report (``summary.json``, ``config.yaml``,
``metrics.csv``, ``memorization.csv``, ``label_issues.csv``, ``noisy_labels.npz``).

A damaged file gives one ConfigError line naming it; a missing one gives an empty value, so each
part of the report shows only what the run wrote.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from .summary import read_summary


@dataclass
class RunFiles:
    """What the page is made from, read once from a run folder.

    Attributes:
        folder: the run folder.
        summary: ``summary.json``.
        config_text: ``config.yaml`` as text, or None when absent.
        metrics: ``metrics.csv`` as ``{column: float [E]}`` (nan where a cell is blank), {} when absent.
        memorization: ``memorization.csv`` the same way, {} when absent (truth unknown).
        issues: ``label_issues.csv`` (:class:`IssueTable`: its plotted columns as arrays, the rows
            the page shows as text; empty when absent).
        labels: the ``NoisyLabels`` of ``noisy_labels.npz``, or None when absent.
        class_names: C names (class indices as text where no name is known).
    """

    folder: Path
    summary: dict[str, Any]
    config_text: str | None
    metrics: dict[str, np.ndarray]
    memorization: dict[str, np.ndarray]
    issues: "IssueTable"
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


SHOWN_FLAGGED = 24
"""Flagged rows of ``label_issues.csv`` the report shows (its thumbnails), the first in the file."""


@dataclass
class IssueTable:
    """``label_issues.csv`` read a row at a time: what the page plots as arrays, and as text rows
    (``{column: text}``) only those it shows, so a million-row file takes megabytes, not gigabytes.

    Attributes:
        columns: the header.
        quality, noisy: ``float [n]`` (nan where blank or unknown); flagged: ``bool [n]``;
            part: ``str [n]`` ("" where the file has no ``part`` column).
        top_flagged: the first :data:`SHOWN_FLAGGED` flagged rows (the file lists the most
            suspected first).
        graph_rows: rows marked ``is_near_duplicate`` or ``is_outlier`` (feature runs), and
            partners: the rows they name as ``near_duplicate_of``, by ``index``.
        max_label: the largest class index in ``given_label``, ``suggested_label``, ``true_label`` (-1: none).
        names: class index -> name from ``given_name``/``suggested_name``.
    """

    columns: list[str]
    quality: np.ndarray
    noisy: np.ndarray
    flagged: np.ndarray
    part: np.ndarray
    top_flagged: list[dict[str, str]]
    graph_rows: list[dict[str, str]]
    partners: dict[str, dict[str, str]]
    max_label: int
    names: dict[int, str]

    def __len__(self) -> int:
        return len(self.quality)

    @property
    def num_flagged(self) -> int:
        return int(self.flagged.sum())


def _csv_rows(path: Path):
    """``(header, rows)`` of the CSV ``path`` read a line at a time (cells as text, blanks as "");
    ConfigError when it is damaged."""
    try:
        fh = open(path, encoding="utf-8", newline="")
    except OSError as err:
        raise _damaged(path, err.strerror or type(err).__name__) from None

    def rows(reader):
        try:
            for row in reader:
                if None in row or any("\0" in (v or "") for v in row.values()):
                    raise _damaged(path, "binary data in a CSV file" if None not in row else "a row longer than the header")
                yield {k: (v or "") for k, v in row.items()}
        except csv.Error as err:
            raise _damaged(path, f"CSV error: {err}") from None
        except UnicodeDecodeError:
            raise _damaged(path, "not UTF-8 text") from None
        finally:
            fh.close()
    try:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
    except (csv.Error, UnicodeDecodeError) as err:
        fh.close()
        raise _damaged(path, f"CSV error: {err}" if isinstance(err, csv.Error) else "not UTF-8 text") from None
    return header, rows(reader)


def read_issues(path: Path) -> IssueTable:
    """``label_issues.csv`` as an :class:`IssueTable` (empty when absent), in one pass (two when
    the file has near duplicates whose partners are to be named)."""
    if not path.is_file():
        return IssueTable([], np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0, str), [], [], {}, -1, {})
    header, rows = _csv_rows(path)
    quality, noisy, flagged, part = [], [], [], []
    top, graph, names, max_label = [], [], {}, -1
    for r in rows:
        quality.append(as_float(r.get("quality")))
        noisy.append(as_float(r.get("is_noisy")))
        is_flagged = r.get("is_label_issue") == "1"
        flagged.append(is_flagged)
        part.append(r.get("part", ""))
        if is_flagged and len(top) < SHOWN_FLAGGED:
            top.append(r)
        if r.get("is_near_duplicate") == "1" or r.get("is_outlier") == "1":
            graph.append(r)
        for k in ("given_label", "suggested_label", "true_label"):
            v = as_float(r.get(k))
            if v == v:
                max_label = max(max_label, int(v))
        for idx, name in (("given_label", "given_name"), ("suggested_label", "suggested_name")):
            v = as_float(r.get(idx))
            if r.get(name) and v == v and int(v) not in names:
                names[int(v)] = r[name]
    wanted = {r.get("near_duplicate_of") for r in graph if r.get("near_duplicate_of")}
    partners = {}
    if wanted:
        partners = {r["index"]: r for r in _csv_rows(path)[1] if r.get("index") in wanted}
    return IssueTable(header, np.array(quality, dtype=np.float64), np.array(noisy, dtype=np.float64),
                      np.array(flagged, dtype=bool), np.array(part, dtype=str), top, graph, partners, max_label, names)


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


def num_classes_of(summary: dict[str, Any], labels, issues: IssueTable) -> int:
    """C from the label file, the detection estimates or the labels named in ``label_issues.csv``."""
    if labels is not None:
        return labels.num_classes
    det = summary.get("detect") if isinstance(summary.get("detect"), dict) else {}
    for key in ("transition_estimate", "noise_rate_per_class_estimate"):
        if isinstance(det.get(key), list):
            return len(det[key])
    return issues.max_label + 1


def class_names_of(num_classes: int, labels, issues: IssueTable) -> list[str]:
    """Names of the classes: from the label file, else from ``given_name``/``suggested_name`` of
    ``label_issues.csv``, else the class indices."""
    if labels is not None and labels.class_names and len(labels.class_names) == num_classes:
        return [str(n) for n in labels.class_names]
    return [issues.names.get(c, str(c)) for c in range(num_classes)]


def read_run(folder: str | Path) -> RunFiles:
    """Read everything the page shows from the run folder ``folder``; one ConfigError line when
    the folder is missing or a file in it is damaged."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is a file, not a run folder" if folder.exists() else "does not exist"
        raise ConfigError(f"run folder '{folder}' {problem}; give the folder a training run wrote")
    summary = read_summary(folder)
    issues = read_issues(folder / "label_issues.csv")
    labels = read_labels(folder / "noisy_labels.npz")
    c = num_classes_of(summary, labels, issues)
    return RunFiles(folder=folder, summary=summary, config_text=read_text(folder / "config.yaml"),
                    metrics=numeric_columns(read_rows(folder / "metrics.csv")),
                    memorization=numeric_columns(read_rows(folder / "memorization.csv")),
                    issues=issues, labels=labels, class_names=class_names_of(c, labels, issues))


def has_values(columns: dict[str, np.ndarray], name: str) -> bool:
    """Whether ``columns[name]`` exists and holds at least one finite number."""
    return name in columns and bool(np.isfinite(columns[name]).any())


def warned_epoch(run: RunFiles) -> float | None:
    """The epoch the memorization alarm went off, or None."""
    v = as_float(run.alarm.get("warned_epoch"))
    return None if v != v else v


def estimated_by(det: dict) -> str:
    """How summary.json's noise estimates were made, in words (runs before 2026-11-25 counted flags)."""
    return {"confident_joint": "the confident joint", "held_out_check": "the held-out check"}.get(
        det.get("noise_estimated_by"), "the detector's flags")
