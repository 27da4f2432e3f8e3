"""The in-memory storage backend: inputs held as one tensor (``uint8 [N, C, H, W]`` images or
``float32 [N, ...]`` features and signals), augmented in batches on the training device with no
per-example Python in the loop (airbench's device-resident loader is the model for this)."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .transforms import BatchTransform, apply_view


class TensorStore:
    """A :class:`~noisylab.data.batching.Store` over a tensor.

    Args:
        x: the inputs ``[N, ...]``.
        device: where batches are made. Training moves ``x`` there once (the whole training set
            lives on the device, as uint8 for images); evaluation moves one batch at a time.
        transforms: one batched training transform per view, each ``(x [B, ...], generator) ->
            float [B, ...]`` (:mod:`noisylab.data.transforms`); ``()`` for none.
        eval_transform: the evaluation view's transform (normalisation only).
    """

    def __init__(self, x: torch.Tensor, device: torch.device | str, transforms: Sequence[BatchTransform] = (),
                 eval_transform: BatchTransform | None = None) -> None:
        self.x = x
        self.device = torch.device(device)
        self.transforms = tuple(transforms)
        self.eval_transform = eval_transform
        self._on_device: torch.Tensor | None = None

    @property
    def num_views(self) -> int:
        return len(self.transforms)

    def train_views(self, index: torch.Tensor, position: np.ndarray, epoch_size: int, bounds: np.ndarray,
                    seed: int, epoch: int | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
        if self._on_device is None:
            self._on_device = self.x.to(self.device)
        x = self._on_device
        generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            idx = index[lo:hi]
            raw = x[idx]
            yield tuple(apply_view(t, raw, generator, idx, epoch) for t in self.transforms)

    def eval_view(self, index: np.ndarray, bounds: np.ndarray) -> Iterator[torch.Tensor]:
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            raw = self.x[torch.as_tensor(index[lo:hi])].to(self.device, non_blocking=True)
            yield self.eval_transform(raw, None)
