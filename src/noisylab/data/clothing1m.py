"""Clothing1M (Xiao et al. 2015): 1M clothing images with noisy labels from shop text, 14 classes.

Files of the official release (all label/key lists are text, one entry per line)::

    noisy_label_kv.txt        "images/<a>/<b>/<name>.jpg <label>"  noisy labels (~1.04M lines)
    clean_label_kv.txt        "images/<a>/<b>/<name>.jpg <label>"  clean labels (~72k lines)
    noisy_train_key_list.txt  "images/..."   the noisy training set (1M)
    clean_val_key_list.txt    "images/..."   clean validation set (14,313)
    clean_test_key_list.txt   "images/..."   clean test set (10,526)
    category_names_eng.txt    optional, the 14 class names, one per line
    images/<a>/<b>/<name>.jpg

Two layouts of ``root`` are accepted (detected from the first training key):

* the release layout: ``root`` holds the text files and the ``images/`` folder; a key is the
  image's path relative to ``root``;
* the ELR+ layout: ``root`` *is* the ``images`` folder and the text files
  sit inside it; the first 7 characters (``images/``) of every key are dropped.

Training inputs are all images of ``noisy_train_key_list.txt`` with their noisy labels, in list
order — a sample's index is its row in that list, as in ELR+. ``test`` is the clean test list;
``eval_splits["val"]`` the clean validation list. ``extra["clean_labels"]`` gives, per training
image, its clean label where ``clean_label_kv.txt`` has one and -1 elsewhere (for detection
metrics on that part). With ``num_batches`` (ELR+: 3000) every epoch trains on a class-balanced
subset of ``num_batches x batch_size`` images (see :class:`noisylab.data.batching.BalancedSubset`).

Views (ELR+): train ``Resize(256) -> RandomCrop(224) -> HFlip``, eval ``Resize(256) ->
CenterCrop(224)``, normalised with the Clothing1M mean/std.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError
from .batching import BalancedSubset
from .constants import CLOTHING1M_CLASSES, CLOTHING1M_CROP, CLOTHING1M_MEAN, CLOTHING1M_RESIZE, CLOTHING1M_STD
from .files import default_num_workers, read_list
from .filestream import FileDataBundle, FileImages
from .registry import register_dataset

NUM_CLASSES = 14
_LIST_FILES = ("noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt",
               "clean_val_key_list.txt", "clean_test_key_list.txt")


def _kv(path: Path) -> dict[str, int]:
    keys, labels, _ = read_list(path, with_labels=True, num_classes=NUM_CLASSES)
    return dict(zip(keys, labels.tolist()))


def _detect_layout(root: Path, first_key: str, where: str, check: bool) -> str:
    """'' (keys relative to root) or 'strip' (ELR+ layout: drop the leading 'images/')."""
    if (root / first_key).is_file():
        return ""
    if first_key.startswith("images/") and (root / first_key[7:]).is_file():
        return "strip"
    if not check:
        return "" if (root / "images").is_dir() else "strip"
    raise DataError(
        f"{root / first_key}: image file not found{where} (nor {root / first_key[7:]}); root must hold "
        "the images/ folder, or be the images/ folder itself with the list files inside it"
    )


def _labels_for(keys: list[str], kv: dict[str, int], list_file: Path, lines: np.ndarray, kv_name: str) -> np.ndarray:
    out = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        try:
            out[i] = kv[k]
        except KeyError:
            raise DataError(f"{list_file} line {lines[i]}: '{k}' has no label in {kv_name}") from None
    return out


@register_dataset("clothing1m")
def load_clothing1m(
    root: str | None = None, num_batches: int | None = None, subset_seed: int = 123,
    redraw_each_epoch: bool = False, check_files: bool = True, resize: int = CLOTHING1M_RESIZE,
    size: int = CLOTHING1M_CROP, num_workers: int | None = None,
) -> FileDataBundle:
    """Clothing1M as a file-backed bundle (see the module doc for the layout).

    Args:
        root: the dataset folder (release layout) or its ``images`` folder (ELR+ layout).
        num_batches: train each epoch on a class-balanced subset of ``num_batches x batch_size``
            images (ELR+ uses 3000 with batch 64); None trains on the whole noisy list.
        subset_seed: seed of that subset; redraw_each_epoch: draw a new subset every epoch
            (ELR+ draws it once).
        check_files: verify at load time that every listed image exists (one ``stat`` per file);
            otherwise a missing image is reported when a batch needs it.
        resize, size: shorter side after resizing, and the square crop the model sees.
        num_workers: DataLoader workers (default: one per core, at most 8).
    """
    if root is None:
        raise DataError("clothing1m needs data.root: the folder holding noisy_label_kv.txt and images/")
    base = Path(root).expanduser()
    missing = [f for f in _LIST_FILES if not (base / f).is_file()]
    if missing:
        raise DataError(f"{base}: missing {', '.join(missing)}; point data.root at the Clothing1M folder "
                        "that holds the label and key lists")
    noisy_kv = _kv(base / "noisy_label_kv.txt")
    clean_kv = _kv(base / "clean_label_kv.txt")
    splits = {}
    for name, fname in (("train", "noisy_train_key_list.txt"), ("val", "clean_val_key_list.txt"),
                        ("test", "clean_test_key_list.txt")):
        keys, _, lines = read_list(base / fname, with_labels=False)
        if not keys:
            raise DataError(f"{base / fname}: the list is empty")
        splits[name] = (keys, lines, base / fname)

    train_keys, train_lines, train_file = splits["train"]
    layout = _detect_layout(base, train_keys[0], f" (listed in {train_file} line {train_lines[0]})", check_files)

    def rel(keys: list[str]) -> list[str]:
        return [k[7:] if layout == "strip" and k.startswith("images/") else k for k in keys]

    train_labels = _labels_for(train_keys, noisy_kv, train_file, train_lines, "noisy_label_kv.txt")
    clean = np.fromiter((clean_kv.get(k, -1) for k in train_keys), dtype=np.int64, count=len(train_keys))
    images = {}
    labels = {"train": train_labels}
    for name, (keys, lines, fname) in splits.items():
        images[name] = FileImages(rel(keys), base, size=size, resize=resize, channels=3,
                                  list_file=str(fname), lines=lines)
        if name != "train":
            labels[name] = _labels_for(keys, clean_kv, fname, lines, "clean_label_kv.txt")
        if check_files:
            images[name].check_exist()

    names_file = base / "category_names_eng.txt"
    class_names = list(CLOTHING1M_CLASSES)
    if names_file.is_file():
        text = names_file.read_text(encoding="utf-8", errors="replace")
        given = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(given) == NUM_CLASSES:
            class_names = given
    extra = {"clean_labels": clean, "layout": "elr" if layout == "strip" else "release", "root": str(base)}
    if num_batches is not None:
        extra["balanced_subset"] = BalancedSubset(int(num_batches), int(subset_seed), bool(redraw_each_epoch))
    return FileDataBundle(
        name="clothing1m",
        train_x=images["train"],
        train_labels=train_labels,
        test_x=images["test"],
        test_labels=labels["test"],
        num_classes=NUM_CLASSES,
        class_names=class_names,
        mean=CLOTHING1M_MEAN,
        std=CLOTHING1M_STD,
        augment="crop_flip",
        labels_are_clean=False,
        extra=extra,
        eval_splits={"val": (images["val"], labels["val"])},
        num_workers=default_num_workers() if num_workers is None else int(num_workers),
    )
