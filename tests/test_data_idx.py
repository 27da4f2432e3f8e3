"""MNIST / Fashion-MNIST IDX loaders."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from noisylab.data import DataError, load_dataset, read_idx
from noisylab.data.constants import FASHION_MNIST_DEBIAN_DIR


def idx_bytes(a: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx_set(folder: Path, n_train=12, n_test=5, gz=True, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        raw = idx_bytes(a)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    ref = write_idx_set(tmp_path, gz=gz)
    b = load_dataset("mnist", root=str(tmp_path))
    assert b.train_x.shape == (12, 1, 28, 28) and b.test_x.shape == (5, 1, 28, 28)
    assert np.array_equal(b.train_x[:, 0].numpy(), ref["train-images-idx3-ubyte"])
    assert np.array_equal(b.train_labels, ref["train-labels-idx1-ubyte"]) and b.train_labels.dtype == np.int64
    assert np.array_equal(b.test_labels, ref["t10k-labels-idx1-ubyte"])
    assert b.mean == (0.1307,) and b.augment == "none"


def test_torchvision_layout_and_fashion_names(tmp_path):
    write_idx_set(tmp_path / "FashionMNIST" / "raw")
    b = load_dataset("fashion-mnist", root=str(tmp_path))
    assert b.class_names[0] == "T-shirt/top" and b.class_names[9] == "Ankle boot"
    assert b.mean == (0.2860,) and b.std == (0.3530,)


def test_read_idx_other_types(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "x.idx").write_bytes(idx_bytes(a, 0x0C))
    out = read_idx(tmp_path / "x.idx")
    assert out.dtype == np.int32 and np.array_equal(out, a)


def test_truncated_and_corrupt_idx(tmp_path):
    write_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated: header says \(12, 28, 28\)"):
        load_dataset("mnist", root=str(tmp_path))
    write_idx_set(tmp_path / "g", gz=True)
    g = tmp_path / "g" / "t10k-labels-idx1-ubyte.gz"
    g.write_bytes(g.read_bytes()[:-6])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: truncated or corrupt gzip"):
        load_dataset("mnist", root=str(tmp_path / "g"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataError, match=r"not an IDX file"):
        read_idx(tmp_path / "bad" / "train-images-idx3-ubyte")


def test_label_out_of_range_and_length_mismatch(tmp_path):
    ref = write_idx_set(tmp_path, gz=False)
    labels = ref["train-labels-idx1-ubyte"].copy()
    labels[3] = 10
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 10 at position 3 is outside \[0, 10\)"):
        load_dataset("mnist", root=str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:5] % 10))
    with pytest.raises(DataError, match=r"5 labels but .*train-images-idx3-ubyte has 12 images"):
        load_dataset("mnist", root=str(tmp_path))


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"MNIST not found"):
        load_dataset("mnist", root=str(tmp_path))
    write_idx_set(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=str(tmp_path))


@pytest.mark.skipif(not (Path(FASHION_MNIST_DEBIAN_DIR) / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_found_where_debian_installs_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing under ./data
    b = load_dataset("fashion-mnist")
    assert b.train_x.shape == (60000, 1, 28, 28) and b.test_x.shape == (10000, 1, 28, 28)
    assert np.array_equal(np.bincount(b.train_labels), np.full(10, 6000))
    assert np.array_equal(np.bincount(b.test_labels), np.full(10, 1000))
    # the published normalisation constants are this training set's statistics
    x = b.train_x.float().div_(255)
    assert abs(x.mean().item() - 0.2860) < 5e-4 and abs(x.std().item() - 0.3530) < 5e-4
