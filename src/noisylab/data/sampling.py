"""Per-epoch training subsets: the class-balanced subset of ELR+ on Clothing1M.

ELR+ (``ELR_plus/data_loader/clothing1m.py``) trains each epoch on
``num_batches x batch_size`` images (3000 x 64 = 192,000) drawn from the 1M noisy training list:
shuffle the list, then walk it and keep an image while its *noisy* class has fewer than
``num_samples / C`` images kept and fewer than ``num_samples`` are kept in total. The official code
draws this subset once (seeded by python ``random``) and reuses it every epoch; here the draw uses
numpy's ``default_rng`` (so the subset differs from the official one, the rule is the same) and
can optionally be redrawn every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def balanced_subset(
    labels: np.ndarray, pool: np.ndarray, num_samples: int, num_classes: int, rng: np.random.Generator,
) -> np.ndarray:
    """Class-balanced subset of ``pool`` (dataset indices) by ``labels[pool]``.

    Walks ``pool`` in a random order and keeps an index while its class has fewer than
    ``num_samples / num_classes`` kept, stopping at ``num_samples`` in total. Returns the kept
    dataset indices, sorted (int64). Its size is ``min(num_samples, sum_c min(n_c, ceil(cap)))``,
    whatever the order.
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
