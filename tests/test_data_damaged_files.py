"""Damaged and unusual image files (docs/damaged-files.md): each case has one decided outcome."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image, features

from noisylab.config import ConfigError
from noisylab.data import DataError, FileDataBundle, load_dataset, make_train_batches
from noisylab.data.files import (
    ALPHA_BACKGROUND,
    check_image,
    decode_view,
    open_image,
    screen_image_files,
    skipped_files,
    to_8bit_mode,
    write_skipped_files,
)


def rgb(path):
    return np.asarray(open_image(str(path)))


def pattern(h=8, w=12, seed=0):
    """An image whose every rotation and flip differs."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def jpeg_bytes(a, **kw):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=95, **kw)
    return b.getvalue()


@contextmanager
def time_limit(seconds):
    """Fail instead of hanging (SIGALRM; the DataLoader tests run in the main thread)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(*_):
        raise TimeoutError(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- decoded correctly
def test_cmyk_jpeg_is_close_to_the_rgb_original(tmp_path):
    Image.new("RGB", (16, 16), (200, 60, 30)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    a = rgb(tmp_path / "cmyk.jpg")
    assert a.shape == (16, 16, 3)
    assert np.abs(a.astype(int) - (200, 60, 30)).max() <= 6


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    a = rgb(tmp_path / "deep.png")
    assert a[0, :, 0].tolist() == [0, 1, 4, 128, 255]  # round(v * 255 / 65535)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert np.asarray(open_image(str(tmp_path / "deep.png"), channels=1)).tolist() == [[0, 1, 4, 128, 255]]
    # mode I (32-bit) is taken as 0..65535, values outside clipped
    wide = Image.fromarray(np.array([[-5, 32896, 70000]], dtype=np.int32), "I")
    assert np.asarray(to_8bit_mode(wide, 1)).tolist() == [[0, 128, 255]]


def test_palette_with_and_without_transparency(tmp_path):
    idx = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    pal = [10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9)
    im = Image.fromarray(idx, "P")
    im.putpalette(pal)
    im.save(tmp_path / "plain.png")
    im.save(tmp_path / "transparent.png", transparency=0)
    assert rgb(tmp_path / "plain.png").tolist() == [[[10, 20, 30], [200, 100, 50]], [[0, 255, 0], [200, 100, 50]]]
    t = rgb(tmp_path / "transparent.png")
    assert t[0, 0].tolist() == list(ALPHA_BACKGROUND) and t[0, 1].tolist() == [200, 100, 50]
    assert t[1, 0].tolist() == [0, 255, 0]


def test_la_and_rgba_alpha_is_composited_on_black(tmp_path):
    la = np.stack([np.full((2, 3), 200, np.uint8), np.array([[255, 128, 0], [255, 128, 0]], np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    a = rgb(tmp_path / "la.png").astype(int)
    assert a[0, 0].tolist() == [200] * 3 and a[0, 2].tolist() == [0] * 3
    assert np.abs(a[0, 1] - 100).max() <= 1  # 200 * 128 / 255
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (40, 80, 160)
    rgba[..., 3] = [[255, 0], [255, 0]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    b = rgb(tmp_path / "rgba.png")
    assert b[0, 0].tolist() == [40, 80, 160] and b[0, 1].tolist() == [0, 0, 0]


def test_grey_is_replicated(tmp_path):
    Image.new("L", (4, 4), 77).save(tmp_path / "grey.png")
    assert (rgb(tmp_path / "grey.png") == 77).all()


def test_animated_images_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    assert (rgb(tmp_path / "anim.gif") == (255, 0, 0)).all()
    if features.check("webp"):
        frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], duration=50, lossless=True)
        assert Image.open(tmp_path / "anim.webp").n_frames == 3
        assert np.abs(rgb(tmp_path / "anim.webp").astype(int) - (255, 0, 0)).max() <= 2


@pytest.mark.parametrize("orientation, turn", [(3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
                                               (8, lambda a: np.rot90(a, 1)), (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    exif = Image.Exif()
    exif[0x0112] = orientation
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(pattern(), exif=exif.tobytes()))
    stored = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))  # the pixels as stored
    assert np.array_equal(rgb(tmp_path / "photo.jpg"), turn(stored))
    # also exact on a lossless file, against the original array
    Image.fromarray(pattern()).save(tmp_path / "photo.png", exif=exif.tobytes())
    assert np.array_equal(rgb(tmp_path / "photo.png"), turn(pattern()))
    # the evaluation view is cut from the upright image
    view = decode_view(str(tmp_path / "photo.png"), 8, None).numpy().transpose(1, 2, 0)
    upright = turn(pattern())
    h, w = upright.shape[:2]
    top, left = int(round((h - 8) / 2)), int(round((w - 8) / 2))
    assert np.array_equal(view, upright[top:top + 8, left:left + 8])


def test_the_check_pass_accepts_every_unusual_but_sound_file(tmp_path):
    Image.new("RGB", (9, 7), (1, 2, 3)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((5, 5), 4000, np.uint16)).save(tmp_path / "deep.png")
    Image.new("P", (4, 4)).save(tmp_path / "p.png", transparency=0)
    Image.new("LA", (4, 4), (9, 100)).save(tmp_path / "la.png")
    Image.new("L", (4, 4), 9).save(tmp_path / "grey.jpg")
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(pattern(), exif=exif.tobytes()))
    for p in sorted(tmp_path.iterdir()):
        assert check_image(str(p)) is None, p.name
        assert check_image(str(p), channels=1) is None, p.name


# ----------------------------------------------------------------------------- skipped
def write_damaged(folder):
    """One file per damage kind in ``folder``; returns ``{name: expected reason fragment}``."""
    folder.mkdir(parents=True, exist_ok=True)
    full = jpeg_bytes(pattern(16, 16))
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    return {"truncated.jpg": "truncated or corrupt", "empty.jpg": "empty file (0 bytes)",
            "text.png": "not an image file"}


def test_each_damaged_file_has_its_reason(tmp_path):
    for name, reason in write_damaged(tmp_path).items():
        got = check_image(str(tmp_path / name))
        assert got is not None and reason in got, (name, got)
        with pytest.raises(DataError, match=rf"{name}: cannot decode image"):
            open_image(str(tmp_path / name))
    Image.fromarray(pattern()).save(tmp_path / "fine.jpg")
    assert check_image(str(tmp_path / "fine.jpg")) is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_skipped(tmp_path):
    p = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(p)
    p.chmod(0)
    try:
        assert "cannot read image file" in check_image(str(p))
    finally:
        p.chmod(0o644)


def test_permission_error_is_a_read_failure(tmp_path, monkeypatch):
    import PIL.Image

    p = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(p)

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(PIL.Image, "open", refuse)
    assert check_image(str(p)) == "cannot read image file: Permission denied"
    with pytest.raises(DataError, match=r"locked.png: cannot read image file: Permission denied; replace or remove"):
        open_image(str(p))


def make_folder(root, n_good=3, damaged_in="cat"):
    colours = {"cat": (200, 10, 10), "dog": (10, 200, 10)}
    for c, col in colours.items():
        (root / c).mkdir(parents=True)
        for i in range(n_good):
            Image.new("RGB", (10, 10), col).save(root / c / f"{i}.png")
    return write_damaged(root / damaged_in)


def test_folder_skips_damaged_files_with_one_warning(tmp_path, caplog):
    reasons = make_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="noisylab"):
        b = load_dataset("folder", root=str(tmp_path), image_size=8)
    assert b.num_train == 6 and b.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert (b.train_x[0, :, 4, 4].tolist(), b.train_x[5, :, 4, 4].tolist()) == ([200, 10, 10], [10, 200, 10])
    assert len(b.extra["train_files"]) == 6
    sk = skipped_files(b)
    assert sorted(os.path.basename(p) for p, _ in sk) == sorted(reasons)
    for p, r in sk:
        assert reasons[os.path.basename(p)] in r
    warnings = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 3 damaged image files" in warnings[0].getMessage()
    # the same for the file-backed bundle
    f = load_dataset("folder", root=str(tmp_path), image_size=8, in_memory=False, num_workers=0)
    assert isinstance(f, FileDataBundle) and f.num_train == 6 and len(skipped_files(f)) == 3


def test_strict_files_refuses_them_all_in_one_line(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_dataset("folder", root=str(tmp_path), image_size=8, strict_files=True)
    msg = str(err.value)
    assert "\n" not in msg and "strict_files: 3 damaged image files" in msg
    assert "the first " + str(tmp_path / "cat" / "empty.jpg") + ": cannot decode image: empty file" in msg
    assert "remove them" in msg and "drop data.options.strict_files" in msg
    assert isinstance(err.value, DataError)  # also a data error, as before


def test_a_class_or_a_split_left_without_images_is_refused(tmp_path):
    make_folder(tmp_path / "a", n_good=2)
    for f in (tmp_path / "a" / "dog").iterdir():
        f.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^class 'dog': all 2 train image files are damaged, the first "
                                          r".*dog.0\.png: cannot decode image: empty file"):
        load_dataset("folder", root=str(tmp_path / "a"))
    (tmp_path / "b" / "x").mkdir(parents=True)
    write_damaged(tmp_path / "b" / "x")
    with pytest.raises(ConfigError, match=r"^all 3 train image files are damaged, the first "):
        load_dataset("folder", root=str(tmp_path / "b"))


def test_csv_drops_damaged_rows_and_keeps_labels_aligned(tmp_path):
    make_folder(tmp_path, n_good=2)
    rows = ["cat/0.png,cat", "cat/empty.jpg,cat", "dog/0.png,dog", "cat/text.png,dog", "dog/1.png,dog"]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    b = load_dataset("csv", root=str(tmp_path / "list.csv"), image_size=8)
    assert b.train_labels.tolist() == [0, 1, 1]
    assert [os.path.basename(p) for p in b.extra["train_files"]] == ["0.png", "0.png", "1.png"]
    assert b.train_x[1, :, 0, 0].tolist() == [10, 200, 10]
    assert sorted(os.path.basename(p) for p, _ in skipped_files(b)) == ["empty.jpg", "text.png"]
    with pytest.raises(ConfigError, match="strict_files: 2 damaged image files"):
        load_dataset("csv", root=str(tmp_path / "list.csv"), strict_files=True)


def test_screen_checks_the_test_split_too(tmp_path):
    good = tmp_path / "g.png"
    Image.new("RGB", (4, 4)).save(good)
    (tmp_path / "bad.png").write_bytes(b"")
    paths = [str(good), str(tmp_path / "bad.png")]
    keep, sk = screen_image_files({"train": (paths[:1], np.array([0])), "test": (paths, np.array([0, 0]))}, ["a"])
    assert keep["train"].tolist() == [0] and keep["test"].tolist() == [0] and len(sk) == 1
    with pytest.raises(ConfigError, match=r"^all 1 test image file is damaged"):
        screen_image_files({"train": (paths[:1], np.array([0])), "test": (paths[1:], np.array([0]))}, ["a"])


def test_write_skipped_files_is_atomic(tmp_path):
    out = tmp_path / "skipped_files.csv"
    write_skipped_files(out, [("/data/a b.jpg", "cannot decode image: empty file (0 bytes)"), ("c,d.png", "x")])
    with open(out, newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["path", "reason"], ["/data/a b.jpg", "cannot decode image: empty file (0 bytes)"],
                                       ["c,d.png", "x"]]

    def rows():
        yield ("new.jpg", "y")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_skipped_files(out, rows())
    assert out.read_text(encoding="utf-8").startswith("path,reason\n/data/a b.jpg")  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skipped_files.csv"]  # no temporary left
    write_skipped_files(out, [])
    assert out.read_text(encoding="utf-8").splitlines() == ["path,reason"]


# ----------------------------------------------------------------------------- DataLoader workers
def test_workers_serve_every_good_image_and_fail_cleanly_on_a_file_changed_later(tmp_path):
    make_folder(tmp_path)
    b = load_dataset("folder", root=str(tmp_path), image_size=8, in_memory=False, resize=8, num_workers=2)
    assert b.num_train == 6
    tb = make_train_batches(b, b.train_labels, 4, "cpu", num_workers=2)
    with time_limit(60):
        seen = [int(i) for b in tb.epoch(0) for i in b.index]
    assert sorted(seen) == list(range(6))
    # a file that passed the check and is damaged afterwards: one DataError naming it, no hang
    victim = b.train_x.path(4)
    with open(victim, "r+b") as f:
        f.truncate(20)
    with time_limit(60), pytest.raises(DataError) as err:
        for _ in tb.epoch(1):
            pass
    assert f"{victim}: cannot decode image" in str(err.value) and "Traceback" not in str(err.value)


def test_a_run_on_a_folder_with_damaged_files_lists_them(tmp_path):
    from noisylab.config import build_config
    from noisylab.training import train

    reasons = make_folder(tmp_path / "photos", n_good=4)
    cfg = build_config({"device": "cpu", "output_dir": str(tmp_path / "runs"),
                        "data": {"dataset": "folder", "root": str(tmp_path / "photos"), "options": {"image_size": 8}},
                        "model": {"arch": "mlp", "options": {"hidden": [8]}},
                        "train": {"epochs": 1, "batch_size": 4, "progress": False, "tensorboard": False}})
    result = train(cfg)
    with open(result.run_dir / "skipped_files.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(os.path.basename(r["path"]) for r in rows) == sorted(reasons)
    assert all(reasons[os.path.basename(r["path"])] in r["reason"] for r in rows)
    assert json.loads((result.run_dir / "summary.json").read_text())["skipped_files"] == 3
