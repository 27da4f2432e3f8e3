"""MNIST and Fashion-MNIST from IDX files (gzipped or not).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
(0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a
byte with the number of dimensions d, then d big-endian uint32 sizes, then the values in C order,
big-endian. The four files of a dataset::

    train-images-idx3-ubyte[.gz]   uint8 [60000, 28, 28]
    train-labels-idx1-ubyte[.gz]   uint8 [60000]
    t10k-images-idx3-ubyte[.gz]    uint8 [10000, 28, 28]
    t10k-labels-idx1-ubyte[.gz]    uint8 [10000]

(``train-images.idx3-ubyte`` spellings are accepted too.) They are looked for in ``root`` and in
``root/raw``, ``root/MNIST/raw`` / ``root/FashionMNIST/raw`` (torchvision's layout). Without a root,
Fashion-MNIST is taken from ``/usr/share/datasets/fashion-mnist`` where Debian's
``dataset-fashion-mnist`` package installs it (``apt-get install dataset-fashion-mnist``).
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .base import DataBundle, DataError
from .constants import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DEBIAN_DIR,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from .registry import register_dataset

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` decompressed on the fly) into a native-endian numpy array.

    Raises :class:`DataError` naming the file when it is missing, truncated, too long or has a
    bad header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(f"{path}: truncated or corrupt gzip file ({err}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; download the file again")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {what}: header says {dims} ({expected} bytes) but the file has {len(raw)} bytes; "
            "download it again"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, split: str, kind: str) -> Path | None:
    nd = 3 if kind == "images" else 1
    for stem in (f"{split}-{kind}-idx{nd}-ubyte", f"{split}-{kind}.idx{nd}-ubyte"):
        for suffix in (".gz", ""):
            p = folder / (stem + suffix)
            if p.is_file():
                return p
    return None


def _find_idx_folder(roots: list[Path], sub: str) -> Path | None:
    for r in roots:
        for folder in (r, r / "raw", r / sub / "raw", r / sub):
            if _idx_file(folder, "train", "images") is not None:
                return folder
    return None


def load_idx_dataset(
    name: str, folder: Path, num_classes: int, class_names: list[str],
    mean: tuple[float, ...], std: tuple[float, ...],
) -> DataBundle:
    """Read the four IDX files of ``folder`` into a bundle with ``uint8 [N, 1, 28, 28]`` images."""
    arrays = {}
    for split in ("train", "t10k"):
        for kind in ("images", "labels"):
            p = _idx_file(folder, split, kind)
            if p is None:
                nd = 3 if kind == "images" else 1
                raise DataError(
                    f"{folder}: missing {split}-{kind}-idx{nd}-ubyte.gz (or uncompressed); "
                    "put all four IDX files in this folder"
                )
            a = read_idx(p)
            want = 3 if kind == "images" else 1
            if a.ndim != want or a.dtype != np.uint8:
                raise DataError(f"{p}: expected uint8 with {want} dimension(s), found {a.dtype} {a.shape}")
            arrays[split, kind] = (p, a)
    for split in ("train", "t10k"):
        (pi, x), (pl, y) = arrays[split, "images"], arrays[split, "labels"]
        if len(x) != len(y):
            raise DataError(f"{pl}: {len(y)} labels but {pi} has {len(x)} images")
        if len(y) and y.max() >= num_classes:
            bad = int(np.flatnonzero(y >= num_classes)[0])
            raise DataError(f"{pl}: label {y[bad]} at position {bad} is outside [0, {num_classes})")
    return DataBundle(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(arrays["train", "images"][1][:, None])),
        train_labels=arrays["train", "labels"][1].astype(np.int64),
        test_x=torch.from_numpy(np.ascontiguousarray(arrays["t10k", "images"][1][:, None])),
        test_labels=arrays["t10k", "labels"][1].astype(np.int64),
        num_classes=num_classes,
        class_names=list(class_names),
        mean=mean,
        std=std,
        augment="none",
        labels_are_clean=True,
    )


@register_dataset("mnist")
def load_mnist(root: str | None = None) -> DataBundle:
    """MNIST from gzipped or plain IDX files in ``root`` (default ``./data``; see module doc).

    ``train_x`` uint8 ``[60000, 1, 28, 28]``, ``test_x`` ``[10000, 1, 28, 28]``; no augmentation.
    """
    roots = [Path(root).expanduser()] if root is not None else [Path("data"), Path(".")]
    folder = _find_idx_folder(roots, "MNIST")
    if folder is None:
        raise DataError(
            f"MNIST not found: no train-images-idx3-ubyte[.gz] in {', '.join(map(str, roots))} "
            "(or their raw/, MNIST/raw/ sub-folders); pass the folder holding the four IDX files as data.root"
        )
    return load_idx_dataset("mnist", folder, 10, [str(d) for d in range(10)], MNIST_MEAN, MNIST_STD)


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: str | None = None) -> DataBundle:
    """Fashion-MNIST (Xiao et al. 2017) from IDX files.

    ``root`` defaults to Debian's install folder ``/usr/share/datasets/fashion-mnist``, then
    ``./data``. Shapes as MNIST, 10 clothing classes, no augmentation.
    """
    if root is not None:
        roots = [Path(root).expanduser()]
    else:
        roots = [Path(FASHION_MNIST_DEBIAN_DIR), Path("data"), Path(".")]
    folder = _find_idx_folder(roots, "FashionMNIST")
    if folder is None:
        raise DataError(
            f"Fashion-MNIST not found: no train-images-idx3-ubyte[.gz] in {', '.join(map(str, roots))}; "
            "run `apt-get install dataset-fashion-mnist` or pass the folder holding the IDX files as data.root"
        )
    return load_idx_dataset(
        "fashion-mnist", folder, 10, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD
    )
