"""Label quality scores and filters in cleanlab's shapes.

``labels [N]`` ints, ``pred_probs [N, C]`` rows summing to 1 (rows are normalised here, so ELR's
targets, which sum to ``1 - beta^k``, work too), lower quality = more likely mislabeled. The two
filters that need nothing but an argmax or a threshold are computed here; every confident-learning
filter (Northcutt et al., JAIR 2021) comes from the ``cleanlab`` package
(``pip install 'noisylab[detect]'``), which noisylab calls rather than re-implements.
"""
from __future__ import annotations

import numpy as np

SCORES = ("self_confidence", "normalized_margin", "relative_confidence")
"""Label quality scores of :func:`label_quality_scores` (the one list): cleanlab's two formulas and
noisylab's ranking default, ``relative_confidence``."""
DEFAULT_RANK_BY = "relative_confidence"
"""The score that ranks a run's examples (``detect.rank_by``): on CIFAR-10N it ranks the wrong labels
higher than ``self_confidence`` does, from the same probabilities (README, Results)."""
CORE_FILTERS = ("predicted_neq_given", "low_self_confidence")
CLEANLAB_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "low_normalized_margin")
FILTERS = ("auto",) + CORE_FILTERS + CLEANLAB_FILTERS
"""Filters of :func:`find_label_issues` (the one list of their names); the last five are
``cleanlab.filter.find_label_issues``'s ``filter_by`` choices and need cleanlab; ``auto`` is
``prune_by_class`` when cleanlab is installed, else ``predicted_neq_given``."""
CLEANLAB_MISSING = "needs the cleanlab package: pip install 'noisylab[detect]' (or pip install cleanlab)"


def check_labels_probs(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """``(labels int64 [N], rows-normalised float64 [N, C])``; ValueError naming what is wrong."""
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


def label_quality_scores(labels, pred_probs, method: str = "self_confidence") -> np.ndarray:
    """Per-example label quality in [0, 1]; lower means more likely wrong (``float64 [N]``).

    - ``self_confidence``: ``p[y]``
    - ``normalized_margin``: ``(p[y] - max_{k != y} p[k] + 1) / 2``
    - ``relative_confidence``: ``p[y] / (p[y] + max_{k != y} p[k])``, the sigmoid of the margin
      ``log p[y] - max_{k != y} log p[k]`` that the area-under-the-margin ranking averages over
      training (Pleiss et al., NeurIPS 2020); 0.5 where the given label ties its strongest rival.
      It ranks a label by how it fares against the one class that contests it, not by how much mass
      the rest of the classes take (``self_confidence``) nor in absolute terms (``normalized_margin``).
    """
    labels, p = check_labels_probs(labels, pred_probs)
    rows = np.arange(len(labels))
    p_y = p[rows, labels]
    if method == "self_confidence":
        return p_y
    if method in ("normalized_margin", "relative_confidence"):
        other = p.copy()
        other[rows, labels] = -np.inf
        rival = other.max(axis=1)
        if method == "normalized_margin":
            return (p_y - rival + 1.0) / 2.0
        pair = p_y + rival
        return np.divide(p_y, pair, out=np.full_like(p_y, 0.5), where=pair > 0)  # 0 / 0: a tie
    raise ValueError(f"unknown score method '{method}' (valid: {', '.join(SCORES)})")


def import_cleanlab_filter():
    """``cleanlab.filter``, or ImportError with the install line."""
    try:
        import cleanlab.filter
    except ImportError:
        raise ImportError(f"confident learning {CLEANLAB_MISSING}") from None
    return cleanlab.filter


def resolve_filter(filter_by: str) -> str:
    """``auto`` -> ``prune_by_class`` with cleanlab installed (per class, the examples least likely to
    belong to their given class, as many as the confident joint estimates: the count adapts to the
    noise rate), else ``predicted_neq_given``; any other name as it is."""
    if filter_by != "auto":
        return filter_by
    try:
        import_cleanlab_filter()
    except ImportError:
        return "predicted_neq_given"
    return "prune_by_class"


def find_label_issues(labels, pred_probs, *, filter_by: str = "predicted_neq_given", threshold: float = 0.5,
                      return_indices_ranked_by: str | None = None) -> np.ndarray:
    """Flag examples whose given label is likely wrong.

    Args:
        labels: ``int [N]`` given labels.
        pred_probs: ``[N, C]`` predicted probabilities (out-of-sample for confident learning), or
            any detector's estimate of the true-label distribution (rows are normalised).
        filter_by: ``predicted_neq_given`` (argmax differs from the label: ELR's rule),
            ``low_self_confidence`` (``p[y] < threshold``), one of cleanlab's filters
            (:data:`CLEANLAB_FILTERS`; needs cleanlab, which also takes care of the threshold),
            or ``auto`` (:func:`resolve_filter`).
        return_indices_ranked_by: if given, the flagged indices sorted from most to least
            suspicious by this score (:data:`SCORES`) instead of a mask.

    Returns:
        ``bool [N]`` mask, or ``int64 [K]`` ranked indices.
    """
    labels, p = check_labels_probs(labels, pred_probs)
    filter_by = resolve_filter(filter_by)
    if filter_by == "predicted_neq_given":
        mask = p.argmax(axis=1) != labels
    elif filter_by == "low_self_confidence":
        mask = p[np.arange(len(labels)), labels] < threshold
    elif filter_by in CLEANLAB_FILTERS:
        try:
            mask = import_cleanlab_filter().find_label_issues(labels, p, filter_by=filter_by, n_jobs=1)
        except (ValueError, IndexError) as err:  # e.g. a class with too few examples
            raise ValueError(f"cleanlab's {filter_by} filter failed ({err}); use filter_by=predicted_neq_given") from None
    else:
        raise ValueError(f"unknown filter_by '{filter_by}' (valid: {', '.join(FILTERS)})")
    mask = np.asarray(mask, dtype=bool)
    if return_indices_ranked_by is None:
        return mask
    scores = label_quality_scores(labels, p, return_indices_ranked_by)
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged], kind="stable")]
