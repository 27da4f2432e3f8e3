"""One entry point for the engine: batches for any bundle, from memory or from files.

:func:`make_train_batches` and :func:`make_eval_batches` pair the one batching core
(:class:`~noisylab.data.batching.TrainBatches` / :class:`~noisylab.data.batching.EvalBatches`)
with the bundle's store: :class:`~noisylab.data.memory.TensorStore` (uint8 tensors on the device,
batched augmentation) or :class:`~noisylab.data.filestream.FileStore` (DataLoader workers). Both
yield :class:`~noisylab.data.batching.Batch` on the device.

Training views: ``views`` names one recipe of :data:`noisylab.registry.VIEWS` per view
(``auto`` = the dataset default). ``Batch.views`` holds them in that order (e.g. ``("crop_flip",
"simclr", "simclr")``, the weak and two strong views of the ICLR-2023 regularizer); with none it
is ``()`` (a method that only needs the labels and indices, such as a linear probe on cached
features).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import DataBundle, DataError
from .batching import BalancedSubset, EpochPlan, EvalBatches, TrainBatches
from .filestream import FILE_DECODED_RECIPES, FileStore
from .memory import TensorStore
from .transforms import eval_transform, resolve_recipe, view_transform


def view_recipes(bundle: DataBundle, views: str | Sequence[str] | None) -> tuple[str, ...]:
    """``views`` (one recipe name, a sequence of them, or None = ``auto``) as resolved recipe names."""
    if views is None or isinstance(views, str):
        views = (views,)
    return tuple(resolve_recipe(bundle, v) for v in views)


def _workers(bundle: DataBundle, num_workers: int | None) -> int:
    return getattr(bundle, "num_workers", 0) if num_workers is None else num_workers


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
) -> TrainBatches:
    """Training batches on ``device`` for ``bundle`` with ``labels``.

    Args:
        bundle: an in-memory :class:`DataBundle` or a :class:`~noisylab.data.filestream.FileDataBundle`.
        labels: ``int64 [N]`` training labels (usually the noisy ones), N = ``bundle.num_train``.
        batch_size: per-rank batch size.
        views: the view recipe(s), see the module doc; None / "auto" = the dataset default.
        indices: dataset indices to train on (e.g. after a validation split); default all.
        last_batch, rank, world_size: as :class:`~noisylab.data.batching.EpochPlan`.
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
    plan = EpochPlan(labels_np, batch_size, indices, last_batch, rank, world_size, balanced, bundle.num_classes)
    recipes = view_recipes(bundle, views)
    if bundle.stored_in_files:
        on_device = {k: view_transform(bundle, r) for k, r in enumerate(recipes) if r not in FILE_DECODED_RECIPES}
        store = FileStore(bundle.train_x, device, bundle.mean, bundle.std, recipes, on_device,
                          _workers(bundle, num_workers))
    else:
        store = TensorStore(bundle.train_x, device, tuple(view_transform(bundle, r) for r in recipes))
    return TrainBatches(plan, store, device)


def split_inputs(bundle: DataBundle, split: str) -> tuple:
    """``(inputs, labels)`` of ``split``: ``train``, ``test`` or an extra evaluation split."""
    if split == "train":
        return bundle.train_x, bundle.train_labels
    if split == "test" and bundle.test_x is not None:
        return bundle.test_x, bundle.test_labels
    if split in bundle.eval_splits:
        return bundle.eval_splits[split]
    if split == "test":
        raise DataError(f"{bundle.name} has no test split (available: {', '.join(eval_split_names(bundle))})")
    raise DataError(f"{bundle.name} has no split '{split}' (available: {', '.join(eval_split_names(bundle))})")


def eval_split_names(bundle: DataBundle) -> list[str]:
    """Evaluation splits available for ``bundle``: ``train``, ``test`` (if any) and extra ones."""
    return ["train"] + (["test"] if bundle.test_x is not None else []) + list(bundle.eval_splits)


def make_eval_batches(
    bundle: DataBundle,
    split: str = "test",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    labels: np.ndarray | torch.Tensor | None = None,
    indices: np.ndarray | None = None,
    *,
    num_workers: int | None = None,
) -> EvalBatches:
    """Un-augmented, fixed-order batches (one view) of one split on ``device``.

    Args:
        split: ``"train"`` (e.g. predictions for every training example), ``"test"``, or an extra
            split of a file dataset (``"val"`` for Clothing1M, ``"imagenet"`` for WebVision).
        labels: labels to yield (default: the split's labels as distributed; for ``train`` pass
            the noisy labels to evaluate against them).
        indices: subset of the split's indices, in the order to visit.
        num_workers: DataLoader workers for file datasets (default ``bundle.num_workers``).
    """
    device = torch.device(device)
    x, y = split_inputs(bundle, split)
    if labels is not None:
        y = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels, dtype=np.int64)
        if len(y) != len(x):
            raise DataError(f"{bundle.name}: {len(y)} labels for the {len(x)} examples of split '{split}'")
    if bundle.stored_in_files:
        store = FileStore(x, device, bundle.mean, bundle.std, num_workers=_workers(bundle, num_workers))
    else:
        store = TensorStore(x, device, eval_transform=eval_transform(bundle))
    return EvalBatches(store, y, batch_size, device, indices)


def example_paths(bundle: DataBundle, split: str = "train") -> list[str] | None:
    """The image file of each example of ``split`` when the dataset came from files (folder, CSV,
    Clothing1M, WebVision), e.g. to name suspected label errors in an export; None otherwise."""
    if split == "test" and bundle.test_x is None:
        return None
    x, _ = split_inputs(bundle, split)
    if bundle.stored_in_files:
        return x.paths()
    files = bundle.extra.get(f"{split}_files")
    return list(files) if files is not None else None
