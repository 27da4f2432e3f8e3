"""File-backed datasets: the file store under the one batching core (TrainBatches / EvalBatches)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from noisylab.data import (
    BalancedSubset,
    DataBundle,
    DataError,
    FileDataBundle,
    FileImages,
    balanced_subset,
    example_paths,
    make_eval_batches,
    make_train_batches,
)
from noisylab.data.files import decode_view

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def make_bundle(tmp_path, n=22, num_classes=3, seed=0) -> tuple[FileDataBundle, np.ndarray]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = (20, 28) if i % 2 else (26, 20)  # landscape and portrait images, resized to 10x14 / 13x10
        p = tmp_path / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p.name)
    labels = np.arange(n) % num_classes
    train = FileImages(paths, tmp_path, size=8, resize=10, list_file="list.txt", lines=np.arange(1, n + 1))
    test = FileImages(paths[:5], tmp_path, size=8, resize=10)
    bundle = FileDataBundle("toyfiles", train, labels, test, labels[:5], num_classes, mean=MEAN, std=STD,
                            augment="crop_flip", labels_are_clean=False,
                            eval_splits={"val": (FileImages(paths[5:9], tmp_path, size=8, resize=10), labels[5:9])},
                            num_workers=0)
    return bundle, labels


def _epoch(tb, seed):
    xs, ys, idx = [], [], []
    for b in tb.epoch(seed):
        xs.append(b.x), ys.append(b.y), idx.append(b.index)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


def test_a_file_bundle_is_a_list_of_files_with_the_bundle_interface(tmp_path):
    bundle, _ = make_bundle(tmp_path)
    assert bundle.stored_in_files and not DataBundle.stored_in_files
    assert bundle.num_train == 22 and bundle.input_shape == (3, 8, 8) and bundle.input_dtype == torch.uint8
    assert bundle.is_images and len(bundle.train_x) == 22 and not hasattr(bundle.train_x, "dim")
    assert bundle.train_x.path(3) == str(tmp_path / "img_003.png") and len(bundle.train_x.paths()) == 22
    x = bundle.train_x.load_many([0, 3])
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.uint8


def test_train_batches_cover_the_data_once_and_are_deterministic(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    noisy = (labels + 1) % 3
    tb = make_train_batches(bundle, noisy, 5, "cpu", num_workers=0)
    assert len(tb) == 5 and tb.num_examples == 22
    x, y, idx = _epoch(tb, seed=11)
    assert sorted(idx.tolist()) == list(range(22))
    assert torch.equal(y, torch.as_tensor(noisy)[idx])
    assert x.shape == (22, 3, 8, 8) and x.dtype == torch.float32
    # values are normalised uint8 pixels
    raw = (x * 0.25 + 0.5) * 255
    assert torch.allclose(raw, raw.round(), atol=1e-3)
    # same seed: same batches, also with worker processes and from a fresh object
    tb2 = make_train_batches(bundle, noisy, 5, "cpu", num_workers=2)
    x2, y2, idx2 = _epoch(tb2, seed=11)
    assert torch.equal(idx, idx2) and torch.equal(x, x2) and torch.equal(y, y2)
    x3, _, idx3 = _epoch(tb2, seed=11)  # second pass, new worker processes
    assert torch.equal(x, x3) and torch.equal(idx, idx3)
    # another seed: another order and other crops
    x4, _, idx4 = _epoch(tb, seed=12)
    assert not torch.equal(idx, idx4)
    assert sorted(idx4.tolist()) == list(range(22))
    # the same order as the in-memory TrainBatches for the same seed
    mem = DataBundle("mem", torch.zeros(22, 3, 8, 8, dtype=torch.uint8), labels, None, None, 3)
    _, _, idx_mem = _epoch(make_train_batches(mem, noisy, 5, "cpu"), seed=11)
    assert torch.equal(idx, idx_mem)


def test_train_views_are_random_crops_and_flips_of_the_resized_image(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    tb = make_train_batches(bundle, labels, 22, "cpu", num_workers=0)
    x, _, idx = _epoch(tb, seed=3)
    raw = ((x * 0.25 + 0.5) * 255).round().to(torch.uint8)
    flips = 0
    for k in range(22):
        i = int(idx[k])
        im = np.asarray(Image.open(tmp_path / f"img_{i:03d}.png").convert("RGB").resize(
            (14, 10) if i % 2 else (10, 13), Image.BILINEAR))  # shorter side -> 10
        cands = []
        for top in range(im.shape[0] - 7):
            for left in range(im.shape[1] - 7):
                c = torch.from_numpy(np.ascontiguousarray(im[top:top + 8, left:left + 8].transpose(2, 0, 1)))
                if torch.equal(c, raw[k]):
                    cands.append(False)
                if torch.equal(c.flip(2), raw[k]):
                    cands.append(True)
        assert cands, f"view of image {i} is not a crop of the resized image"
        flips += cands[0]
    assert 3 <= flips <= 19
    # "none" gives the deterministic evaluation view
    tb_none = make_train_batches(bundle, labels, 22, "cpu", views="none", num_workers=0)
    xn, _, idxn = _epoch(tb_none, seed=3)
    ref = torch.stack([decode_view(str(tmp_path / f"img_{int(i):03d}.png"), 8, 10) for i in idxn])
    assert torch.equal(((xn * 0.25 + 0.5) * 255).round().to(torch.uint8), ref)


def test_sharding_and_subset_indices(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    parts = [_epoch(make_train_batches(bundle, labels, 4, "cpu", rank=r, world_size=2, num_workers=0), 5)[2]
             for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 11
    assert sorted(torch.cat(parts).tolist()) == list(range(22))
    sub = np.array([1, 4, 9, 16, 21])
    tb = make_train_batches(bundle, labels, 2, "cpu", indices=sub, last_batch="drop", num_workers=0)
    assert len(tb) == 2
    idx = _epoch(tb, 0)[2]
    assert len(idx) == 4 and set(idx.tolist()) <= set(sub.tolist())


def test_eval_batches_in_order_for_every_split(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    eb = make_eval_batches(bundle, "test", 2, "cpu", num_workers=0)
    out = list(eb)
    assert len(eb) == 3 and [len(b.index) for b in out] == [2, 2, 1]
    x = torch.cat([b.x for b in out])
    assert torch.equal(torch.cat([b.index for b in out]), torch.arange(5))
    ref = bundle.test_x.load_many(np.arange(5)).float() / 255
    assert torch.allclose(x * 0.25 + 0.5, ref, atol=1e-6)
    val = list(make_eval_batches(bundle, "val", 10, "cpu", num_workers=2))
    assert torch.equal(val[0].y, torch.as_tensor(labels[5:9]))
    noisy = (labels + 2) % 3
    tr = list(make_eval_batches(bundle, "train", 8, "cpu", labels=noisy, num_workers=0))
    assert torch.equal(torch.cat([b.y for b in tr]), torch.as_tensor(noisy))
    with pytest.raises(DataError, match=r"no split 'imagenet' \(available: train, test, val\)"):
        make_eval_batches(bundle, "imagenet")
    assert example_paths(bundle, "val") == [str(tmp_path / f"img_{i:03d}.png") for i in range(5, 9)]


def test_missing_image_is_one_clear_error(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    (tmp_path / "img_007.png").unlink()
    for workers in (0, 2):
        tb = make_train_batches(bundle, labels, 8, "cpu", num_workers=workers)
        with pytest.raises(DataError) as err:
            _epoch(tb, 0)
        msg = str(err.value)
        assert "img_007.png: image file not found (listed in list.txt line 8)" in msg
        assert "Traceback" not in msg
        # an abandoned epoch stops its workers at once
        gen = tb.epoch(1)
        next(gen, None)
        gen.close()
    with pytest.raises(DataError, match="img_007.png: image file not found"):
        bundle.train_x.check_exist()
    (tmp_path / "img_003.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="img_003.png: cannot decode image"):
        bundle.train_x.load(3)


def test_file_bundles_serve_several_views(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    keep = np.arange(1, len(labels))  # a subset, to check that the indices are honoured
    tb = make_train_batches(bundle, labels, 5, "cpu", views=("crop_flip", "simclr", "none"), indices=keep,
                            num_workers=0)
    (weak, strong, plain), y, idx = _epoch_views(tb, seed=4)
    assert weak.shape == strong.shape == plain.shape == (len(keep), 3, 8, 8)
    assert torch.equal(y, torch.as_tensor(labels)[idx])
    # "none" is the evaluation view; the SimCLR view starts from it on the device, so it is not on the
    # uint8 grid (resized crops interpolate) and differs from it
    ref = torch.stack([decode_view(bundle.train_x.path(int(i)), 8, 10) for i in idx])
    assert torch.equal(((plain * 0.25 + 0.5) * 255).round().to(torch.uint8), ref)
    assert not torch.allclose(strong, plain)
    # the weak view is a crop of the resized image, not the centre crop of every image
    assert not torch.equal(((weak * 0.25 + 0.5) * 255).round().to(torch.uint8), ref)
    # the same seed gives the same views
    again = _epoch_views(tb, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(again[0], (weak, strong, plain)))
    # labels and indices only
    b0 = next(iter(make_train_batches(bundle, labels, 30, "cpu", views=(), indices=keep).epoch(1)))
    x0, y0, i0 = b0.views, b0.y, b0.index
    assert x0 == () and set(i0.tolist()) == set(keep.tolist()) and len(i0) == len(keep) and torch.equal(y0, torch.as_tensor(labels)[i0])


def _epoch_views(tb, seed):
    xs, ys, idxs = [], [], []
    for b in tb.epoch(seed):
        xs.append(b.views)
        ys.append(b.y)
        idxs.append(b.index)
    views = tuple(torch.cat([x[k] for x in xs]) for k in range(len(xs[0])))
    return views, torch.cat(ys), torch.cat(idxs)


def test_file_bundles_check_labels(tmp_path):
    bundle, labels = make_bundle(tmp_path)
    with pytest.raises(DataError, match="labels must lie in"):
        make_train_batches(bundle, labels + 3, 4, "cpu")


def test_balanced_subset_rule():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    pool = np.arange(85)
    sub = balanced_subset(labels, pool, 30, 3, np.random.default_rng(0))
    counts = np.bincount(labels[sub], minlength=3)
    assert counts.tolist() == [10, 10, 5] and len(sub) == 25 and len(set(sub.tolist())) == 25
    # cap num_samples / C is exceeded by at most the rounding, the total never
    sub = balanced_subset(labels, pool, 10, 3, np.random.default_rng(1))
    assert len(sub) == 10 and np.bincount(labels[sub], minlength=3).max() <= 4
    a = balanced_subset(labels, pool, 30, 3, np.random.default_rng(5))
    b = balanced_subset(labels, pool, 30, 3, np.random.default_rng(6))
    assert not np.array_equal(a, b)


def test_balanced_epochs_fixed_or_redrawn(tmp_path):
    bundle, labels = make_bundle(tmp_path, n=30, num_classes=3)
    labels = np.array([0] * 20 + [1] * 6 + [2] * 4)
    fixed = make_train_batches(bundle, labels, 3, "cpu", balanced=BalancedSubset(num_batches=3, seed=1), num_workers=0)
    assert fixed.num_examples == 9 and len(fixed) == 3
    s1 = set(_epoch(fixed, 0)[2].tolist())
    s2 = set(_epoch(fixed, 1)[2].tolist())
    assert s1 == s2 and np.bincount(labels[list(s1)], minlength=3).tolist() == [3, 3, 3]
    redraw = make_train_batches(bundle, labels, 3, "cpu", balanced=BalancedSubset(3, 1, redraw_each_epoch=True),
                                num_workers=0)
    subsets = [frozenset(_epoch(redraw, e)[2].tolist()) for e in range(4)]
    assert len(set(subsets)) > 1 and all(len(s) == 9 for s in subsets)
    assert frozenset(_epoch(redraw, 2)[2].tolist()) == subsets[2]  # a function of the epoch seed
    # the same option on an in-memory bundle
    mem = DataBundle("mem", torch.zeros(30, 3, 8, 8, dtype=torch.uint8), labels, None, None, 3)
    tbm = make_train_batches(mem, labels, 3, "cpu", balanced=BalancedSubset(3, 1, redraw_each_epoch=True))
    subs = [frozenset(_epoch(tbm, e)[2].tolist()) for e in range(4)]
    assert len(set(subs)) > 1 and all(np.bincount(labels[list(s)], minlength=3).tolist() == [3, 3, 3] for s in subs)


def test_read_list_labels_must_be_plain_non_negative_integers(tmp_path):
    from noisylab.data.files import read_list

    f = tmp_path / "list.txt"
    f.write_text("a.png 0\nb.png 3\n\nc.png +2\n")
    paths, labels, lines = read_list(f, num_classes=4)
    assert paths == ["a.png", "b.png", "c.png"] and labels.tolist() == [0, 3, 2] and lines.tolist() == [1, 2, 4]
    for bad, line, match in (
        ("1.5", 2, r"label '1.5' is not an integer; each line must be '<path> <label>' with an integer class "
                   r"index 0, 1, 2, \.\.\.: correct this line"),
        ("1.0", 2, r"label '1.0' is not an integer"),
        ("1_0", 2, r"label '1_0' is not an integer"),  # int() would read 10
        ("\u0663", 2, r"label .* is not an integer"),  # an Arabic-Indic 3: int() would read 3
        ("-1", 2, r"label -1 is negative; labels are class indices 0, 1, 2, \.\.\.: correct this line"),
    ):
        f.write_text(f"a.png 0\nb.png {bad}\n")
        with pytest.raises(DataError, match=rf"list.txt line {line}: {match}") as err:
            read_list(f)
        assert "\n" not in str(err.value)
    f.write_text("a.png 0\nb.png 4\n")
    with pytest.raises(DataError, match=r"list.txt line 2: label 4 is outside the class range \[0, 4\); correct"):
        read_list(f, num_classes=4)


def test_spread_last_batch_for_file_images(tmp_path):
    bundle, labels = make_bundle(tmp_path)  # 22 images: 5 batches of 4 and one of 2, or 5 of 4-5
    for views in ("crop_flip", ()):
        tb = make_train_batches(bundle, labels, 4, "cpu", views=views, last_batch="spread", num_workers=0)
        batches = [b.index.tolist() for b in tb.epoch(1)]
        assert len(tb) == 5 and sorted(map(len, batches)) == [4, 4, 4, 5, 5]
        assert sorted(sum(batches, [])) == list(range(22))


def test_memory_and_files_share_one_plan_sharded_and_balanced(tmp_path):
    """Both stores sit under one EpochPlan: the same seed gives the same indices in the same batches,
    per rank, with a class-balanced subset redrawn each epoch."""
    bundle, labels = make_bundle(tmp_path)
    mem = DataBundle("mem", torch.zeros(22, 3, 8, 8, dtype=torch.uint8), labels, None, None, 3)
    balanced = BalancedSubset(num_batches=2, seed=5, redraw_each_epoch=True)
    for rank in (0, 1):
        kw = dict(views=(), rank=rank, world_size=2, balanced=balanced, last_batch="spread")
        files = make_train_batches(bundle, labels, 3, "cpu", num_workers=0, **kw)
        memory = make_train_batches(mem, labels, 3, "cpu", **kw)
        assert len(files) == len(memory) == 1 and files.num_examples == memory.num_examples == 6
        for seed in (0, 1, 2):
            got = [b.index.tolist() for b in files.epoch(seed)]
            assert got == [b.index.tolist() for b in memory.epoch(seed)]
            assert np.bincount(labels[sum(got, [])], minlength=3).max() <= 2  # this rank's half of 2 per class
