"""CIFAR-10 / CIFAR-100 python-pickle loaders and the restricted unpickler."""
from __future__ import annotations

import os
import pickle
import pickletools
import struct

import numpy as np
import pytest

from noisylab.data import DataError, load_dataset
from noisylab.data.cifar import RestrictedUnpickler, safe_load_pickle


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python-2 ``str`` opcodes (SHORT_BINSTRING / BINSTRING), the way the
    official CIFAR files (pickled by Python 2's cPickle) store keys, names and array data."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(b"U" + bytes([len(obj)]) + obj)
        else:
            self.write(b"T" + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (and Python 2) name the reconstruct function numpy.core.multiarray
    return buf.getvalue().replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")


def _globals(raw: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def write_cifar10(root, n_per_batch=4, seed=0, label_fn=None):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        if label_fn is not None:
            labels = label_fn(name, labels)
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n_per_batch)]}
        (folder / name).write_bytes(py2_pickle_bytes(d))
        batches[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(
        py2_pickle_bytes({b"num_cases_per_batch": n_per_batch, b"label_names": names, b"num_vis": 3072}))
    return batches


def write_cifar100(root, n_train=20, n_test=8, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [f // 5 for f in fine]  # any 0..19 mapping will do for the fixture
        (folder / name).write_bytes(py2_pickle_bytes(
            {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
             b"coarse_labels": coarse, b"data": data}))
        out[name] = (data, fine, coarse)
    fine_names = [f"fine_{i:02d}".encode() for i in range(100)]
    coarse_names = [f"coarse_{i:02d}".encode() for i in range(20)]
    meta = {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names}
    (folder / "meta").write_bytes(py2_pickle_bytes(meta))
    return out


def test_fixture_uses_only_the_numpy_globals_of_real_cifar_files(tmp_path):
    raw = py2_pickle_bytes({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})
    assert _globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_cifar10_loads_pixels_labels_and_names_in_order(tmp_path):
    batches = write_cifar10(tmp_path)
    b = load_dataset("cifar10", root=str(tmp_path))
    assert b.train_x.shape == (20, 3, 32, 32) and b.test_x.shape == (4, 3, 32, 32)
    assert b.train_x.dtype.is_floating_point is False
    exp_x = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    exp_y = np.concatenate([batches[f"data_batch_{k}"][1] for k in range(1, 6)])
    # channel-major rows: the first 1024 values are the red plane, row-major
    assert np.array_equal(b.train_x[:, 0].reshape(20, -1).numpy(), exp_x[:, :1024])
    assert np.array_equal(b.train_x[7, 2, 3, 5].item(), exp_x[7, 2048 + 3 * 32 + 5])
    assert np.array_equal(b.train_labels, exp_y) and b.train_labels.dtype == np.int64
    assert np.array_equal(b.test_labels, batches["test_batch"][1])
    assert b.class_names[:3] == ["airplane", "automobile", "bird"] and len(b.class_names) == 10
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.augment == "crop_flip" and b.crop_padding == 4
    # root may also be the batches folder itself
    b2 = load_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-py"))
    assert np.array_equal(b2.train_labels, b.train_labels)


def test_cifar10_accepts_python3_pickles(tmp_path):
    batches = write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    data, labels = batches["data_batch_2"]
    f.write_bytes(pickle.dumps({"data": data, "labels": labels, "batch_label": "b"}, protocol=3))
    b = load_dataset("cifar10", root=str(tmp_path))
    assert np.array_equal(b.train_x[4:8].reshape(4, -1).numpy(), data)


def test_cifar100_fine_coarse_labels_and_names(tmp_path):
    ref = write_cifar100(tmp_path)
    b = load_dataset("cifar100", root=str(tmp_path))
    assert b.num_classes == 100 and b.train_x.shape == (20, 3, 32, 32)
    assert np.array_equal(b.train_labels, ref["train"][1])
    assert np.array_equal(b.extra["coarse_labels"], ref["train"][2])
    assert np.array_equal(b.extra["test_coarse_labels"], ref["test"][2])
    assert b.class_names[99] == "fine_99" and b.extra["coarse_class_names"][19] == "coarse_19"
    assert b.mean == (0.5071, 0.4867, 0.4408)
    assert np.array_equal(b.test_x.reshape(8, -1).numpy(), ref["test"][0])


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {"data": _Evil(f"touch {marker}"), "labels": [0]}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    assert "data_batch_3" in str(err.value) and "system" in str(err.value)
    assert not marker.exists()
    # the same through the bare unpickler, with other protocols and gadgets
    for proto in (0, 4, 5):
        with pytest.raises(DataError):
            path.write_bytes(pickle.dumps(evil, protocol=proto))
            safe_load_pickle(path)
    assert not marker.exists()
    import io

    for raw in (pickle.dumps(eval, protocol=2), pickle.dumps(np.array([1, "a"], dtype=object), protocol=2),
                pickle.dumps(np.float64(1.0), protocol=2)):
        with pytest.raises(pickle.UnpicklingError):
            RestrictedUnpickler(io.BytesIO(raw)).load()


def test_truncated_pickle_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    f.write_bytes(f.read_bytes()[: 2000])
    with pytest.raises(DataError, match=r"data_batch_4: truncated or corrupt"):
        load_dataset("cifar10", root=str(tmp_path))


def test_missing_batch_and_missing_dataset(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch: file not found"):
        load_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(DataError, match=r"CIFAR-100 not found.*cifar-100-python"):
        load_dataset("cifar100", root=str(tmp_path / "nowhere"))


def test_label_outside_class_range(tmp_path):
    write_cifar10(tmp_path, label_fn=lambda name, labels: [10] + labels[1:] if name == "data_batch_5" else labels)
    with pytest.raises(DataError, match=r"data_batch_5: 'labels'\[0\] = 10 is outside the class range \[0, 10\)"):
        load_dataset("cifar10", root=str(tmp_path))


def test_wrong_data_shape(tmp_path):
    write_cifar10(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    f.write_bytes(py2_pickle_bytes({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}))
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be uint8 \[n, 3072\]"):
        load_dataset("cifar10", root=str(tmp_path))
