"""Your own data, without writing code: an image folder, a CSV of ``path,label``, or an ``.npz``.

Datasets (``data.dataset`` / ``load_dataset(name, root, ...)``):

``folder``
    ``root/<class name>/**/<image>`` — one sub-folder per class (class order = sorted folder
    names, as torchvision's ``ImageFolder``). If ``root`` has ``train/`` and ``test/`` (or
    ``val/``) sub-folders that each hold class folders, they are the two splits; otherwise
    everything is training data, and ``test_root`` may name a separate test folder. Hidden files
    and folders (``.name``) are ignored; a class folder without image files is refused.
``csv``
    ``root`` is a CSV file with two columns ``path,label`` (an optional header row whose fields
    are e.g. ``path,label`` / ``filename,class`` is skipped). Relative paths are relative to the
    CSV's folder (or ``image_root``). Labels are either all integers (class indices ``0..K-1``)
    or class names (classes = their sorted set over train and test, unless ``class_names`` is
    given); negative integers, non-integer numbers (``1.5``, ``1.0``; unless listed in
    ``class_names``) and, without ``class_names``, integers mixed with names are refused with the
    file and line.
    ``test_csv`` names an optional test CSV.
``npz``
    ``root`` is an ``.npz`` with ``x`` and ``y`` and optionally ``x_test``, ``y_test`` and
    ``class_names``. ``x`` may be features ``[N, D]``, grey images ``[N, H, W]`` or images
    ``[N, C, H, W]`` / ``[N, H, W, C]`` (C in 1, 3; uint8 images stay uint8, other types become
    float32 and are used as they are). ``y`` holds integer class indices or class-name strings.
    Loaded with ``allow_pickle=False``.

Images from folders and CSVs are decoded into memory as uint8 ``[N, C, S, S]`` (``S =
image_size``: shorter side resized to S, then the centre S x S crop) when they fit in
``max_memory_mb`` — the fast path with batched on-device augmentation (random crop with
``S/8`` padding + flip by default). Larger sets become a file-backed bundle read by DataLoader
workers (resize to ``resize``, random ``S`` crop + flip). Normalisation: per-channel mean/std of
the training images unless ``mean``/``std`` are given (ImageNet's for file-backed sets).

Before decoding, every image of a folder or CSV is checked (a full decode on a few threads):
damaged files — empty, not an image, truncated or corrupt, unreadable — are dropped with one
warning and listed as ``(path, reason)`` in ``bundle.extra["skipped_files"]``; with
``strict_files: true`` any damaged file is refused instead (docs/damaged-files.md).

The given labels are taken as possibly wrong: ``labels_are_clean`` is False unless set.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import DataBundle, DataError, run_in_chunks
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .files import IMAGE_EXTENSIONS, crop_array, default_num_workers, open_image, resize_short_side, screen_image_files
from .filestream import FileDataBundle, FileImages
from .registry import register_dataset

_HEADER_PATH = {"path", "file", "filename", "file_name", "image", "image_path", "img", "filepath"}
_HEADER_LABEL = {"label", "labels", "class", "class_name", "target", "y", "category"}


# ----------------------------------------------------------------------------- helpers
def decode_images(paths: Sequence[str], size: int, channels: int = 3, where: Sequence[str] | None = None,
                  threads: int | None = None) -> torch.Tensor:
    """Decode image files into uint8 ``[N, C, size, size]`` (shorter side resized to ``size``,
    bilinear, then centre crop), a few threads at a time (Pillow releases the GIL)."""
    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            img = resize_short_side(open_image(paths[i], channels, where[i] if where else ""), size)
            a = np.asarray(img)
            out[i] = crop_array(a[:, :, None] if a.ndim == 2 else a, size)

    run_in_chunks(work, len(paths), 256, threads)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) of uint8 images ``[N, C, H, W]``."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    n = 0
    for lo in range(0, len(x), chunk):
        b = x[lo : lo + chunk].to(torch.float64) / 255.0
        s += b.sum(dim=(0, 2, 3))
        s2 += (b * b).sum(dim=(0, 2, 3))
        n += b.numel() // c
    if n == 0:
        return (0.5,) * c, (0.25,) * c
    mean = s / n
    std = torch.sqrt(torch.clamp(s2 / n - mean * mean, min=1e-12))
    return tuple(round(float(v), 4) for v in mean), tuple(round(max(float(v), 1e-3), 4) for v in std)


def _channels(color: str) -> int:
    if color in ("rgb", "RGB", 3):
        return 3
    if color in ("gray", "grey", "L", 1):
        return 1
    raise DataError(f"color must be 'rgb' or 'gray', got {color!r}")


def _image_bundle(
    name: str, train_paths: list[str], train_labels: np.ndarray, test_paths: list[str] | None,
    test_labels: np.ndarray | None, class_names: list[str], *, image_size: int, color: str,
    in_memory: bool | str, max_memory_mb: float, resize: int | None, mean, std, augment: str | None,
    labels_are_clean: bool, num_workers: int | None, where_train: list[str] | None = None,
    where_test: list[str] | None = None, extra: dict | None = None, strict_files: bool = False,
) -> DataBundle:
    channels = _channels(color)
    size = int(image_size)
    # the check pass (docs/damaged-files.md): damaged files are dropped (or refused) before training
    splits = {"train": (train_paths, train_labels)}
    if test_paths:
        splits["test"] = (test_paths, test_labels)
    keep, skipped = screen_image_files(splits, class_names, channels=channels, strict=bool(strict_files))
    if skipped:
        k = keep["train"]
        train_paths, train_labels = [train_paths[i] for i in k], np.asarray(train_labels)[k]
        where_train = [where_train[i] for i in k] if where_train else where_train
        if test_paths:
            k = keep["test"]
            test_paths, test_labels = [test_paths[i] for i in k], np.asarray(test_labels)[k]
            where_test = [where_test[i] for i in k] if where_test else where_test
    extra = dict(extra or {})
    extra.update(train_files=train_paths, test_files=test_paths, skipped_files=skipped)
    n_total = len(train_paths) + len(test_paths or [])
    fits = n_total * channels * size * size <= max_memory_mb * 2**20
    memory = fits if in_memory == "auto" else bool(in_memory)
    if memory:
        x_train = decode_images(train_paths, size, channels, where_train)
        x_test = decode_images(test_paths, size, channels, where_test) if test_paths else None
        if mean is None or std is None:
            mean, std = channel_stats(x_train)
        return DataBundle(
            name=name, train_x=x_train, train_labels=train_labels, test_x=x_test,
            test_labels=test_labels if test_paths else None, num_classes=len(class_names),
            class_names=class_names, mean=tuple(mean), std=tuple(std),
            augment=augment or "crop_flip", crop_padding=max(1, size // 8),
            labels_are_clean=labels_are_clean, extra=extra,
        )
    resize = int(resize) if resize is not None else int(round(size * 256 / 224))
    if mean is None or std is None:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.25,))
    train = FileImages(train_paths, "", size=size, resize=resize, channels=channels)
    test = FileImages(test_paths, "", size=size, resize=resize, channels=channels) if test_paths else None
    train.check_exist()
    if test is not None:
        test.check_exist()
    return FileDataBundle(
        name=name, train_x=train, train_labels=train_labels, test_x=test,
        test_labels=test_labels if test_paths else None, num_classes=len(class_names),
        class_names=class_names, mean=tuple(mean), std=tuple(std), augment=augment or "crop_flip",
        labels_are_clean=labels_are_clean, extra=extra,
        num_workers=default_num_workers() if num_workers is None else int(num_workers),
    )


# ----------------------------------------------------------------------------- folder
def _scan_class_folders(folder: Path) -> dict[str, list[str]]:
    """``{class name: image files}`` of the (non-hidden) sub-folders of ``folder``, each class's
    files found recursively (hidden files and folders skipped) and sorted."""
    try:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as err:
        raise DataError(f"{folder}: cannot read the folder ({err.strerror or err}); check its permissions") from None
    out: dict[str, list[str]] = {}
    for c in classes:
        files: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder / c, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
        out[c] = files
    return out


def _other_files(folder: Path, limit: int = 3) -> tuple[int, list[str]]:
    """How many non-hidden files below ``folder`` are not images, and the names of the first few."""
    count, names = 0, []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                count += 1
                if len(names) < limit:
                    names.append(f)
    return count, names


def _class_folders(folder: Path) -> dict[str, list[str]]:
    """:func:`_scan_class_folders`, refusing a folder without class sub-folders and a class
    sub-folder without images (one :class:`DataError` line naming the folder and the fix)."""
    found = _scan_class_folders(folder)
    if not found:
        loose = sum(1 for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        here = f" (it holds {loose} image file{'s' if loose != 1 else ''} directly)" if loose else ""
        raise DataError(f"{folder}: no class sub-folders{here}; put the images of each class in "
                        f"{folder}{os.sep}<class name>{os.sep}")
    for c, files in found.items():
        if not files:
            n_other, other = _other_files(folder / c)
            holds = (f", only {n_other} other file{'s' if n_other != 1 else ''} such as {', '.join(other)}"
                     if n_other else "")
            raise DataError(f"{folder / c}: class folder '{c}' has no images (accepted extensions: "
                            f"{' '.join(IMAGE_EXTENSIONS)}{holds}); add images of class '{c}' to it or "
                            "remove the folder")
    return found


def _is_split_layout(root: Path) -> tuple[Path, Path] | None:
    train = root / "train"
    if not train.is_dir():
        return None
    for name in ("test", "val"):
        test = root / name
        if test.is_dir() and any(d.is_dir() for d in train.iterdir()):
            return train, test
    return None


@register_dataset("folder")
def load_folder(
    root: str | None = None, test_root: str | None = None, image_size: int = 32, color: str = "rgb",
    in_memory: bool | str = "auto", max_memory_mb: float = 2048, resize: int | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, augment: str | None = None,
    labels_are_clean: bool = False, num_workers: int | None = None, strict_files: bool = False,
) -> DataBundle:
    """An image folder with one sub-folder per class (see the module doc)."""
    if root is None:
        raise DataError("the folder dataset needs data.root: a folder with one sub-folder of images per class")
    base = Path(root).expanduser()
    if not base.is_dir():
        problem = "is a file, not a folder" if base.exists() else "folder not found"
        raise DataError(f"{base}: {problem}; data.root must be a folder with one sub-folder of images per class")
    split = _is_split_layout(base) if test_root is None else (base, Path(test_root).expanduser())
    train_dir, test_dir = split if split else (base, None)
    if test_dir is not None and not test_dir.is_dir():
        problem = "is a file, not a folder" if test_dir.exists() else "test folder not found"
        raise DataError(f"{test_dir}: {problem}; data.test_root must be a folder with one sub-folder of images "
                        "per class (named as the training classes)")
    train = _class_folders(train_dir)
    class_names = list(train)
    paths = [p for c in class_names for p in train[c]]
    labels = np.asarray([k for k, c in enumerate(class_names) for _ in train[c]], dtype=np.int64)
    test_paths = test_labels = None
    if test_dir is not None:
        test = _class_folders(test_dir)
        unknown = [c for c in test if c not in train]
        if unknown:
            raise DataError(f"{test_dir / unknown[0]}: class folder '{unknown[0]}' has no training folder "
                            f"in {train_dir}")
        test_paths = [p for c in test for p in test[c]]
        test_labels = np.asarray([class_names.index(c) for c in test for _ in test[c]], dtype=np.int64)
    return _image_bundle(
        "folder", paths, labels, test_paths, test_labels, class_names, image_size=image_size, color=color,
        in_memory=in_memory, max_memory_mb=max_memory_mb, resize=resize, mean=mean, std=std, augment=augment,
        labels_are_clean=labels_are_clean, num_workers=num_workers,
        extra={"train_files": paths, "test_files": test_paths, "root": str(base)}, strict_files=strict_files,
    )


# ----------------------------------------------------------------------------- csv
def read_path_label_csv(csv_file: Path, image_root: Path | None = None) -> tuple[list[str], list[str], list[int]]:
    """Rows of a ``path,label`` CSV: ``(absolute paths, raw label strings, line numbers)``.

    Raises :class:`DataError` with file and line for a missing file, a row without exactly two
    fields, an empty path or label, or a file without data rows.
    """
    try:
        with open(csv_file, "r", encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{csv_file}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_file}: cannot read as CSV ({err})") from None
    folder = image_root if image_root is not None else csv_file.parent
    paths, labels, lines = [], [], []
    first, header_seen = True, False
    for n, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        header = len(row) == 2 and row[0].strip().lower() in _HEADER_PATH and row[1].strip().lower() in _HEADER_LABEL
        if first:
            first = False
            if header:
                header_seen = True
                continue
        if len(row) != 2:
            raise DataError(f"{csv_file} line {n}: expected 2 fields 'path,label', got {len(row)}: {','.join(row)!r}")
        p, lab = row[0].strip(), row[1].strip()
        if not p or not lab:
            raise DataError(f"{csv_file} line {n}: empty {'path' if not p else 'label'} in {','.join(row)!r}; "
                            "every row needs an image path and a label (an integer class index or a class name)")
        paths.append(p if os.path.isabs(p) else str(folder / p))
        labels.append(lab)
        lines.append(n)
    if not paths:
        what = "only a header row" if header_seen else "the file is empty"
        raise DataError(f"{csv_file}: no data rows ({what}); add one line 'path,label' per image")
    return paths, labels, lines


_INT_LABEL = re.compile(r"[+-]?[0-9]+\Z")
_NUMBER_LABEL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_LABEL_RULE = "labels must be all integer class indices (0, 1, 2, ...) or all class names (e.g. cat, dog)"


def _label_kind(s: str) -> str:
    """``'int'`` (ASCII digits with an optional sign), ``'number'`` (any other decimal number:
    ``1.5``, ``1.0``, ``2e3``) or ``'name'``."""
    if _INT_LABEL.match(s):
        return "int"
    if _NUMBER_LABEL.match(s):
        return "number"
    return "name"


def _check_label_kinds(entries: list[tuple[Path, int, str]], class_names: Sequence[str] | None) -> bool:
    """Whether the labels ``(file, line, label)`` are integer class indices (True) or class names
    (False). Raises :class:`DataError` naming file, line and value for a non-integer number that is
    not one of ``class_names``, and (without ``class_names``) for integers mixed with names."""
    given = {str(c) for c in class_names} if class_names is not None else set()
    kinds = [_label_kind(s) for _, _, s in entries]
    for (f, n, s), kind in zip(entries, kinds):
        if kind == "number" and s not in given:
            v = float(s)
            fix = (f"write {int(v)} instead of {s}" if v.is_integer() and 0 <= v < 1e15
                   else "correct this label")
            raise DataError(f"{f} line {n}: label {s!r} is a number but not an integer; {_LABEL_RULE}: {fix}")
    if all(k == "int" for k in kinds):
        return True
    if class_names is None:
        ints = [e for e, k in zip(entries, kinds) if k == "int"]
        names = [e for e, k in zip(entries, kinds) if k == "name"]
        if ints:
            odd, usual = (ints, names) if len(ints) <= len(names) else (names, ints)
            (f, n, s), (uf, un, us) = odd[0], usual[0]
            where = f"line {un}" if uf == f else f"{uf} line {un}"
            if odd is ints:
                raise DataError(f"{f} line {n}: label {s!r} is an integer but other labels are class names "
                                f"(e.g. {us!r} on {where}); {_LABEL_RULE}: correct this label, or list every "
                                "class name in data.class_names if numbers are class names too")
            header = " (if this row is a header, name its columns path,label)" if n == 1 else ""
            raise DataError(f"{f} line {n}: label {s!r} is a class name but other labels are integer class "
                            f"indices (e.g. {us!r} on {where}); {_LABEL_RULE}: correct this label{header}")
    return False


@register_dataset("csv")
def load_csv(
    root: str | None = None, test_csv: str | None = None, image_root: str | None = None,
    class_names: Sequence[str] | None = None, num_classes: int | None = None, image_size: int = 32,
    color: str = "rgb", in_memory: bool | str = "auto", max_memory_mb: float = 2048, resize: int | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, augment: str | None = None,
    labels_are_clean: bool = False, num_workers: int | None = None, strict_files: bool = False,
) -> DataBundle:
    """Images listed in a ``path,label`` CSV (see the module doc)."""
    if root is None:
        raise DataError("the csv dataset needs data.root: a CSV file with rows 'path,label'")
    files = [("train", Path(root).expanduser())] + ([("test", Path(test_csv).expanduser())] if test_csv else [])
    img_root = Path(image_root).expanduser() if image_root else None
    parsed = {split: (f, *read_path_label_csv(f, img_root)) for split, f in files}
    all_raw = [lab for _, _, raw, _ in parsed.values() for lab in raw]
    entries = [(f, n, s) for f, _, raw, lines in parsed.values() for s, n in zip(raw, lines)]
    integer = _check_label_kinds(entries, class_names)
    if class_names is not None:
        names = [str(c) for c in class_names]
    elif integer:
        k = num_classes if num_classes is not None else max(int(s) for s in all_raw) + 1
        names = [str(c) for c in range(k)]
    else:
        names = sorted(set(all_raw))
    k = len(names) if num_classes is None else int(num_classes)
    if len(names) != k:
        raise DataError(f"{root}: {len(names)} class names but num_classes={k}; make data.num_classes match "
                        "the classes or leave it out")
    lookup = {n: i for i, n in enumerate(names)}
    out = {}
    for split, (f, paths, raw, lines) in parsed.items():
        labels = np.empty(len(raw), dtype=np.int64)
        for i, (s, n) in enumerate(zip(raw, lines)):
            if integer:
                v = int(s)
                if v < 0:
                    raise DataError(f"{f} line {n}: label {s!r} is negative; integer labels are class indices "
                                    f"0, 1, 2, ... (0 is the first class): correct this label")
                if v >= k:
                    raise DataError(f"{f} line {n}: label {v} is outside the class range [0, {k}); correct the "
                                    "label or set data.num_classes (or data.class_names) to include it")
            elif s in lookup:
                v = lookup[s]
            else:
                raise DataError(f"{f} line {n}: unknown class {s!r} (classes: {', '.join(names[:10])}"
                                f"{', ...' if len(names) > 10 else ''}); correct the label or add the class "
                                "to data.class_names")
            labels[i] = v
        for p, n in zip(paths, lines):
            if not os.path.isfile(p):
                raise DataError(f"{p}: image file not found (listed in {f} line {n}); fix the CSV or restore the file")
        where = [f" (listed in {f} line {n})" for n in lines]
        out[split] = (paths, labels, where)
    train_paths, train_labels, where_train = out["train"]
    test_paths, test_labels, where_test = out.get("test", (None, None, None))
    return _image_bundle(
        "csv", train_paths, train_labels, test_paths, test_labels, names, image_size=image_size, color=color,
        in_memory=in_memory, max_memory_mb=max_memory_mb, resize=resize, mean=mean, std=std, augment=augment,
        labels_are_clean=labels_are_clean, num_workers=num_workers, where_train=where_train,
        where_test=where_test, extra={"train_files": train_paths, "test_files": test_paths, "root": str(root)},
        strict_files=strict_files,
    )


# ----------------------------------------------------------------------------- npz
def _npz_inputs(x: np.ndarray, path: Path, key: str, layout: str) -> torch.Tensor:
    if x.dtype.kind not in "uifb":
        raise DataError(f"{path}: '{key}' must be numeric, found dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        nhwc = layout == "nhwc" or (layout == "auto" and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3))
        if nhwc:
            x = x.transpose(0, 3, 1, 2)
        elif layout not in ("auto", "nchw"):
            raise DataError(f"layout must be 'auto', 'nchw' or 'nhwc', got {layout!r}")
    elif x.ndim != 2:
        raise DataError(f"{path}: '{key}' must be [N, D], [N, H, W] or [N, C, H, W] / [N, H, W, C]; "
                        f"found shape {x.shape}")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


@register_dataset("npz")
def load_npz(
    root: str | None = None, num_classes: int | None = None, layout: str = "auto",
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, augment: str | None = None,
    crop_padding: int | None = None, labels_are_clean: bool = False,
) -> DataBundle:
    """Arrays from an ``.npz`` file (see the module doc). Default augmentation: none."""
    if root is None:
        raise DataError("the npz dataset needs data.root: an .npz file with arrays x and y")
    path = Path(root).expanduser()
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except ValueError as err:
        raise DataError(f"{path}: cannot load without pickle ({err}); save plain numeric/string arrays "
                        "(no object arrays) with numpy.savez") from None
    except Exception as err:  # BadZipFile, OSError, EOFError
        raise DataError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array '{key}' (found: {', '.join(sorted(arrays)) or 'none'}); "
                            "save with numpy.savez(path, x=..., y=..., x_test=..., y_test=...)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: 'x_test' and 'y_test' must be given together")
    x = _npz_inputs(arrays["x"], path, "x", layout)
    x_test = _npz_inputs(arrays["x_test"], path, "x_test", layout) if "x_test" in arrays else None
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: 'x_test' inputs have shape {tuple(x_test.shape[1:])}, 'x' has {tuple(x.shape[1:])}")
    ys = {k: arrays[k] for k in ("y", "y_test") if k in arrays}
    for k, y in ys.items():
        if y.ndim != 1:
            raise DataError(f"{path}: '{k}' must be one label per example [N], found shape {y.shape}")
    given_names = [str(s) for s in arrays["class_names"]] if "class_names" in arrays else None
    if all(y.dtype.kind in "iu" for y in ys.values()):
        labels = {k: y.astype(np.int64) for k, y in ys.items()}
        top = max(int(y.max()) + 1 if len(y) else 0 for y in labels.values())
        k_cls = num_classes if num_classes is not None else (len(given_names) if given_names else top)
        names = given_names or [str(c) for c in range(k_cls)]
    elif all(y.dtype.kind in "US" for y in ys.values()):
        raw = {k: y.astype(str) for k, y in ys.items()}
        names = given_names or sorted(set(np.concatenate(list(raw.values())).tolist()))
        lookup = {n: i for i, n in enumerate(names)}
        labels = {}
        for k, y in raw.items():
            unknown = [s for s in y if s not in lookup]
            if unknown:
                raise DataError(f"{path}: '{k}' contains class {unknown[0]!r} that is not in 'class_names'")
            labels[k] = np.asarray([lookup[s] for s in y], dtype=np.int64)
        k_cls = num_classes if num_classes is not None else len(names)
    else:
        raise DataError(f"{path}: 'y' must hold integer class indices or class-name strings, "
                        f"found dtype {', '.join(str(y.dtype) for y in ys.values())}")
    if len(names) != k_cls:
        raise DataError(f"{path}: {len(names)} class names but {k_cls} classes")
    for k, y in labels.items():
        bad = np.flatnonzero((y < 0) | (y >= k_cls))
        if len(bad):
            raise DataError(f"{path}: '{k}'[{bad[0]}] = {y[bad[0]]} is outside the class range [0, {k_cls})")
    if len(labels["y"]) != len(x):
        raise DataError(f"{path}: 'x' has {len(x)} examples but 'y' has {len(labels['y'])}")
    if x_test is not None and len(labels["y_test"]) != len(x_test):
        raise DataError(f"{path}: 'x_test' has {len(x_test)} examples but 'y_test' has {len(labels['y_test'])}")
    images = x.dim() == 4 and x.dtype == torch.uint8
    default_pad = max(1, x.shape[-1] // 8) if x.dim() == 4 else 4
    if images and (mean is None or std is None):
        mean, std = channel_stats(x)
    return DataBundle(
        name="npz", train_x=x, train_labels=labels["y"], test_x=x_test, test_labels=labels.get("y_test"),
        num_classes=k_cls, class_names=names, mean=tuple(mean) if images else None,
        std=tuple(std) if images else None, augment=augment or "none",
        crop_padding=int(crop_padding) if crop_padding is not None else default_pad,
        labels_are_clean=labels_are_clean, extra={"source": str(path)},
    )


def data_kind(path: str | Path) -> str:
    """The noisylab dataset a path is: ``folder``, ``csv``, ``npz`` or ``hf`` (a ``save_to_disk``
    folder); ValueError naming what was found otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(2, "No such file or folder", str(p))
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return "hf"
        return "folder"
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".npz":
        return "npz"
    raise ValueError(f"{p}: not a dataset noisylab reads (a folder of class folders, a .csv of path,label rows, "
                     "an .npz, or a Hugging Face save_to_disk folder); for embeddings give features and labels")


def npz_holds_features(path: str | Path) -> bool:
    """Whether an ``.npz`` holds embeddings (``x`` of shape [N, D], not uint8 images)."""
    with np.load(Path(path), allow_pickle=False) as z:
        if "x" not in z.files:
            return False
        x = z["x"]
        return x.ndim == 2 and x.dtype != np.uint8
