"""The confident joint of confident learning (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021), computed over row chunks of ``P``.

Class ``k``'s threshold ``t_k`` is the mean of ``P[i, k]`` over the examples labelled ``k``, so it
needs only ``P[i, y_i]``. An example counts as confidently of class ``j`` when ``P[i, j] >= t_j``
(less a tolerance of 1e-6); with several such classes, the one of largest ``P[i, j]`` overall.
``C[y, j]`` counts the examples labelled ``y`` confidently of class ``j``; its diagonal is raised
to at least 1. The examples off the diagonal are the ones confidently of another class than their
label. These are the formulas, constants and edge cases of ``cleanlab.count.compute_confident_joint``
(cleanlab 2.x: thresholds clipped below at 2e-6, and 2 for a class no example is labelled with),
which the tests compare against; computing them here lets a million-row record be read one chunk
at a time instead of as one ``[N, C]`` array.
"""
from __future__ import annotations

import numpy as np

THRESHOLD_FLOOR = 2e-6
"""Lowest class threshold (cleanlab's ``CONFIDENT_THRESHOLDS_LOWER_BOUND``)."""
ABSENT_CLASS_THRESHOLD = 2.0
"""Threshold of a class no example is labelled with: above every probability, so never confident."""
TOLERANCE = 1e-6
"""``P[i, j]`` within this of ``t_j`` counts as reaching it (floating-point comparison)."""


def class_thresholds(given: np.ndarray, p_given: np.ndarray, num_classes: int) -> np.ndarray:
    """``t [C]``: the mean of ``P[i, y_i]`` over the examples labelled with each class.

    Args:
        given: ``int [N]`` the given labels; p_given: ``[N]`` ``P[i, y_i]``."""
    given = np.asarray(given, dtype=np.int64)
    counts = np.bincount(given, minlength=num_classes)[:num_classes]
    sums = np.bincount(given, weights=np.asarray(p_given, dtype=np.float64), minlength=num_classes)[:num_classes]
    means = np.divide(sums, counts, out=np.full(num_classes, ABSENT_CLASS_THRESHOLD), where=counts > 0)
    return np.clip(means, THRESHOLD_FLOOR, None)


def confident_classes(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``int64 [n]``: each row's confident class, -1 where no class reaches its threshold.

    Args:
        probs: ``[n, C]`` rows of ``P`` (one chunk); thresholds: ``[C]`` from :func:`class_thresholds`.
    """
    reached = probs >= thresholds - TOLERANCE
    how_many = reached.sum(axis=1)
    # one class reached: that class; several: the most probable class of the row
    guess = np.where(how_many > 1, probs.argmax(axis=1), reached.argmax(axis=1))
    return np.where(how_many > 0, guess, -1).astype(np.int64)


class ConfidentJoint:
    """Accumulates the confident joint chunk by chunk: ``add(given, probs)`` for each chunk of rows
    in order, then :attr:`counts` and :attr:`off_diagonal`.

    Attributes:
        counts: ``int64 [C, C]``, rows = given label, columns = confident class, diagonal >= 1.
        off_diagonal: ``bool [N]`` whether the example is confidently of a class other than its label.
    """

    def __init__(self, thresholds: np.ndarray) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        c = len(self.thresholds)
        self._counts = np.zeros((c, c), dtype=np.int64)
        self._off: list[np.ndarray] = []

    def add(self, given: np.ndarray, probs: np.ndarray) -> None:
        guess = confident_classes(probs, self.thresholds)
        confident = guess >= 0
        given = np.asarray(given, dtype=np.int64)
        c = len(self.thresholds)
        self._counts += np.bincount(given[confident] * c + guess[confident], minlength=c * c).reshape(c, c)
        self._off.append(confident & (guess != given))

    @property
    def counts(self) -> np.ndarray:
        counts = self._counts.copy()
        np.fill_diagonal(counts, np.maximum(counts.diagonal(), 1))
        return counts

    @property
    def off_diagonal(self) -> np.ndarray:
        return np.concatenate(self._off) if self._off else np.zeros(0, dtype=bool)


def confident_joint_of(given: np.ndarray, probs: np.ndarray) -> ConfidentJoint:
    """The :class:`ConfidentJoint` of ``probs [N, C]`` (rows summing to 1) in memory at once."""
    given = np.asarray(given, dtype=np.int64)
    joint = ConfidentJoint(class_thresholds(given, probs[np.arange(len(given)), given], probs.shape[1]))
    joint.add(given, probs)
    return joint
