"""The cifar10-jpeg dataset: the real shared file (when present) and a tiny file in its format."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisylab.data import DataError, load_dataset
from noisylab.data.cifar_jpeg import default_search_dirs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = SHARED / "cifar10_jpeg.npz"


@pytest.mark.skipif(not REAL.is_file(), reason="shared/data/cifar10_jpeg.npz not available")
def test_real_file_first_100_images():
    b = load_dataset("cifar10-jpeg", root=str(SHARED), limit=100)
    assert b.train_x.shape == (100, 3, 32, 32) and b.test_x.shape == (100, 3, 32, 32)
    # README: original CIFAR-10 order; data_batch_1 starts frog, truck, truck, deer, automobile ...
    assert b.train_labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert b.test_labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert b.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.augment == "crop_flip"
    # README: the JPEG copy is close to the lossless originals of the first 4,000 images
    lossless = SHARED / "cifar10_train_first4000_lossless.npz"
    if lossless.is_file():
        ref = np.load(lossless)["x"][:100].transpose(0, 3, 1, 2).astype(np.int16)
        mae = np.abs(b.train_x.numpy().astype(np.int16) - ref).mean()
        assert 3.0 < mae < 9.0


@pytest.mark.skipif(not REAL.is_file(), reason="shared/data/cifar10_jpeg.npz not available")
def test_default_search_finds_the_shared_copy(monkeypatch, tmp_path):
    assert SHARED in default_search_dirs()
    monkeypatch.chdir(tmp_path)
    b = load_dataset("cifar10-jpeg", limit=3, test_limit=2)
    assert b.num_train == 3 and len(b.test_labels) == 2


def write_tiny(path, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        blobs = []
        for a in imgs:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=95)
            blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
        out[f"{split}_jpeg"] = np.concatenate(blobs)
        out[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        out[f"y_{split}"] = rng.integers(0, 10, n).astype(np.int64)
        out[f"{split}_source_path"] = np.array([f"{split}/x/{i:04d}.jpg" for i in range(n)])
    out["class_names"] = np.array([f"c{i}" for i in range(10)])
    np.savez(path, **out)
    return out


def test_tiny_file_decodes_and_caches(tmp_path, monkeypatch):
    ref = write_tiny(tmp_path / "cifar10_jpeg.npz")
    monkeypatch.setenv("NOISYLAB_CACHE", str(tmp_path / "cache"))
    b = load_dataset("cifar10-jpeg", root=str(tmp_path))
    assert b.train_x.shape == (5, 3, 32, 32) and b.train_labels.tolist() == ref["y_train"].tolist()
    first = ref["train_jpeg"][ref["train_offsets"][1]:ref["train_offsets"][2]].tobytes()
    expect = np.asarray(Image.open(io.BytesIO(first)).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(b.train_x[1].numpy(), expect)
    cached = list((tmp_path / "cache").glob("cifar10_jpeg-*.npz"))
    assert len(cached) == 1
    # the cache is used: poison it and the poisoned pixels come back
    with np.load(cached[0]) as c:
        xt, xs = c["x_train"].copy(), c["x_test"]
    xt[0] = 7
    np.savez(cached[0], x_train=xt, x_test=xs)
    assert (load_dataset("cifar10-jpeg", root=str(tmp_path / "cifar10_jpeg.npz")).train_x[0] == 7).all()
    # limits bypass the cache
    small = load_dataset("cifar10-jpeg", root=str(tmp_path), limit=2)
    assert small.num_train == 2 and len(small.test_labels) == 2 and not (small.train_x[0] == 7).all()


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar10_jpeg.npz: file not found"):
        load_dataset("cifar10-jpeg", root=str(tmp_path))
    ref = write_tiny(tmp_path / "cifar10_jpeg.npz")
    raw = (tmp_path / "cifar10_jpeg.npz").read_bytes()
    (tmp_path / "cifar10_jpeg.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"truncated or corrupt npz"):
        load_dataset("cifar10-jpeg", root=str(tmp_path), cache=False)
    ref["train_jpeg"][ref["train_offsets"][2]:ref["train_offsets"][2] + 40] = 0  # destroy image 2's header
    np.savez(tmp_path / "cifar10_jpeg.npz", **ref)
    with pytest.raises(DataError, match=r"train image 2 is not a valid JPEG"):
        load_dataset("cifar10-jpeg", root=str(tmp_path), cache=False)
