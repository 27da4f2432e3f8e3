"""A user's own data: image folder, path,label CSV and npz."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from noisylab.data import DataError, FileDataBundle, example_paths, load_dataset, make_eval_batches, make_train_batches


def _save(path, rgb, size=(12, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "eel": (10, 10, 200)}


def write_folder(root, n=3):
    for c, rgb in COLOURS.items():
        for i in range(n):
            _save(root / c / f"{i}.png", rgb, size=(12 + i, 16))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()


def test_folder_decodes_into_memory(tmp_path):
    write_folder(tmp_path)
    b = load_dataset("folder", root=str(tmp_path), image_size=8)
    assert not isinstance(b, FileDataBundle) and b.class_names == ["cat", "dog", "eel"]
    assert b.train_x.shape == (9, 3, 8, 8) and b.train_x.dtype == torch.uint8
    assert b.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and not b.labels_are_clean
    assert b.test_x is None and b.augment == "crop_flip" and b.crop_padding == 1
    assert b.train_x[4, :, 3, 3].tolist() == [10, 200, 10]
    # mean/std are the training images' own statistics
    assert abs(b.mean[0] - (200 + 10 + 10) / 3 / 255) < 1e-3
    x, y, idx = next(iter(make_train_batches(b, b.train_labels, 9, "cpu").epoch(0)))
    assert x.shape == (9, 3, 8, 8)
    assert example_paths(b)[3].endswith("dog/0.png") and example_paths(b, "test") is None
    g = load_dataset("folder", root=str(tmp_path), image_size=6, color="gray")
    assert g.train_x.shape == (9, 1, 6, 6) and len(g.mean) == 1
    assert abs(int(g.train_x[0, 0, 2, 2]) - round(0.299 * 200 + 0.587 * 10 + 0.114 * 10)) <= 1


def test_folder_with_train_and_test_splits_and_file_backed_mode(tmp_path):
    write_folder(tmp_path / "train")
    _save(tmp_path / "test" / "dog" / "t.png", COLOURS["dog"])
    b = load_dataset("folder", root=str(tmp_path), image_size=8)
    assert b.num_train == 9 and b.test_labels.tolist() == [1]
    f = load_dataset("folder", root=str(tmp_path), image_size=8, in_memory=False, num_workers=0)
    assert isinstance(f, FileDataBundle) and f.input_shape == (3, 8, 8)
    assert f.mean == (0.485, 0.456, 0.406)
    xb, yb, _ = next(iter(make_eval_batches(f, "test", 4, "cpu")))
    assert yb.tolist() == [1] and xb.shape == (1, 3, 8, 8)
    auto = load_dataset("folder", root=str(tmp_path), image_size=8, max_memory_mb=1e-4)
    assert isinstance(auto, FileDataBundle)  # too big for the memory budget -> files
    _save(tmp_path / "test" / "fox" / "t.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"fox: class folder 'fox' has no training folder"):
        load_dataset("folder", root=str(tmp_path))


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_dataset("folder", root=str(tmp_path / "missing"))
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="hold no images"):
        load_dataset("folder", root=str(tmp_path))
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"broken.png: cannot decode image"):
        load_dataset("folder", root=str(tmp_path))


def test_csv_with_names_header_and_test_csv(tmp_path):
    write_folder(tmp_path / "imgs")
    (tmp_path / "train.csv").write_text(
        "path,label\nimgs/cat/0.png,cat\nimgs/dog/1.png,dog\n\n\"imgs/eel/2.png\",eel\nimgs/cat/1.png,dog\n")
    (tmp_path / "test.csv").write_text(f"{tmp_path / 'imgs/eel/0.png'},eel\n")
    b = load_dataset("csv", root=str(tmp_path / "train.csv"), test_csv=str(tmp_path / "test.csv"), image_size=6)
    assert b.class_names == ["cat", "dog", "eel"] and b.train_labels.tolist() == [0, 1, 2, 1]
    assert b.test_labels.tolist() == [2] and b.train_x.shape == (4, 3, 6, 6)
    assert b.train_x[3, :, 0, 0].tolist() == list(COLOURS["cat"])  # the given (wrong) label is kept
    assert b.extra["train_files"][0].endswith("imgs/cat/0.png")


def test_csv_integer_labels_and_bad_rows(tmp_path):
    write_folder(tmp_path)
    f = tmp_path / "list.csv"
    f.write_text("cat/0.png,0\ndog/0.png,1\neel/0.png,2\n")
    b = load_dataset("csv", root=str(f), image_size=4, num_classes=5)
    assert b.num_classes == 5 and b.train_labels.tolist() == [0, 1, 2]
    f.write_text("cat/0.png,0\ndog/0.png,7\n")
    with pytest.raises(DataError, match=r"list.csv line 2: label 7 is outside the class range \[0, 5\)"):
        load_dataset("csv", root=str(f), num_classes=5)
    f.write_text("cat/0.png,0\ndog/0.png\n")
    with pytest.raises(DataError, match=r"list.csv line 2: expected 2 fields 'path,label', got 1"):
        load_dataset("csv", root=str(f))
    f.write_text("cat/0.png,0\n,1\n")
    with pytest.raises(DataError, match=r"list.csv line 2: empty path"):
        load_dataset("csv", root=str(f))
    f.write_text("cat/0.png,0\ncat/9.png,1\n")
    with pytest.raises(DataError, match=r"cat/9.png: image file not found \(listed in .*list.csv line 2\)"):
        load_dataset("csv", root=str(f))
    f.write_text("cat/0.png,cat\ndog/0.png,wolf\n")
    with pytest.raises(DataError, match=r"list.csv line 2: unknown class 'wolf'"):
        load_dataset("csv", root=str(f), class_names=["cat", "dog"])
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        load_dataset("csv", root=str(tmp_path / "nope.csv"))


def test_npz_images_features_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)  # NHWC
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 4, x_test=x[:3], y_test=np.array([0, 1, 3]))
    b = load_dataset("npz", root=str(tmp_path / "d.npz"))
    assert b.train_x.shape == (10, 3, 16, 16) and torch.equal(b.train_x[2], torch.from_numpy(x[2]).permute(2, 0, 1))
    assert b.num_classes == 4 and b.test_labels.tolist() == [0, 1, 3] and b.augment == "none"
    assert b.crop_padding == 2 and len(b.mean) == 3
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(6, 5)), y=np.array(["b", "a", "b", "c", "a", "a"]))
    f = load_dataset("npz", root=str(tmp_path / "f.npz"))
    assert f.train_x.dtype == torch.float32 and f.class_names == ["a", "b", "c"]
    assert f.train_labels.tolist() == [1, 0, 1, 2, 0, 0] and f.mean is None
    x, y, _ = next(iter(make_train_batches(f, f.train_labels, 6, "cpu").epoch(0)))
    assert x.shape == (6, 5)


def test_npz_bad_input(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((4, 3)), y=np.array([0, 1, 2, -1]))
    with pytest.raises(DataError, match=r"d.npz: 'y'\[3\] = -1 is outside the class range"):
        load_dataset("npz", root=str(p))
    np.savez(p, x=np.zeros((4, 3)), y=np.array([0, 1, 2, 1]))
    with pytest.raises(DataError, match=r"'y'\[2\] = 2 is outside the class range \[0, 2\)"):
        load_dataset("npz", root=str(p), num_classes=2)
    np.savez(p, x=np.zeros((4, 3)), y=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"'x' has 4 examples but 'y' has 3"):
        load_dataset("npz", root=str(p))
    np.savez(p, inputs=np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"missing array 'x'"):
        load_dataset("npz", root=str(p))
    np.savez(p, x=np.zeros((2, 3)), y=np.array([0, "a"], dtype=object))
    with pytest.raises(DataError, match=r"cannot load without pickle"):
        load_dataset("npz", root=str(p))
    np.savez(p, x=np.zeros((2, 3)), y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match=r"integer class indices or class-name strings"):
        load_dataset("npz", root=str(p))
    p.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"d.npz: not a readable .npz"):
        load_dataset("npz", root=str(p))
