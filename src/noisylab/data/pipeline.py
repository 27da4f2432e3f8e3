"""One entry point for the engine: batches for any bundle, in memory or file-backed.

:func:`make_train_batches` and :func:`make_eval_batches` pick :class:`~noisylab.data.base.TrainBatches`
/ :class:`~noisylab.data.base.EvalBatches` (uint8 tensors on the device, batched augmentation) for
in-memory bundles and :class:`~noisylab.data.files.FileTrainBatches` /
:class:`~noisylab.data.files.FileEvalBatches` (DataLoader workers) for
:class:`~noisylab.data.files.FileDataBundle`. All four yield ``(x, y, index)`` on the device.

Training augmentations (``augment``):

=================  =====================================================================  ===========
name               what ``x`` is                                                          bundles
=================  =====================================================================  ===========
``auto``/None      the dataset default (``bundle.augment``)                               all
``none``           normalised inputs (file datasets: centre crop)                         all
``crop``           random crop with ``bundle.crop_padding`` (files: random crop)          all
``crop_flip``      random crop + horizontal flip (the papers' CIFAR / Clothing1M recipe)   all
``simclr``         one SimCLR view (see :mod:`noisylab.data.augment`)                     in-memory
``simclr_pair``    tuple of two SimCLR views (SimCLR pre-training)                        in-memory
``weak_strong``    tuple ``(weak crop_flip, SimCLR, SimCLR)`` (ICLR-2023 ``*_Reg.py``)    in-memory
=================  =====================================================================  ===========
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from .augment import CropFlipNormalize, SimCLRAugment, simclr_pair, weak_strong_strong
from .base import DataBundle, DataError, EvalBatches, TrainBatches, eval_transform, train_transform
from .files import FILE_AUGMENTS, FileDataBundle, FileEvalBatches, FileImages, FileTrainBatches, is_file_backed
from .sampling import BalancedSubset

IN_MEMORY_AUGMENTS = ("auto", "none", "crop", "crop_flip", "simclr", "simclr_pair", "weak_strong")

AnyTrainBatches = Union[TrainBatches, FileTrainBatches]
AnyEvalBatches = Union[EvalBatches, FileEvalBatches]


def build_train_transform(bundle: DataBundle, augment: str | None = None):
    """The batched training transform of an in-memory bundle for ``augment`` (table above)."""
    kind = bundle.augment if augment in (None, "auto") else augment
    if kind in ("simclr", "simclr_pair", "weak_strong"):
        if bundle.train_x.dim() != 4:
            raise DataError(f"augmentation '{kind}' needs images [N, C, H, W]; {bundle.name} has inputs of shape "
                            f"{tuple(bundle.train_x.shape[1:])}")
        if kind == "simclr":
            return SimCLRAugment(bundle.mean, bundle.std)
        if kind == "simclr_pair":
            return simclr_pair(bundle.mean, bundle.std)
        return weak_strong_strong(bundle.mean, bundle.std, padding=bundle.crop_padding, flip=True)
    if kind not in IN_MEMORY_AUGMENTS:
        raise DataError(f"unknown augmentation '{kind}' (valid: {', '.join(IN_MEMORY_AUGMENTS)})")
    if kind in ("crop", "crop_flip") and bundle.train_x.dim() == 4 and bundle.train_x.dtype == torch.uint8:
        # same random draws and images as base.StandardAugment, fused (faster)
        return CropFlipNormalize(bundle.mean, bundle.std, bundle.crop_padding, flip=(kind == "crop_flip"))
    return train_transform(bundle, kind)


class _RedrawnTrainBatches(TrainBatches):
    """In-memory batches over a class-balanced subset that is redrawn every epoch."""

    def __init__(self, *args, balanced: BalancedSubset, pool: np.ndarray, labels_np: np.ndarray,
                 num_classes: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._balanced, self._pool, self._labels_np, self._num_classes = balanced, pool, labels_np, num_classes

    def epoch(self, seed: int):
        sub = self._balanced.draw(self._labels_np, self._pool, self.batch_size, self._num_classes, seed)
        self.indices = torch.as_tensor(sub, dtype=torch.long).to(self.device)
        return super().epoch(seed)


def make_train_batches(
    bundle: DataBundle,
    labels: np.ndarray | torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    augment: str | None = None,
    indices: np.ndarray | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    *,
    num_workers: int | None = None,
    balanced: BalancedSubset | None | str = "auto",
) -> AnyTrainBatches:
    """Training batches ``(x, y, index)`` on ``device`` for ``bundle`` with ``labels``.

    Args:
        bundle: an in-memory :class:`DataBundle` or a :class:`FileDataBundle`.
        labels: ``int64 [N]`` training labels (usually the noisy ones), N = ``bundle.num_train``.
        batch_size: per-rank batch size.
        augment: see the module table; None / "auto" = the dataset default.
        indices: dataset indices to train on (e.g. after a validation split); default all.
        drop_last, rank, world_size: as :class:`TrainBatches`.
        num_workers: DataLoader workers for file datasets (default ``bundle.num_workers``);
            ignored for in-memory bundles.
        balanced: a :class:`BalancedSubset` (train each epoch on a class-balanced subset of
            ``indices`` by ``labels``), None, or "auto" = ``bundle.extra["balanced_subset"]`` if set
            (Clothing1M with ``num_batches``).

    ``len(result)`` is the number of batches per epoch; ``result.epoch(seed)`` iterates one epoch.
    """
    device = torch.device(device)
    labels_np = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels, dtype=np.int64)
    if labels_np.shape != (bundle.num_train,):
        raise DataError(f"{bundle.name}: {len(labels_np)} training labels for {bundle.num_train} training examples")
    if len(labels_np) and (labels_np.min() < 0 or labels_np.max() >= bundle.num_classes):
        raise DataError(f"{bundle.name}: training labels must lie in [0, {bundle.num_classes}), "
                        f"found {labels_np.min()}..{labels_np.max()}")
    if isinstance(balanced, str):
        if balanced != "auto":
            raise DataError(f"balanced must be a BalancedSubset, None or 'auto', got '{balanced}'")
        balanced = bundle.extra.get("balanced_subset")
    if is_file_backed(bundle):
        kind = bundle.augment if augment in (None, "auto") else augment
        if kind not in FILE_AUGMENTS:
            raise DataError(f"augmentation '{kind}' is not available for the file-backed dataset {bundle.name} "
                            f"(valid: auto, {', '.join(FILE_AUGMENTS)}); SimCLR views need an in-memory dataset")
        workers = getattr(bundle, "num_workers", 0) if num_workers is None else num_workers
        return FileTrainBatches(
            bundle.train_x, labels_np, batch_size, device, bundle.mean, bundle.std, augment=kind,
            indices=indices, drop_last=drop_last, rank=rank, world_size=world_size, num_workers=workers,
            balanced=balanced, num_classes=bundle.num_classes,
        )
    transform = build_train_transform(bundle, augment)
    pool = np.arange(bundle.num_train, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if balanced is None:
        return TrainBatches(bundle.train_x, labels_np, batch_size, device, transform, indices=indices,
                            drop_last=drop_last, rank=rank, world_size=world_size)
    first = balanced.draw(labels_np, pool, batch_size, bundle.num_classes)
    if not balanced.redraw_each_epoch:
        return TrainBatches(bundle.train_x, labels_np, batch_size, device, transform, indices=first,
                            drop_last=drop_last, rank=rank, world_size=world_size)
    return _RedrawnTrainBatches(bundle.train_x, labels_np, batch_size, device, transform, indices=first,
                                drop_last=drop_last, rank=rank, world_size=world_size, balanced=balanced,
                                pool=pool, labels_np=labels_np, num_classes=bundle.num_classes)


def eval_split_names(bundle: DataBundle) -> list[str]:
    """Evaluation splits available for ``bundle``: ``train``, ``test`` (if any) and extra ones."""
    names = ["train"] + (["test"] if bundle.test_x is not None else [])
    if isinstance(bundle, FileDataBundle):
        names += list(bundle.eval_splits)
    return names


def make_eval_batches(
    bundle: DataBundle,
    split: str = "test",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    labels: np.ndarray | torch.Tensor | None = None,
    indices: np.ndarray | None = None,
    *,
    num_workers: int | None = None,
) -> AnyEvalBatches:
    """Un-augmented, fixed-order batches ``(x, y, index)`` of one split on ``device``.

    Args:
        split: ``"train"`` (e.g. predictions for every training example), ``"test"``, or an extra
            split of a file dataset (``"val"`` for Clothing1M, ``"imagenet"`` for WebVision).
        labels: labels to yield (default: the split's labels as distributed; for ``train`` pass
            the noisy labels to evaluate against them).
        indices: subset of the split's indices, in the order to visit.
        num_workers: DataLoader workers for file datasets (default ``bundle.num_workers``).
    """
    device = torch.device(device)
    if split == "train":
        x, y = bundle.train_x, bundle.train_labels
    elif split == "test":
        if bundle.test_x is None:
            raise DataError(f"{bundle.name} has no test split (available: {', '.join(eval_split_names(bundle))})")
        x, y = bundle.test_x, bundle.test_labels
    elif isinstance(bundle, FileDataBundle) and split in bundle.eval_splits:
        x, y = bundle.eval_splits[split]
    else:
        raise DataError(f"{bundle.name} has no split '{split}' (available: {', '.join(eval_split_names(bundle))})")
    if labels is not None:
        y = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels, dtype=np.int64)
        if len(y) != len(x):
            raise DataError(f"{bundle.name}: {len(y)} labels for the {len(x)} examples of split '{split}'")
    if isinstance(x, FileImages):
        workers = getattr(bundle, "num_workers", 0) if num_workers is None else num_workers
        return FileEvalBatches(x, y, batch_size, device, bundle.mean, bundle.std, indices=indices,
                               num_workers=workers)
    return EvalBatches(x, y, batch_size, device, eval_transform(bundle), indices=indices)


def example_paths(bundle: DataBundle, split: str = "train") -> list[str] | None:
    """The image file of each example of ``split`` when the dataset came from files (folder, CSV,
    Clothing1M, WebVision), e.g. to name suspected label errors in an export; None otherwise."""
    if split == "train":
        x = bundle.train_x
    elif split == "test":
        x = bundle.test_x
    elif isinstance(bundle, FileDataBundle) and split in bundle.eval_splits:
        x = bundle.eval_splits[split][0]
    else:
        raise DataError(f"{bundle.name} has no split '{split}' (available: {', '.join(eval_split_names(bundle))})")
    if isinstance(x, FileImages):
        return [x.path(i) for i in range(len(x))]
    files = bundle.extra.get(f"{split}_files")
    return list(files) if files is not None else None
