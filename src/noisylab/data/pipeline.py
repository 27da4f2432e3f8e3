"""One entry point for the engine: batches for any bundle, in memory or file-backed.

:func:`make_train_batches` and :func:`make_eval_batches` pick :class:`~noisylab.data.base.TrainBatches`
/ :class:`~noisylab.data.base.EvalBatches` (uint8 tensors on the device, batched augmentation) for
in-memory bundles and :class:`~noisylab.data.files.FileTrainBatches` /
:class:`~noisylab.data.files.FileEvalBatches` (DataLoader workers) for
:class:`~noisylab.data.files.FileDataBundle`. All four yield ``(x, y, index)`` on the device.

Training views: ``views`` names one recipe of :data:`~noisylab.data.augment.VIEW_RECIPES` per view
(``auto`` = the dataset default). With one view ``x`` is a tensor; with several it is a tuple of
tensors in the same order (e.g. ``("crop_flip", "simclr", "simclr")``, the weak and two strong
views of the ICLR-2023 regularizer); with none it is ``()`` (a method that only needs the labels
and indices, such as a linear probe on cached features).
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from .augment import MultiView, resolve_recipe, view_transform
from .base import DataBundle, DataError, EvalBatches, TrainBatches, eval_transform
from .files import FILE_DECODED_RECIPES, FileDataBundle, FileEvalBatches, FileImages, FileTrainBatches, is_file_backed
from .sampling import BalancedSubset

AnyTrainBatches = Union[TrainBatches, FileTrainBatches]
AnyEvalBatches = Union[EvalBatches, FileEvalBatches]


def view_recipes(bundle: DataBundle, views: str | Sequence[str] | None) -> tuple[str, ...]:
    """``views`` (one recipe name, a sequence of them, or None = ``auto``) as resolved recipe names."""
    if views is None or isinstance(views, str):
        views = (views,)
    return tuple(resolve_recipe(bundle, v) for v in views)


def build_train_transform(bundle: DataBundle, views: str | Sequence[str] | None = None):
    """The batched training transform of an in-memory bundle: one view's transform, a
    :class:`MultiView` for several, None for no view."""
    recipes = view_recipes(bundle, views)
    if not recipes:
        return None
    transforms = tuple(view_transform(bundle, r) for r in recipes)
    return transforms[0] if len(transforms) == 1 else MultiView(transforms)


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
    views: str | Sequence[str] | None = None,
    indices: np.ndarray | None = None,
    last_batch: str = "keep",
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
        views: the view recipe(s), see the module doc; None / "auto" = the dataset default.
        indices: dataset indices to train on (e.g. after a validation split); default all.
        last_batch, rank, world_size: as :class:`TrainBatches`.
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
        workers = getattr(bundle, "num_workers", 0) if num_workers is None else num_workers
        recipes = view_recipes(bundle, views)
        on_device = {k: view_transform(bundle, r) for k, r in enumerate(recipes) if r not in FILE_DECODED_RECIPES}
        return FileTrainBatches(
            bundle.train_x, labels_np, batch_size, device, bundle.mean, bundle.std,
            views=recipes, device_transforms=on_device, indices=indices, last_batch=last_batch, rank=rank,
            world_size=world_size, num_workers=workers, balanced=balanced, num_classes=bundle.num_classes,
        )
    transform = build_train_transform(bundle, views)
    pool = np.arange(bundle.num_train, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if balanced is None:
        return TrainBatches(bundle.train_x, labels_np, batch_size, device, transform, indices=indices,
                            last_batch=last_batch, rank=rank, world_size=world_size)
    first = balanced.draw(labels_np, pool, batch_size, bundle.num_classes)
    if not balanced.redraw_each_epoch:
        return TrainBatches(bundle.train_x, labels_np, batch_size, device, transform, indices=first,
                            last_batch=last_batch, rank=rank, world_size=world_size)
    return _RedrawnTrainBatches(bundle.train_x, labels_np, batch_size, device, transform, indices=first,
                                last_batch=last_batch, rank=rank, world_size=world_size, balanced=balanced,
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
