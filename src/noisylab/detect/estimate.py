"""What a run says about the noise: its rate, per class, and the transition matrix."""
from __future__ import annotations

from typing import Any

import numpy as np


def noise_estimates(given: np.ndarray, flagged: np.ndarray, suggested: np.ndarray, num_classes: int,
                    probs: np.ndarray | None = None, confident_joint: np.ndarray | None = None) -> dict[str, Any]:
    """Estimate the noise from counts of (estimated true class, given label) pairs.

    With ``probs`` (or their ``confident_joint``) and cleanlab installed the counts are cleanlab's
    estimate of the joint distribution of true and given labels (the calibrated confident joint,
    Northcutt et al., JAIR 2021), which does not depend on how many examples a filter flags: ``expected_f1`` flags more
    than there are wrong labels when they are many, on purpose. Otherwise they come from the
    verdict: the estimated true class is the suggested class of a flagged example and the given
    label of the others.

    Args:
        given, suggested: ``int [N]`` given labels and the detector's most likely classes.
        flagged: ``bool [N]`` the detector's suspected wrong labels.
        probs: ``[N, C]`` the detector's probabilities (rows summing to 1), or None.
        confident_joint: ``[C, C]`` their confident joint (:class:`~noisylab.detect.confident.ConfidentJoint`,
            rows = given label), given instead of ``probs`` when they are not kept in memory.

    Returns:
        ``noise_rate_estimate`` (the share of examples whose true class is not their given label),
        ``noise_rate_per_class_estimate`` (``[C]``, the same among the examples of each true class;
        0 for a class with none), ``transition_estimate`` (``[C, C]``, rows = true class, columns =
        given label, rows summing to 1; the identity row for an empty class) and ``noise_estimated_by``
        (``confident_joint`` or ``flags``).
    """
    given, suggested = np.asarray(given, dtype=np.int64), np.asarray(suggested, dtype=np.int64)
    if confident_joint is None and probs is not None and len(given):
        from .confident import confident_joint_of
        from .scores import normalize_rows

        confident_joint = confident_joint_of(given, normalize_rows(probs)).counts
    counts = None if confident_joint is None or not len(given) else _calibrated_counts(given, confident_joint)
    by = "confident_joint"
    if counts is None:
        by = "flags"
        true_est = np.where(np.asarray(flagged, dtype=bool), suggested, given)
        counts = np.zeros((num_classes, num_classes), dtype=np.float64)
        np.add.at(counts, (true_est, given), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    transition = np.where(totals > 0, counts / np.maximum(totals, 1e-300), np.eye(num_classes))
    per_class = np.where(totals[:, 0] > 0, 1.0 - np.diag(transition), 0.0)
    rate = 1.0 - np.trace(counts) / counts.sum() if counts.sum() > 0 else 0.0
    return {"noise_rate_estimate": float(rate), "noise_rate_per_class_estimate": per_class.tolist(),
            "transition_estimate": transition.tolist(), "noise_estimated_by": by}


def _calibrated_counts(given: np.ndarray, confident_joint: np.ndarray) -> np.ndarray | None:
    """``[C, C]`` estimated counts, rows = true class, columns = given label: cleanlab's
    ``estimate_joint`` of the confident joint (calibrated to the given labels' counts), scaled to
    N; None without cleanlab or where it cannot estimate."""
    try:
        from cleanlab.count import estimate_joint
    except ImportError:
        return None
    try:
        joint = estimate_joint(given, None, confident_joint=np.asarray(confident_joint))  # [given, true], sums to 1
    except (ValueError, IndexError, ZeroDivisionError):
        return None
    if not np.all(np.isfinite(joint)):
        return None
    return joint.T * len(given)
