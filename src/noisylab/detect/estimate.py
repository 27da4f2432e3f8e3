"""What a run says about the noise: its rate, per class, and the transition matrix.

Two estimates, checked against each other:

- the calibrated confident joint (Northcutt et al., JAIR 2021) of a detector's probabilities: it
  counts every example the model confidently gives another class, so it also counts the model's
  own mistakes. A model with 80 % accuracy "finds" about 20 % wrong labels in data that has almost
  none;
- the held-out check (:func:`held_out_check`): among examples the model never trained on, the
  share of the most confidently predicted ones whose given label differs from the prediction.
  There the model is rarely wrong itself, and its prediction does not depend on the label, so
  when wrong labels are spread over easy and hard examples alike (a share of them falls among the
  confident ones) this share estimates the noise rate, with a binomial interval.

:func:`noise_estimates` keeps the joint's rate unless it lies more than a factor of two outside the
check's interval (:data:`REFUTING_FACTOR`), then takes the check's rate, and says the rate is not
pinned (only a bound) when the check has too few examples to put it within a factor of two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENT_SHARE = 0.3
"""The share of held-out examples, the most confidently predicted, that the held-out check reads.
Chosen on a tuning folder (CIFAR-10 images 10,000-19,999 with 5 % of labels swapped; docs/results.md,
"Your own image folder"): 0.2, 0.3 and 0.4 gave 3.0-4.0 %, 4.3-5.7 % and 5.0-6.5 % over three
runs; larger shares let in more of the model's own mistakes."""

REFUTING_FACTOR = 2.0
"""The check overrides the confident joint's rate only when that rate lies more than this factor
outside its interval (:meth:`HeldOutCheck.refutes`). On CIFAR-10N ``worst`` (40.2% wrong, human
errors) the check of a 4-fold cross-validation read 29.0% (28.3-29.7%) and the joint 38.8%: the
joint was right. Two is the issue's own tolerance ("within a factor of two"); it was set after
seeing that one result, so ``worst`` is not an independent test of it (``random1`` was run after)."""

WILSON_Z = 1.959964
"""The check's interval: the Wilson score interval (Wilson, JASA 1927) at 95 %."""


@dataclass(frozen=True)
class HeldOutCheck:
    """The held-out check of a noise rate.

    Attributes:
        checked: the held-out examples read (the :data:`CONFIDENT_SHARE` most confidently predicted).
        disagreeing: of them, those whose predicted class is not their given label.
        low, high: the 95 % interval of the share of wrong labels.
    """

    checked: int
    disagreeing: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.disagreeing / self.checked if self.checked else 0.0

    @property
    def pinned(self) -> bool:
        """Whether the interval lies within a factor of two of the rate (then any rate the interval
        holds is within a factor of two of the printed one)."""
        return self.disagreeing > 0 and self.low >= self.rate / 2 and self.high <= 2 * self.rate

    def holds(self, rate: float) -> bool:
        return self.low <= rate <= self.high

    def refutes(self, rate: float) -> bool:
        """Whether ``rate`` is outside the interval, by more than :data:`REFUTING_FACTOR` when the
        check pins its own rate (:attr:`pinned`). A check that pins its rate may read low for a
        reason its interval does not cover: wrong labels gather on the images the model finds hard
        (human errors do; on CIFAR-10N ``worst`` it read 29% for 40%), so a rate just above its
        interval may still be right. A check that cannot pin its rate has found next to no wrong
        labels among the examples it read, and a rate above its interval is not upheld."""
        factor = REFUTING_FACTOR if self.pinned else 1.0
        return rate > factor * self.high or rate < self.low / factor

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "disagreeing": self.disagreeing, "rate": round(self.rate, 6),
                "low": round(self.low, 6), "high": round(self.high, 6)}


def wilson_interval(k: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (``(0, 1)`` for ``n = 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def held_out_check(given: np.ndarray, probs: np.ndarray, share: float = CONFIDENT_SHARE,
                   chunk_rows: int | None = None) -> HeldOutCheck | None:
    """The held-out check on out-of-sample predictions ``probs [m, C]`` of examples with given
    labels ``given [m]``: the ``share`` most confidently predicted rows (highest top probability,
    ties broken by the lowest second one, as a softmax rounds many top values to 1.0), how many of
    them disagree with their label, and the interval. None without rows. ``probs`` is read
    ``chunk_rows`` at a time (rows normalised to sum to 1)."""
    from .scores import CHUNK_ROWS, normalize_rows

    chunk_rows = chunk_rows or CHUNK_ROWS
    given = np.asarray(given, dtype=np.int64)
    if not len(given):
        return None
    top, second = np.empty(len(given)), np.zeros(len(given))
    predicted = np.empty(len(given), dtype=np.int64)
    for lo in range(0, len(given), chunk_rows):
        p = normalize_rows(probs[lo:lo + chunk_rows])
        hi = lo + len(p)
        predicted[lo:hi] = p.argmax(axis=1)
        if p.shape[1] > 1:
            two = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
            top[lo:hi], second[lo:hi] = two[:, 1], two[:, 0]
        else:
            top[lo:hi] = p[:, 0]
    order = np.lexsort((second, -top))
    read = order[:max(1, int(math.ceil(share * len(given))))]
    k = int((predicted[read] != given[read]).sum())
    return HeldOutCheck(len(read), k, *wilson_interval(k, len(read)))


def noise_rate_text(det: dict[str, Any]) -> str:
    """The noise rate of a summary's ``detect`` block (or :func:`noise_estimates`'s result) in
    words: the rate, with the check's interval when there was one, or only the bound the check
    allows when it could not pin the rate down."""
    rate, check = det.get("noise_rate_estimate"), det.get("noise_rate_check")
    if rate is None:
        return "not estimated"
    if not check:
        return f"{100 * rate:.1f}%"
    if det.get("noise_rate_pinned", True):
        return (f"{100 * rate:.1f}% (the {check['checked']} held-out examples the model is surest of read "
                f"{100 * check['low']:.1f}-{100 * check['high']:.1f}%)")
    return (f"below {100 * check['high']:.1f}%: {check['disagreeing']} of the {check['checked']} held-out examples "
            "the model is surest of disagree with their label, too few to say more (the model's own errors would "
            "count as wrong labels in any estimate from it)")


def noise_estimates(given: np.ndarray, flagged: np.ndarray, suggested: np.ndarray, num_classes: int,
                    probs: np.ndarray | None = None, confident_joint: np.ndarray | None = None,
                    check: HeldOutCheck | None = None) -> dict[str, Any]:
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
        check: the :func:`held_out_check` of the run, or None. When it refutes the counts' rate
            (:meth:`HeldOutCheck.refutes`), the off-diagonal counts are scaled to its rate (their
            pattern kept).

    Returns:
        ``noise_rate_estimate`` (the share of examples whose true class is not their given label),
        ``noise_rate_per_class_estimate`` (``[C]``, the same among the examples of each true class;
        0 for a class with none), ``transition_estimate`` (``[C, C]``, rows = true class, columns =
        given label, rows summing to 1; the identity row for an empty class), ``noise_estimated_by``
        (``confident_joint``, ``flags``, or ``held_out_check`` when the check refuted them) and,
        with a check, ``noise_rate_check`` (:meth:`HeldOutCheck.as_dict`) and ``noise_rate_pinned``
        (False: the check refuted the joint's rate but cannot pin its own, so the rate is only
        bounded by its ``high``; :func:`noise_rate_text`).
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
    extra: dict[str, Any] = {}
    if check is not None and counts.sum() > 0:
        scaled = _scaled_to(counts, check.rate) if check.refutes(_off_diagonal_share(counts)) else None
        if scaled is not None:
            counts, by = scaled, "held_out_check"
        # a rate the check did not refute stands as it is; one from the check is only as good as the check
        extra = {"noise_rate_check": check.as_dict(), "noise_rate_pinned": scaled is None or check.pinned}
    totals = counts.sum(axis=1, keepdims=True)
    transition = np.where(totals > 0, counts / np.maximum(totals, 1e-300), np.eye(num_classes))
    per_class = np.where(totals[:, 0] > 0, 1.0 - np.diag(transition), 0.0)
    rate = _off_diagonal_share(counts) if counts.sum() > 0 else 0.0
    return {"noise_rate_estimate": float(rate), "noise_rate_per_class_estimate": per_class.tolist(),
            "transition_estimate": transition.tolist(), "noise_estimated_by": by, **extra}


def expected_wrong_count(given: np.ndarray, confident_joint: np.ndarray, check: HeldOutCheck | None) -> float | None:
    """How many wrong labels ``expected_f1`` should expect: None (the confident joint's own count)
    unless the check refutes the joint's calibrated rate (:meth:`HeldOutCheck.refutes`, the same
    rule as :func:`noise_estimates`); then ``n`` times the check's rate (half an example of those
    it read when none of them disagreed)."""
    if check is None or not len(given):
        return None
    counts = _calibrated_counts(np.asarray(given, dtype=np.int64), confident_joint)
    rate = 0.0 if counts is None or counts.sum() <= 0 else _off_diagonal_share(counts)
    if not check.refutes(rate):
        return None
    return len(given) * max(check.rate, 0.5 / check.checked)


def _off_diagonal_share(counts: np.ndarray) -> float:
    return float(1.0 - np.trace(counts) / counts.sum())


def _scaled_to(counts: np.ndarray, rate: float) -> np.ndarray | None:
    """``counts [C, C]`` (rows = true class) with the off-diagonal scaled so the share off the
    diagonal is ``rate``; the given labels' counts (column sums) stay, the scaled mass goes to the
    diagonal of each column. None when there is no off-diagonal pattern to scale."""
    off = counts - np.diag(np.diag(counts))
    total, now = counts.sum(), off.sum()
    if now <= 0:
        return None
    factor = rate * total / now
    column_off = off.sum(axis=0)
    room = np.divide(counts.sum(axis=0), column_off, out=np.full(len(counts), np.inf), where=column_off > 0)
    kept = off * min(factor, float(room.min()))  # never past a column's own count
    return kept + np.diag(counts.sum(axis=0) - kept.sum(axis=0))


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
