"""The in-memory dataset record and the batched, on-device input pipeline.

Data flow: a loader returns a :class:`DataBundle` (inputs + the labels as distributed);
the noise step replaces the training labels; :class:`TrainBatches` then serves shuffled,
augmented batches ``(x, y, index)`` already on the training device, with no per-sample
Python in the loop (airbench style).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(inputs [B, ...] float, labels [B] int64, dataset indices [B] int64)``, on the device."""


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

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input as the model sees it (``(C, H, W)`` or ``(D,)``)."""
        return tuple(self.train_x.shape[1:])


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


# ----------------------------------------------------------------------------- transforms
class BatchTransform(Protocol):
    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...


def to_float(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """uint8 images -> float in [0, 1], then per-channel ``(x - mean) / std``; floats pass through."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
        if mean is not None and std is not None:
            m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - m) / s
        return x
    return x.float()


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop of the original size from the zero-padded batch ``x [B, C, H, W]``.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` applied to each image, done as one
    gather for the whole batch.
    """
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip each image of ``x [B, C, H, W]`` left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@dataclass
class StandardAugment:
    """The papers' training augmentation for in-memory images: crop (+flip), then normalise."""

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    padding: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if x.dim() == 4:
            x = random_crop(x, self.padding, generator)
            if self.flip:
                x = random_hflip(x, generator)
        return to_float(x, self.mean, self.std)


@dataclass
class Normalize:
    """Evaluation transform: no randomness, only scaling and normalisation."""

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return to_float(x, self.mean, self.std)


def eval_transform(bundle: DataBundle) -> BatchTransform:
    return Normalize(bundle.mean, bundle.std)


# ----------------------------------------------------------------------------- batch iterators
LAST_BATCH = ("keep", "drop", "spread")
"""What becomes of the examples left after an epoch's full batches (``train.last_batch``): ``keep``
them as a smaller last batch (PyTorch's ``DataLoader``), ``drop`` them (a different few each epoch),
or ``spread`` them over the full batches, one each, so no batch holds fewer than ``batch_size``."""


def check_last_batch(last_batch: str) -> None:
    """ValueError naming the choices unless ``last_batch`` is one of :data:`LAST_BATCH`."""
    if last_batch not in LAST_BATCH:
        raise ValueError(f"unknown last_batch '{last_batch}' (valid: {', '.join(LAST_BATCH)})")


def batch_bounds(n: int, batch_size: int, last_batch: str = "keep") -> np.ndarray:
    """``int64 [K + 1]``: batch ``k`` of an epoch is positions ``bounds[k]:bounds[k + 1]`` of its
    order of ``n`` examples (:data:`LAST_BATCH`). ``spread`` with fewer than ``batch_size`` examples
    makes one batch of all of them.

    A tiny last batch is not harmless: with 900 examples in batches of 128, a last batch of 4 (one
    step in 8, with the batch-norm statistics of 4 images) moved the test accuracy of 30-epoch runs
    by 6-7 points against ``spread`` (down on CIFAR-10, up on Fashion-MNIST, where it slowed
    memorization): results then hinge on the dataset size modulo the batch size."""
    check_last_batch(last_batch)
    full, rest = divmod(n, batch_size)
    if last_batch == "spread" and n:
        k = max(full, 1)
        sizes = n // k + (np.arange(k) < n % k)  # sizes differ by one at most
    else:
        sizes = np.full(full, batch_size)
        if last_batch == "keep" and rest:
            sizes = np.append(sizes, rest)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class EpochBatching:
    """What every training-batch iterator shares: the rank's part of an epoch's order and the batch
    boundaries within it. Subclasses provide ``num_examples`` and call :meth:`_set_batching`."""

    num_examples: int
    batch_size: int
    last_batch: str
    rank: int
    world_size: int

    def _set_batching(self, batch_size: int, last_batch: str, rank: int, world_size: int) -> None:
        check_last_batch(last_batch)  # fail here, not at the first epoch
        self.batch_size, self.last_batch = int(batch_size), last_batch
        self.rank, self.world_size = rank, world_size

    def _per_rank(self) -> int:
        return -(-self.num_examples // self.world_size)  # ceil: ranks pad by repeating, as DistributedSampler

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of a tensor aligned with an epoch's order: the order padded by repeating
        its start to a multiple of the world size, then every ``world_size``-th from ``rank``
        (``DistributedSampler``'s split)."""
        if self.world_size == 1:
            return order
        total = self._per_rank() * self.world_size
        if total > len(order):
            order = torch.cat([order, order[: total - len(order)]])
        return order[self.rank : total : self.world_size]

    @property
    def bounds(self) -> np.ndarray:
        """The epoch's batch boundaries (:func:`batch_bounds`), the same on every rank."""
        return batch_bounds(self._per_rank(), self.batch_size, self.last_batch)

    def __len__(self) -> int:
        return len(self.bounds) - 1


class TrainBatches(EpochBatching):
    """Shuffled, augmented mini-batches of an in-memory dataset, produced on ``device``.

    The order of epoch ``e`` depends only on the seed given to :meth:`epoch`, so a resumed run
    sees exactly the batches an uninterrupted one would. With ``world_size > 1`` each rank takes
    a disjoint, equally long slice of the same permutation (like ``DistributedSampler``).

    Args:
        x: inputs ``[N, ...]`` (moved to ``device`` once).
        labels: ``int64 [N]`` training labels (the noisy ones).
        indices: optional subset of dataset indices to draw from (e.g. the training part after a
            validation split); the yielded index is always the index into ``x``.
        last_batch: the examples left after the full batches (:data:`LAST_BATCH`).
    """

    def __init__(
        self,
        x: torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        batch_size: int,
        device: torch.device,
        transform: BatchTransform | None,
        indices: np.ndarray | None = None,
        last_batch: str = "keep",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.x = x.to(device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(device)
        self.indices = torch.as_tensor(
            np.arange(len(x)) if indices is None else np.asarray(indices), dtype=torch.long
        ).to(device)
        self.device = device
        self.transform = transform
        self._set_batching(batch_size, last_batch, rank, world_size)

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def epoch(self, seed: int) -> Iterator[Batch]:
        gen_cpu = torch.Generator().manual_seed(seed)
        order = self.shard(torch.randperm(self.num_examples, generator=gen_cpu).to(self.device))
        aug_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        bounds = self.bounds.tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            idx = self.indices[order[lo:hi]]
            x = () if self.transform is None else self.transform(self.x[idx], aug_gen)
            yield x, self.labels[idx], idx


class EvalBatches:
    """Fixed-order, un-augmented batches of ``x`` (with labels), for evaluation and prediction."""

    def __init__(
        self,
        x: torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        batch_size: int,
        device: torch.device,
        transform: BatchTransform,
        indices: np.ndarray | None = None,
    ) -> None:
        self.x = x
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.indices = torch.as_tensor(np.arange(len(x)) if indices is None else np.asarray(indices), dtype=torch.long)
        self.batch_size = batch_size
        self.device = device
        self.transform = transform

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for k in range(len(self)):
            idx = self.indices[k * self.batch_size : (k + 1) * self.batch_size]
            x = self.x[idx].to(self.device, non_blocking=True)
            yield self.transform(x, None), self.labels[idx].to(self.device), idx.to(self.device)
