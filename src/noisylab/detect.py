"""Finding wrong labels: scores, masks, rankings, and metrics against known truth.

The functional API follows cleanlab's conventions (``labels [N]`` int, ``pred_probs [N, C]``
rows summing to 1, lower quality score = more likely mislabeled). ``self_confidence`` and
``normalized_margin`` are cleanlab's scores; ``confidence_weighted_entropy`` ranks like
cleanlab's but its values differ; the filters are described below (``low_self_confidence`` here
is a fixed threshold, not cleanlab's estimated count). ``pred_probs`` may be a model's softmax outputs or ELR's per-example
targets (normalised here): ELR flags example i when ``argmax(target_i) != label_i``
(ELR README, issue #20).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
"""Label quality scores of :func:`label_quality_scores` (the one list of their names)."""
FILTERS = ("predicted_neq_given", "confident_learning", "low_self_confidence")
"""Filters of :func:`find_label_issues` (the one list of their names)."""
ScoreMethod = str
FilterBy = str


def _check(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probs = np.asarray(pred_probs, dtype=np.float64)
    if probs.ndim != 2 or labels.ndim != 1 or len(labels) != len(probs):
        raise ValueError(f"labels [N] and pred_probs [N, C] must match, got {labels.shape} and {probs.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("labels must be integers")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), found {labels.min()}..{labels.max()}")
    if not np.all(np.isfinite(probs)) or (probs < 0).any():
        raise ValueError("pred_probs must be finite and non-negative")
    return labels.astype(np.int64), normalize_rows(probs)


def normalize_rows(probs: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (ELR targets sum to 1 - beta^k); all-zero rows become uniform."""
    probs = np.asarray(probs, dtype=np.float64)
    sums = probs.sum(axis=1, keepdims=True)
    uniform = np.full_like(probs, 1.0 / probs.shape[1])
    return np.where(sums > 0, probs / np.where(sums > 0, sums, 1.0), uniform)


def label_quality_scores(labels, pred_probs, method: ScoreMethod = "self_confidence") -> np.ndarray:
    """Per-example label quality in [0, 1]; lower means more likely wrong.

    - ``self_confidence``: ``p[y]``
    - ``normalized_margin``: ``(p[y] - max_{k != y} p[k] + 1) / 2``
    - ``confidence_weighted_entropy``: ``1 / (1 + H(p) / p[y])`` with ``H`` the entropy in units
      of ``log C`` (so in [0, 1]); a monotone map of cleanlab's ``entropy / p[y]`` ranking

    Returns ``float64 [N]``.
    """
    labels, p = _check(labels, pred_probs)
    rows = np.arange(len(labels))
    p_y = p[rows, labels]
    if method == "self_confidence":
        return p_y
    if method == "normalized_margin":
        other = p.copy()
        other[rows, labels] = -np.inf
        return (p_y - other.max(axis=1) + 1.0) / 2.0
    if method == "confidence_weighted_entropy":
        clipped = np.clip(p, 1e-12, 1.0)
        entropy = -(clipped * np.log(clipped)).sum(axis=1) / np.log(p.shape[1])
        return 1.0 / (1.0 + entropy / np.clip(p_y, 1e-12, None))
    raise ValueError(f"unknown score method '{method}' (valid: {', '.join(SCORES)})")


def confident_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class threshold ``t_k = mean p[k]`` over examples labelled k (Northcutt et al., JAIR 2021)."""
    c = probs.shape[1]
    t = np.ones(c)
    for k in range(c):
        mask = labels == k
        if mask.any():
            t[k] = probs[mask, k].mean()
    return t


def find_label_issues(
    labels,
    pred_probs,
    *,
    filter_by: FilterBy = "predicted_neq_given",
    threshold: float = 0.5,
    return_indices_ranked_by: ScoreMethod | None = None,
) -> np.ndarray:
    """Flag examples whose given label is likely wrong.

    Args:
        labels: ``int [N]`` given labels.
        pred_probs: ``[N, C]`` predicted probabilities or ELR targets (rows are normalised).
        filter_by: ``predicted_neq_given`` (argmax differs from the label: ELR's rule);
            ``confident_learning`` (the off-diagonal of the confident joint: some other class k
            has ``p[k] >= t_k``, the per-class mean confidence, and the most likely such class
            is not the label); ``low_self_confidence`` (``p[y] < threshold``).
        return_indices_ranked_by: if given, return the flagged indices sorted from most to
            least suspicious by this score instead of a mask.

    Returns:
        ``bool [N]`` mask, or ``int64 [K]`` ranked indices.
    """
    labels, p = _check(labels, pred_probs)
    rows = np.arange(len(labels))
    if filter_by == "predicted_neq_given":
        mask = p.argmax(axis=1) != labels
    elif filter_by == "confident_learning":
        t = confident_thresholds(labels, p)
        above = p >= t[None, :]
        masked = np.where(above, p, -np.inf)
        has_any = above.any(axis=1)
        mask = has_any & (masked.argmax(axis=1) != labels)
    elif filter_by == "low_self_confidence":
        mask = p[rows, labels] < threshold
    else:
        raise ValueError(f"unknown filter_by '{filter_by}' (valid: {', '.join(FILTERS)})")
    if return_indices_ranked_by is None:
        return mask
    scores = label_quality_scores(labels, p, return_indices_ranked_by)
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged], kind="stable")]


@dataclass
class DetectionMetrics:
    """Quality of a flagged set against the known wrong labels."""

    num_flagged: int
    num_noisy: int
    precision: float
    recall: float
    f1: float
    auroc: float | None  # of (1 - score) as a detector, when scores are given

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def auroc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` (higher = more positive), ties counted half.

    Mann-Whitney U statistic on average ranks; None when one class is empty.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = np.asarray(score)[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def detection_metrics(flagged: np.ndarray, is_noisy: np.ndarray, quality: np.ndarray | None = None) -> DetectionMetrics:
    """Precision, recall and F1 of a flag mask, and AUROC of ``1 - quality`` if given."""
    flagged = np.asarray(flagged, dtype=bool)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    tp = int((flagged & is_noisy).sum())
    nf, nn_ = int(flagged.sum()), int(is_noisy.sum())
    precision = tp / nf if nf else 0.0
    recall = tp / nn_ if nn_ else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    roc = auroc(is_noisy, 1.0 - np.asarray(quality)) if quality is not None else None
    return DetectionMetrics(nf, nn_, precision, recall, f1, roc)


def write_label_issues_csv(
    path: str | Path,
    labels: np.ndarray,
    pred_probs: np.ndarray,
    flagged: np.ndarray,
    quality: np.ndarray,
    indices: np.ndarray | None = None,
    true_labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    only_flagged: bool = False,
    paths: list[str] | None = None,
) -> int:
    """Write one row per example, most suspicious first: ``index, given_label, suggested_label,
    quality, is_label_issue`` (+ names, + ``true_label, is_noisy`` when the truth is known,
    + ``path`` of the example's file when ``paths`` (one per row of ``labels``) is given).

    Returns the number of rows written.
    """
    labels = np.asarray(labels)
    p = normalize_rows(pred_probs)
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices)
    suggested = p.argmax(axis=1)
    order = np.lexsort((quality, ~np.asarray(flagged, dtype=bool)))  # flagged first, then by quality
    header = ["index", "given_label", "suggested_label", "quality", "is_label_issue"]
    if class_names:
        header += ["given_name", "suggested_name"]
    if true_labels is not None:
        header += ["true_label", "is_noisy"]
    if paths is not None:
        header += ["path"]
    written = [0]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for i in order:
                if only_flagged and not flagged[i]:
                    continue
                row = [int(idx[i]), int(labels[i]), int(suggested[i]), f"{quality[i]:.6f}", int(bool(flagged[i]))]
                if class_names:
                    row += [class_names[labels[i]], class_names[suggested[i]]]
                if true_labels is not None:
                    row += [int(true_labels[i]), int(true_labels[i] != labels[i])]
                if paths is not None:
                    row += [paths[i]]
                w.writerow(row)
                written[0] += 1

    from .checkpoint import atomic_write

    atomic_write(path, write)
    rows = written[0]
    return rows
