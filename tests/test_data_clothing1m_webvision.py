"""Clothing1M and mini-WebVision loaders on tiny trees in the official layouts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from noisylab.data import BalancedSubset, DataError, FileDataBundle, load_dataset, make_eval_batches, make_train_batches


def _img(path, value, size=(1, 1), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path, format=fmt)


def write_clothing1m(root, elr_layout=False, n_train=28):
    """A tiny Clothing1M: ``n_train`` noisy training images (2 per class), 3 val, 2 test images."""
    img_dir = root if elr_layout else root / "images"
    keys = []
    for i in range(n_train + 5):
        key = f"images/{i % 3}/{i:02d}/{i:04d}.jpg"
        _img(img_dir / key[len("images/"):], 10 * i % 256, fmt="JPEG")
        keys.append(key)
    train, val, test = keys[:n_train], keys[n_train:n_train + 3], keys[n_train + 3:]
    noisy = {k: i % 14 for i, k in enumerate(train)}
    noisy.update({keys[-1]: 3})  # noisy_label_kv also lists images outside the training list
    clean = {train[0]: 5, train[1]: 1}  # a few training images have clean labels too
    clean.update({k: (i + 2) % 14 for i, k in enumerate(val + test)})
    text = root if elr_layout else root
    (text / "noisy_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in noisy.items()))
    (text / "clean_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in clean.items()))
    (text / "noisy_train_key_list.txt").write_text("\n".join(train) + "\n")
    (text / "clean_val_key_list.txt").write_text("\n".join(val) + "\n")
    (text / "clean_test_key_list.txt").write_text("\n".join(test) + "\n")
    return train, val, test, noisy, clean


@pytest.mark.parametrize("elr_layout", [False, True])
def test_clothing1m_layouts_labels_and_splits(tmp_path, elr_layout):
    train, val, test, noisy, clean = write_clothing1m(tmp_path, elr_layout)
    b = load_dataset("clothing1m", root=str(tmp_path), size=8, resize=8, num_workers=0)
    assert isinstance(b, FileDataBundle) and b.num_classes == 14 and not b.labels_are_clean
    assert b.extra["layout"] == ("elr" if elr_layout else "release")
    assert b.num_train == 28 and np.array_equal(b.train_labels, np.arange(28) % 14)
    assert b.extra["clean_labels"][:3].tolist() == [5, 1, -1]
    assert np.array_equal(b.test_labels, [(3 + 2) % 14, (4 + 2) % 14])
    vx, vy = b.eval_splits["val"]
    assert len(vx) == 3 and vy.tolist() == [2, 3, 4]
    assert b.mean == (0.6959, 0.6537, 0.6371) and b.class_names[0] == "T-Shirt" and b.input_shape == (3, 8, 8)
    # a 1-pixel image resized to 8x8 is constant: the colour written for training image 5
    x = b.train_x.load(5)
    assert x.shape == (3, 8, 8) and abs(int(x[0, 0, 0]) - 50) <= 3 and (x == x[:, :1, :1]).all()
    out = list(make_eval_batches(b, "val", 2, "cpu"))
    assert torch.equal(torch.cat([o.y for o in out]), torch.tensor([2, 3, 4]))


def test_clothing1m_elr_plus_balanced_subset(tmp_path):
    write_clothing1m(tmp_path, n_train=56)  # 4 images per noisy class
    b = load_dataset("clothing1m", root=str(tmp_path), num_batches=7, size=4, resize=4, num_workers=0)
    assert b.extra["balanced_subset"] == BalancedSubset(7, 123, False)
    tb = make_train_batches(b, b.train_labels, 2, "cpu")
    assert tb.num_examples == 14 and len(tb) == 7  # 7 batches of 2 = 14 = one image per class
    idx = torch.cat([bt.index for bt in tb.epoch(0)])
    assert np.bincount(b.train_labels[idx.numpy()], minlength=14).tolist() == [1] * 14
    assert idx.max() < 56  # indices are rows of the full noisy list
    again = torch.cat([bt.index for bt in tb.epoch(1)])
    assert set(again.tolist()) == set(idx.tolist())
    b2 = load_dataset("clothing1m", root=str(tmp_path), num_batches=7, redraw_each_epoch=True, size=4, resize=4,
                      num_workers=0)
    tb2 = make_train_batches(b2, b2.train_labels, 2, "cpu")
    sets = {frozenset(torch.cat([bt.index for bt in tb2.epoch(e)]).tolist()) for e in range(3)}
    assert len(sets) > 1


def test_clothing1m_bad_input(tmp_path):
    train, *_ = write_clothing1m(tmp_path)
    (tmp_path / "images" / train[6][len("images/"):]).unlink()
    with pytest.raises(DataError, match=r"0006.jpg: image file not found \(listed in .*train_key_list.txt line 7\)"):
        load_dataset("clothing1m", root=str(tmp_path))
    kv = tmp_path / "noisy_label_kv.txt"
    lines = kv.read_text().splitlines()
    kv.write_text("\n".join(lines[:3] + [lines[3].split()[0] + " 14"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line 4: label 14 is outside the class range \[0, 14\)"):
        load_dataset("clothing1m", root=str(tmp_path))
    kv.write_text("\n".join(lines[:2] + ["images/0/00/0000.jpg"] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line 3: expected '<path> <label>'"):
        load_dataset("clothing1m", root=str(tmp_path))
    kv.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError,
                       match=r"noisy_train_key_list.txt line 1: 'images/0/00/0000.jpg' has no label in noisy_label_kv"):
        load_dataset("clothing1m", root=str(tmp_path), check_files=False)
    (tmp_path / "clean_test_key_list.txt").unlink()
    with pytest.raises(DataError, match=r"missing clean_test_key_list.txt"):
        load_dataset("clothing1m", root=str(tmp_path))
    with pytest.raises(DataError, match=r"clothing1m needs data.root"):
        load_dataset("clothing1m")


def write_webvision(root, imagenet="list"):
    info = root / "info"
    info.mkdir(parents=True)
    train_lines, val_lines = [], []
    for i in range(12):
        label = [0, 1, 2, 60][i % 4]  # label 60 lies outside the first 50 classes
        rel = f"google/q{label:04d}/{i:03d}.jpg"
        _img(root / rel, 20 * i, size=(6, 5), fmt="JPEG")
        train_lines.append(f"{rel} {label}")
    for i in range(5):
        label = [1, 2, 70, 0, 2][i]
        _img(root / "val_images_256" / f"val{i:06d}.jpg", 30 * i, fmt="JPEG")
        val_lines.append(f"val{i:06d}.jpg {label}")
    (info / "train_filelist_google.txt").write_text("\n".join(train_lines) + "\n")
    (info / "val_filelist.txt").write_text("\n".join(val_lines) + "\n")
    (info / "synsets.txt").write_text("".join(f"n{c:08d} name{c}, other\n" for c in range(100)))
    if imagenet == "list":
        _img(root / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG", 1, fmt="JPEG")
        _img(root / "imagenet" / "val" / "ILSVRC2012_val_00000002.JPEG", 2, fmt="JPEG")
        (root / "imagenet" / "imagenet_val.txt").write_text(
            "ILSVRC2012_val_00000001.JPEG 2\nILSVRC2012_val_00000002.JPEG 400\n")
    elif imagenet == "folders":
        for c in range(50):
            (root / "imagenet" / "val" / str(c)).mkdir(parents=True)
        _img(root / "imagenet" / "val" / "1" / "a.JPEG", 3, fmt="JPEG")
        _img(root / "imagenet" / "val" / "4" / "b.JPEG", 4, fmt="JPEG")


@pytest.mark.parametrize("imagenet", ["list", "folders", "none"])
def test_webvision_first_50_classes_and_imagenet(tmp_path, imagenet):
    write_webvision(tmp_path, imagenet)
    b = load_dataset("webvision", root=str(tmp_path), size=4, resize=5, num_workers=0)
    assert b.num_classes == 50 and b.num_train == 9 and set(b.train_labels.tolist()) == {0, 1, 2}
    assert b.train_x.path(0).endswith("google/q0000/000.jpg")
    assert b.test_labels.tolist() == [1, 2, 0, 2]
    assert b.class_names[:2] == ["name0", "name1"] and b.mean == (0.485, 0.456, 0.406)
    if imagenet == "none":
        assert "imagenet" not in b.eval_splits
        with pytest.raises(DataError, match="no imagenet_val.txt"):
            load_dataset("webvision", root=str(tmp_path), imagenet=True)
        return
    ix, iy = b.eval_splits["imagenet"]
    assert iy.tolist() == ([2] if imagenet == "list" else [1, 4])
    batch = next(iter(make_eval_batches(b, "imagenet", 8, "cpu")))
    assert batch.x.shape == (len(iy), 3, 4, 4)
    batch = next(iter(make_train_batches(b, b.train_labels, 9, "cpu").epoch(0)))
    assert batch.x.shape == (9, 3, 4, 4) and torch.equal(batch.y, torch.as_tensor(b.train_labels)[batch.index])


def test_webvision_bad_input(tmp_path):
    write_webvision(tmp_path)
    (tmp_path / "val_images_256" / "val000003.jpg").unlink()
    with pytest.raises(DataError, match=r"val000003.jpg: image file not found \(listed in .*val_filelist.txt line 4\)"):
        load_dataset("webvision", root=str(tmp_path))
    f = tmp_path / "info" / "train_filelist_google.txt"
    f.write_text(f.read_text() + "google/q0001/x.jpg one\n")
    with pytest.raises(DataError, match=r"train_filelist_google.txt line 13: label 'one' is not an integer"):
        load_dataset("webvision", root=str(tmp_path))
    with pytest.raises(DataError, match=r"train_filelist_google.txt: file not found"):
        load_dataset("webvision", root=str(tmp_path / "elsewhere"))
