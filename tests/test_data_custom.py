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
    assert next(iter(make_train_batches(b, b.train_labels, 9, "cpu").epoch(0))).x.shape == (9, 3, 8, 8)
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
    batch = next(iter(make_eval_batches(f, "test", 4, "cpu")))
    assert batch.y.tolist() == [1] and batch.x.shape == (1, 3, 8, 8)
    auto = load_dataset("folder", root=str(tmp_path), image_size=8, max_memory_mb=1e-4)
    assert isinstance(auto, FileDataBundle)  # too big for the memory budget -> files
    _save(tmp_path / "test" / "fox" / "t.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"fox: class folder 'fox' has no training folder"):
        load_dataset("folder", root=str(tmp_path))


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_dataset("folder", root=str(tmp_path / "missing"))
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match=r"a: class folder 'a' has no images"):
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
    assert next(iter(make_train_batches(f, f.train_labels, 6, "cpu").epoch(0))).x.shape == (6, 5)


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


def _one_line_error(match, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as err:
        load_dataset(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


RULE = r"labels must be all integer class indices \(0, 1, 2, \.\.\.\) or all class names"


def test_csv_integer_labels_mixed_with_non_integer_numbers_are_refused(tmp_path):
    write_folder(tmp_path)
    f = tmp_path / "list.csv"
    f.write_text("cat/0.png,0\ndog/0.png,1.5\neel/0.png,2\n")
    _one_line_error(rf"list.csv line 2: label '1.5' is a number but not an integer; {RULE}.*: correct this label",
                    "csv", root=str(f))
    f.write_text("cat/0.png,0\ndog/0.png,1.0\neel/0.png,2\n")
    _one_line_error(rf"list.csv line 2: label '1.0' is a number but not an integer; {RULE}.*: write 1 instead of 1.0",
                    "csv", root=str(f))
    f.write_text("cat/0.png,0.0\ndog/0.png,1.0\n")  # all floats (a pandas export): refused, not 2 class names
    _one_line_error(r"list.csv line 1: label '0.0' is a number but not an integer.*write 0 instead of 0.0",
                    "csv", root=str(f))
    # the bad value may sit in the test CSV: that file and line are named
    f.write_text("cat/0.png,0\ndog/0.png,1\n")
    t = tmp_path / "test.csv"
    t.write_text("path,label\neel/0.png,2\neel/1.png,2.5\n")
    _one_line_error(r"test.csv line 3: label '2.5' is a number but not an integer", "csv", root=str(f),
                    test_csv=str(t))
    # what worked keeps working: integer labels (with spaces around them), numbers listed as class names
    f.write_text("cat/0.png, 0 \ndog/0.png,  2\neel/0.png,+1\n")
    b = load_dataset("csv", root=str(f), image_size=4)
    assert b.train_labels.tolist() == [0, 2, 1] and b.num_classes == 3
    f.write_text("cat/0.png,1.5\ndog/0.png,0.5\n")
    b = load_dataset("csv", root=str(f), image_size=4, class_names=["0.5", "1.5"])
    assert b.train_labels.tolist() == [1, 0]


def test_csv_integers_mixed_with_class_names_are_refused(tmp_path):
    write_folder(tmp_path)
    f = tmp_path / "list.csv"
    f.write_text("cat/0.png,cat\ndog/0.png,1\neel/0.png,eel\n")
    _one_line_error(rf"list.csv line 2: label '1' is an integer but other labels are class names \(e.g. 'cat' on "
                    rf"line 1\); {RULE}.*data.class_names", "csv", root=str(f))
    f.write_text("cat/0.png,0\ndog/0.png,dog\neel/0.png,2\n")
    _one_line_error(r"list.csv line 2: label 'dog' is a class name but other labels are integer class indices "
                    r"\(e.g. '0' on line 1\)", "csv", root=str(f))
    # an unrecognised header row is data: its label is the odd one out, and the message says so
    f.write_text("img,cls\ncat/0.png,0\ndog/0.png,1\n")
    _one_line_error(r"list.csv line 1: label 'cls' is a class name.*if this row is a header, name its columns "
                    r"path,label", "csv", root=str(f))
    # with the class names given, numbers that are names are fine
    f.write_text("cat/0.png,cat\ndog/0.png,1\n")
    b = load_dataset("csv", root=str(f), image_size=4, class_names=["1", "cat"])
    assert b.train_labels.tolist() == [1, 0]


def test_csv_negative_empty_and_header_only(tmp_path):
    write_folder(tmp_path)
    f = tmp_path / "list.csv"
    f.write_text("cat/0.png,0\ndog/0.png,-1\n")
    _one_line_error(r"list.csv line 2: label '-1' is negative; integer labels are class indices 0, 1, 2, \.\.\. "
                    r"\(0 is the first class\): correct this label", "csv", root=str(f))
    f.write_text("cat/0.png,-2\ndog/0.png,-1\n")  # all negative: still the first bad line
    _one_line_error(r"list.csv line 1: label '-2' is negative", "csv", root=str(f))
    f.write_text("cat/0.png,0\ndog/0.png,7\n")
    _one_line_error(r"list.csv line 2: label 7 is outside the class range \[0, 5\); correct the label or set "
                    r"data.num_classes", "csv", root=str(f), num_classes=5)
    f.write_text("cat/0.png,0\ndog/0.png,  \n")
    _one_line_error(r"list.csv line 2: empty label in 'dog/0.png,  '; every row needs an image path and a label "
                    r"\(an integer class index or a class name\)", "csv", root=str(f))
    f.write_text("path,label\n")
    _one_line_error(r"list.csv: no data rows \(only a header row\); add one line 'path,label' per image",
                    "csv", root=str(f))
    f.write_text("\n\n")
    _one_line_error(r"list.csv: no data rows \(the file is empty\)", "csv", root=str(f))
    f.write_text("\npath,label\ncat/0.png,0\n")  # a header after blank lines is still the header
    assert load_dataset("csv", root=str(f), image_size=4).train_labels.tolist() == [0]


def test_folder_class_without_images_is_refused(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "fox" / ".thumbs").mkdir(parents=True)
    _save(tmp_path / "fox" / ".thumbs" / "0.png", (1, 2, 3))  # hidden: not an image of the class
    (tmp_path / "fox" / "readme.txt").write_text("todo")
    (tmp_path / "fox" / "photo.heic").write_bytes(b"x")
    msg = _one_line_error(r"fox: class folder 'fox' has no images \(accepted extensions: \.jpg \.jpeg \.png .*"
                          r"only 2 other files such as photo.heic, readme.txt\); add images of class 'fox' to it "
                          r"or remove the folder", "folder", root=str(tmp_path))
    assert str(tmp_path / "fox") in msg
    (tmp_path / "fox" / "readme.txt").unlink()
    (tmp_path / "fox" / "photo.heic").unlink()
    _one_line_error(r"fox: class folder 'fox' has no images \(accepted extensions: [^)]*\.pgm\); add images",
                    "folder", root=str(tmp_path))
    # the hidden folder at the root (write_folder's .hidden) stays ignored once fox is gone
    (tmp_path / "fox" / ".thumbs" / "0.png").unlink()
    (tmp_path / "fox" / ".thumbs").rmdir()
    (tmp_path / "fox").rmdir()
    assert load_dataset("folder", root=str(tmp_path), image_size=4).class_names == ["cat", "dog", "eel"]
    # an empty class folder of the test split is refused too
    write_folder(tmp_path / "split" / "train")
    (tmp_path / "split" / "test" / "dog").mkdir(parents=True)
    _save(tmp_path / "split" / "test" / "cat" / "t.png", COLOURS["cat"])
    _one_line_error(r"test[/\\]dog: class folder 'dog' has no images", "folder", root=str(tmp_path / "split"))


def test_folder_root_missing_or_without_class_folders(tmp_path):
    _one_line_error(r"missing: folder not found; data.root must be a folder with one sub-folder of images per class",
                    "folder", root=str(tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"x")
    _one_line_error(r"file.png: is a file, not a folder; data.root must be a folder", "folder",
                    root=str(tmp_path / "file.png"))
    flat = tmp_path / "flat"
    _save(flat / "a.png", (1, 2, 3))
    _save(flat / "b.jpg", (1, 2, 3))
    (flat / ".git").mkdir()
    _one_line_error(r"flat: no class sub-folders \(it holds 2 image files directly\); put the images of each class "
                    r"in .*flat[/\\]<class name>[/\\]", "folder", root=str(flat))
    (tmp_path / "empty").mkdir()
    _one_line_error(r"empty: no class sub-folders; put the images of each class in", "folder",
                    root=str(tmp_path / "empty"))
    write_folder(tmp_path / "ok")
    _one_line_error(r"nowhere: test folder not found; data.test_root must be a folder with one sub-folder of images "
                    r"per class", "folder", root=str(tmp_path / "ok"), test_root=str(tmp_path / "nowhere"))
    (tmp_path / "empty_test").mkdir()
    _one_line_error(r"empty_test: no class sub-folders", "folder", root=str(tmp_path / "ok"),
                    test_root=str(tmp_path / "empty_test"))
