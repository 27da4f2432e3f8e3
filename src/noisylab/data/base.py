"""The dataset record every loader returns, and its error.

Data flow: a loader returns a :class:`DataBundle` (inputs + the labels as distributed); the noise
step replaces the training labels; :mod:`.batching` plans each epoch and a store
(:mod:`.memory` for tensors, :mod:`.filestream` for image files) serves the batches on the device
with the views of :mod:`.transforms`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch


class DataError(ValueError):
    """A dataset is missing, corrupt or inconsistent. The message names the file and the fix."""


@dataclass
class DataBundle:
    """A classification dataset held in memory.

    Attributes:
        name: dataset name as used in configs (``mnist1d``, ``cifar10``, ...).
        train_x: training inputs, ``uint8 [N, C, H, W]`` for images or ``float32 [N, D]``.
        train_labels: ``int64 [N]`` labels as distributed. For benchmark datasets these are the
            clean labels; for a user's own data they are the given (possibly wrong) labels and
            ``labels_are_clean`` is False.
        test_x, test_labels: the test split, or None when the dataset has none.
        num_classes: number of classes C; every label lies in ``[0, C)``.
        class_names: C human-readable names.
        mean, std: per-channel normalisation for uint8 images (in [0, 1] units); None for features.
        augment: default training augmentation: ``"crop_flip"`` (random crop with ``crop_padding``
            and horizontal flip, the CIFAR recipe), ``"crop"`` (no flip) or ``"none"``.
        labels_are_clean: whether ``train_labels`` are the true labels (memorization tracking and
            detection metrics need them).
        extra: loader-specific arrays and settings (``coarse_labels``, ``train_files``, ...).
        eval_splits: further labelled evaluation sets by name, ``name -> (inputs, int64 labels)``
            (Clothing1M ``val``, WebVision ``imagenet``).
    """

    name: str
    train_x: torch.Tensor
    train_labels: np.ndarray
    test_x: torch.Tensor | None
    test_labels: np.ndarray | None
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: str = "none"
    crop_padding: int = 4
    labels_are_clean: bool = True
    extra: dict = field(default_factory=dict)
    eval_splits: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train_labels = np.asarray(self.train_labels, dtype=np.int64)
        if self.test_labels is not None:
            self.test_labels = np.asarray(self.test_labels, dtype=np.int64)
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.num_classes)]
        if len(self.train_x) != len(self.train_labels):
            raise DataError(
                f"{self.name}: {len(self.train_x)} training inputs but {len(self.train_labels)} labels"
            )
        for split, labels in (("train", self.train_labels), ("test", self.test_labels)):
            if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(
                    f"{self.name}: {split} labels must lie in [0, {self.num_classes}), "
                    f"found {labels.min()}..{labels.max()}"
                )

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    stored_in_files: ClassVar[bool] = False
    """Whether the inputs are image files read as they are needed
    (:class:`~noisylab.data.filestream.FileDataBundle`) rather than one tensor in memory."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input as the model sees it (``(C, H, W)`` or ``(D,)``)."""
        return tuple(self.train_x.shape[1:])

    @property
    def input_dtype(self) -> torch.dtype:
        """``torch.uint8`` for images as stored, float for features and signals."""
        return self.train_x.dtype

    @property
    def is_images(self) -> bool:
        """Whether an input is an image ``[C, H, W]`` (not a vector or a 1-D signal)."""
        return len(self.input_shape) == 3


def run_in_chunks(work, count: int, chunk: int, threads: int | None = None) -> None:
    """Call ``work(lo, hi)`` over ``[0, count)`` in chunks, on up to ``threads`` threads
    (default ``min(4, cpu_count)``; image decoding releases the GIL). Errors propagate."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    spans = [(lo, min(count, lo + chunk)) for lo in range(0, count, chunk)]
    threads = threads or min(4, os.cpu_count() or 1)
    if threads <= 1 or len(spans) <= 1:
        for lo, hi in spans:
            work(lo, hi)
        return
    with ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(work, lo, hi) for lo, hi in spans]:
            f.result()
