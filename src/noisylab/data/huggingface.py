"""A Hugging Face ``datasets`` image dataset saved with ``save_to_disk`` (``data.dataset: hf``).

    ds.save_to_disk("my_data")                 # a Dataset, or a DatasetDict with train (and test) splits
    noisylab find-issues my_data               # or: noisylab train -c own_images_elr data.dataset=hf data.root=my_data

The images come from the first column of feature type ``Image`` (or ``data.options.image_column``),
the labels from the first ``ClassLabel`` column (its names become the class names) or a column
named ``label`` / ``labels`` of integers or class-name strings (``data.options.label_column``).
A DatasetDict gives its ``train`` split (``split``) for training and its ``test`` split, when it
has one, for testing. Images are decoded once into memory as uint8, shorter side resized to
``image_size`` then centre-cropped, converted to RGB (or grey) as files are
(:func:`noisylab.data.files.to_8bit_mode`). A column ``file_name``, ``path`` or ``image_path``,
when present, names each example's file in ``label_issues.csv``. Needs ``pip install datasets``
(``noisylab[hf]``). The files are Arrow tables: reading them runs no code from them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import DataBundle, DataError
from .registry import register_dataset

NAME_COLUMNS = ("file_name", "path", "image_path")
LABEL_COLUMNS = ("label", "labels")


def _load(root: Path):
    try:
        import datasets
    except ImportError:
        raise DataError("data.dataset hf needs the datasets package: pip install 'noisylab[hf]' "
                        "(or pip install datasets)") from None
    try:
        return datasets, datasets.load_from_disk(str(root))
    except FileNotFoundError as err:
        raise DataError(f"{root}: not a dataset saved with save_to_disk ({' '.join(str(err).split())})") from None


def _columns(features, image_column: str | None, label_column: str | None, where: Path, datasets):
    images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    classes = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
    image_col = image_column or (images[0] if images else None)
    label_col = label_column or (classes[0] if classes else next((c for c in LABEL_COLUMNS if c in features), None))
    for col, what, option in ((image_col, "image", "image_column"), (label_col, "label", "label_column")):
        if col is None:
            raise DataError(f"{where}: no {what} column found (columns: {', '.join(features)}); "
                            f"name it with data.options.{option}")
        if col not in features:
            raise DataError(f"{where}: no column '{col}' (columns: {', '.join(features)})")
    return image_col, label_col


def _labels(split, label_col: str, class_names: list[str] | None, where: Path) -> tuple[np.ndarray, list[str]]:
    raw = np.asarray(split[label_col])
    if class_names is not None and raw.dtype.kind in "iu":
        return raw.astype(np.int64), class_names
    if raw.dtype.kind in "iu":
        if len(raw) and raw.min() < 0:
            raise DataError(f"{where}: label column '{label_col}' holds {raw.min()}; labels must be >= 0")
        return raw.astype(np.int64), [str(c) for c in range(int(raw.max()) + 1 if len(raw) else 0)]
    if raw.dtype.kind in "US":
        names = class_names or sorted(set(raw.astype(str).tolist()))
        lookup = {n: i for i, n in enumerate(names)}
        missing = sorted(set(raw.astype(str).tolist()) - set(lookup))
        if missing:
            raise DataError(f"{where}: label {missing[0]!r} of the test split is not a training class")
        return np.asarray([lookup[s] for s in raw.astype(str)], dtype=np.int64), names
    raise DataError(f"{where}: label column '{label_col}' must hold class numbers or names, found {raw.dtype}")


def _decode(split, image_col: str, size: int, channels: int) -> torch.Tensor:
    from .files import crop_array, resize_short_side, to_8bit_mode

    out = np.empty((len(split), size, size, channels), dtype=np.uint8)
    i = 0
    for batch in split.select_columns([image_col]).iter(batch_size=256):
        for im in batch[image_col]:
            a = np.asarray(resize_short_side(to_8bit_mode(im, channels), size))
            out[i] = crop_array(a[:, :, None] if a.ndim == 2 else a, size)
            i += 1
    return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))


def _names(split) -> list[str] | None:
    col = next((c for c in NAME_COLUMNS if c in split.column_names), None)
    return [str(v) for v in split[col]] if col else None


@register_dataset("hf")
def load_hf(
    root: str | None = None, split: str = "train", test_split: str | None = "test", image_column: str | None = None,
    label_column: str | None = None, image_size: int = 32, color: str = "rgb", mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None, augment: str | None = None, labels_are_clean: bool = False,
) -> DataBundle:
    """A ``save_to_disk`` folder (see the module doc). Default augmentation: crop_flip."""
    from .custom import _channels, channel_stats

    if root is None:
        raise DataError("the hf dataset needs data.root: a folder written by Dataset.save_to_disk")
    where = Path(root).expanduser()
    if not where.is_dir():
        raise DataError(f"{where}: folder not found; data.root must be a folder written by Dataset.save_to_disk")
    datasets, ds = _load(where)
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split not in ds:
            if len(names) != 1:
                raise DataError(f"{where}: no split '{split}' (splits: {', '.join(names)}); choose one with "
                                "data.options.split")
            split = names[0]
        train, test = ds[split], (ds[test_split] if test_split and test_split in ds and test_split != split else None)
    else:
        train, test = ds, None
    image_col, label_col = _columns(train.features, image_column, label_column, where, datasets)
    feature = train.features[label_col]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    y, class_names = _labels(train, label_col, class_names, where)
    y_test = _labels(test, label_col, class_names, where)[0] if test is not None else None
    channels = _channels(color)
    x = _decode(train, image_col, int(image_size), channels)
    x_test = _decode(test, image_col, int(image_size), channels) if test is not None else None
    if mean is None or std is None:
        mean, std = channel_stats(x)
    return DataBundle(
        name="hf", train_x=x, train_labels=y, test_x=x_test, test_labels=y_test, num_classes=len(class_names),
        class_names=class_names, mean=tuple(mean), std=tuple(std), augment=augment or "crop_flip",
        crop_padding=max(1, int(image_size) // 8), labels_are_clean=labels_are_clean,
        extra={"source": str(where), "train_files": _names(train), "test_files": _names(test) if test is not None
               else None},
    )
