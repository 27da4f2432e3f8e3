"""Memorization curves (the figure of the ELR README).

For training examples with a known true label, split by whether the given label is wrong:
- clean examples: predicted correctly / wrongly;
- noisy examples: predicted as the true label / as the given wrong label ("memorized") / other.
"""
from __future__ import annotations

import numpy as np

MEMO_COLUMNS = ["clean_correct", "clean_wrong", "noisy_true", "noisy_memorized", "noisy_other"]


def memorization_fractions(pred: np.ndarray, given: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Fractions for the five curves. ``pred, given, true``: int ``[N]``.

    Clean fractions are over clean examples and sum to 1; noisy fractions over noisy examples
    and sum to 1 (each group's fractions are 0 when the group is empty).
    """
    pred, given, true = (np.asarray(a) for a in (pred, given, true))
    noisy = given != true
    clean = ~noisy
    out = dict.fromkeys(MEMO_COLUMNS, 0.0)
    if clean.any():
        out["clean_correct"] = float((pred[clean] == true[clean]).mean())
        out["clean_wrong"] = 1.0 - out["clean_correct"]
    if noisy.any():
        p, g, t = pred[noisy], given[noisy], true[noisy]
        out["noisy_true"] = float((p == t).mean())
        out["noisy_memorized"] = float((p == g).mean())
        out["noisy_other"] = 1.0 - out["noisy_true"] - out["noisy_memorized"]
    return out
