"""Per-example state (one row of C numbers per training example) in the precision and the place
its size allows.

ELR's targets, ELR+'s target histories and the detection record are ``[N, C]`` tables. In float32
a 1.28M x 1000 table (ImageNet-1k, WebVision-1000) is 5.1 GB; in float16, 2.6 GB.
``train.state_precision`` chooses: ``float32``, ``float16``, or ``auto`` (float16 from
:data:`AUTO_HALF_ENTRIES` entries per table on, float32 below, so every CIFAR-size run keeps the
papers' float32). ``train.state_storage`` chooses where: ``memory``, ``file`` (a memory-mapped
file, so the operating system keeps in memory only the pages it has room for), or ``auto``
(``file`` for a table of :data:`AUTO_FILE_SHARE` of the physical memory or more, on a CPU device). Where a table lives never
changes a number: the same values are read and written.

Half precision only stores: each update reads the rows in float32, computes there and rounds
once when writing back (:func:`ema_rows_`). For a moving average ``s <- d s + (1 - d) x`` with
``d < 1`` the rounding errors do not pile up: each write is off by at most half a float16 ulp
(``2^-12`` for values in [0.5, 1), less below), and the recursion shrinks every earlier error by
``d``, so the stored value stays within ``2^-12 / (1 - d)`` of the float32 recursion fed the same
inputs (``2^-12 / 0.3 = 8.1e-4`` for ELR's beta = 0.7, ``2.4e-3`` for beta = 0.9), however many
epochs pass.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import output_error

PRECISIONS = ("auto", "float32", "float16")
STORAGES = ("auto", "memory", "file")
AUTO_FILE_SHARE = 1 / 8
"""``state_storage: auto`` maps a table to a file, on a CPU device, when it takes this share of the
machine's physical memory or more (3 GB of 24 GB: a 1.28M x 1000 float16 table, 2.6 GB, stays in
memory; a float32 one, 5.1 GB, goes to a file). In memory the record costs 8 s an epoch at that
size, in files about a minute (docs/results.md), so files are for when memory is short."""
AUTO_HALF_ENTRIES = 2**27
"""``auto`` keeps float32 below this many entries per table (134M: 134,217 examples x 1000
classes, 537 MB in float32) and uses float16 from there on."""
HALF_ULP_BELOW_ONE = 2.0**-12
"""Half the spacing of float16 numbers in [0.5, 1): the largest rounding error of one write."""


def state_dtype(precision: str, num_examples: int, num_classes: int) -> torch.dtype:
    """The dtype of the per-example tables for ``train.state_precision``."""
    if precision == "float32":
        return torch.float32
    if precision == "float16":
        return torch.float16
    if precision == "auto":
        return torch.float16 if num_examples * num_classes >= AUTO_HALF_ENTRIES else torch.float32
    raise ValueError(f"state precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def ema_bound(decay: float) -> float:
    """The largest distance of a float16-stored moving average from its float32 recursion (module doc)."""
    return HALF_ULP_BELOW_ONE / (1.0 - decay)


@torch.no_grad()
def ema_rows_(table: torch.Tensor, index: torch.Tensor, values: torch.Tensor, decay: float) -> None:
    """``table[index] <- decay * table[index] + (1 - decay) * values``, computed in float32 (float64
    for a float64 table) and written in ``table``'s dtype (one rounding per write). With repeated
    indices the last wins, as with plain indexed assignment."""
    compute = torch.promote_types(table.dtype, torch.float32)
    rows = table[index].to(compute)
    table[index] = (decay * rows + (1.0 - decay) * values.to(compute)).to(table.dtype)


def table_bytes(num_examples: int, num_classes: int, dtype: torch.dtype) -> int:
    return num_examples * num_classes * torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class TableStorage:
    """How a run keeps its ``[N, C]`` per-example tables: ``dtype``, and ``folder`` (None: in
    memory; else each table is a memory-mapped file created there).

    A file table is unlinked as soon as it is mapped (POSIX keeps the mapping), so it takes disk
    space only while the process lives and a killed run leaves nothing behind; the checkpoint holds
    the state. The file's space is reserved when it is created, so a full disk is one
    :class:`OSError` then, not a crash (SIGBUS) at a later write."""

    dtype: torch.dtype = torch.float32
    folder: Path | None = None

    def zeros(self, num_rows: int, num_cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """A ``[num_rows, num_cols]`` table of zeros of ``dtype``, on ``device`` or in a file."""
        if self.folder is None:
            return torch.zeros(num_rows, num_cols, dtype=self.dtype, device=device)
        return _file_table(Path(self.folder), (num_rows, num_cols), self.dtype)

    @property
    def in_files(self) -> bool:
        return self.folder is not None


def _file_table(folder: Path, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    nbytes = int(np.prod(shape)) * np_dtype.itemsize
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".noisylab-state-", suffix=".bin", dir=folder)
    except OSError as err:
        raise output_error(err, folder) from None
    try:
        if nbytes and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)  # the blocks now, or ENOSPC now
        elif nbytes:
            os.ftruncate(fd, nbytes)
    except OSError as err:  # the disk is full, a size limit...
        os.close(fd)
        os.unlink(name)
        raise output_error(err, folder / "(per-example state)") from None
    try:
        table = np.memmap(name, dtype=np_dtype, mode="r+", shape=shape) if nbytes else np.zeros(shape, np_dtype)
    finally:
        os.close(fd)
        try:
            os.unlink(name)
        except OSError:  # a system that cannot unlink an open file keeps it until the process ends
            pass
    return torch.from_numpy(table)


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def table_storage(precision: str, storage: str, num_examples: int, num_classes: int, device: torch.device,
                  folder: str | Path, memory_bytes: int | None = None) -> TableStorage:
    """The :class:`TableStorage` of ``train.state_precision`` and ``train.state_storage`` for an
    ``[N, C]`` table; ``folder`` holds file tables; ``memory_bytes``: the physical memory ``auto``
    compares a table with (default: this machine's, :data:`AUTO_FILE_SHARE`)."""
    dtype = state_dtype(precision, num_examples, num_classes)
    if storage not in STORAGES:
        raise ValueError(f"state storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if storage == "auto":
        memory = memory_bytes or physical_memory_bytes() or 16 * 2**30
        big = table_bytes(num_examples, num_classes, dtype) >= AUTO_FILE_SHARE * memory
        storage = "file" if big and torch.device(device).type == "cpu" else "memory"
    if storage == "file" and torch.device(device).type != "cpu":
        raise ValueError(f"file tables live in host memory, and device {device} would copy them to itself: "
                         "use state_storage=memory (and state_precision=float16) there")
    return TableStorage(dtype, Path(folder) if storage == "file" else None)
