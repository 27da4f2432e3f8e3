"""mini-WebVision (Li et al. 2017; the "first 50 classes, Google subset" benchmark of
DivideMix / ELR+) with the ILSVRC12 validation images of those classes as a second test set.

Layout of ``root`` (the WebVision 1.0 release, resized version, plus ILSVRC12 val)::

    info/train_filelist_google.txt   "google/q0001/<name>.jpg <label>"  (labels 0..999)
    info/val_filelist.txt            "val000001.jpg <label>"
    info/synsets.txt                 optional: "n01440764 tench, ..." per class, in label order
    google/...                       the training images (paths relative to root)
    val_images_256/...               the WebVision validation images
    imagenet/imagenet_val.txt        "<name>.JPEG <label>" in WebVision label order (ELR+ layout),
    imagenet/val/<name>.JPEG         ... with the images here;
      or imagenet/val/<label>/*.JPEG one folder per class 0..49 (DivideMix layout)

Only entries with label < ``num_classes`` (50) are kept. ``test`` is the WebVision validation
set; ``eval_splits["imagenet"]`` the ILSVRC12 one. Views (ELR+): train ``RandomCrop(227) + HFlip``,
eval ``CenterCrop(227)``, on images whose shorter side is 256 — images that are not already
resized are resized to 256 first (ELR+ assumes this was done beforehand). ImageNet mean/std.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError
from .constants import IMAGENET_MEAN, IMAGENET_STD, WEBVISION_CROP, WEBVISION_RESIZE
from .files import IMAGE_EXTENSIONS, default_num_workers, read_list
from .filestream import FileDataBundle, FileImages
from .registry import register_dataset


def _subset(list_file: Path, num_classes: int):
    paths, labels, lines = read_list(list_file, with_labels=True)
    keep = labels < num_classes
    return [p for p, k in zip(paths, keep) if k], labels[keep], lines[keep]


def _imagenet(root: Path, num_classes: int, size: int, resize: int) -> tuple[FileImages, np.ndarray] | None:
    folder = root / "imagenet"
    listing = folder / "imagenet_val.txt"
    if listing.is_file():
        paths, labels, lines = _subset(listing, num_classes)
        return FileImages(paths, folder / "val", size=size, resize=resize, list_file=str(listing), lines=lines), labels
    val = folder / "val"
    if val.is_dir() and (val / "0").is_dir():
        paths, labels = [], []
        for c in range(num_classes):
            d = val / str(c)
            if not d.is_dir():
                raise DataError(f"{d}: missing class folder (imagenet/val/<label>/ must exist for labels "
                                f"0..{num_classes - 1})")
            names = sorted(p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            paths += [f"{c}/{n}" for n in names]
            labels += [c] * len(names)
        return FileImages(paths, val, size=size, resize=resize), np.asarray(labels, dtype=np.int64)
    return None


@register_dataset("webvision")
def load_webvision(
    root: str | None = None, num_classes: int = 50, imagenet: bool | str = "auto", check_files: bool = True,
    resize: int = WEBVISION_RESIZE, size: int = WEBVISION_CROP, num_workers: int | None = None,
) -> FileDataBundle:
    """mini-WebVision as a file-backed bundle (layout in the module doc).

    Args:
        root: the WebVision folder (holding ``info/``).
        num_classes: keep the first this many classes (50 = mini-WebVision).
        imagenet: include the ILSVRC12 validation split: "auto" (if present), True (required), False.
        check_files: verify at load time that every listed image exists.
        resize, size: shorter side after resizing and the square crop (256 / 227 as ELR+).
        num_workers: DataLoader workers (default: one per core, at most 8).
    """
    if root is None:
        raise DataError("webvision needs data.root: the WebVision folder holding info/train_filelist_google.txt")
    base = Path(root).expanduser()
    train_list = base / "info" / "train_filelist_google.txt"
    val_list = base / "info" / "val_filelist.txt"
    for f in (train_list, val_list):
        if not f.is_file():
            raise DataError(f"{f}: file not found; data.root must be the WebVision folder holding info/")
    paths, train_labels, lines = _subset(train_list, num_classes)
    if not paths:
        raise DataError(f"{train_list}: no entries with label < {num_classes}")
    train = FileImages(paths, base, size=size, resize=resize, list_file=str(train_list), lines=lines)
    vpaths, val_labels, vlines = _subset(val_list, num_classes)
    val = FileImages(vpaths, base / "val_images_256", size=size, resize=resize, list_file=str(val_list), lines=vlines)
    eval_splits = {}
    if imagenet:
        inet = _imagenet(base, num_classes, size, resize)
        if inet is None and imagenet is True:
            raise DataError(f"{base / 'imagenet'}: no imagenet_val.txt and no val/<label>/ folders; "
                            "add the ILSVRC12 validation images or set imagenet=false")
        if inet is not None:
            eval_splits["imagenet"] = inet
    if check_files:
        for imgs in [train, val] + [v[0] for v in eval_splits.values()]:
            imgs.check_exist()
    names = [str(c) for c in range(num_classes)]
    synsets = base / "info" / "synsets.txt"
    if synsets.is_file():
        rows = [ln.strip() for ln in synsets.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if len(rows) >= num_classes:
            names = [(r.split(None, 1)[1] if len(r.split(None, 1)) == 2 else r).split(",")[0].strip()
                     for r in rows[:num_classes]]
    return FileDataBundle(
        name="webvision",
        train_x=train,
        train_labels=train_labels,
        test_x=val,
        test_labels=val_labels,
        num_classes=num_classes,
        class_names=names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment="crop_flip",
        labels_are_clean=False,
        extra={"root": str(base)},
        eval_splits=eval_splits,
        num_workers=default_num_workers() if num_workers is None else int(num_workers),
    )
