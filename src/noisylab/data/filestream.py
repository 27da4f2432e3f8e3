"""The file storage backend: image datasets too large for memory (Clothing1M, WebVision, large
folders), read from their files by DataLoader workers.

A :class:`FileDataBundle` is a :class:`~noisylab.data.base.DataBundle` whose ``train_x`` /
``test_x`` are :class:`FileImages` (a list of files and how to decode them) and whose extra
evaluation splits (Clothing1M ``val``, WebVision ``imagenet``) live in ``eval_splits``.
:class:`FileStore` serves the batches that :mod:`noisylab.data.batching` plans: decoding (Pillow),
resizing, cropping and flipping run in the workers and yield uint8 ``[B, C, S, S]``; the conversion
to float and the normalisation happen on the device. A fresh worker pool serves each pass and is
stopped when the pass ends or is abandoned. Each image's crop offset and flip come from a
per-image seed drawn from the epoch seed in the main process, so the batches do not depend on the
number of workers or their scheduling.

Per image, the training view is ``Resize(resize)`` (shorter side; skipped when None or already
that size) -> random ``size x size`` crop -> horizontal flip with p = 1/2; the evaluation view is
``Resize(resize)`` -> centre crop. Images smaller than the crop are zero-padded (centred) first.
A file that fails in a worker (it changed on disk after the check pass of
:func:`~noisylab.data.files.screen_image_files`) stops the pass with one :class:`DataError` naming
it; the worker does not die.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Sequence

import numpy as np
import torch

from .base import DataBundle, DataError
from .files import decode_view, default_num_workers
from .transforms import BatchTransform, apply_view, to_float

FILE_DECODED_RECIPES = ("none", "crop", "crop_flip")
"""View recipes that the workers decode (crop offset and flip drawn per image); any other recipe
is applied batched on the device to the decoded centre crop."""


class FileImages:
    """The images of a split as a list of files, and how each becomes a ``uint8 [C, size, size]``
    array when it is read (:func:`~noisylab.data.files.decode_view`).

    Args:
        files: image paths, absolute or relative to ``root``; kept as a compact numpy byte array
            (so DataLoader workers do not copy a million Python strings).
        root: folder the relative paths are joined to ('' for none).
        size: side of the square crop the model sees.
        resize: shorter side the image is resized to before cropping (None: keep).
        channels: 3 (RGB) or 1 (grey).
        list_file, lines: where each path was listed (for error messages), optional.

    ``len(images)`` files; ``images.path(i)`` the file of image ``i``; ``images.load(i)`` decodes its
    evaluation view and ``images.load_many(index)`` several, stacked.
    """

    def __init__(
        self, files: Sequence[str], root: str | os.PathLike = "", size: int = 224,
        resize: int | None = 256, channels: int = 3, list_file: str | None = None,
        lines: Sequence[int] | None = None,
    ) -> None:
        encoded = [f.encode("utf-8") for f in files]
        self.files = np.array(encoded, dtype=np.bytes_) if encoded else np.array([], dtype="S1")
        self.root = str(root)
        self.size = int(size)
        self.resize = resize
        self.channels = int(channels)
        self.list_file = list_file
        self.lines = None if lines is None else np.asarray(lines, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """``(C, size, size)``: one decoded image."""
        return (self.channels, self.size, self.size)

    def path(self, i: int) -> str:
        rel = self.files[i].decode("utf-8")
        return os.path.join(self.root, rel) if self.root else rel

    def where(self, i: int) -> str:
        """`` (listed in <file> line <n>)`` for error messages, or ''."""
        if self.list_file is None:
            return ""
        line = f" line {self.lines[i]}" if self.lines is not None else ""
        return f" (listed in {self.list_file}{line})"

    def load(self, i: int, seed: int | None = None, flip: bool = True) -> torch.Tensor:
        """Image ``i`` as uint8 ``[C, size, size]`` (evaluation view, or training view for ``seed``)."""
        return decode_view(self.path(i), self.size, self.resize, self.channels, seed, flip, self.where(int(i)))

    def load_many(self, index: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The evaluation views of ``index`` as uint8 ``[n, C, size, size]``."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) == 0:
            return torch.empty((0, *self.item_shape), dtype=torch.uint8)
        return torch.stack([self.load(int(i)) for i in index])

    def paths(self) -> list[str]:
        """Every image's file, in order."""
        return [self.path(i) for i in range(len(self))]

    def check_exist(self, indices: Sequence[int] | None = None) -> None:
        """Raise :class:`DataError` for the first listed image that does not exist."""
        for i in range(len(self)) if indices is None else indices:
            p = self.path(int(i))
            if not os.path.isfile(p):
                raise DataError(f"{p}: image file not found{self.where(int(i))}; fix the list or restore the file")

    def __repr__(self) -> str:
        return f"FileImages(n={len(self)}, root={self.root!r}, size={self.size}, resize={self.resize})"


@dataclass
class FileDataBundle(DataBundle):
    """A :class:`DataBundle` whose images are files: ``train_x``, ``test_x`` and the inputs of
    ``eval_splits`` are :class:`FileImages`.

    Attributes (besides DataBundle's):
        num_workers: default DataLoader workers for this dataset.
    """

    num_workers: int = field(default_factory=default_num_workers)

    stored_in_files: ClassVar[bool] = True

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train_x.item_shape

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.uint8


# ----------------------------------------------------------------------------- DataLoader plumbing
class _Failure:
    """A worker-side error, passed back as data so the main process raises one clean DataError."""

    def __init__(self, message: str) -> None:
        self.message = message


class _ViewDataset(torch.utils.data.Dataset):
    """Items are ``(index, seed)`` keys -> ``(tuple of uint8 [C,S,S], index)``, one image per decode
    spec: ``"center"`` (the evaluation view), ``"crop"`` or ``"crop_flip"`` (a random training
    view; spec k draws from ``seed + k * VIEW_SEED_STEP`` so the views of an image differ)."""

    def __init__(self, images: FileImages, specs: Sequence[str] = ("center",)) -> None:
        self.images = images
        self.specs = tuple(specs)

    def __len__(self) -> int:
        return len(self.images)

    def _views(self, index: int, seed: int) -> tuple[torch.Tensor, ...]:
        out, center = [], None
        for k, spec in enumerate(self.specs):
            if spec == "center":
                center = self.images.load(index) if center is None else center
                out.append(center)
            else:
                out.append(self.images.load(index, (seed + k * VIEW_SEED_STEP) % 2**62, spec == "crop_flip"))
        return tuple(out)

    def __getitem__(self, key):
        index, seed = key
        try:
            return self._views(index, seed), index
        except DataError as err:
            return _Failure(str(err))
        except Exception as err:  # anything Pillow may raise on odd files
            return _Failure(f"{self.images.path(index)}: cannot load image{self.images.where(index)} "
                            f"({type(err).__name__}: {err})")


VIEW_SEED_STEP = 1_000_003


def _collate(items):
    for it in items:
        if isinstance(it, _Failure):
            return it
    views, idx = zip(*items)
    return tuple(torch.stack(v) for v in zip(*views)), torch.tensor(idx, dtype=torch.long)


class _KeyBatches:
    """A batch sampler over ``(index, view seed)`` keys, replaced every epoch with :meth:`set`;
    batches are built lazily (a million keys are never materialised as Python tuples at once)."""

    def __init__(self) -> None:
        self.index = np.zeros(0, dtype=np.int64)
        self.seeds = np.zeros(0, dtype=np.int64)
        self.bounds = np.zeros(1, dtype=np.int64)

    def set(self, index: np.ndarray, seeds: np.ndarray, bounds: np.ndarray) -> None:
        """Batch ``k`` of the next pass: keys ``bounds[k]:bounds[k + 1]`` (:func:`batch_bounds`)."""
        self.index, self.seeds = np.asarray(index, dtype=np.int64), np.asarray(seeds, dtype=np.int64)
        self.bounds = np.asarray(bounds, dtype=np.int64)

    def __iter__(self):
        bounds = self.bounds.tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            yield list(zip(self.index[lo:hi].tolist(), self.seeds[lo:hi].tolist()))

    def __len__(self) -> int:
        return len(self.bounds) - 1


def _iterate(dataset, sampler, num_workers: int, device: torch.device) -> Iterator:
    """Iterate a DataLoader over ``sampler``'s batches; its workers are shut down as soon as the
    pass ends, fails or is abandoned (not left to the garbage collector, where an idle worker
    pool can take seconds to stop)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=_collate,
        pin_memory=(torch.device(device).type == "cuda"), prefetch_factor=4 if num_workers > 0 else None,
    )
    it = iter(loader)
    try:
        yield from it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del it


def _raise_failure(item) -> None:
    if isinstance(item, _Failure):
        raise DataError(item.message)


class FileStore:
    """A :class:`~noisylab.data.batching.Store` over image files.

    Args:
        images: the split's :class:`FileImages`.
        mean, std: per-channel normalisation (in [0, 1] units), applied on the device.
        views: one recipe name per training view: ``crop_flip``, ``crop`` and ``none`` (centre
            crop) are decoded in the workers; any other (``simclr``, ``translate_flip``) needs a
            batched transform in ``device_transforms``, applied on the device to the decoded
            centre crop (uint8).
        device_transforms: ``{view position: transform}`` for those recipes.
        num_workers: DataLoader worker processes (0: decode in the main process).
    """

    def __init__(self, images: FileImages, device: torch.device | str, mean: Sequence[float] | None,
                 std: Sequence[float] | None, views: Sequence[str] = (),
                 device_transforms: dict[int, BatchTransform] | None = None, num_workers: int = 0) -> None:
        self.images = images
        self.device = torch.device(device)
        self.mean, self.std = mean, std
        self.views = tuple(views)
        self.device_transforms = dict(device_transforms or {})
        for k, v in enumerate(self.views):
            if v not in FILE_DECODED_RECIPES and k not in self.device_transforms:
                raise DataError(f"augmentation '{v}' has no batched transform for the file-backed dataset "
                                f"(decoded in workers: {', '.join(FILE_DECODED_RECIPES)})")
        # what the workers decode per view; device-side recipes start from the centre crop
        self._specs = tuple(v if v in ("crop", "crop_flip") and k not in self.device_transforms else "center"
                            for k, v in enumerate(self.views))
        self.num_workers = int(num_workers)
        self._sampler = _KeyBatches()

    @property
    def num_views(self) -> int:
        return len(self.views)

    def train_views(self, index: torch.Tensor, position: np.ndarray, epoch_size: int, bounds: np.ndarray,
                    seed: int, epoch: int | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
        # one view seed per place in the whole epoch's order, so every rank draws the same ones
        seeds = torch.randint(0, 2**62, (epoch_size,),
                              generator=torch.Generator().manual_seed(seed + 1)).numpy()
        self._sampler.set(index.cpu().numpy(), seeds[position], bounds)
        on_device = self.device_transforms
        gen = torch.Generator(device=self.device).manual_seed(seed + 2) if on_device else None
        for item in _iterate(_ViewDataset(self.images, self._specs), self._sampler, self.num_workers, self.device):
            _raise_failure(item)
            raw, batch_index = item
            views = []
            for k, r in enumerate(raw):
                r = r.to(self.device, non_blocking=True)
                views.append(apply_view(on_device[k], r, gen, torch.as_tensor(batch_index), epoch) if k in on_device
                             else to_float(r, self.mean, self.std))
            yield tuple(views)

    def eval_view(self, index: np.ndarray, bounds: np.ndarray) -> Iterator[torch.Tensor]:
        self._sampler.set(index, np.full(len(index), -1), bounds)
        for item in _iterate(_ViewDataset(self.images), self._sampler, self.num_workers, self.device):
            _raise_failure(item)
            (x,), _ = item
            yield to_float(x.to(self.device, non_blocking=True), self.mean, self.std)
