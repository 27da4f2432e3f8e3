"""What the flagged set says about the noise: its rate, per class, and the transition matrix."""
from __future__ import annotations

from typing import Any

import numpy as np


def noise_estimates(given: np.ndarray, flagged: np.ndarray, suggested: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Estimate the noise from a detector's verdict.

    The estimated true class of an example is its suggested class when it is flagged and its given
    label otherwise. Counting (estimated true class, given label) pairs gives the transition matrix.

    Args:
        given, suggested: ``int [N]`` given labels and the detector's most likely classes.
        flagged: ``bool [N]`` the detector's suspected wrong labels.

    Returns:
        ``noise_rate_estimate`` (share of examples whose estimated true class is not the given
        label), ``noise_rate_per_class_estimate`` (``[C]``, the same among the examples of each
        estimated true class; 0 for a class no example was assigned to) and
        ``transition_estimate`` (``[C, C]``, rows = estimated true class, columns = given label,
        rows summing to 1; the identity row for an empty class).
    """
    given, suggested = np.asarray(given, dtype=np.int64), np.asarray(suggested, dtype=np.int64)
    true_est = np.where(np.asarray(flagged, dtype=bool), suggested, given)
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (true_est, given), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    transition = np.where(totals > 0, counts / np.maximum(totals, 1.0), np.eye(num_classes))
    per_class = np.where(totals[:, 0] > 0, 1.0 - np.diag(transition), 0.0)
    return {"noise_rate_estimate": float(np.mean(true_est != given)) if len(given) else 0.0,
            "noise_rate_per_class_estimate": per_class.tolist(),
            "transition_estimate": transition.tolist()}
