"""Label quality scores and filters in cleanlab's shapes.

``labels [N]`` ints, ``pred_probs [N, C]`` rows summing to 1 (rows are normalised here, so ELR's
targets, which sum to ``1 - beta^k``, work too), lower quality = more likely mislabeled. The two
filters that need nothing but an argmax or a threshold are computed here; every confident-learning
filter (Northcutt et al., JAIR 2021) comes from the ``cleanlab`` package
(``pip install 'noisylab[detect]'``), which noisylab calls rather than re-implements. The one
exception is the confident joint under noisylab's own ``expected_f1`` filter and noise estimates,
computed by cleanlab's formulas in :mod:`noisylab.detect.confident` so that it can be read in
chunks; it needs the same extra (scikit-learn's isotonic regression, cleanlab's calibration).
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
NEEDS_CLEANLAB = ("expected_f1",) + CLEANLAB_FILTERS
FILTERS = ("auto",) + CORE_FILTERS + NEEDS_CLEANLAB
"""Filters of :func:`find_label_issues` (the one list of their names). ``expected_f1`` is noisylab's
(:func:`expected_f1_issues`) and builds on the confident joint; the last five are
``cleanlab.filter.find_label_issues``'s ``filter_by`` choices; all six need cleanlab. ``auto`` is
``expected_f1`` when cleanlab is installed, else ``predicted_neq_given``."""
CLEANLAB_MISSING = "needs the cleanlab package: pip install 'noisylab[detect]' (or pip install cleanlab)"


def check_labels_probs(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """``(labels int64 [N], rows-normalised float64 [N, C])``; ValueError naming what is wrong."""
    labels = checked_labels(labels, pred_probs)
    return labels, normalize_rows(pred_probs)


CHUNK_ROWS = 65536
"""Rows of an ``[N, C]`` table read at a time where a whole copy of it would not fit (a million
rows at 1,000 classes is 4 GB in float32)."""


def checked_labels(labels, pred_probs, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``labels`` as ``int64 [N]`` after the checks of :func:`check_labels_probs`, reading
    ``pred_probs [N, C]`` a block of rows at a time in its own dtype (no ``[N, C]`` copy)."""
    labels = np.asarray(labels)
    probs = np.asarray(pred_probs)
    if probs.ndim != 2 or labels.ndim != 1 or len(labels) != len(probs):
        raise ValueError(f"labels [N] and pred_probs [N, C] must match, got {labels.shape} and {probs.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("labels must be integers")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), found {labels.min()}..{labels.max()}")
    for lo in range(0, len(probs), chunk_rows):
        block = probs[lo:lo + chunk_rows]
        if not np.all(np.isfinite(block)) or (block < 0).any():
            raise ValueError("pred_probs must be finite and non-negative")
    return labels.astype(np.int64)


def normalize_rows(probs: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (ELR targets sum to 1 - beta^k) in a new float64 array; all-zero
    rows become uniform."""
    return normalize_rows_(np.array(probs, dtype=np.float64))  # one new [N, C]


def normalize_rows_(probs: np.ndarray) -> np.ndarray:
    """:func:`normalize_rows` in place, in the array's own float dtype (no copy: a float32 table of
    a million rows x 1,000 classes stays 4 GB). Returns ``probs``."""
    sums = probs.sum(axis=1, keepdims=True)
    np.divide(probs, sums, out=probs, where=sums > 0)
    probs[sums[:, 0] <= 0] = 1.0 / probs.shape[1]
    return probs


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
    """``auto`` -> ``expected_f1`` with cleanlab installed (a prefix of the ranking whose length
    adapts to the noise: :func:`expected_f1_issues`), else ``predicted_neq_given``; any other name
    as it is."""
    if filter_by != "auto":
        return filter_by
    try:
        import_cleanlab_filter()
    except ImportError:
        return "predicted_neq_given"
    return "expected_f1"


def expected_f1_issues(labels: np.ndarray, probs: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """``bool [N]``: the k lowest-``quality`` examples, k chosen to maximise the expected F1 of the flags.

    Which examples are wrong is unknown, so each gets an estimate ``w [N]`` of the probability that
    its label is wrong, and k maximises ``2 * sum(w[flagged]) / (k + sum(w))``, the expected number
    of wrong labels caught over the expected size of both sets (the F1 of expected counts; for
    calibrated ``w`` its optimum flags down to ``w = F1 / 2``, Lipton et al., ECML PKDD 2014).
    ``w`` is the isotonic (monotone in ``quality``) regression of membership in the confident
    joint's off-diagonal, i.e. of "confidently belongs to a class other than its label"
    (Northcutt et al., JAIR 2021; :mod:`noisylab.detect.confident`): a smooth, label-free estimate
    of the error rate at each quality level. Where wrong labels are many, the estimate stays high far
    down the ranking and k exceeds their expected number (recall is worth more than precision
    there); where they are few, k stops well short of ``argmax != label``.

    Args:
        labels: ``int64 [N]``; probs: ``[N, C]`` rows summing to 1; quality: ``[N]`` the ranking
            score (lower = more likely wrong), the order the flags are a prefix of.
    """
    from .confident import confident_joint_of

    joint = confident_joint_of(labels, np.asarray(probs, dtype=np.float64))
    return expected_f1_from(joint.off_diagonal, quality)


def expected_f1_from(off_diagonal: np.ndarray, quality: np.ndarray, expected_wrong: float | None = None) -> np.ndarray:
    """:func:`expected_f1_issues` from its two inputs: ``off_diagonal bool [N]`` (confidently of
    another class than the label) and ``quality [N]``. ``expected_wrong``: the number of wrong
    labels when something better than the off-diagonal count knows it (the held-out check,
    :func:`noisylab.detect.estimate.held_out_check`); each example's chance of being wrong ``w`` is
    then lowered to ``w ** gamma``, with the ``gamma >= 1`` that makes them add up to it: examples
    certainly of another class (``w`` near 1, the top of the ranking) stay wrong, the doubtful
    middle, where a weak model's own mistakes are, fades. (A power rather than one factor for all,
    or keeping only the top: chosen on a tuning folder, docs/results.md.) Where more examples than
    that are certainly of another class (a plateau of 1s no power lowers), only the lowest-quality
    ones, up to the expected count, keep their chance."""
    from sklearn.isotonic import IsotonicRegression

    confident_other = np.asarray(off_diagonal, dtype=np.float64)
    flagged = np.zeros(len(confident_other), dtype=bool)
    if not confident_other.any():
        return flagged
    wrong = IsotonicRegression(increasing=False).fit(quality, confident_other).predict(quality)
    order = np.argsort(quality, kind="stable")
    if expected_wrong is not None and wrong.sum() > expected_wrong:
        wrong = wrong ** _power_to_sum(wrong, expected_wrong)
        beyond = order[np.cumsum(wrong[order]) > expected_wrong + 1e-9]
        wrong[beyond] = 0.0
    caught = np.cumsum(wrong[order])
    expected_f1 = 2 * caught / (np.arange(1, len(order) + 1) + wrong.sum())
    flagged[order[:int(expected_f1.argmax()) + 1]] = True
    return flagged


def _power_to_sum(values: np.ndarray, total: float, largest: float = 1000.0) -> float:
    """The ``gamma`` in ``[1, largest]`` with ``sum(values ** gamma)`` closest to ``total``
    (``values`` in [0, 1], whose sum falls as ``gamma`` grows), by bisection on ``log gamma``."""
    lo, hi = 0.0, float(np.log(largest))
    for _ in range(60):
        mid = (lo + hi) / 2
        if (values ** np.exp(mid)).sum() > total:
            lo = mid
        else:
            hi = mid
    return float(np.exp(hi))


def find_label_issues(labels, pred_probs, *, filter_by: str = "predicted_neq_given", threshold: float = 0.5,
                      rank_by: str = DEFAULT_RANK_BY, return_indices_ranked_by: str | None = None,
                      confident_joint: np.ndarray | None = None) -> np.ndarray:
    """Flag examples whose given label is likely wrong.

    Args:
        labels: ``int [N]`` given labels.
        pred_probs: ``[N, C]`` predicted probabilities (out-of-sample for confident learning), or
            any detector's estimate of the true-label distribution (rows are normalised).
        filter_by: ``predicted_neq_given`` (argmax differs from the label: ELR's rule),
            ``low_self_confidence`` (``p[y] < threshold``), ``expected_f1`` (the prefix of the
            ``rank_by`` ranking that maximises the expected F1, :func:`expected_f1_issues`), one of
            cleanlab's filters (:data:`CLEANLAB_FILTERS`, which take care of their own thresholds),
            or ``auto`` (:func:`resolve_filter`). All but the first two need cleanlab.
        rank_by: the score (:data:`SCORES`) whose ranking ``expected_f1`` flags a prefix of.
        return_indices_ranked_by: if given, the flagged indices sorted from most to least
            suspicious by this score (:data:`SCORES`) instead of a mask.
        confident_joint: ``[C, C]`` (rows = given label) counts to use instead of those of
            ``pred_probs`` where cleanlab's filter takes them (``prune_by_noise_rate``,
            ``prune_by_class``, ``both``): a detector that counts with another estimate than it
            ranks by (``counts_with``). cleanlab calibrates them to the label counts first.

    Returns:
        ``bool [N]`` mask, or ``int64 [K]`` ranked indices.
    """
    labels, p = check_labels_probs(labels, pred_probs)
    filter_by = resolve_filter(filter_by)
    if filter_by == "predicted_neq_given":
        mask = p.argmax(axis=1) != labels
    elif filter_by == "low_self_confidence":
        mask = p[np.arange(len(labels)), labels] < threshold
    elif filter_by in NEEDS_CLEANLAB:
        cleanlab_filter = import_cleanlab_filter()
        try:
            if filter_by == "expected_f1":
                mask = expected_f1_issues(labels, p, label_quality_scores(labels, p, rank_by))
            else:
                counts = None
                if confident_joint is not None and filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
                    from cleanlab.count import calibrate_confident_joint

                    counts = calibrate_confident_joint(np.asarray(confident_joint), labels)
                mask = cleanlab_filter.find_label_issues(labels, p, filter_by=filter_by, n_jobs=1,
                                                         confident_joint=counts)
        except (ValueError, IndexError) as err:  # e.g. a class with too few examples
            raise ValueError(f"the {filter_by} filter failed ({err}); use filter_by=predicted_neq_given") from None
    else:
        raise ValueError(f"unknown filter_by '{filter_by}' (valid: {', '.join(FILTERS)})")
    mask = np.asarray(mask, dtype=bool)
    if return_indices_ranked_by is None:
        return mask
    scores = label_quality_scores(labels, p, return_indices_ranked_by)
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged], kind="stable")]
