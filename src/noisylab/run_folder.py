"""The files of a run folder: creation, per-epoch records, and the final outputs.

A run writes into its own folder (``output_dir/name``, or ``name_2``... so nothing is overwritten):

    config.yaml          the resolved config
    noisy_labels.npz     the labels it trained on (re-usable as noise.file)
    split.npz            training / noisy-validation indices
    metrics.csv          one row per epoch (lr, train loss and its named terms, test_top1, ...)
    memorization.csv     the five memorization fractions per epoch (when true labels are known;
                         on train.memorization_sample examples)
    skipped_files.csv    damaged image files the folder / CSV loader left out (path, reason), if any
    checkpoints/last.pt, checkpoints/best.pt
    predictions.npz      final pred_probs on the training set (+ per-example method state)
    label_issues.csv     every training example, suspected wrong labels first
    summary.json         final numbers (with eval.tta: the final accuracies with test-time augmentation)
    memorization.png     the memorization curves
    train.log, tb/       the log, TensorBoard

Only rank 0 of a distributed run writes (the engine calls these functions there only).
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write, output_error
from .config import Config, ConfigError

log = logging.getLogger("noisylab")


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """``output_dir/name``, or ``name_2``, ``name_3``... so that no earlier run is overwritten."""
    base = Path(output_dir)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"output_dir '{base}' is a file, not a folder; choose another output_dir")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for k in range(1, 10_000):
            cand = base / (name if k == 1 else f"{name}_{k}")
            try:
                cand.mkdir()
                return cand
            except FileExistsError:
                continue
    except (NotADirectoryError, FileExistsError):
        raise ConfigError(f"output_dir '{base}' lies under a file, not a folder; choose another output_dir") from None
    except OSError as err:
        raise output_error(err, base) from None
    raise ConfigError(f"too many runs named '{name}' in '{base}'")


def ensure_dir(folder: Path) -> Path:
    """``folder`` created if needed (a given run folder); one line when it cannot be."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"run folder '{folder}' is a file; choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        raise ConfigError(f"run folder '{folder}' lies under a file; choose another folder") from None
    except OSError as err:
        raise output_error(err, folder) from None
    return folder


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV (atomically); columns in order of first appearance, blank where a row lacks one
    (loss terms that start after a warm-up)."""
    if not rows:
        return
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(columns), restval="")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    atomic_write(path, write)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, floats rounded to 6 decimals."""
    def fmt(v: Any) -> Any:
        return round(v, 6) if isinstance(v, float) else v

    text = json.dumps({k: fmt(v) for k, v in data.items()}, indent=2, default=float)
    atomic_write(path, lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------- logs
_FILE_HANDLER: logging.Handler | None = None


def attach_file_log(out: Path) -> None:
    """Send the 'noisylab' logger's INFO messages to ``out/train.log`` too."""
    global _FILE_HANDLER
    detach_file_log()
    _FILE_HANDLER = logging.FileHandler(out / "train.log")
    _FILE_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    _FILE_HANDLER.setLevel(logging.INFO)
    log.addHandler(_FILE_HANDLER)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)  # the file always gets INFO; console handlers filter for themselves


def detach_file_log() -> None:
    global _FILE_HANDLER
    if _FILE_HANDLER is not None:
        log.removeHandler(_FILE_HANDLER)
        _FILE_HANDLER.close()
        _FILE_HANDLER = None


def open_tensorboard(cfg: Config, out: Path):
    """A TensorBoard writer in ``out/tb`` (None when disabled, or not installed with ``auto``)."""
    if cfg.train.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if cfg.train.tensorboard is True:
            raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'noisylab[tb]'") from None
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def epoch_log_line(row: dict[str, Any], epochs: int) -> str:
    return f"epoch {row['epoch'] + 1}/{epochs}  " + "  ".join(
        f"{k}={v:.4f}" for k, v in row.items() if k != "epoch" and isinstance(v, float))


COMPRESS_BELOW_BYTES = 2**30
"""``save_arrays`` compresses a file whose arrays take less than this (1 GiB); larger ones are
stored as they are: deflating gigabytes of floats takes minutes and saves little."""
ROW_CHUNK_BYTES = 2**25
"""Row views are written this many bytes (32 MB) at a time."""


def save_arrays(path: Path, **arrays) -> None:
    """An ``.npz`` (no pickles; ``np.load`` reads it), written atomically and compressed below
    :data:`COMPRESS_BELOW_BYTES`. An array may be a numpy array or a 2-D row view with ``shape``
    and slicing (:class:`~noisylab.detect.detectors.TableRows`), written a chunk of rows at a
    time, so a memory-mapped ``[N, C]`` table is never read whole into memory."""
    import zipfile

    def nbytes(v) -> int:
        return v.nbytes if isinstance(v, np.ndarray) else int(np.prod(v.shape)) * 4
    total = sum(nbytes(v) if hasattr(v, "shape") else 0 for v in arrays.values())
    compression = zipfile.ZIP_DEFLATED if total < COMPRESS_BELOW_BYTES else zipfile.ZIP_STORED

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=compression, allowZip64=True) as zf:
            for name, value in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    if hasattr(value, "shape") and not isinstance(value, np.ndarray):
                        _write_rows(fh, value)
                    else:
                        np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)

    atomic_write(path, write)


def _write_rows(fh, rows) -> None:
    """A ``float32 [n, C]`` ``.npy`` from a row view, a chunk at a time."""
    n, c = rows.shape
    np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                              "fortran_order": False, "shape": (n, c)})
    step = max(1, ROW_CHUNK_BYTES // (4 * max(c, 1)))
    for lo in range(0, n, step):
        fh.write(np.ascontiguousarray(rows[lo:lo + step], dtype=np.float32).tobytes())
