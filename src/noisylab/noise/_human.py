"""Real human label noise: CIFAR-10N and CIFAR-100N (Wei et al., "Learning with Noisy Labels
Revisited: A Study Using Real-World Human Annotations", ICLR 2022; github.com/UCSC-REAL/cifar-10-100n).

The label files are licensed CC BY-NC 4.0 (non-commercial). noisylab never ships or commits
them: point ``path=`` at a local copy, or call :func:`download_cifar_n` where the network is
reachable.

Accepted files:

* the official ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` (``torch.save`` of a dict of
  int64 numpy arrays of length 50,000), read with ``torch.load(..., weights_only=True)``
  allowing only numpy's array-reconstruction globals (needs torch >= 2.5);
* an ``.npz`` with the same keys (e.g. ``cifar10n_labels.npz`` / ``cifar100n_labels.npz``).

Keys: CIFAR-10N ``clean_label, aggre_label, worse_label, random_label1, random_label2,
random_label3``; CIFAR-100N ``clean_label, noisy_label`` (fine) and ``clean_coarse_label,
noisy_coarse_label`` (20 superclasses). Labels are in the original torchvision / python-pickle
training order (first clean CIFAR-10 labels 6 9 9 4 1 1 2 7 8 3).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._labels import DAMAGED_NPZ_ERRORS, NoiseError, NoisyLabels, as_label_array
from ._labels import labels_sha256 as _labels_digest

CIFAR_N_FILES: dict[str, dict[str, Any]] = {
    "cifar10n": {
        "filename": "CIFAR-10_human.pt",
        "npz_name": "cifar10n_labels.npz",
        "url": "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-10_human.pt",
        "md5": "96644db5574813cae939af5f7f2a0aec",
        "num_classes": 10,
        "required": ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"),
    },
    "cifar100n": {
        "filename": "CIFAR-100_human.pt",
        "npz_name": "cifar100n_labels.npz",
        "url": "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-100_human.pt",
        "md5": "a67b45c1d7992051865b5c755bd68bb1",
        "num_classes": 100,
        "required": ("clean_label", "noisy_label"),
    },
}
"""The official files (repo UCSC-REAL/cifar-10-100n, ``data/``) and their md5 checksums."""

HUMAN_VARIANTS: dict[str, tuple[str, str, str, int]] = {
    "aggre": ("cifar10n", "aggre_label", "clean_label", 10),
    "random1": ("cifar10n", "random_label1", "clean_label", 10),
    "random2": ("cifar10n", "random_label2", "clean_label", 10),
    "random3": ("cifar10n", "random_label3", "clean_label", 10),
    "worst": ("cifar10n", "worse_label", "clean_label", 10),
    "fine": ("cifar100n", "noisy_label", "clean_label", 100),
    "coarse": ("cifar100n", "noisy_coarse_label", "clean_coarse_label", 20),
}
"""variant -> (file, noisy key, clean key, number of classes)."""

_VARIANT_ALIASES = {"worse": "worst", "aggregate": "aggre", "rand1": "random1", "rand2": "random2",
                    "rand3": "random3", "noisy": "fine", "noisy100": "fine"}
_WHICH_ALIASES = {"cifar10n": "cifar10n", "cifar-10n": "cifar10n", "cifar10": "cifar10n", "c10n": "cifar10n",
                  "cifar100n": "cifar100n", "cifar-100n": "cifar100n", "cifar100": "cifar100n", "c100n": "cifar100n"}
_LABEL_KEYS = ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2", "random_label3",
               "noisy_label", "clean_coarse_label", "noisy_coarse_label")


def _canonical_variant(variant: Any) -> str:
    name = _VARIANT_ALIASES.get(variant, variant) if isinstance(variant, str) else variant
    if name not in HUMAN_VARIANTS:
        raise NoiseError(f"human noise needs variant= one of {', '.join(HUMAN_VARIANTS)} "
                         f"(CIFAR-10N: aggre, random1-3, worst; CIFAR-100N: fine, coarse), got {variant!r}")
    return name


def _canonical_which(which: Any) -> str:
    key = which.lower() if isinstance(which, str) else which
    if key not in _WHICH_ALIASES:
        raise NoiseError(f"which must be 'cifar10n' or 'cifar100n', got {which!r}")
    return _WHICH_ALIASES[key]


def _torch_load_labels(path: Path) -> Any:
    import torch

    serialization = torch.serialization
    if not hasattr(serialization, "safe_globals"):
        raise NoiseError(f"reading {path} safely needs torch >= 2.5 (torch.load weights_only with numpy "
                         "arrays); upgrade torch, or use the npz version of the labels")
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    allowed: list[Any] = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"),
                          (reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
    allowed += [type(np.dtype(t)) for t in (np.int64, np.int32, np.int16, np.int8, np.uint8,
                                             np.uint16, np.uint32, np.uint64)]
    with serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_cifar_n(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CIFAR-N label file (``.pt`` or ``.npz``).

    Returns:
        ``(which, labels)``: ``which`` is ``"cifar10n"`` or ``"cifar100n"``; ``labels`` maps each
        label key present (see the module docstring) to an int64 [50000] array.

    Raises:
        NoiseError: missing or unreadable file, not a CIFAR-N file, arrays of unequal length or
            labels out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise NoiseError(f"CIFAR-N label file {path} does not exist; get CIFAR-10_human.pt / CIFAR-100_human.pt "
                         "from github.com/UCSC-REAL/cifar-10-100n (data/) or call download_cifar_n")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
        elif not zipfile.is_zipfile(path):
            raise NoiseError(f"cannot read {path} as a CIFAR-N label file: it is neither an npz nor a torch.save "
                             "zip archive (re-download CIFAR-10_human.pt / CIFAR-100_human.pt)")
        else:
            raw = _torch_load_labels(path)
    except pickle.UnpicklingError:
        raise NoiseError(f"{path} holds objects other than label arrays, so it is not loaded "
                         "(weights_only=True); use the official CIFAR-N file or an npz of its label arrays") from None
    except (ValueError, RuntimeError, *DAMAGED_NPZ_ERRORS) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NoiseError(f"cannot read {path} as a CIFAR-N label file (.pt saved by torch, or .npz): {first}") from None
    if not isinstance(raw, dict):
        raise NoiseError(f"{path} does not hold a dict of label arrays (got {type(raw).__name__}); "
                         "it is not a CIFAR-N label file")
    if "aggre_label" in raw:
        which = "cifar10n"
    elif "noisy_label" in raw:
        which = "cifar100n"
    else:
        raise NoiseError(f"{path} is not a CIFAR-N label file: expected keys aggre_label/worse_label/... "
                         f"(CIFAR-10N) or noisy_label (CIFAR-100N), found {', '.join(sorted(map(str, raw))) or 'none'}")
    info = CIFAR_N_FILES[which]
    missing = [k for k in info["required"] if k not in raw]
    if missing:
        raise NoiseError(f"{path} looks like {which} but lacks {', '.join(missing)}; the file is incomplete")
    labels: dict[str, np.ndarray] = {}
    for key in _LABEL_KEYS:
        if key in raw:
            C = 20 if "coarse" in key else info["num_classes"]
            labels[key] = as_label_array(raw[key], f"{path.name}[{key!r}]", C)
    lengths = {k: len(v) for k, v in labels.items()}
    if len(set(lengths.values())) != 1:
        raise NoiseError(f"{path}: label arrays have different lengths {lengths}; the file is damaged")
    return which, labels


def _md5(path: Path) -> str:
    try:
        h = hashlib.md5(usedforsecurity=False)
    except TypeError:  # pragma: no cover - Python builds without the keyword
        h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_cifar_n(dest: str | Path, which: str = "cifar10n", *, url: str | None = None,
                     timeout: float = 60.0) -> Path:
    """Download the official CIFAR-10N or CIFAR-100N label file and check its md5.

    Args:
        dest: a folder (the official file name is used inside it) or a file path.
        which: ``"cifar10n"`` or ``"cifar100n"``.
        url: a mirror to use instead of the GitHub URL (the md5 must still match).
        timeout: seconds per network operation.

    Returns:
        The path of the verified file. An existing file with the right md5 is reused.

    Raises:
        NoiseError: no network / HTTP error (the message says how to get the file manually),
            an md5 mismatch (nothing is left at ``dest``), or an existing file that differs.
    """
    which = _canonical_which(which)
    info = CIFAR_N_FILES[which]
    url = url or info["url"]
    dest = Path(dest)
    target = dest / info["filename"] if dest.is_dir() or not dest.suffix else dest
    if target.is_file():
        digest = _md5(target)
        if digest == info["md5"]:
            return target
        raise NoiseError(f"{target} exists but its md5 is {digest}, not {info['md5']}; delete it to download again")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise NoiseError(f"could not download {which} labels from {url} ({reason}). Without network access, "
                             f"fetch {info['filename']} (md5 {info['md5']}) on another machine from "
                             "github.com/UCSC-REAL/cifar-10-100n (data/) and pass its path") from None
        digest = _md5(tmp)
        if digest != info["md5"]:
            raise NoiseError(f"the file downloaded from {url} has md5 {digest}, expected {info['md5']}; "
                             "it was discarded (truncated download or a changed file)")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def default_cifar_n_dir() -> Path:
    """Where ``download=True`` puts files when no ``path`` is given: ``$NOISYLAB_DATA/cifar-n``,
    else ``~/.cache/noisylab/cifar-n``."""
    root = os.environ.get("NOISYLAB_DATA")
    return (Path(root) if root else Path.home() / ".cache" / "noisylab") / "cifar-n"


def _resolve_file(path: Any, which: str, download: bool) -> Path:
    info = CIFAR_N_FILES[which]
    if path is None:
        if not download:
            raise NoiseError(f"human noise needs path= to {info['filename']} (or {info['npz_name']}), or "
                             "download=True to fetch it (CC BY-NC 4.0 labels, not bundled with noisylab)")
        folder = default_cifar_n_dir()
    else:
        folder = Path(path).expanduser()
        if folder.is_file():
            return folder
        if folder.suffix and not folder.exists():
            raise NoiseError(f"CIFAR-N label file {folder} does not exist; pass the path of {info['filename']} or "
                             f"{info['npz_name']}, or a folder holding it")
    for name in (info["filename"], info["npz_name"]):
        if (folder / name).is_file():
            return folder / name
    if download:
        return download_cifar_n(folder, which)
    raise NoiseError(f"no {info['filename']} or {info['npz_name']} in {folder}; put the file there, pass its "
                     "path, or use download=True")


def human_noisy_labels(labels: Any, num_classes: int | None, seed: int, *, path: Any = None, variant: Any = None,
                       download: Any = False, labels_sha256: str | None = None) -> NoisyLabels:
    """``make_noisy_labels(labels, "human", ...)``: the CIFAR-N labels of ``variant`` from ``path``.

    ``labels`` (the clean training labels, original order, [50000], or the first N of them: then
    the first N noisy labels are used) are checked against the file's clean labels; for ``variant="coarse"`` either the fine or the coarse clean labels are
    accepted and the result is in the 20 superclasses. ``labels=None`` takes the clean labels
    from the file. ``labels_sha256`` (stored in the spec) checks that the file gives the same
    noisy labels as when the spec was written.
    """
    variant = _canonical_variant(variant)
    if not isinstance(download, (bool, np.bool_)):
        raise NoiseError(f"option 'download' must be True or False, got {download!r}")
    which, noisy_key, clean_key, C = HUMAN_VARIANTS[variant]
    file = _resolve_file(path, which, bool(download))
    found, arrays = load_cifar_n(file)
    if found != which:
        need = CIFAR_N_FILES[which]["filename"]
        raise NoiseError(f"variant {variant!r} is a {which} label set but {file} holds {found} labels; "
                         f"pass the path of {need}")
    if noisy_key not in arrays or clean_key not in arrays:
        raise NoiseError(f"{file} lacks {noisy_key} / {clean_key}, needed for variant {variant!r}")
    noisy, clean = arrays[noisy_key], arrays[clean_key]
    if num_classes is not None and num_classes != C:
        raise NoiseError(f"variant {variant!r} has {C} classes but num_classes={num_classes}")
    if labels is not None:
        given = as_label_array(labels, "labels")
        if len(given) < len(noisy) and np.array_equal(given, clean[: len(given)]):
            # the first N images in original order (e.g. cifar10-jpeg with data.options.limit=N)
            noisy, clean = noisy[: len(given)], clean[: len(given)]
        if len(given) != len(noisy):
            raise NoiseError(f"{file.name} has {len(noisy)} labels but {len(given)} were given: CIFAR-N covers the "
                             "full CIFAR training set in its original order; apply it before any train/val split")
        candidates = [clean] + ([arrays["clean_label"]] if variant == "coarse" else [])
        if not any(np.array_equal(given, c) for c in candidates):
            wrong = int(np.count_nonzero(given != clean))
            raise NoiseError(f"the given labels differ from the clean labels in {file.name} at {wrong} of "
                             f"{len(given)} positions: CIFAR-N follows the original torchvision training order "
                             "(not TFDS order; the npz's tfds_to_torch_index maps between them)")
    digest = _labels_digest(noisy)
    if labels_sha256 is not None and labels_sha256 != digest:
        raise NoiseError(f"the {variant!r} labels in {file} differ from the ones recorded in the spec "
                         "(labels_sha256 mismatch): a different or modified CIFAR-N file")
    return NoisyLabels(noisy=noisy, clean=clean, num_classes=C, kind="human", rate=None, seed=seed,
                       options={"variant": variant, "path": str(file), "labels_sha256": digest},
                       expected_rate=None)
