"""``cifar10-jpeg``: the JPEG copy of CIFAR-10 in ``shared/data/cifar10_jpeg.npz``.

All 60,000 CIFAR-10 images in their original order (index i = original training index i, the
order CIFAR-N refers to), stored as JPEG bitstreams (quality 75, lossy: mean absolute error about
5.8 per 8-bit value against the originals). Keys of the npz (see ``shared/data/README.md``):
``train_jpeg`` (uint8, concatenated files), ``train_offsets`` (int64 [50001]), ``y_train``, the
same for ``test`` and ``class_names``.

Decoding all images takes a few seconds, so the decoded arrays are cached as an uncompressed npz
under ``$NOISYLAB_CACHE`` (default ``~/.cache/noisylab``), keyed by the sha256 of the source file;
a cache that cannot be written is skipped silently.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import file_sha256
from .base import DataBundle, DataError, run_in_chunks
from .constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR_CROP_PADDING
from .registry import register_dataset

FILENAME = "cifar10_jpeg.npz"
_KEYS = ("train_jpeg", "train_offsets", "y_train", "test_jpeg", "test_offsets", "y_test", "class_names")


def cache_dir() -> Path:
    """The folder for decoded-data caches: ``$NOISYLAB_CACHE`` or ``~/.cache/noisylab``."""
    env = os.environ.get("NOISYLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "noisylab"


def default_search_dirs() -> list[Path]:
    """Where ``cifar10_jpeg.npz`` is looked for without a root: ``../shared/data`` relative to
    the working directory and to the repository, then ``./shared/data`` and ``./data``."""
    repo = Path(__file__).resolve().parents[3]  # src/noisylab/data/cifar_jpeg.py -> repo root
    dirs = [Path.cwd().parent / "shared" / "data", repo.parent / "shared" / "data",
            Path.cwd() / "shared" / "data", Path.cwd() / "data"]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_npz(root: str | os.PathLike | None) -> Path:
    """Resolve ``root`` (the npz itself or its folder; None = search the defaults) to the file."""
    if root is not None:
        p = Path(root).expanduser()
        path = p if p.suffix == ".npz" else p / FILENAME
        if not path.is_file():
            raise DataError(f"{path}: file not found; pass the folder that holds {FILENAME} as data.root")
        return path
    for d in default_search_dirs():
        if (d / FILENAME).is_file():
            return d / FILENAME
    tried = ", ".join(str(d / FILENAME) for d in default_search_dirs())
    raise DataError(f"{FILENAME} not found (looked for {tried}); pass its folder as data.root")


def decode_jpegs(buf: np.ndarray, offsets: np.ndarray, count: int, source: Path, split: str,
                 threads: int | None = None) -> np.ndarray:
    """Decode the first ``count`` JPEGs of a concatenated buffer into ``uint8 [count, 3, 32, 32]``.

    Image i is ``buf[offsets[i]:offsets[i+1]]``. Pillow releases the GIL while decoding, so a
    few threads speed this up.
    """
    from PIL import Image, UnidentifiedImageError

    out = np.empty((count, 32, 32, 3), dtype=np.uint8)
    mv = memoryview(np.ascontiguousarray(buf))

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            try:
                with Image.open(io.BytesIO(mv[offsets[i]:offsets[i + 1]])) as im:
                    a = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError, ValueError) as err:
                raise DataError(f"{source}: {split} image {i} is not a valid JPEG ({err})") from None
            if a.shape != (32, 32, 3):
                raise DataError(f"{source}: {split} image {i} has shape {a.shape}, expected 32x32 RGB")
            out[i] = a

    run_in_chunks(work, count, 2048, threads)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _write_cache(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file + rename); give up quietly on OSError."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in _KEYS if k not in d.files]
            if missing:
                raise DataError(f"{path}: missing keys {missing}; this is not the shared cifar10_jpeg.npz")
            return {k: d[k] for k in _KEYS}
    except DataError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise DataError(f"{path}: truncated or corrupt npz ({type(err).__name__}: {err}); copy it again") from None


def _check_offsets(offsets: np.ndarray, buf: np.ndarray, n: int, path: Path, split: str) -> None:
    if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(buf) or np.any(np.diff(offsets) <= 0):
        raise DataError(f"{path}: '{split}_offsets' does not index '{split}_jpeg' ({n} images); the file is corrupt")


@register_dataset("cifar10-jpeg")
def load_cifar10_jpeg(
    root: str | None = None, limit: int | None = None, test_limit: int | None = None, cache: bool = True,
) -> DataBundle:
    """CIFAR-10 decoded from ``cifar10_jpeg.npz``.

    Args:
        root: the npz file or the folder holding it; default: ``../shared/data`` relative to the
            working directory or the repository (see :func:`default_search_dirs`).
        limit: decode only the first ``limit`` training images (quick runs, tests).
        test_limit: decode only the first ``test_limit`` test images; defaults to ``limit``.
        cache: keep/reuse the decoded full arrays in :func:`cache_dir` (only used without limits).

    Returns a bundle like ``cifar10``: ``train_x`` uint8 ``[N, 3, 32, 32]`` in original order,
    ``y_train`` as CIFAR-10 (== CIFAR-N ``clean_label``), ELR normalisation, crop+flip.
    """
    path = find_npz(root)
    d = _read_npz(path)
    n_train, n_test = len(d["y_train"]), len(d["y_test"])
    _check_offsets(d["train_offsets"], d["train_jpeg"], n_train, path, "train")
    _check_offsets(d["test_offsets"], d["test_jpeg"], n_test, path, "test")
    if test_limit is None:
        test_limit = limit
    k_train = n_train if limit is None else max(0, min(int(limit), n_train))
    k_test = n_test if test_limit is None else max(0, min(int(test_limit), n_test))

    x_train = x_test = None
    cache_file = None
    if cache and k_train == n_train and k_test == n_test:
        cache_file = cache_dir() / f"cifar10_jpeg-{file_sha256(path)[:16]}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as c:
                    x_train, x_test = c["x_train"], c["x_test"]
                if x_train.shape != (n_train, 3, 32, 32) or x_test.shape != (n_test, 3, 32, 32):
                    x_train = x_test = None
            except Exception:  # a broken cache is rebuilt below
                x_train = x_test = None
    if x_train is None:
        x_train = decode_jpegs(d["train_jpeg"], d["train_offsets"], k_train, path, "train")
        x_test = decode_jpegs(d["test_jpeg"], d["test_offsets"], k_test, path, "test")
        if cache_file is not None:
            _write_cache(cache_file, x_train=x_train, x_test=x_test)
    names = [str(s) for s in d["class_names"]]
    return DataBundle(
        name="cifar10-jpeg",
        train_x=torch.from_numpy(x_train),
        train_labels=d["y_train"][:k_train],
        test_x=torch.from_numpy(x_test),
        test_labels=d["y_test"][:k_test],
        num_classes=10,
        class_names=names,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment="crop_flip",
        crop_padding=CIFAR_CROP_PADDING,
        labels_are_clean=True,
        extra={"source": str(path), "lossy_jpeg": True},
    )
