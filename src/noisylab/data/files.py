"""Image files: decoding them one way, finding the damaged ones before training, and reading list
files (``<path> <label>`` per line). The file storage backend that reads them during training is
:mod:`noisylab.data.filestream`.

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
from typing import Sequence

import numpy as np
import torch

from ..config import ConfigError
from .base import DataBundle, DataError, run_in_chunks

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
