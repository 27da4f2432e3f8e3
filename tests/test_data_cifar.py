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


def _py3_protocol2_batch(data, labels, name, str_keys):
    d = {"batch_label": name.encode(), "labels": labels, "data": data,
         "filenames": [f"img_{i}.png".encode() for i in range(len(labels) - 1)] + [b""]}
    if not str_keys:
        d = {k.encode(): v for k, v in d.items()}
    return pickle.dumps(d, protocol=2)


@pytest.mark.parametrize("str_keys", [False, True], ids=["bytes_keys", "str_keys"])
def test_cifar10_loads_python3_protocol2_reexports(tmp_path, str_keys):
    """Python 3 writes bytes in protocol 2 as ``_codecs.encode(text, 'latin1')`` (and b'' as
    ``bytes()``): such re-exported batch files load, with the same pixels and labels."""
    batches = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    data[0, :4] = [0, 127, 128, 255]  # bytes >= 0x80 survive the latin-1 round trip
    labels = [9, 0, 3, 3]
    raw = _py3_protocol2_batch(data, labels, "training batch 3 of 5", str_keys)
    assert "_codecs encode" in _globals(raw) and "__builtin__ bytes" in _globals(raw)
    (folder / "data_batch_3").write_bytes(raw)
    test_data, test_labels = batches["test_batch"]
    (folder / "test_batch").write_bytes(_py3_protocol2_batch(test_data, test_labels, "testing batch", str_keys))
    names = [n.encode() for n in ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
    meta = {"label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta if str_keys else {k.encode(): v for k, v in meta.items()},
                                                       protocol=2))
    b = load_dataset("cifar10", root=str(tmp_path))
    assert np.array_equal(b.train_x[8:12].reshape(4, -1).numpy(), data)
    assert b.train_labels[8:12].tolist() == labels
    assert np.array_equal(b.train_x[:4].reshape(4, -1).numpy(), batches["data_batch_1"][0])
    assert np.array_equal(b.test_x.reshape(4, -1).numpy(), test_data) and b.test_labels.tolist() == test_labels
    assert b.class_names[:2] == ["plane", "car"]
    d = safe_load_pickle(folder / "data_batch_3")
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    assert d[key("filenames")][0] == b"img_0.png" and d[key("filenames")][-1] == b""


class _Encode:
    """Pickles as ``_codecs.encode(*args)`` (``codecs.encode`` is ``_codecs.encode``)."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        import codecs

        return (codecs.encode, self.args)


def test_protocol2_codecs_other_than_latin1_text_and_os_system_are_refused(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    data = np.zeros((4, 3072), np.uint8)
    # a _codecs.encode call with another encoding, followed by os.system: refused at the first
    for args, shown in (((f"touch {marker}", "utf-8"), "encoding 'utf-8'"), (("x", "rot13"), "encoding 'rot13'"),
                        (("x", "latin1", "strict"), "3 arguments"), ((b"x", "latin1"), "a bytes argument")):
        raw = pickle.dumps({b"data": data, b"labels": [0, 1, 2, 3], b"x": _Encode(*args),
                            b"y": _Evil(f"touch {marker}")}, protocol=2)
        assert "_codecs encode" in _globals(raw)
        path.write_bytes(raw)
        with pytest.raises(DataError) as err:
            load_dataset("cifar10", root=str(tmp_path))
        msg = str(err.value)
        assert "data_batch_2" in msg and f"refused _codecs.encode with {shown}" in msg and "latin1" in msg
        assert "\n" not in msg and not marker.exists()
    # os.system in a Python-3 protocol-2 re-export (whose bytes use _codecs.encode) is still refused
    raw = pickle.dumps({b"data": data, b"labels": _Evil(f"touch {marker}")}, protocol=2)
    assert {"_codecs encode", "posix system"} <= _globals(raw) or {"_codecs encode", "nt system"} <= _globals(raw)
    path.write_bytes(raw)
    with pytest.raises(DataError, match=r"data_batch_2: not a valid CIFAR batch file \(refused global '.*system'\)"):
        load_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()
    # other _codecs functions and bytes() with arguments stay refused
    import codecs
    import io

    for raw in (pickle.dumps(codecs.decode, protocol=2), pickle.dumps(codecs.lookup, protocol=2),
                b"\x80\x02c__builtin__\nbytes\nK\x05\x85R."):
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            RestrictedUnpickler(io.BytesIO(raw)).load()
    assert RestrictedUnpickler(io.BytesIO(pickle.dumps([b"ab\xff", b""], protocol=2))).load() == [b"ab\xff", b""]
