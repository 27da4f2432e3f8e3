"""Atomic, checksummed, code-free checkpoints; the resume path of a run; exact RNG capture.

Checkpoints hold only tensors, numbers, strings, lists and dicts, and are read with
``torch.load(..., weights_only=True)``, so a crafted file cannot run code. A checkpoint file is
the ``torch.save`` archive of the state followed by a trailer line ``noisylab-checkpoint-v3
sha256=<hex>`` holding the archive's SHA-256, which is verified before anything is read, so a
damaged file is refused rather than half-used. The archive is streamed to disk as it is
serialised and hashed on the way, and read back memory-mapped: neither side makes a copy of the
state in memory (a 1.28M x 1000 run's per-example tables are gigabytes).

A run folder keeps ``checkpoints/last.pt`` (the newest epoch, or the step where a stop request
ended training inside the next one), ``prev.pt`` (the one before, kept when ``last.pt`` is
replaced) and ``best.pt``. Resuming a folder takes the newest of them that
verifies, with a warning for a damaged one.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import random
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FORMAT = "noisylab-checkpoint-v3"
TRAILER_PREFIX = b"\n" + FORMAT.encode() + b" sha256="
TRAILER_SIZE = len(TRAILER_PREFIX) + 64 + 1  # the prefix, 64 hex digits, a newline
OLD_FORMATS = ("noisylab-checkpoint-v1", "noisylab-checkpoint-v2")  # still read: v1 has no checksum,
# v2 wraps the archive's bytes and their SHA-256 in an outer archive
HASH_CHUNK = 4 * 2**20
CHECKPOINT_NAMES = ("last.pt", "prev.pt", "best.pt")

log = logging.getLogger("noisylab")


class CheckpointError(ValueError):
    """A resume path that does not exist or is not a (valid) noisylab checkpoint."""


class OutputError(OSError):
    """A run's output could not be written (disk full, file-size limit, no permission...)."""


# ----------------------------------------------------------------------------- writing
_FIXES = {
    errno.ENOSPC: "the disk is full: free space or choose another output_dir",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another output_dir",
    errno.EFBIG: "a file-size limit was hit (ulimit -f): raise the limit or choose another output_dir",
    errno.EACCES: "no permission to write there: choose another output_dir",
    errno.EPERM: "no permission to write there: choose another output_dir",
    errno.EROFS: "the file system is read-only: choose another output_dir",
}


def output_error(err: OSError, path: Path) -> OutputError:
    """One line naming the folder and what to do, for an OSError while writing ``path``."""
    fix = _FIXES.get(err.errno, err.strerror or type(err).__name__)
    return OutputError(err.errno, f"cannot write '{path}': {fix}; finished files and the last good checkpoint "
                                  f"are intact")


def atomic_write(path: str | Path, write: Callable[[Path], None], keep_old_as: Path | None = None) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` onto ``path``: a crash, a full disk or a size
    limit never leaves half a file at ``path`` nor a temporary file behind. OSErrors become one
    :class:`OutputError` line. ``keep_old_as``: the file being replaced is renamed to it first
    (only once the new one is completely written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix stays: writers pick formats by it
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if keep_old_as is not None and path.is_file():
            os.replace(path, keep_old_as)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise output_error(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


class _HashingWriter(io.RawIOBase):
    """A write-only stream into ``file`` that hashes what passes; it keeps the first OSError, which
    torch's archive writer would otherwise turn into a RuntimeError."""

    def __init__(self, file) -> None:
        super().__init__()
        self.file, self.sha256, self.error = file, hashlib.sha256(), None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            self.file.write(view)
        except OSError as err:
            self.error = self.error or err
            raise
        self.sha256.update(view)
        return view.nbytes


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_old_as: Path | None = None) -> None:
    """Write ``state`` to ``path`` atomically, streamed, with its SHA-256 in a trailer (``keep_old_as``:
    see :func:`atomic_write`). A full disk or a size limit is an :class:`OutputError`."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            out = _HashingWriter(f)
            try:
                torch.save(state, out)
            except RuntimeError:
                if out.error is not None:
                    raise out.error from None
                raise
            f.write(TRAILER_PREFIX + out.sha256.hexdigest().encode() + b"\n")
    atomic_write(path, write, keep_old_as)


# ----------------------------------------------------------------------------- reading
def _torch_load(source, where: Path, mmap: bool = False) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise CheckpointError(f"'{where}' is not a readable noisylab checkpoint ({type(err).__name__}); "
                              "it is damaged or not a checkpoint") from None


def _v3_checksum(path: Path) -> str | None:
    """The SHA-256 a v3 checkpoint's trailer states (None: no v3 trailer)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < TRAILER_SIZE:
                return None
            f.seek(-TRAILER_SIZE, os.SEEK_END)
            trailer = f.read()
    except OSError as err:
        raise CheckpointError(f"'{path}' cannot be read ({err.strerror})") from None
    if not trailer.startswith(TRAILER_PREFIX) or not trailer.endswith(b"\n"):
        return None
    return trailer[len(TRAILER_PREFIX):-1].decode("ascii", "replace")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks: which file a result was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_of_archive(path: Path) -> str:
    """The SHA-256 of a v3 checkpoint's archive (all but the trailer), read in chunks."""
    digest, buf = hashlib.sha256(), memoryview(bytearray(HASH_CHUNK))
    with open(path, "rb", buffering=0) as f:
        left = os.fstat(f.fileno()).st_size - TRAILER_SIZE
        while left > 0:
            got = f.readinto(buf[:min(HASH_CHUNK, left)])
            if not got:
                break
            digest.update(buf[:got])
            left -= got
    return digest.hexdigest()


def read_checkpoint_file(path: Path) -> dict[str, Any]:
    """The state stored in one checkpoint file, its checksum verified (a v3 file's tensors are
    memory-mapped from it, not read into memory)."""
    stated = _v3_checksum(path)
    if stated is not None:
        if _sha256_of_archive(path) != stated:
            raise CheckpointError(f"'{path}' is damaged (checksum mismatch)")
        state = _torch_load(path, path, mmap=True)
        if not isinstance(state, dict):
            raise CheckpointError(f"'{path}' is not a noisylab checkpoint (no state)")
        return state
    outer = _torch_load(path, path)
    if not isinstance(outer, dict):
        raise CheckpointError(f"'{path}' is not a noisylab checkpoint (format tag missing)")
    if outer.get("format") == OLD_FORMATS[0]:
        return outer
    if outer.get("format") != OLD_FORMATS[1]:
        raise CheckpointError(f"'{path}' is not a noisylab checkpoint (format tag missing)")
    payload = outer.get("payload")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"'{path}' is damaged (checksum mismatch)")
    state = _torch_load(io.BytesIO(payload), path)
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' is not a noisylab checkpoint (no state)")
    return state


def resolve_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a resume path means, and its state.

    A file is read as it is. A run folder resumes its newest checkpoint that verifies
    (``last.pt``, else ``prev.pt``, else ``best.pt``, by epoch), warning about any damaged one.
    """
    path = Path(path)
    if path.is_file():
        return path, read_checkpoint_file(path)
    if not path.is_dir():
        raise CheckpointError(f"resume path '{path}' does not exist (give a run folder or one of its checkpoints)")
    folder = path / "checkpoints"
    found = [folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()]
    if not found:
        if (path / "config.yaml").is_file():
            raise CheckpointError(f"run folder '{path}' has no checkpoint: it stopped before its first epoch ended; "
                                  f"start it again with: noisylab train -c {path / 'config.yaml'}")
        raise CheckpointError(f"'{path}' is not a noisylab run folder (no checkpoints/ and no config.yaml)")
    good: list[tuple[int, Path, dict[str, Any]]] = []
    damaged: list[str] = []
    for f in found:
        try:
            state = read_checkpoint_file(f)
        except CheckpointError as err:
            damaged.append(str(err))
            continue
        good.append((int(state.get("epoch", -1)), f, state))
    if not good:
        raise CheckpointError(f"every checkpoint of '{path}' is damaged ({', '.join(f.name for f in found)}); "
                              f"start again with: noisylab train -c {path / 'config.yaml'}")
    for message in damaged:
        log.warning("skipping %s", message)
    epoch, best_file, state = max(good, key=lambda g: (g[0], -CHECKPOINT_NAMES.index(g[1].name)))
    if best_file.name != "last.pt":
        log.warning("resuming from %s (epoch %d)", best_file, epoch + 1)
    return best_file, state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; a run folder resolves to its newest valid checkpoint."""
    return resolve_checkpoint(path)[1]


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (``RUN/checkpoints/x.pt`` -> ``RUN``)."""
    return checkpoint.parent.parent


# ----------------------------------------------------------------------------- RNG
def capture_rng(device: torch.device | str | None = None) -> dict[str, Any]:
    """Every RNG the training touches: python, numpy, torch CPU and, on a CUDA ``device``, that
    device's generator (``cuda``: a list of one state; none otherwise)."""
    np_state = np.random.get_state()
    device = torch.device(device) if device is not None else None
    on_cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
    return {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if on_cuda else [],
    }


def restore_rng(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Put back what :func:`capture_rng` took; its CUDA state goes to ``device``'s generator.

    Every process of a DDP run is seeded alike and draws alike, so rank 0's device generator (the
    one a checkpoint holds) is also the state every other rank's own device must get back; a
    checkpoint of an older version holds every device's state as process 0 saw it, of which the
    first is the one it trained on."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    device = torch.device(device) if device is not None else None
    if state["cuda"] and device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0].cpu(), device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
