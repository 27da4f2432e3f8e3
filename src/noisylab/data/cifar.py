"""CIFAR-10 and CIFAR-100 in the python-pickle layout of the official archives.

Layout (Krizhevsky 2009, ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, the same folders
torchvision's ``CIFAR10(root)`` expects)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

Each batch file is a pickled dict: ``data`` uint8 ``[n, 3072]`` (1024 red, 1024 green, 1024 blue
values, each a row-major 32x32 plane), ``labels`` (CIFAR-10) or ``fine_labels`` and
``coarse_labels`` (CIFAR-100), plus ``filenames`` and ``batch_label``. ``batches.meta`` holds
``label_names``; CIFAR-100's ``meta`` holds ``fine_label_names`` and ``coarse_label_names``.

The files are read by :class:`RestrictedUnpickler`, which can only build dicts, lists, strings,
bytes, numbers and numpy arrays: any other global named in the file (``os.system``,
``builtins.eval``, ...) is refused before anything is called, so a crafted file cannot run code.
Files re-exported by Python 3 with pickle protocol 2 (which stores ``bytes`` as
``_codecs.encode(text, 'latin1')``) load too: that call is carried out by noisylab's own function,
which accepts nothing but a string and ``'latin1'``.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import DataBundle, DataError
from .constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, CIFAR_CROP_PADDING
from .registry import register_dataset

# numpy's array-reconstruction function (``numpy.core.multiarray._reconstruct`` in numpy 1.x,
# ``numpy._core.multiarray._reconstruct`` in 2.x), found without importing a deprecated module.
_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something the restricted unpickler does not allow."""


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` as called by array pickles, refusing object dtypes (they hold references)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise RefusedPickle("object arrays are not allowed")
    return dt


def _latin1_bytes(*args: Any) -> bytes:
    """Stands in for ``_codecs.encode`` in protocol-2 pickles written by Python 3, which store
    ``bytes`` as ``_codecs.encode(text, 'latin1')``: only that exact call is carried out (by this
    function, not the codecs machinery); any other argument or encoding is refused."""
    if len(args) != 2:
        problem = f"{len(args)} arguments"
    elif type(args[0]) is not str:
        problem = f"a {type(args[0]).__name__} argument"
    elif type(args[1]) is not str or args[1] != "latin1":
        problem = f"encoding {repr(args[1])[:40]}"
    else:
        return args[0].encode("latin1")
    raise RefusedPickle(f"refused _codecs.encode with {problem}: only (text, 'latin1') byte strings are allowed")


def _empty_bytes(*args: Any) -> bytes:
    """Stands in for ``bytes`` in protocol-2 pickles written by Python 3, which store ``b''`` as
    ``bytes()``: only the call without arguments is allowed."""
    if args:
        raise RefusedPickle("refused bytes() with arguments: only the empty byte string bytes() is allowed")
    return b""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild the contents of CIFAR batch files.

    Plain containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None) need no
    globals and load normally. Of all globals, only these are allowed: the three that numpy
    arrays are pickled with, ``numpy.core.multiarray._reconstruct`` (also spelt
    ``numpy._core.multiarray``), ``numpy.ndarray`` and ``numpy.dtype`` (the latter refusing object
    dtypes); and the two that Python 3 writes for ``bytes`` in protocols 0-2, ``_codecs.encode``
    (replaced by :func:`_latin1_bytes`, which only accepts ``(text, 'latin1')``) and
    ``__builtin__.bytes`` (replaced by :func:`_empty_bytes`, which only accepts no arguments).
    Anything else raises :class:`RefusedPickle` (an :class:`pickle.UnpicklingError`) before it is
    looked up, so nothing named in the file is called.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"refused global '{module}.{name}'") from None

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - never valid in CIFAR files
        raise RefusedPickle("persistent ids are not allowed")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a CIFAR-style pickle with :class:`RestrictedUnpickler`.

    Python-2 strings are decoded as latin-1 (what the official files need for their numpy data).
    Python-3 protocol-2 pickles (``bytes`` stored as ``_codecs.encode(text, 'latin1')``) load too.
    Raises :class:`DataError` naming the file when it is missing, truncated or contains anything
    other than plain data and numeric numpy arrays.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; re-extract the official archive so that it exists") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except RefusedPickle as err:
        raise DataError(
            f"{path}: not a valid CIFAR batch file ({err}); nothing was executed; re-extract the official archive"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as err:
        raise DataError(
            f"{path}: truncated or corrupt pickle ({type(err).__name__}: {err}); "
            "re-extract the official archive"
        ) from None


def _as_str_keys(d: Any, path: Path) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in d.items()}


def _names(values: Any, path: Path, key: str) -> list[str]:
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{path}: '{key}' must be a list of names")
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values]


def read_cifar_batch(path: str | os.PathLike, label_keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read one batch file: ``{"data": uint8 [n, 3, 32, 32], <label_key>: int64 [n], ...}``."""
    path = Path(path)
    d = _as_str_keys(safe_load_pickle(path), path)
    if "data" not in d:
        raise DataError(f"{path}: no 'data' entry (keys: {', '.join(sorted(d))})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: 'data' must be uint8 [n, 3072], found {dtype} {shape}")
    out = {"data": data.reshape(-1, 3, 32, 32)}
    for key in label_keys:
        if key not in d:
            raise DataError(f"{path}: no '{key}' entry (keys: {', '.join(sorted(d))})")
        try:
            labels = np.asarray(d[key], dtype=np.int64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: '{key}' must be a list of integers") from None
        if labels.shape != (len(data),):
            raise DataError(f"{path}: {len(data)} images but '{key}' has shape {labels.shape}")
        out[key] = labels
    return out


def _check_range(labels: np.ndarray, num_classes: int, path: Path, key: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DataError(
            f"{path}: '{key}'[{bad}] = {labels[bad]} is outside the class range [0, {num_classes})"
        )


def _find_folder(root: str | os.PathLike | None, folder: str, probe: str, what: str, url: str) -> Path:
    """``<root>/<folder>`` (or ``root`` itself when it already is that folder); default root ./data."""
    candidates = []
    roots = [Path(root).expanduser()] if root is not None else [Path("data"), Path(".")]
    for r in roots:
        candidates += [r / folder, r]
    for c in candidates:
        if (c / probe).is_file():
            return c
    tried = ", ".join(str(c / probe) for c in candidates)
    raise DataError(
        f"{what} not found (looked for {tried}); download {url}, extract it and pass its parent "
        f"folder as data.root"
    )


@register_dataset("cifar10")
def load_cifar10(root: str | None = None) -> DataBundle:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` (default root: ``./data``).

    Returns ``train_x`` uint8 ``[50000, 3, 32, 32]`` (RGB) in the original order (data_batch_1..5
    concatenated, the order CIFAR-N labels refer to), ``test_x`` ``[10000, 3, 32, 32]``, the 10
    class names from ``batches.meta``, the ELR normalisation and RandomCrop(32, 4) + flip.
    """
    folder = _find_folder(
        root, "cifar-10-batches-py", "data_batch_1", "CIFAR-10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    )
    xs, ys = [], []
    for k in range(1, 6):
        b = read_cifar_batch(folder / f"data_batch_{k}", ("labels",))
        _check_range(b["labels"], 10, folder / f"data_batch_{k}", "labels")
        xs.append(b["data"])
        ys.append(b["labels"])
    test = read_cifar_batch(folder / "test_batch", ("labels",))
    _check_range(test["labels"], 10, folder / "test_batch", "labels")
    meta_path = folder / "batches.meta"
    meta = _as_str_keys(safe_load_pickle(meta_path), meta_path)
    names = _names(meta.get("label_names"), meta_path, "label_names")
    if len(names) != 10:
        raise DataError(f"{meta_path}: expected 10 'label_names', found {len(names)}")
    return DataBundle(
        name="cifar10",
        train_x=torch.from_numpy(np.ascontiguousarray(np.concatenate(xs))),
        train_labels=np.concatenate(ys),
        test_x=torch.from_numpy(np.ascontiguousarray(test["data"])),
        test_labels=test["labels"],
        num_classes=10,
        class_names=names,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment="crop_flip",
        crop_padding=CIFAR_CROP_PADDING,
        labels_are_clean=True,
    )


@register_dataset("cifar100")
def load_cifar100(root: str | None = None) -> DataBundle:
    """CIFAR-100 from ``<root>/cifar-100-python/`` (default root: ``./data``).

    ``train_labels`` / ``test_labels`` are the 100 fine labels (alphabetical class order);
    ``extra["coarse_labels"]`` and ``extra["test_coarse_labels"]`` (int64, 20 superclasses) and
    ``extra["coarse_class_names"]`` carry the superclass annotation.
    """
    folder = _find_folder(
        root, "cifar-100-python", "train", "CIFAR-100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    )
    keys = ("fine_labels", "coarse_labels")
    train = read_cifar_batch(folder / "train", keys)
    test = read_cifar_batch(folder / "test", keys)
    for split, b in (("train", train), ("test", test)):
        _check_range(b["fine_labels"], 100, folder / split, "fine_labels")
        _check_range(b["coarse_labels"], 20, folder / split, "coarse_labels")
    meta_path = folder / "meta"
    meta = _as_str_keys(safe_load_pickle(meta_path), meta_path)
    fine = _names(meta.get("fine_label_names"), meta_path, "fine_label_names")
    coarse = _names(meta.get("coarse_label_names"), meta_path, "coarse_label_names")
    if len(fine) != 100 or len(coarse) != 20:
        raise DataError(f"{meta_path}: expected 100 fine and 20 coarse names, found {len(fine)} and {len(coarse)}")
    return DataBundle(
        name="cifar100",
        train_x=torch.from_numpy(np.ascontiguousarray(train["data"])),
        train_labels=train["fine_labels"],
        test_x=torch.from_numpy(np.ascontiguousarray(test["data"])),
        test_labels=test["fine_labels"],
        num_classes=100,
        class_names=fine,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        augment="crop_flip",
        crop_padding=CIFAR_CROP_PADDING,
        labels_are_clean=True,
        extra={
            "coarse_labels": train["coarse_labels"],
            "test_coarse_labels": test["coarse_labels"],
            "coarse_class_names": coarse,
        },
    )
