"""Index selections used around noisy labels: the ELR per-class validation split and the
ICLR 2023 ``--down_sample`` class balancing."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._labels import NoiseError, NoisyLabels, as_float, as_label_array, round_half_up


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise NoiseError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def split_per_class(labels: Any, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class (the ELR train/validation split).

    ELR (``data_loader/cifar10.py``, ``train_val_split``) keeps 90 % of each class for training
    and the remaining 10 % as a validation set, then applies the noise to both, so model
    selection uses noisy labels. Here each class's indices are shuffled with one seeded
    generator (classes in ascending order) and the first ``round(fraction * n_c)`` go to
    validation.

    Args:
        labels: int [N], the labels to stratify on (the clean ones, as ELR does).
        fraction: share of each class held out, in [0, 1).
        seed: non-negative integer.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index arrays that partition ``range(N)``.
    """
    y = as_label_array(labels, "labels")
    if y.size and y.min() < 0:
        raise NoiseError("labels must be non-negative class indices")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)) \
            or not math.isfinite(as_float(fraction)) or not 0.0 <= float(fraction) < 1.0:
        raise NoiseError(f"fraction must be in [0, 1), got {fraction!r} (e.g. 0.1 holds out 10 % of each class)")
    rng = _rng(seed)
    val_parts = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = round_half_up(float(fraction) * len(idx))
        val_parts.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    is_val = np.zeros(len(y), dtype=bool)
    is_val[val] = True
    return np.flatnonzero(~is_val).astype(np.int64), val.astype(np.int64)


def down_sample(noisy_labels: NoisyLabels | Any, seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """Balance a training set in its NOISY labels (the ICLR 2023 code's ``--down_sample``).

    Every noisy class keeps a random ``m`` of its examples, ``m`` being the smallest count
    among the classes (ICLR 2023 repo ``cifar_noisy.py``), which makes the noisy-label prior
    uniform, e.g. for linear probing under instance noise.

    Args:
        noisy_labels: a :class:`NoisyLabels` (its ``noisy`` labels and ``num_classes`` are
            used) or an int array [N] of noisy labels.
        seed: non-negative integer.
        num_classes: C for a plain array; default: the classes that occur. A class in
            ``range(C)`` with no example makes balancing impossible and raises NoiseError.

    Returns:
        Sorted int64 indices of the kept examples (``m * C`` of them).
    """
    if isinstance(noisy_labels, NoisyLabels):
        y = noisy_labels.noisy
        num_classes = noisy_labels.num_classes if num_classes is None else num_classes
    else:
        y = as_label_array(noisy_labels, "noisy labels")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise NoiseError(f"num_classes must be a positive integer, got {num_classes!r}")
        num_classes = int(num_classes)
    if y.size == 0:
        raise NoiseError("no labels to down-sample")
    if y.min() < 0:
        raise NoiseError("labels must be non-negative class indices")
    # classes past max(y) + 1 are all empty: the first of them is enough to refuse (no huge arange)
    classes = np.unique(y) if num_classes is None else np.arange(min(num_classes, int(y.max()) + 2))
    if num_classes is not None and y.max() >= num_classes:
        raise NoiseError(f"label {int(y.max())} is outside [0, {num_classes})")
    counts = np.bincount(y, minlength=len(classes) if num_classes is not None else 0)
    present = counts[classes]
    if present.min() == 0:
        empty = int(classes[np.argmin(present)])
        raise NoiseError(f"noisy class {empty} has no examples, so down-sampling would keep nothing; "
                         "to balance only the classes that occur, pass the plain label array without num_classes")
    m = int(present.min())
    rng = _rng(seed)
    kept = [rng.permutation(np.flatnonzero(y == c))[:m] for c in classes]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def stratified_folds(labels: Any, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Partition ``range(N)`` into ``folds`` parts with each class spread evenly over them.

    Each class's indices are shuffled with one seeded generator (classes in ascending order) and
    dealt out in turn, the class's first example going to the fold that has received the fewest
    so far, so fold sizes differ by at most one. Returns sorted int64 index arrays.
    """
    y = as_label_array(labels, "labels")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise NoiseError(f"folds must be an integer >= 2, got {folds!r}")
    if folds > len(y):
        raise NoiseError(f"{folds} folds need at least {folds} examples, got {len(y)}")
    rng = _rng(seed)
    assigned = np.empty(len(y), dtype=np.int64)
    sizes = np.zeros(folds, dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = int(np.argmin(sizes))  # the first fold still short (ties: the lowest)
        parts = (start + np.arange(len(idx))) % folds
        assigned[idx] = parts
        sizes += np.bincount(parts, minlength=folds)
    return [np.flatnonzero(assigned == k).astype(np.int64) for k in range(folds)]
