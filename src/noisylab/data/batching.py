"""The one batching core: which examples an epoch visits, in which order, on which rank, and where
its batches end; the :class:`Batch` every loop reads; the class-balanced per-epoch subsets.

Storage is not its business: a *store* (:class:`~noisylab.data.memory.TensorStore` for tensors held
in memory, :class:`~noisylab.data.filestream.FileStore` for image files decoded by DataLoader
workers) turns the planned dataset indices into views on the device. :class:`TrainBatches` and
:class:`EvalBatches` pair a plan with a store, so the order, the sharding, the last batch and the
balanced subsets are written once for both.

The order of epoch ``e`` depends only on the seed passed to :meth:`TrainBatches.epoch`, so a
resumed run sees exactly the batches an uninterrupted one would. With ``world_size > 1`` each
rank takes a disjoint, equally long part of the same permutation (``DistributedSampler``'s split).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np
import torch

LAST_BATCH = ("keep", "drop", "spread")
"""What becomes of the examples left after an epoch's full batches (``train.last_batch``): ``keep``
them as a smaller last batch (PyTorch's ``DataLoader``), ``drop`` them (a different few each epoch),
or ``spread`` them over the full batches, one each, so no batch holds fewer than ``batch_size``."""


@dataclass
class Batch:
    """One batch on the device.

    Attributes:
        views: one float tensor ``[B, ...]`` per view asked for, in that order (``()`` for none;
            evaluation batches have one, the un-augmented view).
        y: ``int64 [B]`` labels (for training, the given, possibly wrong, ones).
        index: ``int64 [B]`` dataset indices (rows of per-example state).
    """

    views: tuple[torch.Tensor, ...]
    y: torch.Tensor
    index: torch.Tensor

    @property
    def x(self) -> torch.Tensor:
        """The first view (the only one of single-view methods and of evaluation batches)."""
        return self.views[0]


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


# ----------------------------------------------------------------------------- balanced subsets
def balanced_subset(
    labels: np.ndarray, pool: np.ndarray, num_samples: int, num_classes: int, rng: np.random.Generator,
) -> np.ndarray:
    """Class-balanced subset of ``pool`` (dataset indices) by ``labels[pool]``.

    Walks ``pool`` in a random order and keeps an index while its class has fewer than
    ``num_samples / num_classes`` kept, stopping at ``num_samples`` in total. Returns the kept
    dataset indices, sorted (int64). Its size is ``min(num_samples, sum_c min(n_c, ceil(cap)))``,
    whatever the order.

    This is the rule of ELR+ on Clothing1M (``ELR_plus/data_loader/clothing1m.py``: 3000 x 64 =
    192,000 images a run, by *noisy* class); the official code draws with python ``random``, here
    numpy's ``default_rng`` draws (the rule is the same, the subset differs).
    """
    pool = np.asarray(pool, dtype=np.int64)
    order = pool[rng.permutation(len(pool))]
    lab = np.asarray(labels)[order]
    # rank of each element among earlier elements of its class (0 for the first of a class)
    sort = np.argsort(lab, kind="stable")
    sorted_lab = lab[sort]
    starts = np.searchsorted(sorted_lab, sorted_lab, side="left")
    rank = np.empty(len(lab), dtype=np.int64)
    rank[sort] = np.arange(len(lab)) - starts
    cap = num_samples / num_classes
    kept = order[rank < cap][:num_samples]
    return np.sort(kept)


@dataclass(frozen=True)
class BalancedSubset:
    """Train each epoch on a class-balanced subset (ELR+ Clothing1M recipe).

    Attributes:
        num_batches: batches per epoch; the subset has ``num_batches * batch_size`` images in total
            over all ranks (192,000 = 3000 x 64 for ELR+), fewer if some classes run short.
        seed: seed of the draw.
        redraw_each_epoch: False (the official behaviour): one subset for the whole run;
            True: a new subset every epoch, drawn from ``(seed, epoch seed)``.
    """

    num_batches: int
    seed: int = 123
    redraw_each_epoch: bool = False

    def draw(self, labels: np.ndarray, pool: np.ndarray, batch_size: int, num_classes: int,
             epoch_seed: int | None = None) -> np.ndarray:
        """The subset (sorted dataset indices) for an epoch; ``epoch_seed`` only matters when
        ``redraw_each_epoch``."""
        if self.num_batches <= 0:
            raise ValueError(f"num_batches must be positive, got {self.num_batches}")
        mask = (1 << 64) - 1
        key = [self.seed & mask]
        if self.redraw_each_epoch and epoch_seed is not None:
            key.append(int(epoch_seed) & mask)
        rng = np.random.default_rng(key)
        return balanced_subset(labels, pool, self.num_batches * batch_size, num_classes, rng)


def sample_indices(indices: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed seeded draw of ``size`` of ``indices``, sorted (all of them when ``size`` is 0 or
    not smaller); its own generator, so the run's random streams are untouched."""
    indices = np.asarray(indices, dtype=np.int64)
    if size == 0 or size >= len(indices):
        return indices
    return np.sort(np.random.default_rng([seed, 0x6D656D6F]).choice(indices, size, replace=False))


# ----------------------------------------------------------------------------- the plan of an epoch
class EpochPlan:
    """The examples of each training epoch, their order on this rank and the batch boundaries.

    Args:
        labels: ``int64 [N]`` training labels (for balanced subsets).
        batch_size: per-rank batch size.
        indices: dataset indices to draw from (e.g. the training part after a validation split);
            default all ``N``.
        last_batch: the examples left after the full batches (:data:`LAST_BATCH`).
        rank, world_size: this process's part of the permutation.
        balanced: optional :class:`BalancedSubset`: each epoch visits a class-balanced subset of
            ``indices`` by ``labels``; ``num_classes`` is then needed.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, indices: np.ndarray | None = None,
                 last_batch: str = "keep", rank: int = 0, world_size: int = 1,
                 balanced: BalancedSubset | None = None, num_classes: int | None = None) -> None:
        check_last_batch(last_batch)  # fail here, not at the first epoch
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size, self.last_batch = int(batch_size), last_batch
        self.rank, self.world_size = int(rank), int(world_size)
        self.pool = np.arange(len(self.labels), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        self.balanced, self.num_classes = balanced, num_classes
        if balanced is not None:
            if num_classes is None:
                raise ValueError("balanced subsets need num_classes")
            self.indices = balanced.draw(self.labels, self.pool, self.batch_size, num_classes)
        else:
            self.indices = self.pool

    @property
    def num_examples(self) -> int:
        """Examples one epoch visits over all ranks (the balanced subset's size, if any)."""
        return len(self.indices)

    def per_rank(self) -> int:
        return -(-self.num_examples // self.world_size)  # ceil: ranks pad by repeating, as DistributedSampler

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's part of an array aligned with an epoch's order: the order padded by repeating
        its start to a multiple of the world size, then every ``world_size``-th from ``rank``."""
        if self.world_size == 1:
            return order
        total = self.per_rank() * self.world_size
        if total > len(order):
            order = np.concatenate([order, order[: total - len(order)]])
        return order[self.rank : total : self.world_size]

    @property
    def bounds(self) -> np.ndarray:
        """The epoch's batch boundaries (:func:`batch_bounds`), the same on every rank."""
        return batch_bounds(self.per_rank(), self.batch_size, self.last_batch)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def epoch(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(index, position)`` of this rank's examples in epoch ``seed``'s order, ``int64 [n_rank]``:
        the dataset index, and the place in the whole epoch's permutation (``[0, num_examples)``,
        for stores that draw per-example randomness for the whole epoch and must agree across ranks)."""
        if self.balanced is not None and self.balanced.redraw_each_epoch:
            self.indices = self.balanced.draw(self.labels, self.pool, self.batch_size, self.num_classes, seed)
        perm = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(seed)).numpy()
        position = self.shard(np.arange(self.num_examples, dtype=np.int64))
        return self.indices[perm[position]], position


# ----------------------------------------------------------------------------- stores and batches
class Store(Protocol):
    """Where the inputs live and how they become views on the device (a storage backend)."""

    num_views: int
    """Views per training example (0: the batches carry labels and indices only)."""

    def train_views(self, index: torch.Tensor, position: np.ndarray, epoch_size: int, bounds: np.ndarray,
                    seed: int, epoch: int | None) -> Iterator[tuple[torch.Tensor, ...]]:
        """One tuple of ``num_views`` float tensors per batch ``index[bounds[k]:bounds[k + 1]]``
        (``index`` on the device); the randomness of the augmentations a function of ``seed`` and
        ``position`` (each example's place among the ``epoch_size`` of the whole epoch) only, and
        for views that alternate by epoch (:func:`~noisylab.data.transforms.apply_view`) of the
        example's index and ``epoch``."""

    def eval_view(self, index: np.ndarray, bounds: np.ndarray) -> Iterator[torch.Tensor]:
        """The un-augmented view of each batch ``index[bounds[k]:bounds[k + 1]]``, on the device."""


class TrainBatches:
    """Shuffled, augmented training batches (:class:`Batch`) on ``device``: an :class:`EpochPlan`
    served by a :class:`Store`.

    ``len()`` is the number of batches per epoch and ``num_examples`` the examples an epoch
    visits; ``epoch(seed)`` iterates one epoch."""

    def __init__(self, plan: EpochPlan, store: Store, device: torch.device | str) -> None:
        self.plan, self.store = plan, store
        self.device = torch.device(device)
        self.labels = torch.as_tensor(plan.labels).to(self.device)

    @property
    def num_examples(self) -> int:
        return self.plan.num_examples

    def __len__(self) -> int:
        return len(self.plan)

    def epoch(self, seed: int, epoch: int | None = None) -> Iterator[Batch]:
        """The batches of one epoch: order and augmentation drawn from ``seed``; ``epoch`` (the
        epoch's number) is needed by views that alternate between epochs (``translate_altflip``),
        which refuse None."""
        index_np, position = self.plan.epoch(seed)
        index = torch.as_tensor(index_np).to(self.device)
        bounds = self.plan.bounds
        spans = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        if self.store.num_views == 0:
            views: Iterator[tuple[torch.Tensor, ...]] = iter([()] * len(spans))
        else:
            views = self.store.train_views(index, position, self.plan.num_examples, bounds, seed, epoch)
        for (lo, hi), v in zip(spans, views):
            idx = index[lo:hi]
            yield Batch(v, self.labels[idx], idx)


class EvalBatches:
    """Fixed-order, un-augmented batches (:class:`Batch` with one view) of ``indices`` (default
    all) of a split, for evaluation and prediction; the last batch is kept."""

    def __init__(self, store: Store, labels: np.ndarray | torch.Tensor, batch_size: int,
                 device: torch.device | str, indices: np.ndarray | None = None) -> None:
        self.store = store
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.indices = np.asarray(np.arange(len(self.labels)) if indices is None else indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self._bounds = batch_bounds(len(self.indices), self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __iter__(self) -> Iterator[Batch]:
        bounds = self._bounds.tolist()
        for lo, hi, x in zip(bounds[:-1], bounds[1:], self.store.eval_view(self.indices, self._bounds)):
            idx = torch.as_tensor(self.indices[lo:hi])
            yield Batch((x,), self.labels[idx].to(self.device), idx.to(self.device))
