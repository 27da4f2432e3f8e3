"""The ``label_issues.csv`` file: one row per scored example, most suspicious first."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np



def write_label_issues_csv(
    path: str | Path,
    labels: np.ndarray,
    suggested: np.ndarray,
    flagged: np.ndarray,
    quality: np.ndarray,
    indices: np.ndarray | None = None,
    true_labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    only_flagged: bool = False,
    paths: list[str] | None = None,
    in_training: np.ndarray | None = None,
    names: list[str] | None = None,
    extra_columns: dict[str, np.ndarray] | None = None,
) -> int:
    """Write ``index, given_label, suggested_label, quality, is_label_issue`` per example (``suggested``:
    ``int [N]``, the detector's most likely classes), flagged
    rows first, each group by rising quality; plus ``part`` (``train`` or ``val``, the held-out
    part) when ``in_training`` is given, ``given_name, suggested_name`` with ``class_names``,
    ``true_label, is_noisy`` when the truth is known, ``path`` (one per row) for file datasets,
    ``name`` (one per row: an id or file name) when given, then ``extra_columns`` by name
    (e.g. the neighbour graph's ``is_near_duplicate``; booleans as 0/1, floats to 6 decimals).

    Returns the number of rows written.
    """
    labels = np.asarray(labels)
    suggested = np.asarray(suggested)
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices)
    flagged = np.asarray(flagged, dtype=bool)
    order = np.lexsort((quality, ~flagged))  # flagged first, then by quality
    header = ["index", "given_label", "suggested_label", "quality", "is_label_issue"]
    header += ["part"] if in_training is not None else []
    header += ["given_name", "suggested_name"] if class_names else []
    header += ["true_label", "is_noisy"] if true_labels is not None else []
    header += ["path"] if paths is not None else []
    header += ["name"] if names is not None else []
    extra = {k: np.asarray(v) for k, v in (extra_columns or {}).items()}
    header += list(extra)
    rows = 0

    def cell(v):
        if isinstance(v, (bool, np.bool_)):
            return int(v)
        return f"{v:.6f}" if isinstance(v, (float, np.floating)) else v

    def write(tmp: Path) -> None:
        nonlocal rows
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for i in order:
                if only_flagged and not flagged[i]:
                    continue
                row = [int(idx[i]), int(labels[i]), int(suggested[i]), f"{quality[i]:.6f}", int(flagged[i])]
                if in_training is not None:
                    row.append("train" if in_training[i] else "val")
                if class_names:
                    row += [class_names[labels[i]], class_names[suggested[i]]]
                if true_labels is not None:
                    row += [int(true_labels[i]), int(true_labels[i] != labels[i])]
                if paths is not None:
                    row.append(paths[i])
                if names is not None:
                    row.append(names[i])
                row += [cell(v[i].item()) for v in extra.values()]
                w.writerow(row)
                rows += 1

    from ..checkpoint import atomic_write

    atomic_write(path, write)
    return rows


SIGNAL_PREFIX = "signal_"
"""``predictions.npz`` stores each of a method's own signals (``Evidence.signals``) under this prefix."""

EVIDENCE_ARRAYS = ("index", "in_training", "given_label", "pred_probs", "history")
"""The arrays every ``predictions.npz`` holds (plus ``targets``, ``pred_hist1/2``, ``knn`` when the run has
them, and ``history_frozen``, a 0-d bool; a file without it reads as False)."""


def evidence_arrays(ev, index: np.ndarray, true_labels: np.ndarray | None = None,
                    class_names: list[str] | None = None, paths: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``predictions.npz`` for :class:`Evidence` ``ev`` of dataset indices ``index``:
    everything the detectors and ``label_issues.csv`` need, so ``noisylab detect RUN`` can re-run
    any detector later (``true_label`` only when the truth is known)."""
    extra = {"true_label": true_labels, "class_names": class_names, "example_path": paths}
    arrays = {k: np.asarray(v) for k, v in extra.items() if v is not None}
    arrays |= {"index": np.asarray(index), "in_training": ev.in_training, "given_label": ev.given,
              "pred_probs": _float32(ev.predictions), "history": _float32(ev.history),
              "history_frozen": np.asarray(bool(ev.history_frozen))}
    if ev.targets is not None:
        arrays["targets"] = _float32(ev.targets)
    if ev.networks is not None:
        arrays["pred_hist1"], arrays["pred_hist2"] = (_float32(h) for h in ev.networks)
    if ev.knn is not None:
        arrays["knn"] = _float32(ev.knn)
    for name, values in ev.signals.items():
        arrays[SIGNAL_PREFIX + name] = _float32(values)
    return arrays


def _float32(values):
    """A numpy array as float32; a row view (float32 when read) as it is, read when written."""
    if hasattr(values, "shape") and not isinstance(values, np.ndarray):
        return values
    return np.asarray(values, dtype=np.float32)


def read_evidence(path: str | Path):
    """``(arrays, Evidence)`` from a run's ``predictions.npz`` (``arrays``: every array by name, see
    :func:`evidence_arrays`); ValueError with one line when the file is damaged, incomplete, or from
    an older noisylab."""
    from ..noise import DAMAGED_NPZ_ERRORS
    from .detectors import Evidence

    try:
        a = load_npz(path)
        missing = [k for k in EVIDENCE_ARRAYS if k not in a]
        if missing:
            raise ValueError(f"'{path}' lacks {', '.join(missing)}: it was not written by this version of "
                             "noisylab; train the run again")
    except DAMAGED_NPZ_ERRORS as err:
        raise ValueError(f"'{path}' is damaged ({type(err).__name__}); train the run again or restore the file") from None
    n = len(a["index"])
    shaped = [a["given_label"].shape == (n,), a["in_training"].shape == (n,), a["pred_probs"].ndim == 2]
    c = a["pred_probs"].shape[1] if a["pred_probs"].ndim == 2 else -1
    shaped += [a[k].shape == (n,) for k in ("true_label", "example_path") if k in a]
    shaped += [a["history_frozen"].shape == ()] if "history_frozen" in a else []
    shaped += [a[k].shape == (n, c) for k in ("pred_probs", "history", "targets", "pred_hist1", "pred_hist2", "knn") if k in a]
    signals = {k[len(SIGNAL_PREFIX):]: v for k, v in a.items() if k.startswith(SIGNAL_PREFIX)}
    shaped += [v.ndim >= 1 and len(v) == n and v.dtype.kind == "f" for v in signals.values()]
    if not all(shaped):
        raise ValueError(f"'{path}' is damaged (its arrays do not fit together); train the run again")
    networks = (a["pred_hist1"], a["pred_hist2"]) if "pred_hist1" in a and "pred_hist2" in a else None
    ev = Evidence(given=a["given_label"].astype(np.int64), history=a["history"], predictions=a["pred_probs"],
                  in_training=a["in_training"].astype(bool), targets=a.get("targets"), networks=networks,
                  knn=a.get("knn"), history_frozen=bool(a.get("history_frozen", False)), signals=signals)
    return a, ev


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` by name (no pickles). Members stored without
    compression (large files: :func:`noisylab.run_folder.save_arrays`) are memory-mapped read-only
    from the file instead of read, so a million-row record is read a chunk at a time by whoever
    slices it; compressed members are read into memory."""
    import zipfile

    arrays = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type == zipfile.ZIP_STORED:
                fh.seek(info.header_offset)
                local = fh.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"bad local header of {info.filename}")
                name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
                fh.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                if dtype.hasobject:
                    raise ValueError(f"'{path}' holds Python objects in {name}; it was not written by noisylab")
                if len(shape) and int(np.prod(shape)) * dtype.itemsize:
                    arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                             order="F" if fortran else "C")
                    continue
            with zf.open(info) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays
