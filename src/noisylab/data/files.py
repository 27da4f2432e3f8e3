"""File-backed image datasets (Clothing1M, WebVision, large folders) served by a DataLoader.

Such datasets do not fit in memory as uint8 tensors. A :class:`FileDataBundle` is a
:class:`DataBundle` whose ``train_x`` / ``test_x`` are :class:`FileImages` — lazy stand-ins with the
tensor attributes the rest of the library reads (``len``, ``shape``, ``dim()``, ``dtype``) — and
whose extra evaluation splits (Clothing1M ``val``, WebVision ``imagenet``) live in ``eval_splits``.

:class:`FileTrainBatches` and :class:`FileEvalBatches` have the interface of the in-memory
:class:`~noisylab.data.base.TrainBatches` / :class:`~noisylab.data.base.EvalBatches`: batches
``(x, y, index)`` on the device, the epoch order a function of the seed only, ``rank/world_size``
sharding. Decoding (Pillow), resizing, cropping and flipping run in DataLoader workers and yield
uint8 ``[B, C, S, S]``; the conversion to float and the normalisation happen on the device. A
fresh worker pool serves each pass and is stopped when the pass ends or is abandoned. Each
image's crop offset and flip come from a per-image seed drawn from the epoch seed in the main
process, so the batches do not depend on the number of workers or their scheduling.

Per image, the training view is ``Resize(resize)`` (shorter side; skipped when None or already
that size) -> random ``size x size`` crop -> horizontal flip with p = 1/2; the evaluation view is
``Resize(resize)`` -> centre crop. Images smaller than the crop are zero-padded (centred) first.

Damaged and unusual files (docs/damaged-files.md): :func:`open_image` decodes every image the same
way — the first frame of an animation, EXIF orientation applied, 16-bit grey scaled (not clipped)
to 8 bits, transparency composited on black, then RGB or L. :func:`screen_image_files` is the check
pass a loader runs when it builds the dataset: files that cannot be fully decoded (empty, not an
image, truncated or corrupt, unreadable) are dropped and listed as ``(path, reason)`` in
``bundle.extra["skipped_files"]`` (:func:`skipped_files`, :func:`write_skipped_files`), or refused
all at once with ``strict``. A file that passed the check and fails later in a DataLoader worker
(it changed on disk) stops the pass with one :class:`DataError` naming it; the worker does not die.
"""
from __future__ import annotations

import csv
import errno
import logging
import os
import random
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from ..config import ConfigError
from .base import Batch, BatchTransform, DataBundle, DataError, EpochBatching, batch_bounds, run_in_chunks, to_float
from .sampling import BalancedSubset

FILE_DECODED_RECIPES = ("none", "crop", "crop_flip")
"""View recipes that file datasets decode in their DataLoader workers (see :class:`FileTrainBatches`)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

ALPHA_BACKGROUND = (0, 0, 0)
"""Colour transparent pixels are composited on (RGBA, LA, PA, palette or colour-key transparency):
black, so a fully transparent pixel stored as ``(0, 0, 0, 0)`` decodes as Pillow's plain
``convert("RGB")`` (torchvision's loader) would decode it, and padding is black too."""

log = logging.getLogger("noisylab")


class DamagedFilesError(DataError, ConfigError):
    """Damaged image files make the dataset unusable as configured (``strict_files``, a class or a
    split left without images). Both a :class:`DataError` and the config's :class:`ConfigError`:
    one line naming the first bad file, how many there are and the fix."""


def default_num_workers() -> int:
    """DataLoader workers for file datasets: one per core, at most 8."""
    return max(0, min(8, os.cpu_count() or 1))


# ----------------------------------------------------------------------------- decoding
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_8bit_mode(im, channels: int = 3):
    """A decoded PIL image as a new image in mode RGB (``channels=3``) or L (``channels=1``).

    16-bit grey (``I;16*``, and ``I`` taken as 0..65535, values outside clipped) is scaled to 8 bits
    as ``round(v * 255 / 65535)`` (Pillow's own conversion clips at 255 instead); any transparency
    (an alpha band, palette or colour-key transparency) is composited on :data:`ALPHA_BACKGROUND`;
    grey is replicated to RGB; CMYK, YCbCr, ... use Pillow's conversion (no ICC colour management).
    """
    from PIL import Image

    target = "RGB" if channels == 3 else "L"
    if im.mode in _SIXTEEN_BIT:
        v = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        grey = Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8), "L")
        return grey.convert(target) if target != "L" else grey
    has_alpha = getattr(im, "has_transparency_data", None)
    if has_alpha is None:  # Pillow < 10.1
        has_alpha = im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("LA" if im.mode == "La" else "RGBA")  # La: Pillow has no La -> RGBA
        rgba = rgba.convert("RGBA") if rgba.mode != "RGBA" else rgba
        out = Image.new("RGB", im.size, ALPHA_BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out.convert(target) if target != "RGB" else out
    if im.mode == "F":
        im = im.convert("L")  # 32-bit float: values taken as 0..255, clipped (Pillow's conversion)
    elif im.mode not in ("RGB", "L", "1", "P"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ... (to L via RGB)
    return im.convert(target)


def _decode(path: str, channels: int, quick: bool = False):
    """Open, fully decode and normalise ``path`` (first frame, EXIF orientation, :func:`to_8bit_mode`).
    ``quick``: decode JPEGs at 1/8 scale (the whole file is still read and decoded, so damage is
    found as in a full decode, only faster) — for the check pass. Raises what Pillow raises."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if quick and im.format == "JPEG":
            im.draft(im.mode, (1, 1))
        im.load()  # the first frame of an animation; a truncated file raises (LOAD_TRUNCATED_IMAGES is not set)
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # unreadable EXIF: the pixels are fine, keep them as stored
            orientation = 1
        if orientation not in (1, None):
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:
                pass
        return to_8bit_mode(im, channels)


def damage_reason(path: str, err: BaseException) -> str:
    """Why ``path`` could not be decoded, in a few words (the ``reason`` of a skipped file)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(err, FileNotFoundError):
        return "cannot read image file: file not found"
    if isinstance(err, OSError) and (isinstance(err, (PermissionError, IsADirectoryError))
                                     or err.errno in (errno.EACCES, errno.EPERM, errno.EISDIR)):
        return f"cannot read image file: {err.strerror or err}"
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        empty = False
    if empty:
        return "cannot decode image: empty file (0 bytes)"
    if isinstance(err, UnidentifiedImageError):
        return "cannot decode image: not an image file Pillow can read"
    if isinstance(err, Image.DecompressionBombError):
        return f"cannot decode image: too large ({' '.join(str(err).split())})"
    detail = " ".join(str(err).split()) or type(err).__name__
    return f"cannot decode image: truncated or corrupt ({detail})"


def open_image(path: str, channels: int = 3, where: str = ""):
    """Decode ``path`` with Pillow into mode RGB (``channels=3``) or L (``channels=1``): the first
    frame, EXIF orientation applied, then :func:`to_8bit_mode`.

    Raises :class:`DataError` naming the file (and ``where`` it was listed) when it is missing or
    not a readable image (the message then holds :func:`damage_reason`).
    """
    try:
        return _decode(path, channels)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found{where}; fix the list or restore the file") from None
    except Exception as err:  # anything Pillow raises on a damaged file
        raise DataError(f"{path}: {damage_reason(path, err)}{where}; replace or remove the file") from None


def check_image(path: str, channels: int = 3) -> str | None:
    """None when ``path`` decodes fully (as :func:`open_image` would), else its :func:`damage_reason`."""
    try:
        _decode(path, channels, quick=True)
    except Exception as err:
        return damage_reason(path, err)
    return None


def find_damaged(paths: Sequence[str], channels: int = 3, threads: int | None = None) -> list[tuple[int, str]]:
    """``(index, reason)`` of each of ``paths`` that cannot be decoded, in order; the files are
    decoded on a few threads (Pillow releases the GIL), JPEGs at 1/8 scale."""
    reasons: list[str | None] = [None] * len(paths)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            reasons[i] = check_image(paths[i], channels)

    run_in_chunks(work, len(paths), 64, threads)
    return [(i, r) for i, r in enumerate(reasons) if r is not None]


def screen_image_files(
    splits: dict[str, tuple[Sequence[str], np.ndarray]], class_names: Sequence[str], *, channels: int = 3,
    strict: bool = False, threads: int | None = None,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """The check pass over the image files of a dataset, before any training.

    Args:
        splits: ``{split name: (paths, int64 labels)}``, e.g. ``train`` and ``test``.
        class_names: names of the label values (for messages).
        strict: refuse any damaged file (``data.options.strict_files``).

    Returns ``({split: indices of the files kept}, skipped)`` with ``skipped`` the ``(path,
    reason)`` of every dropped file (logged as one warning). Raises :class:`DamagedFilesError`
    (one line: the first bad file, how many, the fix) with ``strict`` and any damaged file, when
    every file of a split is damaged, or when every file of a class in a split is.
    """
    keep: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    found: dict[str, tuple[list[tuple[int, str]], int, np.ndarray]] = {}
    for split, (paths, labels) in splits.items():
        bad = find_damaged(paths, channels, threads)
        mask = np.ones(len(paths), dtype=bool)
        mask[[i for i, _ in bad]] = False
        keep[split] = np.flatnonzero(mask)
        skipped += [(str(paths[i]), r) for i, r in bad]
        found[split] = (bad, len(paths), np.asarray(labels, dtype=np.int64))
    if not skipped:
        return keep, skipped
    first = f"{skipped[0][0]}: {skipped[0][1]}"
    n = len(skipped)
    files = f"{n} damaged image file{'s' if n != 1 else ''}"
    if strict:
        raise DamagedFilesError(f"data.options.strict_files: {files}, the first {first}; remove them (or "
                                "replace them with readable images) or drop data.options.strict_files to skip "
                                "them with a warning")
    for split, (bad, total, labels) in found.items():
        if bad and len(bad) == total:
            raise DamagedFilesError(f"all {_files(total, split)} damaged, the "
                                    f"first {splits[split][0][bad[0][0]]}: {bad[0][1]}; replace them with "
                                    "readable images")
        left = np.bincount(labels[keep[split]], minlength=len(class_names))
        for i, r in bad:
            c = int(labels[i])
            if left[c] == 0:
                count = int((labels == c).sum())
                name = class_names[c] if c < len(class_names) else str(c)
                raise DamagedFilesError(f"class '{name}': all {_files(count, split)} damaged, the first "
                                        f"{splits[split][0][i]}: {r}; replace them with "
                                        "readable images or remove the class")
    log.warning("skipped %s (the first %s); remove or replace them, or set data.options.strict_files to refuse "
                "them", files, first)
    return keep, skipped


def _files(n: int, split: str) -> str:
    return f"{n} {split} image file{'s are' if n != 1 else ' is'}"


def skipped_files(bundle: DataBundle) -> list[tuple[str, str]]:
    """The ``(path, reason)`` of the damaged image files the loader dropped (empty for datasets
    without a check pass)."""
    return list(bundle.extra.get("skipped_files", ()))


def write_skipped_files(path: str | os.PathLike, skipped: Sequence[tuple[str, str]]) -> None:
    """Write ``skipped`` as a CSV with the header ``path,reason``, atomically (a temporary file in
    the same folder, then ``os.replace``): readers see the old file or the whole new one."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows([str(p), str(r)] for p, r in skipped)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def resize_short_side(img, size: int | None):
    """Resize a PIL image so its shorter side is ``size`` (bilinear), as ``torchvision``'s
    ``Resize(size)``: the longer side becomes ``int(size * long / short)``."""
    if size is None:
        return img
    from PIL import Image

    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_long = int(size * long_ / short)
    new = (size, new_long) if w <= h else (new_long, size)
    return img.resize(new, Image.BILINEAR)


def crop_array(a: np.ndarray, size: int, top: int | None = None, left: int | None = None) -> np.ndarray:
    """``size x size`` crop of ``a [H, W, C]`` at ``(top, left)`` (None: centred, rounding as
    torchvision's ``CenterCrop``); images smaller than ``size`` are zero-padded (centred) first."""
    h, w = a.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        a = np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = a.shape[:2]
    if top is None:
        top = int(round((h - size) / 2.0))
    if left is None:
        left = int(round((w - size) / 2.0))
    return a[top : top + size, left : left + size]


def decode_view(
    path: str, size: int, resize: int | None, channels: int = 3,
    seed: int | None = None, flip: bool = True, where: str = "",
) -> torch.Tensor:
    """One image as uint8 ``[C, size, size]``: the evaluation view (``seed`` None) or the random
    training view whose crop offset and flip are drawn from ``random.Random(seed)``."""
    img = resize_short_side(open_image(path, channels, where), resize)
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if seed is None:
        a = crop_array(a, size)
    else:
        rng = random.Random(seed)
        h, w = max(a.shape[0], size), max(a.shape[1], size)
        top, left = rng.randint(0, h - size), rng.randint(0, w - size)
        a = crop_array(a, size, top, left)
        if flip and rng.random() < 0.5:
            a = a[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


# ----------------------------------------------------------------------------- lazy images
class FileImages:
    """A lazy ``uint8 [N, C, size, size]`` image tensor backed by files.

    Args:
        files: image paths, absolute or relative to ``root``; kept as a compact numpy byte array
            (so DataLoader workers do not copy a million Python strings).
        root: folder the relative paths are joined to ('' for none).
        size: side of the square crop the model sees.
        resize: shorter side the image is resized to before cropping (None: keep).
        channels: 3 (RGB) or 1 (grey).
        list_file, lines: where each path was listed (for error messages), optional.

    ``len``, ``shape``, ``dim()``, ``ndim`` and ``dtype`` behave like the tensor's;
    ``images[i]`` / ``images[index_array]`` decode the evaluation view(s).
    """

    dtype = torch.uint8

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
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.channels, self.size, self.size))

    @property
    def ndim(self) -> int:
        return 4

    def dim(self) -> int:
        return 4

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

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.dim() == 0):
            return self.load(int(index))
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index).reshape(-1)
        if len(idx) == 0:
            return torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
        return torch.stack([self.load(int(i)) for i in idx])

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
    """A :class:`DataBundle` whose images are files (``train_x`` / ``test_x`` are :class:`FileImages`).

    Attributes (besides DataBundle's):
        eval_splits: further labelled evaluation sets by name, e.g. Clothing1M ``"val"`` (clean
            validation) or WebVision ``"imagenet"`` (ILSVRC12 validation of the first 50 classes):
            ``name -> (FileImages, int64 labels)``.
        num_workers: default DataLoader workers for this dataset.
    """

    eval_splits: dict[str, tuple[FileImages, np.ndarray]] = field(default_factory=dict)
    num_workers: int = field(default_factory=default_num_workers)


def is_file_backed(bundle: DataBundle) -> bool:
    return isinstance(bundle.train_x, FileImages)


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


class FileTrainBatches(EpochBatching):
    """Shuffled, augmented batches of a file-backed dataset, on ``device``.

    Same contract as :class:`~noisylab.data.base.TrainBatches`: ``len()`` batches per epoch,
    ``num_examples``, ``epoch(seed)`` yields ``(x, y int64 [B], index int64 [B])`` with the order a
    function of ``seed`` only (the same permutation as the in-memory class), disjoint equal shards
    for ``rank/world_size``. ``x`` is one float ``[B, C, S, S]`` normalised view, a tuple of them
    for several ``views``, or ``()`` for none.

    Args:
        images: the training images.
        labels: ``int64 [N]`` training labels (noisy).
        views: one recipe name per view: ``crop_flip`` (random crop + flip), ``crop`` and ``none``
            (centre crop) are decoded in the workers; any other recipe (``simclr``) needs a
            batched transform in ``device_transforms``, applied on the device to the decoded
            centre crop (uint8).
        device_transforms: ``{view position: transform}`` for those recipes.
        indices: subset of dataset indices to draw from (default all).
        balanced: optional :class:`BalancedSubset` — each epoch uses a class-balanced subset of
            ``indices`` by ``labels`` (ELR+ Clothing1M).
        num_classes: needed with ``balanced``.
        num_workers: DataLoader worker processes (0: decode in the main process).
    """

    def __init__(
        self, images: FileImages, labels: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
        mean: Sequence[float] | None, std: Sequence[float] | None, views: str | Sequence[str] = "crop_flip",
        indices: np.ndarray | None = None, last_batch: str = "keep", rank: int = 0, world_size: int = 1,
        num_workers: int = 0, balanced: BalancedSubset | None = None, num_classes: int | None = None,
        device_transforms: dict[int, BatchTransform] | None = None,
    ) -> None:
        self.views = (views,) if isinstance(views, str) else tuple(views)
        self.device_transforms = dict(device_transforms or {})
        for k, v in enumerate(self.views):
            if v not in FILE_DECODED_RECIPES and k not in self.device_transforms:
                raise DataError(f"augmentation '{v}' has no batched transform for the file-backed dataset "
                                f"(decoded in workers: {', '.join(FILE_DECODED_RECIPES)})")
        # what the workers decode per view; device-side recipes start from the centre crop
        self._specs = tuple(v if v in ("crop", "crop_flip") and k not in self.device_transforms else "center"
                            for k, v in enumerate(self.views))
        self.images = images
        self.labels_np = np.asarray(labels, dtype=np.int64)
        if len(self.labels_np) != len(images):
            raise DataError(f"{len(self.labels_np)} labels for {len(images)} training images")
        self.device = torch.device(device)
        self.labels = torch.as_tensor(self.labels_np).to(self.device)
        self.mean, self.std = mean, std
        self.pool = np.arange(len(images), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        self._set_batching(batch_size, last_batch, rank, world_size)
        self.num_workers = int(num_workers)
        self.balanced = balanced
        self.num_classes = num_classes
        if balanced is not None:
            if num_classes is None:
                raise ValueError("balanced subsets need num_classes")
            self.indices = balanced.draw(self.labels_np, self.pool, self.batch_size, num_classes)
        else:
            self.indices = self.pool
        self._sampler = _KeyBatches()

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def epoch(self, seed: int) -> Iterator[Batch]:
        if self.balanced is not None and self.balanced.redraw_each_epoch:
            self.indices = self.balanced.draw(self.labels_np, self.pool, self.batch_size, self.num_classes, seed)
        order = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(seed))
        view_seeds = torch.randint(0, 2**62, (len(order),), generator=torch.Generator().manual_seed(seed + 1))
        order, view_seeds = self.shard(order), self.shard(view_seeds)
        idx = self.indices[order.numpy()]
        bounds = self.bounds
        if not self.views:  # labels and indices only
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                index = torch.as_tensor(idx[lo:hi]).to(self.device)
                yield (), self.labels[index], index
            return
        self._sampler.set(idx, view_seeds.numpy(), bounds)
        on_device = self.device_transforms
        gen = torch.Generator(device=self.device).manual_seed(seed + 2) if on_device else None
        for item in _iterate(_ViewDataset(self.images, self._specs), self._sampler, self.num_workers, self.device):
            _raise_failure(item)
            raw, index = item
            index = index.to(self.device, non_blocking=True)
            xs = []
            for k, r in enumerate(raw):
                r = r.to(self.device, non_blocking=True)
                xs.append(on_device[k](r, gen) if k in on_device else to_float(r, self.mean, self.std))
            yield (xs[0] if len(xs) == 1 else tuple(xs)), self.labels[index], index


class FileEvalBatches:
    """Fixed-order, evaluation-view batches ``(x, y, index)`` of file-backed images on ``device``
    (the file counterpart of :class:`~noisylab.data.base.EvalBatches`)."""

    def __init__(
        self, images: FileImages, labels: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
        mean: Sequence[float] | None, std: Sequence[float] | None, indices: np.ndarray | None = None,
        num_workers: int = 0,
    ) -> None:
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.indices = np.asarray(np.arange(len(images)) if indices is None else indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.mean, self.std = mean, std
        self.num_workers = int(num_workers)
        self._bounds = batch_bounds(len(self.indices), self.batch_size)  # every example, the last batch kept
        self._sampler = _KeyBatches()
        self._sampler.set(self.indices, np.full(len(self.indices), -1), self._bounds)

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __iter__(self) -> Iterator[Batch]:
        for item in _iterate(_ViewDataset(self.images), self._sampler, self.num_workers, self.device):
            _raise_failure(item)
            (x,), index = item
            y = self.labels[index].to(self.device)
            yield to_float(x.to(self.device, non_blocking=True), self.mean, self.std), y, index.to(self.device)


# ----------------------------------------------------------------------------- list files
_INT_TOKEN = re.compile(r"[+-]?[0-9]+\Z")


def read_list(list_file: str | os.PathLike, with_labels: bool = True, num_classes: int | None = None,
              ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read a whitespace-separated list file: ``<path> <label>`` per line (or ``<path>`` alone
    with ``with_labels=False``). Blank lines are skipped.

    Returns ``(paths, labels int64 [n] (-1 without labels), line numbers int64 [n])``. Raises
    :class:`DataError` naming the file and line for a missing file, a malformed line, a label
    that is not a plain integer (``1.5``, ``1_0``, ``one``), a negative label or (with
    ``num_classes``) a label outside ``[0, num_classes)``.
    """
    list_file = str(list_file)
    try:
        with open(list_file, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{list_file}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{list_file}: cannot read ({err})") from None
    paths: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    want = 2 if with_labels else 1
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != want:
            form = "'<path> <label>'" if with_labels else "'<path>'"
            raise DataError(f"{list_file} line {n}: expected {form}, got {line.strip()!r}")
        paths.append(parts[0])
        lines.append(n)
        if with_labels:
            if not _INT_TOKEN.match(parts[1]):
                raise DataError(f"{list_file} line {n}: label {parts[1]!r} is not an integer; each line must be "
                                "'<path> <label>' with an integer class index 0, 1, 2, ...: correct this line")
            lab = int(parts[1])
            if lab < 0:
                raise DataError(f"{list_file} line {n}: label {lab} is negative; labels are class indices "
                                "0, 1, 2, ...: correct this line")
            if num_classes is not None and lab >= num_classes:
                raise DataError(f"{list_file} line {n}: label {lab} is outside the class range [0, {num_classes}); "
                                "correct this line")
            labels.append(lab)
    lab_arr = np.asarray(labels, dtype=np.int64) if with_labels else np.full(len(paths), -1, dtype=np.int64)
    return paths, lab_arr, np.asarray(lines, dtype=np.int64)
