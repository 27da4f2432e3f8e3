"""Multinomial logistic regression for problems too large for scikit-learn's solvers.

scikit-learn's ``LogisticRegression`` (lbfgs) takes every iteration over all rows and classes:
at 800,000 x 256 features and 1,000 classes each iteration is about 10^12 multiply-adds and it
needs hundreds of them. :class:`SoftmaxRegression` minimises the same objective (the mean
cross-entropy plus ``||W||^2 / (2 C N)``, scikit-learn's ``C``; the intercept not penalised) by
mini-batch Adam (Kingma and Ba, ICLR 2015) in PyTorch with a cosine-decaying step, a few passes
over the rows: on a million rows a linear model is fitted long before an epoch ends. Features are
standardised batch by batch with the training rows' mean and standard deviation (no standardised
copy of ``X``). A scikit-learn classifier (``fit``, ``predict_proba``, ``classes_``), so
:func:`~noisylab.detect.features.cross_val_probs` clones it for each fold.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression by mini-batch Adam (see the module doc).

    Args:
        C: inverse L2 strength, as scikit-learn's ``LogisticRegression``.
        epochs: passes over the training rows; at least ``min_steps`` steps are taken whatever
            the size (a small problem needs more passes than a large one).
        batch_size: rows per step.
        lr: Adam's first step size (on standardised features), decayed to 0 by a cosine.
        random_state: seeds the initial order of rows (the weights start at 0).
        device: where to fit (``cpu``, ``cuda``); the arrays stay in host memory and go over one
            batch at a time.
    """

    def __init__(self, C: float = 1.0, epochs: int = 4, batch_size: int = 4096, lr: float = 0.05,
                 min_steps: int = 300, random_state: int = 0, device: str = "cpu") -> None:
        self.C = C
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.min_steps = min_steps
        self.random_state = random_state
        self.device = device

    def fit(self, X, y):
        """Fit on ``X [N, D]`` (float32 kept as is) and ``y [N]`` (any labels; ``classes_`` sorted)."""
        x = _as_float32(X)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        n, d = x.shape
        c = len(self.classes_)
        self.n_features_in_ = d
        self.mean_, self.scale_ = _mean_and_scale(x)
        dev = torch.device(self.device)
        weight = torch.zeros(d, c, device=dev, requires_grad=True)
        bias = torch.zeros(c, device=dev, requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=self.lr)
        per_epoch = max(1, math.ceil(n / self.batch_size))
        steps = max(self.epochs * per_epoch, self.min_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
        penalty = 1.0 / (2.0 * self.C * n)
        rng = np.random.default_rng(self.random_state)
        mean, scale = torch.from_numpy(self.mean_).to(dev), torch.from_numpy(self.scale_).to(dev)
        targets = torch.from_numpy(codes.astype(np.int64))
        order, at = rng.permutation(n), 0
        for _ in range(steps):
            if at >= n:
                order, at = rng.permutation(n), 0
            rows = np.sort(order[at:at + self.batch_size])  # sorted: a gather that walks X forwards
            at += self.batch_size
            xb = (torch.from_numpy(x[rows]).to(dev) - mean) / scale
            loss = torch.nn.functional.cross_entropy(xb @ weight + bias, targets[rows].to(dev))
            loss = loss + penalty * weight.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.coef_ = weight.detach().T.cpu().numpy()  # [C, D] on standardised features, as scikit-learn's
        self.intercept_ = bias.detach().cpu().numpy()
        return self

    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        """``float32 [n, C]`` class probabilities, columns in ``classes_`` order."""
        x = _as_float32(X)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features, the model was fitted on {self.n_features_in_}")
        weight = torch.from_numpy(np.ascontiguousarray(self.coef_.T))
        bias, mean, scale = (torch.from_numpy(a) for a in (self.intercept_, self.mean_, self.scale_))
        out = np.empty((len(x), len(self.classes_)), dtype=np.float32)
        for lo in range(0, len(x), self.batch_size):
            xb = (torch.from_numpy(x[lo:lo + self.batch_size]) - mean) / scale
            out[lo:lo + self.batch_size] = torch.softmax(xb @ weight + bias, dim=1).numpy()
        return out

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _as_float32(X) -> np.ndarray:
    x = np.asarray(X, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"X must be [N, D], got shape {x.shape}")
    return x


def _mean_and_scale(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (1 where it is 0) in float64, a chunk of rows at a time."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for lo in range(0, len(x), chunk):
        part = x[lo:lo + chunk].astype(np.float64)
        total += part.sum(axis=0)
        squares += (part * part).sum(axis=0)
    mean = total / max(len(x), 1)
    std = np.sqrt(np.maximum(squares / max(len(x), 1) - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)
