"""A scikit-learn classifier that finds the wrong labels of its training set and learns without them.

    from noisylab.estimator import NoisyLabelClassifier
    clf = NoisyLabelClassifier().fit(X, y)          # X: [N, D] features or embeddings, y: [N] labels
    clf.label_issues_.to_pandas()                    # the suspects, most suspicious first
    clf.predict(X_new)

``fit`` runs :func:`noisylab.detect.features.find_issues_in_features` (neighbour votes and the
cross-validated base estimator), then fits the base estimator on the examples not flagged, as
cleanlab's ``CleanLearning`` does with confident learning (Northcutt et al., JAIR 2021). It works
in a ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .detect.features import default_estimator, find_issues_in_features


class NoisyLabelClassifier(ClassifierMixin, BaseEstimator):
    """Find label issues in the training data, then fit ``estimator`` on the rest.

    Parameters:
        estimator: a classifier with ``predict_proba`` (default: standardised features into a
            logistic regression); cloned, never changed.
        cv: cross-validation folds for the out-of-sample probabilities.
        k: neighbours per example for the neighbour vote.
        filter_by: how probabilities become flags (``auto``, ``predicted_neq_given``,
            ``simifeat``, or a cleanlab filter; :func:`~noisylab.detect.scores.find_label_issues`).
        drop_issues: fit the final model without the flagged examples (False: on all of them,
            to keep only the detection).
        random_state: seed of the folds.

    Attributes (after ``fit``):
        classes_: ``[C]`` the class labels, sorted.
        label_issues_: :class:`~noisylab.detect.features.LabelIssues` of the training set
            (``.is_label_issue``, ``.quality``, ``.to_pandas()``).
        estimator_: the fitted final model.
        n_features_in_: the number of features.
    """

    def __init__(self, estimator=None, cv: int = 5, k: int = 10, filter_by: str = "auto", drop_issues: bool = True,
                 random_state: int = 0):
        self.estimator = estimator
        self.cv = cv
        self.k = k
        self.filter_by = filter_by
        self.drop_issues = drop_issues
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"NoisyLabelClassifier needs at least 2 classes, got 1 class ({self.classes_[0]!r})")
        if len(X) < 2:
            raise ValueError("NoisyLabelClassifier needs at least 2 samples, got 1 sample")
        base = self.estimator if self.estimator is not None else default_estimator()
        self.label_issues_ = find_issues_in_features(
            X, encoded, k=self.k, folds=self.cv, seed=self.random_state,
            class_names=[str(c) for c in self.classes_], filter_by=self.filter_by, estimator=base)
        keep = ~self.label_issues_.is_label_issue if self.drop_issues else np.ones(len(y), dtype=bool)
        if len(np.unique(encoded[keep])) < 2:  # flagging left one class: nothing to tell apart, keep all
            keep = np.ones(len(y), dtype=bool)
        self.estimator_ = clone(base).fit(X[keep], encoded[keep])
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``[n, C]`` class probabilities, columns in ``classes_`` order (0 for a class the final
        model never saw)."""
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.zeros((len(X), len(self.classes_)))
        out[:, self.estimator_.classes_.astype(np.int64)] = self.estimator_.predict_proba(X)
        return out

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
