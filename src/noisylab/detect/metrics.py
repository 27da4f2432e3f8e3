"""How well a detector finds the wrong labels when the truth is known (synthetic noise, CIFAR-N).

Written in numpy so every run can report them without optional packages; the tests check them
against scikit-learn's ``roc_auc_score`` and ``average_precision_score``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class DetectionMetrics:
    """Quality of a flagged set (precision, recall, F1) and of a ranking (AUROC, AUPRC) against
    the known wrong labels; the ranking metrics are None without scores or when one class is empty."""

    num_flagged: int
    num_noisy: int
    precision: float
    recall: float
    f1: float
    auroc: float | None = None
    auprc: float | None = None
    precision_at_noisy: float | None = None  # precision among the num_noisy lowest-quality examples

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _threshold_counts(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives when flagging every score ``>=`` each distinct value,
    from the highest value down (ties enter together)."""
    order = np.argsort(-score, kind="mergesort")
    s, pos = score[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(pos)[last_of_tie]
    return tp, (last_of_tie + 1) - tp


def auroc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` (higher = more positive), ties counted half."""
    positive, score = np.asarray(positive, dtype=bool), np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    tp, fp = _threshold_counts(positive, score)
    tpr, fpr = np.r_[0.0, tp / n_pos], np.r_[0.0, fp / n_neg]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))  # trapezoids = ties counted half


def average_precision(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the precision-recall curve as average precision: ``sum_n (R_n - R_{n-1}) P_n``
    over the distinct thresholds (scikit-learn's definition)."""
    positive, score = np.asarray(positive, dtype=bool), np.asarray(score, dtype=np.float64)
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return None
    tp, fp = _threshold_counts(positive, score)
    recall, precision = tp / n_pos, tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_recall_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(precision, recall)`` at each distinct threshold, from the highest score down."""
    positive, score = np.asarray(positive, dtype=bool), np.asarray(score, dtype=np.float64)
    tp, fp = _threshold_counts(positive, score)
    return tp / (tp + fp), tp / max(int(positive.sum()), 1)


def detection_metrics(flagged: np.ndarray, is_noisy: np.ndarray, quality: np.ndarray | None = None) -> DetectionMetrics:
    """Precision, recall and F1 of the ``flagged`` mask; AUROC, AUPRC and precision among the
    ``num_noisy`` least-quality examples of the ranking by ``1 - quality`` when ``quality`` is given."""
    flagged, is_noisy = np.asarray(flagged, dtype=bool), np.asarray(is_noisy, dtype=bool)
    tp = int((flagged & is_noisy).sum())
    nf, nn_ = int(flagged.sum()), int(is_noisy.sum())
    precision = tp / nf if nf else 0.0
    recall = tp / nn_ if nn_ else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    m = DetectionMetrics(nf, nn_, precision, recall, f1)
    if quality is not None:
        suspicion = 1.0 - np.asarray(quality, dtype=np.float64)
        m.auroc, m.auprc = auroc(is_noisy, suspicion), average_precision(is_noisy, suspicion)
        if nn_:
            top = np.argsort(-suspicion, kind="mergesort")[:nn_]
            m.precision_at_noisy = float(is_noisy[top].mean())
    return m
