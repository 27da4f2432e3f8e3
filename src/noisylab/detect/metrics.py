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


@dataclass
class PairedDifference:
    """``F1(a) - F1(b)`` of two verdicts on the same examples, with a paired bootstrap's view of it.

    Attributes:
        difference: on the examples as they are.
        low, high: the 2.5 % and 97.5 % quantiles over the draws (a 95 % interval).
        share_ahead: the share of draws where ``a`` has the higher F1.
    """

    difference: float
    low: float
    high: float
    share_ahead: float


def _f1_of_draws(weights: np.ndarray, flagged: np.ndarray, is_noisy: np.ndarray) -> np.ndarray:
    """F1 of ``flagged`` on each draw, ``weights [R, n]`` counting how often each example was drawn."""
    tp = weights @ (flagged & is_noisy).astype(np.float64)
    fp = weights @ (flagged & ~is_noisy).astype(np.float64)
    fn = weights @ (~flagged & is_noisy).astype(np.float64)
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1.0)


def paired_f1_difference(flagged_a: np.ndarray, flagged_b: np.ndarray, is_noisy: np.ndarray, draws: int = 2000,
                         seed: int = 0, chunk: int = 100) -> PairedDifference:
    """How sure ``F1(a) > F1(b)`` is: a paired bootstrap over the examples (each draw resamples the
    n examples with replacement and scores both verdicts on the same draw, Efron & Tibshirani 1993).

    It covers which examples a dataset happens to hold, not the randomness of the training that
    produced the verdicts (for that, repeat the runs with other seeds).

    Args:
        flagged_a, flagged_b: ``bool [n]`` the two verdicts.
        is_noisy: ``bool [n]`` the truth.
    """
    a, b, y = (np.asarray(v, dtype=bool) for v in (flagged_a, flagged_b, is_noisy))
    if not a.shape == b.shape == y.shape or a.ndim != 1:
        raise ValueError(f"flagged_a, flagged_b and is_noisy must be [n] alike, got {a.shape}, {b.shape}, {y.shape}")
    n = len(y)
    if n == 0 or draws < 1:
        raise ValueError(f"a paired bootstrap needs examples and draws, got {n} examples and {draws} draws")
    rng = np.random.default_rng(seed)
    diffs = []
    for lo in range(0, draws, chunk):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, draws - lo)).astype(np.float64)
        diffs.append(_f1_of_draws(weights, a, y) - _f1_of_draws(weights, b, y))
    diffs = np.concatenate(diffs)
    every = np.ones((1, n))
    point = float(_f1_of_draws(every, a, y)[0] - _f1_of_draws(every, b, y)[0])
    return PairedDifference(point, float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975)),
                            float(np.mean(diffs > 0)))
