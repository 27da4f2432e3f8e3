"""Wrong labels from embeddings that already exist: no network to train.

Two views of each label, each from a library made for it, combined as noisylab's detection
combines a run's views (:func:`find_issues_in_features`):

- the vote of the ``k`` nearest neighbours in feature space (SimiFeat's voting; Zhu, Song and
  Liu, ICML 2022, arXiv 2110.06283; :mod:`.neighbours`);
- the out-of-sample probabilities of a logistic regression cross-validated on the features
  (scikit-learn; above :data:`LARGE_PROBLEM` rows x classes the same objective by mini-batch Adam,
  :class:`~noisylab.detect._softmax_regression.SoftmaxRegression`), the model confident learning
  asks for (Northcutt et al., JAIR 2021).

Their mean is ranked by ``relative_confidence`` and flagged by the ``auto`` filter (``expected_f1``
with cleanlab), exactly as a training run's evidence is. SimiFeat's own ranking rule, which flags
in each class as many of the lowest-vote examples as the noise estimate says are wrong, is
:func:`simifeat_rank_issues`. Two deliberate differences from the paper: SimiFeat repeats its vote
over M feature extractions of randomly augmented images and estimates the noise with HOC; from
fixed embeddings there is one extraction, and the per-class noise comes from cleanlab's
confident joint of the combined probabilities.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .neighbours import Neighbours, near_duplicates, nearest_neighbours, neighbour_label_votes, outliers
from .scores import CHUNK_ROWS, DEFAULT_RANK_BY, normalize_rows_

LARGE_PROBLEM = 20_000_000
"""Rows x classes above which :func:`default_estimator` fits by mini-batch Adam instead of
scikit-learn's lbfgs, whose every iteration reads all of them (100,000 rows at 200 classes; a
million rows at 20). Both fit the same model: on the tests' problems their probabilities differ by
under 0.002 on average and 0.05 at most."""


def encode_labels(labels, class_names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``(int64 [N] in 0..C-1, class names)`` from integer labels or class-name strings.

    Integers stay as they are (``C`` = the largest + 1, or ``len(class_names)``); strings are
    numbered in sorted order unless ``class_names`` gives the order."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one per example [N], got shape {y.shape}")
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and len(y) and np.all(y == np.round(y))):
        y = y.astype(np.int64)
        if len(y) and y.min() < 0:
            raise ValueError(f"integer labels must be >= 0, found {y.min()}")
        count = len(class_names) if class_names is not None else (int(y.max()) + 1 if len(y) else 0)
        if len(y) and y.max() >= count:
            raise ValueError(f"label {y.max()} is outside the {count} class names given")
        return y, [str(c) for c in class_names] if class_names is not None else [str(c) for c in range(count)]
    if y.dtype.kind in "USO":
        text = y.astype(str)
        names = [str(c) for c in class_names] if class_names is not None else sorted(set(text.tolist()))
        lookup = {n: i for i, n in enumerate(names)}
        missing = sorted(set(text.tolist()) - set(lookup))
        if missing:
            raise ValueError(f"label {missing[0]!r} is not one of the class names given")
        return np.asarray([lookup[t] for t in text], dtype=np.int64), names
    raise ValueError(f"labels must be integers or class-name strings, got dtype {y.dtype}")


def cross_val_probs(features, labels, num_classes: int, folds: int = 5, seed: int = 0, estimator=None) -> np.ndarray:
    """``float32 [N, C]`` out-of-sample probabilities (rows sum to 1): each fold predicted by a
    model fitted on the others.

    Args:
        estimator: a scikit-learn classifier with ``predict_proba`` (cloned for each fold);
            default: standardised features into a logistic regression (:func:`default_estimator`).
        folds: stratified folds (fewer when the rarest class has fewer examples; with a class of
            one example the folds are not stratified). A class absent from a fold's training
            part gets probability 0 in that fold.
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if estimator is None:
        estimator = default_estimator(len(y), num_classes, seed)
    smallest = int(np.bincount(y, minlength=num_classes)[np.unique(y)].min())
    n_splits = max(2, min(folds, smallest)) if smallest >= 2 else max(2, min(folds, len(y)))
    splitter = (StratifiedKFold if smallest >= n_splits else KFold)(n_splits=n_splits, shuffle=True, random_state=seed)
    probs = np.zeros((len(y), num_classes), dtype=np.float32)  # float32: 4 GB at a million rows x 1,000 classes
    for train, test in splitter.split(x, y):
        if len(np.unique(y[train])) < 2:  # a fold with one class cannot be fitted: that class everywhere
            probs[np.ix_(test, np.unique(y[train]))] = 1.0
            continue
        model = clone(estimator).fit(x[train], y[train])
        columns = model.classes_.astype(np.int64)
        for lo in range(0, len(test), CHUNK_ROWS):  # fold by fold, block by block: no [n_test, C] float64 copy
            rows = test[lo:lo + CHUNK_ROWS]
            part = np.asarray(model.predict_proba(x[rows]), dtype=np.float32)
            if len(columns) == num_classes:
                probs[rows] = part
            else:
                probs[np.ix_(rows, columns)] = part
    return normalize_rows_(probs)


def default_estimator(num_examples: int = 0, num_classes: int = 0, seed: int = 0):
    """Standardised features into a multinomial logistic regression: scikit-learn's, or above
    :data:`LARGE_PROBLEM` rows x classes :class:`~noisylab.detect._softmax_regression.SoftmaxRegression`
    (the same objective by mini-batch Adam)."""
    if num_examples * num_classes > LARGE_PROBLEM:
        from ._softmax_regression import SoftmaxRegression

        return SoftmaxRegression(random_state=seed)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def simifeat_rank_issues(votes: np.ndarray, labels: np.ndarray, wrong_share: np.ndarray) -> np.ndarray:
    """``bool [N]``: SimiFeat's ranking rule. In each class ``j``, the ``round(n_j * wrong_share[j])``
    examples labelled ``j`` whose neighbours agree least with their label (the cosine between the
    vote ``votes[i]`` and the one-hot label) are flagged.

    Args:
        votes: ``[N, C]`` neighbour label votes (:func:`neighbour_label_votes`).
        wrong_share: ``[C]`` estimated share of wrong labels among the examples labelled ``j``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    norms = np.linalg.norm(votes, axis=1)
    agreement = np.divide(votes[np.arange(len(labels)), labels], norms, out=np.zeros(len(labels)), where=norms > 0)
    flagged = np.zeros(len(labels), dtype=bool)
    for j, share in enumerate(wrong_share):
        rows = np.flatnonzero(labels == j)
        count = int(round(len(rows) * float(share)))
        if count:
            flagged[rows[np.argsort(agreement[rows], kind="stable")[:count]]] = True
    return flagged


def wrong_share_by_given_label(labels: np.ndarray, probs: np.ndarray, num_classes: int,
                               confident_joint: np.ndarray | None = None) -> np.ndarray:
    """``[C]`` estimated share of wrong labels among the examples given each label: from
    cleanlab's joint of given and true labels when installed (of ``confident_joint``, the
    confident joint of ``probs``, when given: no pass over ``probs``), else the share whose most
    likely class is another."""
    labels = np.asarray(labels, dtype=np.int64)
    try:
        from cleanlab.count import estimate_joint

        joint = (estimate_joint(labels, None, confident_joint=confident_joint) if confident_joint is not None
                 else estimate_joint(labels, probs))  # [given, true]
        given = joint.sum(axis=1)
        return np.where(given > 0, 1.0 - np.diag(joint) / np.where(given > 0, given, 1.0), 0.0)
    except (ImportError, ValueError, IndexError, ZeroDivisionError):
        other = probs.argmax(axis=1) != labels
        counts = np.bincount(labels, minlength=num_classes)
        return np.bincount(labels, weights=other, minlength=num_classes) / np.maximum(counts, 1)


@dataclass
class LabelIssues:
    """What noisylab found in one dataset, row by row (``n`` examples, ``C`` classes).

    Attributes:
        labels: ``int64 [n]`` the given labels as class numbers; ``class_names[labels[i]]`` is the name.
        probs: ``[n, C]`` the estimate of each example's true class the flags come from.
        quality: ``[n]`` in [0, 1], lower = more likely wrong (``rank_by`` of ``probs``).
        is_label_issue: ``bool [n]`` the suspected wrong labels.
        suggested: ``int64 [n]`` the most likely class.
        noise_rate_estimate: the estimated share of wrong labels (cleanlab's joint when installed,
            else the share flagged).
        sources: each view's own ``[n, C]`` (``knn``, ``logreg``).
        names: one name per row (a file name, an id) or None.
        is_near_duplicate, near_duplicate_of, near_duplicate_score, is_outlier, outlier_score: the
            neighbour graph's other findings (:mod:`.neighbours`), or None without features.
        seconds: the wall time of each stage.
        neighbour_backend: how the neighbours were searched (:attr:`~.neighbours.Neighbours.backend`:
            ``faiss-hnsw`` is approximate), or None without features.
        noise_rate_check: the held-out check of the rate (:func:`~noisylab.detect.estimate.held_out_check`,
            as a dict), or None; ``noise_rate_pinned``: False when the check bounds the rate but
            cannot pin it within a factor of two (:attr:`noise_rate_text` then gives the bound only).
    """

    labels: np.ndarray
    class_names: list[str]
    probs: np.ndarray
    quality: np.ndarray
    is_label_issue: np.ndarray
    suggested: np.ndarray
    noise_rate_estimate: float
    filter_by: str = "auto"
    rank_by: str = DEFAULT_RANK_BY
    sources: dict[str, np.ndarray] = field(default_factory=dict)
    names: list[str] | None = None
    is_near_duplicate: np.ndarray | None = None
    near_duplicate_of: np.ndarray | None = None
    near_duplicate_score: np.ndarray | None = None
    is_outlier: np.ndarray | None = None
    outlier_score: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    noise_rate_check: dict | None = None
    noise_rate_pinned: bool = True
    neighbour_backend: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_issues(self) -> int:
        return int(self.is_label_issue.sum())

    @property
    def noise_rate_text(self) -> str:
        """The noise rate in words: with the check's interval, or only its bound when the rate is
        not pinned (:func:`~noisylab.detect.estimate.noise_rate_text`)."""
        from .estimate import noise_rate_text

        return noise_rate_text({"noise_rate_estimate": self.noise_rate_estimate,
                                "noise_rate_check": self.noise_rate_check, "noise_rate_pinned": self.noise_rate_pinned})

    def ranked_issues(self) -> np.ndarray:
        """Row numbers of the flagged examples, most suspicious first."""
        rows = np.flatnonzero(self.is_label_issue)
        return rows[np.argsort(self.quality[rows], kind="stable")]

    def ranking(self) -> np.ndarray:
        """Every row number, flagged rows first, each group by rising quality (``label_issues.csv``'s order)."""
        return np.lexsort((self.quality, ~self.is_label_issue))

    def to_pandas(self):
        """A DataFrame in :meth:`ranking` order, indexed by row number: ``name`` (when known),
        ``given_label``, ``suggested_label``, ``label_quality``, ``is_label_issue``, and the
        neighbour graph's ``is_near_duplicate``, ``near_duplicate_of``, ``is_outlier``,
        ``outlier_score`` when computed."""
        import pandas as pd

        order = self.ranking()
        names = np.asarray(self.class_names, dtype=object)
        columns: dict[str, np.ndarray] = {}
        if self.names is not None:
            columns["name"] = np.asarray(self.names, dtype=object)[order]
        columns |= {"given_label": names[self.labels[order]], "suggested_label": names[self.suggested[order]],
                    "label_quality": self.quality[order], "is_label_issue": self.is_label_issue[order]}
        columns |= {k: v[order] for k, v in self.graph_columns().items()}
        return pd.DataFrame(columns, index=pd.Index(order, name="row"))

    def graph_columns(self) -> dict[str, np.ndarray]:
        """The neighbour graph's per-row findings by column name ({} when not computed)."""
        if self.is_near_duplicate is None:
            return {}
        return {"is_near_duplicate": self.is_near_duplicate, "near_duplicate_of": self.near_duplicate_of,
                "near_duplicate_score": self.near_duplicate_score, "is_outlier": self.is_outlier,
                "outlier_score": self.outlier_score}

    def summary(self, top: int = 10) -> dict:
        """Counts and the ``top`` suspects, JSON-ready."""
        out = {"examples": len(self), "classes": len(self.class_names), "label_issues": self.num_issues,
               "noise_rate_estimate": round(float(self.noise_rate_estimate), 6), "noise_rate": self.noise_rate_text,
               "filter_by": self.filter_by, "rank_by": self.rank_by,
               "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        if self.noise_rate_check is not None:
            out["noise_rate_check"] = self.noise_rate_check
            out["noise_rate_pinned"] = self.noise_rate_pinned
        if self.neighbour_backend is not None:
            out["neighbour_backend"] = self.neighbour_backend
        if self.is_near_duplicate is not None:
            out["near_duplicates"] = int(self.is_near_duplicate.sum())
            out["outliers"] = int(self.is_outlier.sum())
        out["top_suspects"] = [self.describe(int(i)) for i in self.ranked_issues()[:top]]
        return out

    def describe(self, row: int) -> dict:
        entry = {"row": row, "given": self.class_names[self.labels[row]],
                 "suggested": self.class_names[self.suggested[row]], "quality": round(float(self.quality[row]), 6)}
        if self.names is not None:
            entry = {"name": self.names[row]} | entry
        return entry


def find_issues_in_features(features, labels, *, k: int = 10, folds: int = 5, seed: int = 0,
                            class_names: Sequence[str] | None = None, names: Sequence[str] | None = None,
                            filter_by: str = "auto", rank_by: str = DEFAULT_RANK_BY, estimator=None,
                            backend: str = "auto") -> LabelIssues:
    """Wrong labels, near duplicates and outliers of ``features [N, D]`` with ``labels [N]`` (see the module doc).

    Args:
        labels: integers ``0..C-1`` or class-name strings.
        k: neighbours per example (SimiFeat's k = 10).
        folds: cross-validation folds of the logistic regression.
        estimator: another scikit-learn classifier instead of the logistic regression.
        filter_by: a filter of :func:`~noisylab.detect.scores.find_label_issues` on the combined
            probabilities, or ``simifeat`` (:func:`simifeat_rank_issues` on the neighbour votes).
        backend: the neighbour search (:func:`~noisylab.detect.neighbours.nearest_neighbours`).
    """
    from .detectors import detection_from_probs
    from .estimate import noise_estimates

    x = np.asarray(features)
    y, classes = encode_labels(labels, class_names)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features [N, D] and labels [N] must match, got {x.shape} and {y.shape}")
    if names is not None and len(names) != len(y):
        raise ValueError(f"{len(names)} names for {len(y)} examples")
    num_classes = len(classes)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    graph: Neighbours = nearest_neighbours(x, k=k, backend=backend)
    votes = neighbour_label_votes(graph, y, num_classes)
    seconds["neighbours"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    logreg = cross_val_probs(x, y, num_classes, folds=folds, seed=seed, estimator=estimator)
    seconds["cross_validation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = votes + logreg  # float32, one more [N, C]: the views stay in ``sources``
    probs *= 0.5
    if filter_by == "simifeat":
        found = detection_from_probs("features", y, probs, "predicted_neq_given", rank_by=rank_by, out_of_sample=True)
        found.flagged = simifeat_rank_issues(votes, y, wrong_share_by_given_label(y, probs, num_classes,
                                                                                  found.confident_joint))
        found.filter_by = "simifeat"
    else:
        found = detection_from_probs("features", y, probs, filter_by, rank_by=rank_by, out_of_sample=True)
    noise = noise_estimates(y, found.flagged, found.suggested, num_classes, confident_joint=found.confident_joint,
                            check=found.check)
    dup, dup_score, dup_of = near_duplicates(graph)
    out, out_score = outliers(graph)
    seconds["detection"] = time.perf_counter() - t0
    return LabelIssues(labels=y, class_names=classes, probs=probs, quality=found.quality,
                       is_label_issue=found.flagged, suggested=found.suggested,
                       noise_rate_estimate=float(noise["noise_rate_estimate"]),
                       noise_rate_check=noise.get("noise_rate_check"),
                       noise_rate_pinned=noise.get("noise_rate_pinned", True),
                       filter_by=found.filter_by, rank_by=rank_by, sources={"knn": votes, "logreg": logreg},
                       names=list(names) if names is not None else None, is_near_duplicate=dup,
                       near_duplicate_of=dup_of, near_duplicate_score=dup_score, is_outlier=out,
                       outlier_score=out_score, seconds=seconds, neighbour_backend=graph.backend)
