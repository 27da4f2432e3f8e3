"""Data and split preparation: the dataset, the labels a model will see (made by a noise
generator, or read from a file) and the split into a training and a held-out part."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, ConfigError
from ..noise import DAMAGED_NPZ_ERRORS, NoiseError, NoisyLabels, down_sample, make_noisy_labels, split_per_class
from .base import DataBundle
from .registry import load_dataset


@dataclass
class PreparedData:
    """The dataset, the labels the model will see, and the split."""

    bundle: DataBundle
    labels: NoisyLabels
    train_idx: np.ndarray  # indices of training examples (the rest of the train split is validation)
    val_idx: np.ndarray  # possibly empty
    truth_known: bool  # whether true labels exist for memorization tracking and detection metrics

    @property
    def given(self) -> np.ndarray:
        return self.labels.noisy


def subset_bundle(bundle: DataBundle, train_size: int | None, test_size: int | None, seed: int) -> DataBundle:
    """A smaller copy of an in-memory bundle: ``train_size`` training examples drawn per class in
    proportion to the class sizes (seeded, kept in dataset order), the first ``test_size`` test examples."""
    if bundle.stored_in_files:
        raise ConfigError(f"data.train_size/test_size need an in-memory dataset; {bundle.name} reads files")
    changes: dict[str, Any] = {}
    n = bundle.num_train
    if train_size is not None and train_size < bundle.num_classes:
        raise ConfigError(f"data.train_size {train_size} is smaller than the {bundle.num_classes} classes of "
                          f"{bundle.name}: every class needs at least one example; use at least {bundle.num_classes}")
    if train_size is not None and train_size < n:
        rng = np.random.default_rng([seed, 7])
        keep = []
        classes, counts = np.unique(bundle.train_labels, return_counts=True)
        quota = np.floor(counts * train_size / n).astype(int)
        quota[np.argsort(-(counts * train_size / n - quota))[: train_size - quota.sum()]] += 1  # largest remainders
        for c, q in zip(classes, quota):
            members = np.flatnonzero(bundle.train_labels == c)
            keep.append(rng.choice(members, size=q, replace=False))
        idx = np.sort(np.concatenate(keep))
        changes.update(train_x=bundle.train_x[torch.as_tensor(idx)], train_labels=bundle.train_labels[idx],
                       extra={k: (v[idx] if isinstance(v, np.ndarray) and len(v) == n else v)
                              for k, v in bundle.extra.items()})
    if test_size is not None and bundle.test_x is not None and test_size < len(bundle.test_labels):
        changes.update(test_x=bundle.test_x[:test_size], test_labels=bundle.test_labels[:test_size])
    return dataclasses.replace(bundle, **changes) if changes else bundle


def prepare_data(cfg: Config, labels_file: str | Path | None = None) -> PreparedData:
    """Load the dataset, make or load the noisy labels, split off the noisy validation set."""
    bundle = load_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.options)
    if cfg.data.train_size is not None and cfg.noise.kind == "human" and labels_file is None and cfg.noise.file is None:
        raise ConfigError("data.train_size cannot be combined with noise.kind=human: the human labels cover the "
                          "full training set in its original order")
    if cfg.data.train_size is not None or cfg.data.test_size is not None:
        bundle = subset_bundle(bundle, cfg.data.train_size, cfg.data.test_size, cfg.seed)
    n, c = bundle.num_train, bundle.num_classes
    file = labels_file or cfg.noise.file
    if file is not None:
        labels = NoisyLabels.load(file)
        if len(labels.noisy) != n:
            raise NoiseError(f"label file '{file}' has {len(labels.noisy)} labels but {cfg.data.dataset} has {n} "
                             "training examples (was it made for another dataset?)")
        if labels.noisy.min() < 0 or labels.noisy.max() >= c:
            raise NoiseError(f"label file '{file}' has labels outside [0, {c})")
    else:
        options = dict(cfg.noise.options)
        if cfg.noise.kind == "instance":
            options.setdefault("inputs", bundle.train_x.numpy())
        if options.get("superclass") == "coarse" and "coarse_labels" in bundle.extra:
            options.setdefault("coarse_labels", bundle.extra["coarse_labels"])
        seed = cfg.seed if cfg.noise.seed is None else cfg.noise.seed
        # the rate means nothing for these kinds (the matrix or file sets the noise level)
        rate = None if cfg.noise.kind in ("none", "matrix", "human") else cfg.noise.rate
        labels = make_noisy_labels(bundle.train_labels, cfg.noise.kind, rate, c, seed, **options)
    truth_known = bundle.labels_are_clean
    if cfg.data.val_fraction > 0:
        # the ELR protocol: split per (true) class, before noise, noisy labels on both parts; without
        # the truth, on the labels before any noise or relabelling (a relabelled file keeps them as
        # its clean labels), so that a run on relabelled labels holds out what the first run held out
        split_on = bundle.train_labels if truth_known else labels.before_noise
        train_idx, val_idx = split_per_class(split_on, cfg.data.val_fraction, cfg.seed)
    else:
        train_idx, val_idx = np.arange(n), np.zeros(0, dtype=np.int64)
    train_idx = np.sort(train_idx)
    if cfg.data.down_sample:  # after the noise, on the training part: balanced in the given labels
        train_idx = train_idx[down_sample(labels.noisy[train_idx], cfg.seed, c)]
    return PreparedData(bundle, labels, train_idx, np.sort(val_idx), truth_known)


def read_split(path: Path) -> np.ndarray:
    """The training indices of a run's ``split.npz``; one line when the file is damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["train_idx"], dtype=np.int64)
    except (KeyError, ValueError, *DAMAGED_NPZ_ERRORS):
        raise ConfigError(f"'{path}' is damaged; restore it or start the run again") from None
