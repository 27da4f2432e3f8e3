"""Per-example state at the scale of a million examples: tables in memory-mapped files, checkpoints
streamed to and from disk without a copy in memory, the same numbers whichever way a run keeps them."""
from __future__ import annotations

import errno
import hashlib
import io
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from helpers import full_and_resumed, without_time
from noisylab.checkpoint import CheckpointError, OutputError, read_checkpoint_file, save_checkpoint
from noisylab.per_example import TableStorage, table_storage

MB = 2**20


def test_checkpoint_save_and_read_make_no_copy_of_the_state_in_memory(tmp_path):
    """A 48 MB state: serialising it into a buffer (and that buffer into another) would allocate
    it again; the streamed writer and the memory-mapped reader allocate a few MB at most."""
    state = {"epoch": 3, "table": torch.rand(3 * MB, 4), "nested": {"x": torch.arange(5)}}
    path = tmp_path / "last.pt"
    tracemalloc.start()
    save_checkpoint(state, path)
    _, peak_write = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    back = read_checkpoint_file(path)
    _, peak_read = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak_write < 8 * MB and peak_read < 8 * MB, (peak_write / MB, peak_read / MB)
    assert back["epoch"] == 3 and torch.equal(back["table"], state["table"])
    assert torch.equal(back["nested"]["x"], torch.arange(5))


def test_a_truncated_or_altered_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged|not a readable"):
        read_checkpoint_file(path)
    altered = bytearray(data)
    altered[100] ^= 0x01
    path.write_bytes(bytes(altered))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint_file(path)


def test_checkpoints_of_the_previous_format_are_still_read(tmp_path):
    """v2: an outer archive ``{format, sha256, payload}`` around the state's archive bytes."""
    buf = io.BytesIO()
    torch.save({"epoch": 7, "w": torch.ones(3)}, buf)
    payload = buf.getvalue()
    torch.save({"format": "noisylab-checkpoint-v2", "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": payload}, tmp_path / "old.pt")
    state = read_checkpoint_file(tmp_path / "old.pt")
    assert state["epoch"] == 7 and torch.equal(state["w"], torch.ones(3))
    torch.save({"format": "noisylab-checkpoint-v2", "sha256": "0" * 64, "payload": payload}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint_file(tmp_path / "bad.pt")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_file_table_is_mapped_from_a_file_already_unlinked(tmp_path):
    table = TableStorage(torch.float16, tmp_path).zeros(1000, 7)
    assert table.dtype == torch.float16 and table.shape == (1000, 7) and not table.any()
    table[5] = 1.5
    assert float(table.sum()) == 1.5 * 7
    assert list(tmp_path.iterdir()) == []  # nothing left on disk once mapped
    maps = open("/proc/self/maps").read()
    assert any(".noisylab-state-" in line and "(deleted)" in line for line in maps.splitlines())


def test_auto_storage_maps_tables_of_an_eighth_of_the_memory_to_files_on_cpu_only(tmp_path):
    memory = 24 * 10**9  # an eighth: 3 GB
    rows = -(-3 * 10**9 // (2 * 1000))  # float16 x 1000 classes: the fewest rows at the threshold
    cpu = torch.device("cpu")
    assert table_storage("float16", "auto", rows, 1000, cpu, tmp_path, memory).folder == tmp_path
    assert table_storage("float16", "auto", rows - 1, 1000, cpu, tmp_path, memory).folder is None
    assert table_storage("auto", "auto", 1_280_000, 1000, cpu, tmp_path, memory).folder is None  # float16: 2.6 GB
    assert table_storage("float32", "auto", 1_280_000, 1000, cpu, tmp_path, memory).folder == tmp_path  # 5.1 GB
    assert table_storage("auto", "auto", rows, 1000, torch.device("cuda"), tmp_path, memory).folder is None
    assert table_storage("float32", "memory", 10**7, 1000, cpu, tmp_path, memory).folder is None
    with pytest.raises(ValueError, match="use state_storage=memory"):
        table_storage("float16", "file", 10, 10, torch.device("cuda"), tmp_path)


def test_a_full_disk_when_a_table_file_is_made_is_one_output_error(tmp_path, monkeypatch):
    def no_space(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", no_space, raising=False)
    with pytest.raises(OutputError, match="the disk is full"):
        TableStorage(torch.float32, tmp_path).zeros(100, 10)
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_its_tables_in_files_gives_the_numbers_of_one_in_memory_and_resumes_exactly(tmp_path):
    from test_engine import tiny_config

    state_dir = tmp_path / "state"
    cfg = tiny_config(tmp_path, **{"train.epochs": 3})
    in_files = tiny_config(tmp_path, **{"train.epochs": 3, "train.state_storage": "file",
                                        "train.state_dir": str(state_dir)})
    from noisylab.training import train

    memory = train(cfg.model_copy(update={"name": "memory"}))
    mapped = []

    def count_mapped_tables(epoch, row):
        if sys.platform.startswith("linux"):
            mapped.append(sum(str(state_dir) in line for line in open("/proc/self/maps").read().splitlines()))

    watched = train(in_files.model_copy(update={"name": "watched"}), callbacks=[count_mapped_tables])
    assert without_time(watched.history) == without_time(memory.history)
    if sys.platform.startswith("linux"):
        assert min(mapped) >= 3, mapped  # the history, its calm copy and ELR's targets
    full, resumed = full_and_resumed(in_files, tmp_path, stop_after_epoch=1)
    assert without_time(full.history) == without_time(memory.history) == without_time(resumed.history)
    for run in ("full", "cut"):
        a = np.load(memory.run_dir / "predictions.npz")
        b = np.load(tmp_path / run / "predictions.npz")
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert list(state_dir.iterdir()) == []


def _random_probs(rng, n, c, absent=()):
    given = rng.integers(0, c, n)
    for k in absent:
        given[given == k] = (k + 1) % c
    logits = rng.normal(size=(n, c)) * 2
    logits[np.arange(n), given] += rng.normal(1.0, 1.5, n)  # mostly right, some confidently wrong
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[::17] = np.round(probs[::17], 1)  # ties and exact zeros
    probs[::17] = probs[::17] / probs[::17].sum(axis=1, keepdims=True)
    return given, probs


@pytest.mark.parametrize("absent", [(), (2,)])
def test_the_confident_joint_in_chunks_is_cleanlabs(absent):
    from cleanlab.count import compute_confident_joint, estimate_joint

    from noisylab.detect.confident import ConfidentJoint, class_thresholds
    from noisylab.detect.estimate import noise_estimates

    given, probs = _random_probs(np.random.default_rng(len(absent)), 3000, 6, absent)
    want, want_off = compute_confident_joint(given, probs, calibrate=False, return_indices_of_off_diagonals=True)
    joint = ConfidentJoint(class_thresholds(given, probs[np.arange(len(given)), given], 6))
    for lo in range(0, 3000, 701):  # uneven chunks
        joint.add(given[lo:lo + 701], probs[lo:lo + 701])
    assert np.array_equal(joint.counts, want)
    assert np.array_equal(np.flatnonzero(joint.off_diagonal), np.sort(want_off))
    est = noise_estimates(given, np.zeros(3000, bool), given, 6, confident_joint=joint.counts)
    counts = estimate_joint(given, probs).T * 3000  # cleanlab from all of P at once: rows = true class
    assert est["noise_rate_estimate"] == pytest.approx(1 - np.trace(counts) / counts.sum(), abs=1e-12)


@pytest.mark.parametrize("filter_by", ["expected_f1", "predicted_neq_given", "low_self_confidence"])
def test_detection_over_chunks_equals_detection_over_all_rows(filter_by):
    """The record as views into tables (float16 and a memory map among them), read 37 rows at a
    time, against the same evidence in memory at once."""
    from noisylab.detect import Evidence, detect_label_issues
    from noisylab.detect.detectors import TableRows

    rng = np.random.default_rng(5)
    n, c = 500, 5
    given, history = _random_probs(rng, n, c)
    _, predictions = _random_probs(rng, n, c)
    order = rng.permutation(n)  # the scored rows in another order than the tables'
    table_h = torch.from_numpy(history.astype(np.float16))
    table_p = np.zeros((n, c), np.float32)
    table_p[:] = predictions
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    views = Evidence(given=given, history=TableRows(table_h, np.arange(n)), predictions=TableRows(table_p, np.arange(n)),
                     in_training=np.ones(n, bool))
    dense = Evidence(given=given, history=table_h.float().numpy(), predictions=table_p, in_training=np.ones(n, bool))
    for name in ("history", "predictions"):
        whole = detect_label_issues(dense, name, filter_by, threshold=0.4)
        chunked = detect_label_issues(views, name, filter_by, threshold=0.4, keep_probs=False, chunk_entries=37 * c)
        assert chunked.probs is None and whole.probs.shape == (n, c)
        assert np.array_equal(chunked.flagged, whole.flagged) and np.array_equal(chunked.suggested, whole.suggested)
        assert np.array_equal(chunked.quality, whole.quality)
        assert np.array_equal(chunked.confident_joint, whole.confident_joint)
        assert 0 < chunked.flagged.sum() < n
    shuffled = TableRows(table_p, inv)  # rows picked through an index
    assert np.array_equal(shuffled[3:9], table_p[inv[3:9]])


def test_a_large_run_computes_the_neighbour_vote_only_for_a_detector_that_reads_it(tmp_path, monkeypatch):
    """Above ``KNN_KEPT_ENTRIES`` the dense ``[N, C]`` vote (and its search) is skipped unless
    ``detect.method`` needs it; below, every run keeps it for ``noisylab detect`` later."""
    from test_engine import tiny_config

    from noisylab.training import detection, train

    small = train(tiny_config(tmp_path, **{"train.epochs": 1, "name": "small"}))
    assert "knn" in np.load(small.run_dir / "predictions.npz").files
    monkeypatch.setattr(detection, "KNN_KEPT_ENTRIES", 10)
    large = train(tiny_config(tmp_path, **{"train.epochs": 1, "name": "large"}))
    assert "knn" not in np.load(large.run_dir / "predictions.npz").files
    asked = train(tiny_config(tmp_path, **{"train.epochs": 1, "name": "asked", "detect.method": "knn"}))
    assert "knn" in np.load(asked.run_dir / "predictions.npz").files


def test_noisylab_detect_reads_a_large_uncompressed_record_memory_mapped(tmp_path, monkeypatch):
    """predictions.npz of 1 GiB and more is stored without compression; ``noisylab detect`` then
    maps its arrays instead of reading them, and gives the verdict it gives on the compressed file."""
    import shutil

    from test_engine import tiny_config

    from noisylab import run_folder
    from noisylab.cli import main
    from noisylab.detect.io import load_npz
    from noisylab.training import train

    run = train(tiny_config(tmp_path, **{"train.epochs": 2})).run_dir
    copy = tmp_path / "stored"
    shutil.copytree(run, copy)
    with np.load(run / "predictions.npz") as z:
        arrays = {k: z[k] for k in z.files}
    monkeypatch.setattr(run_folder, "COMPRESS_BELOW_BYTES", 0)
    run_folder.save_arrays(copy / "predictions.npz", **arrays)
    mapped = load_npz(copy / "predictions.npz")
    assert isinstance(mapped["history"], np.memmap) and isinstance(mapped["pred_probs"], np.memmap)
    assert all(np.array_equal(mapped[k], v) for k, v in arrays.items())
    for folder in (run, copy):
        assert main(["-q", "detect", str(folder), "--method", "history", "-o", str(folder / "again.csv")]) == 0
    assert (copy / "again.csv").read_text() == (run / "again.csv").read_text()
    assert (run / "again.csv").read_text().splitlines()[1:] == (run / "label_issues.csv").read_text().splitlines()[1:]
