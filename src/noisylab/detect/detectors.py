"""Named detectors: each turns what one training run produced into an estimate ``P [n, C]`` of
every scored example's true class. The quality score of an example is a function of ``P[i]`` and
its given label (``detect.rank_by``, by default ``P[i, y] / (P[i, y] + max_{k != y} P[i, k])``; in
[0, 1], lower = more likely wrong) and the flagged set comes from a filter of
:mod:`noisylab.detect.scores` applied to ``P`` (``auto`` by default: ``expected_f1``, a prefix of
the ranking, with cleanlab installed, else ``predicted_neq_given``;
:func:`~noisylab.detect.scores.resolve_filter`).

Each registers itself with ``@register_detector(name)`` (:mod:`noisylab.registry`; ``DETECTORS``
is the one list of their names: ``detect.method``, ``noisylab detect --method``). A detector in a
new module of :mod:`noisylab.detect` is found without being listed anywhere, and reads what it
needs from :class:`Evidence` (a method's own per-example arrays are in ``Evidence.signals``).

The contract: a detector's row ``P[i]`` depends on row ``i`` of the evidence alone. That lets
:func:`detect_label_issues` run it over chunks of rows (:data:`CHUNK_ENTRIES` numbers of ``P`` at
a time), so a 1.28M x 1000 record never becomes one ``[N, C]`` float64 array (10 GB).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ..registry import DETECTORS, register_detector
from .confident import ConfidentJoint, class_thresholds
from .estimate import HeldOutCheck, expected_wrong_count, held_out_check
from .scores import CLEANLAB_FILTERS, DEFAULT_RANK_BY, normalize_rows

CHUNK_ENTRIES = 2**22
"""Numbers of ``P`` made at a time by :func:`detect_label_issues` (4M: 32 MB in float64; 4,194 rows
at 1000 classes, all of CIFAR-10's 50,000 in one chunk)."""


class TableRows:
    """Rows ``index`` of a ``[N, C]`` table (a numpy array, memory map or tensor, of any float
    dtype), read when sliced: ``view[lo:hi]`` is a float32 ``[hi - lo, C]`` array. It lets
    :class:`Evidence` point into a run's per-example tables instead of copying them.

    ``weight [N]``: each row is read divided by its weight (in float64), uniform where the weight
    is 0 (a moving average that is not bias-corrected: :meth:`TrainingDynamics.history_rows`)."""

    def __init__(self, table, index: np.ndarray, weight=None) -> None:
        self.table, self.index, self.weight = table, np.asarray(index, dtype=np.int64), weight
        self.shape = (len(self.index), int(table.shape[1]))
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows = self.index[key]
        values = _take(self.table, rows)
        if self.weight is None:
            return values.astype(np.float32, copy=False)
        w = _take(self.weight, rows).astype(np.float64)
        ratio = np.where(w[:, None] > 0, values.astype(np.float64) / np.where(w > 0, w, 1.0)[:, None],
                         1.0 / self.shape[1])
        return ratio.astype(np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def _take(table, rows: np.ndarray) -> np.ndarray:
    """``table[rows]`` as a numpy array, from a numpy array, a memory map or a tensor on any device."""
    if isinstance(table, torch.Tensor):
        return table[torch.as_tensor(rows, device=table.device)].cpu().numpy()
    return np.asarray(table[rows])


@dataclass
class Evidence:
    """What a run leaves behind about the ``n`` examples it scores, aligned row by row.

    Attributes:
        given: ``int64 [n]`` the given labels.
        history: ``[n, C]`` the moving average of the predictions over the epochs until the
            memorization alarm (training steps for the examples trained on, evaluations for the
            held-out ones; :meth:`TrainingDynamics.history_probs`).
        predictions: ``[n, C]`` the final model's softmax in evaluation mode.
        in_training: ``bool [n]`` whether the example was trained on (False: held out).
        targets: ``[n, C]`` ELR / ELR+ per-example targets, or None (held-out rows are unused).
        networks: the two ELR+ networks' target histories ``([n, C], [n, C])``, or None.
        knn: ``[n, C]`` the vote of each example's neighbours in a representation (a
            self-supervised encoder's, or the classifier's penultimate layer; :func:`knn_vote`),
            or None.
        history_frozen: True when the memorization alarm stopped the history: the final model
            has started fitting wrong labels, so its predictions are not trusted.
        signals: the method's other per-example arrays by name, each ``[n, ...]`` float (e.g.
            SOP's ``sop_s [n, C]``); saved in ``predictions.npz`` as ``signal_<name>``.
    """

    given: np.ndarray
    history: np.ndarray
    predictions: np.ndarray
    in_training: np.ndarray
    targets: np.ndarray | None = None
    networks: tuple[np.ndarray, np.ndarray] | None = None
    knn: np.ndarray | None = None
    history_frozen: bool = False
    signals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.predictions.shape[1]

    def rows(self, lo: int, hi: int) -> "Evidence":
        """The evidence of rows ``lo:hi``, every array read into memory (from :class:`TableRows`
        views and memory maps too)."""
        def part(a):
            return None if a is None else np.asarray(a[lo:hi])
        return Evidence(given=self.given[lo:hi], history=part(self.history), predictions=part(self.predictions),
                        in_training=self.in_training[lo:hi], targets=part(self.targets),
                        networks=None if self.networks is None else (part(self.networks[0]), part(self.networks[1])),
                        knn=part(self.knn), history_frozen=self.history_frozen,
                        signals={k: part(v) for k, v in self.signals.items()})

    @classmethod
    def from_method_state(cls, state: Mapping[str, np.ndarray], **fields) -> "Evidence":
        """Evidence whose method part comes from ``state``, a method's ``sample_state()`` as numpy
        arrays already restricted to the scored rows: ``targets`` fills :attr:`targets`,
        ``pred_hist1`` and ``pred_hist2`` fill :attr:`networks`, every other array is a signal.
        ``fields``: the engine's part (``given``, ``history``, ``predictions``, ``in_training``,
        ``knn``, ``history_frozen``)."""
        rest = dict(state)
        targets = rest.pop("targets", None)
        networks = (rest.pop("pred_hist1"), rest.pop("pred_hist2")) if {"pred_hist1", "pred_hist2"} <= set(rest) \
            else None
        return cls(targets=targets, networks=networks, signals=rest, **fields)


class DetectorUnavailable(ValueError):
    """The run did not produce what this detector needs (the message says what would)."""


def _held_out_from_history(ev: Evidence, probs: np.ndarray) -> np.ndarray:
    """Training rows from ``probs``; held-out rows (never trained on, so no targets) from the history."""
    return np.where(ev.in_training[:, None], normalize_rows(probs), normalize_rows(ev.history))


def history_alone(ev: Evidence) -> np.ndarray:
    """The history without the final model: how many labels :func:`from_history` counts as wrong."""
    return normalize_rows(ev.history)


@register_detector("history", counts_with=history_alone)
def from_history(ev: Evidence) -> np.ndarray:
    """The predictions over the epochs before memorization: wrong labels are fitted late, if ever.

    When no memorization alarm sounded, the final model has not memorized either, and the mean of
    the history and its predictions is steadier than both (it averages the noise of the last
    training steps with the model that learned the most); after an alarm, the history alone.

    How many labels are wrong is counted on the history alone (``counts_with``): the final model
    predicts its own training images without augmentation and has partly fitted their wrong labels
    even without an alarm, so the mean's confident joint counts too few of them (CIFAR-10N
    ``worst``, fast recipe: 31.8% for 40.2% wrong; the history alone 34.8%, docs/results.md),
    while its ranking is the better one."""
    if ev.history_frozen:
        return normalize_rows(ev.history)
    return (normalize_rows(ev.history) + normalize_rows(ev.predictions)) / 2


@register_detector("predictions")
def from_predictions(ev: Evidence) -> np.ndarray:
    """The final model's predictions (in-sample for the training part): the simplest baseline."""
    return normalize_rows(ev.predictions)


@register_detector("targets")
def from_targets(ev: Evidence) -> np.ndarray:
    """ELR / ELR+ targets (ELR README: ``argmax(target) != label``)."""
    if ev.targets is None:
        raise DetectorUnavailable("detector 'targets' needs per-example targets: train with loss elr or method elr_plus")
    return _held_out_from_history(ev, ev.targets)


@register_detector("agreement")
def from_agreement(ev: Evidence) -> np.ndarray:
    """ELR+'s two networks: the normalised geometric mean of their target histories, so a class
    ranks high only where both networks put mass on it."""
    if ev.networks is None:
        raise DetectorUnavailable("detector 'agreement' needs the two networks of method elr_plus")
    h1, h2 = (normalize_rows(h) for h in ev.networks)
    return _held_out_from_history(ev, np.sqrt(h1 * h2))


def knn_vote(features: np.ndarray, given: np.ndarray, num_classes: int, k: int = 20, tau: float = 0.1,
             chunk: int = 2048, backend: str = "auto") -> np.ndarray:
    """``[n, C]``: each example's k nearest other examples (cosine similarity s in ``features``)
    vote for their given labels with weight ``exp(s / tau)`` (Wu et al., CVPR 2018); rows sum to 1.

    The search is :func:`~noisylab.detect.neighbours.nearest_neighbours` (``backend``; with faiss
    installed, an HNSW graph above 200,000 rows, so a million rows take minutes)."""
    from .neighbours import nearest_neighbours

    given = np.asarray(given, dtype=np.int64)
    n = len(given)
    if min(k, n - 1) < 1:
        return np.full((n, num_classes), 1.0 / num_classes)
    found = nearest_neighbours(features, k, backend=backend, chunk=chunk)
    # exp((s - 1) / tau) with s = 1 - distance: shifted by the largest possible s, no overflow
    weights = np.exp(-found.distance.astype(np.float64) / tau)
    votes = np.bincount((np.arange(n)[:, None] * num_classes + given[found.index]).ravel(), weights=weights.ravel(),
                        minlength=n * num_classes).reshape(n, num_classes)
    return normalize_rows(votes)


@register_detector("knn")
def from_knn(ev: Evidence) -> np.ndarray:
    """Neighbours in a feature space vote on each label; needs no classifier at all."""
    if ev.knn is None:
        raise DetectorUnavailable("detector 'knn' needs the neighbour vote of a run whose model has forward_features")
    return normalize_rows(ev.knn)


@register_detector("ensemble")
def from_ensemble(ev: Evidence) -> np.ndarray:
    """The mean of the history, the targets (when the run has them) and the kNN vote (when it has
    features): three views of each label that fail in different places."""
    members = [from_history(ev)]
    if ev.targets is not None:
        members.append(from_targets(ev))
    if ev.knn is not None:
        members.append(from_knn(ev))
    return np.mean(members, axis=0)


def run_detector(name: str, ev: Evidence) -> np.ndarray:
    """``P [n, C]`` of detector ``name``; ValueError for an unknown name, DetectorUnavailable when
    the run lacks its inputs."""
    return DETECTORS.get(name).obj(ev)


@dataclass
class Detection:
    """One detector's verdict on the scored examples.

    Attributes:
        method, filter_by, rank_by: how it was made.
        quality: ``[n]`` in [0, 1], the ``rank_by`` score of ``P``; lower = more likely wrong.
        flagged: ``bool [n]`` the suspected wrong labels.
        suggested: ``int64 [n]`` the most likely class.
        confident_joint: ``int64 [C, C]`` the confident joint (rows = given label, columns =
            confident class; :mod:`noisylab.detect.confident`) of ``P``, or of the detector's
            ``counts_with`` estimate when it has one: the noise estimates' input.
        probs: ``[n, C]`` the detector's estimate ``P`` of each example's true class, when it was
            kept (``keep_probs``), else None.
        check: the held-out check of the noise rate (:func:`~noisylab.detect.estimate.held_out_check`)
            on the rows the model never trained on, or None without such rows.
    """

    method: str
    filter_by: str
    rank_by: str
    quality: np.ndarray
    flagged: np.ndarray
    suggested: np.ndarray
    confident_joint: np.ndarray
    probs: np.ndarray | None = None
    check: HeldOutCheck | None = None

    def ranked_issues(self) -> np.ndarray:
        """Row numbers of the flagged examples, most suspicious (lowest quality) first: cleanlab's
        ``find_label_issues(..., return_indices_ranked_by=...)`` shape."""
        rows = np.flatnonzero(self.flagged)
        return rows[np.argsort(self.quality[rows], kind="stable")]


def detector_chunks(ev: Evidence, method: str, chunk_entries: int = CHUNK_ENTRIES, counting: bool = False):
    """``(lo, hi, P[lo:hi])`` of detector ``method`` over consecutive row chunks of ``ev``;
    ``counting``: of the estimate it counts wrong labels with instead (:func:`count_estimate`)."""
    detector = count_estimate(method) if counting else DETECTORS.get(method).obj
    n = len(ev.given)
    step = max(1, chunk_entries // max(ev.num_classes, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        yield lo, hi, detector(ev.rows(lo, hi))


def count_estimate(method: str):
    """The function of the evidence whose confident joint counts detector ``method``'s wrong
    labels: its ``counts_with`` when it registered one, else the detector itself."""
    entry = DETECTORS.get(method)
    return entry.extras.get("counts_with", entry.obj)


def detect_label_issues(ev: Evidence, method: str = "history", filter_by: str = "auto",
                        threshold: float = 0.5, rank_by: str = DEFAULT_RANK_BY, keep_probs: bool = True,
                        chunk_entries: int = CHUNK_ENTRIES) -> Detection:
    """Run detector ``method`` on ``ev``, flag with ``filter_by`` (see :func:`find_label_issues`) and
    score each example with ``rank_by`` (:data:`SCORES`), over chunks of ``chunk_entries`` numbers
    of ``P``. ``keep_probs=False`` keeps no ``[n, C]`` array (cleanlab's own filters, which read
    all of ``P`` at once, still make one). The final predictions of the held-out rows make the
    noise rate's held-out check (:attr:`Detection.check`)."""
    from .scores import resolve_filter

    held = np.flatnonzero(~np.asarray(ev.in_training, dtype=bool))
    check = held_out_check(ev.given[held], np.asarray(ev.predictions[held])) if len(held) else None
    separate = count_estimate(method) is not DETECTORS.get(method).obj
    count_chunks = (lambda: detector_chunks(ev, method, chunk_entries, counting=True)) if separate else None
    if keep_probs or resolve_filter(filter_by) in CLEANLAB_FILTERS:
        probs = np.concatenate([p for _, _, p in detector_chunks(ev, method, chunk_entries)]) if len(ev.given) \
            else np.zeros((0, ev.num_classes))
        return detection_from_probs(method, ev.given, probs, filter_by, threshold, rank_by, chunk_entries,
                                    check=check, count_chunks=count_chunks)
    return _verdict(method, ev.given, ev.num_classes, lambda: detector_chunks(ev, method, chunk_entries), filter_by,
                    threshold, rank_by, None, check, count_chunks)


def detection_from_probs(method: str, given: np.ndarray, probs: np.ndarray, filter_by: str = "auto",
                         threshold: float = 0.5, rank_by: str = DEFAULT_RANK_BY,
                         chunk_entries: int = CHUNK_ENTRIES, out_of_sample: bool = False,
                         check: HeldOutCheck | None = None, count_chunks=None) -> Detection:
    """The :class:`Detection` of probabilities ``probs [n, C]`` (a detector's, or a cross-validation's
    out-of-sample ones, named ``method``) for the given labels ``given [n]``.

    ``out_of_sample``: no row's probabilities were trained on its own label (cross-validation,
    features with neighbour votes), so every row takes part in the held-out check; or pass the
    ``check`` made elsewhere."""
    from .scores import checked_labels

    given = checked_labels(given, probs)  # the rows are normalised (in float64) chunk by chunk
    probs = np.asarray(probs)
    step = max(1, chunk_entries // max(probs.shape[1], 1))
    if out_of_sample and check is None:
        check = held_out_check(given, probs, chunk_rows=step)
    chunks = lambda: ((lo, min(lo + step, len(given)), probs[lo:lo + step]) for lo in range(0, len(given), step))  # noqa: E731
    return _verdict(method, given, probs.shape[1], chunks, filter_by, threshold, rank_by, probs, check, count_chunks)


def _verdict(method: str, given: np.ndarray, num_classes: int, chunks, filter_by: str, threshold: float,
             rank_by: str, probs: np.ndarray | None, check: HeldOutCheck | None = None,
             count_chunks=None) -> Detection:
    """The one way a verdict is made: ``chunks()`` yields ``(lo, hi, P[lo:hi])`` (it is read twice:
    scores, then the confident joint); ``probs``, all of ``P`` when it is in memory; ``check``, the
    held-out check, which calibrates ``expected_f1`` where it refutes the confident joint's rate;
    ``count_chunks()``, the same for the estimate whose confident joint counts the wrong labels
    when it is not ``P`` (a detector's ``counts_with``; read twice: thresholds, then the joint)."""
    from .scores import FILTERS, expected_f1_from, find_label_issues, label_quality_scores, resolve_filter

    filter_by = resolve_filter(filter_by)
    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter_by '{filter_by}' (valid: {', '.join(FILTERS)})")
    given = np.asarray(given, dtype=np.int64)
    n = len(given)
    quality, p_given = np.empty(n), np.empty(n)
    suggested = np.empty(n, dtype=np.int64)
    counted = p_given if count_chunks is None else np.empty(n)
    both = zip(chunks(), count_chunks()) if count_chunks is not None else ((c, None) for c in chunks())
    for (lo, hi, p), counting in both:  # one pass over the evidence for P and the counting estimate
        p = normalize_rows(p)
        quality[lo:hi] = label_quality_scores(given[lo:hi], p, rank_by)
        suggested[lo:hi] = p.argmax(axis=1)
        p_given[lo:hi] = p[np.arange(hi - lo), given[lo:hi]]
        if counting is not None:
            if counting[:2] != (lo, hi):
                raise RuntimeError(f"the counting estimate's rows {counting[:2]} are not P's {lo, hi}")
            counted[lo:hi] = normalize_rows(counting[2])[np.arange(hi - lo), given[lo:hi]]
    joint = ConfidentJoint(class_thresholds(given, counted, num_classes))
    for lo, hi, p in (count_chunks or chunks)():
        joint.add(given[lo:hi], normalize_rows(p))
    if filter_by == "predicted_neq_given":
        flagged = suggested != given
    elif filter_by == "low_self_confidence":
        flagged = p_given < threshold
    elif filter_by == "expected_f1":
        from .scores import import_cleanlab_filter

        import_cleanlab_filter()  # auto resolves to it only with cleanlab; asked for by name, the same rule
        flagged = expected_f1_from(joint.off_diagonal, quality, expected_wrong_count(given, joint.counts, check))
    else:
        flagged = find_label_issues(given, probs, filter_by=filter_by, threshold=threshold, rank_by=rank_by,
                                    confident_joint=joint.counts if count_chunks is not None else None)
    return Detection(method, filter_by, rank_by, quality, np.asarray(flagged, dtype=bool), suggested, joint.counts,
                     probs, check)

