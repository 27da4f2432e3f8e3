"""The one-page HTML report of a run (``noisylab report RUN_DIR``): real tiny runs through the
engine, hand-written run folders with every file a run can have, and the bad inputs."""
from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisylab.cli import main
from noisylab.config import ConfigError, load_config
from noisylab.training import train
from noisylab.noise import NoisyLabels
from noisylab.report.html import GRID_SIZE, write_html_report

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TRAIN = ["model.arch=mlp", "model.options.hidden=[16]", "method.loss.name=elr", "train.batch_size=32",
         "train.progress=false", "train.tensorboard=false", "device=cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- reading the page
class Page(HTMLParser):
    """The ids, image sources, every URL-valued attribute and the text of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids, self.images, self.urls, self.text = set(), [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action", "data")]
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def read_page(path: Path) -> Page:
    """Parse the report and check it is self-contained and every embedded image decodes."""
    page = Page(path.read_text(encoding="utf-8"))
    for url in page.urls:
        assert url.startswith("data:image/png;base64,"), url[:80]  # nothing outside the page
    for src in page.images:
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        Image.open(io.BytesIO(raw)).verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG" and im.width > 0 and im.height > 0
    return page


def thumbs(path: Path) -> int:
    return path.read_text().count('<img class="thumb"')


# ----------------------------------------------------------------------------- real runs
def colour_images(rng, labels: np.ndarray, size: int = 8) -> np.ndarray:
    """uint8 [N, 3, size, size] noisy patches of the colour of each label."""
    rgb = np.array(list(COLOURS.values()))[labels]
    return np.clip(rgb[:, :, None, None] + rng.integers(-40, 40, (len(labels), 3, size, size)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def truth_run(tmp_path_factory) -> Path:
    """A real 3-epoch ELR run on tiny colour images (an npz file) with 40% symmetric noise."""
    root = tmp_path_factory.mktemp("truth")
    rng = np.random.default_rng(0)
    y, y_test = rng.integers(0, 3, 150), rng.integers(0, 3, 30)
    np.savez(root / "colours.npz", x=colour_images(rng, y), y=y, x_test=colour_images(rng, y_test), y_test=y_test,
             class_names=np.array(list(COLOURS)))
    cfg = load_config(None, [f"data.root={root / 'colours.npz'}", "data.dataset=npz",
                             "data.options.labels_are_clean=true", "noise.kind=symmetric", "noise.rate=0.4",
                             "train.epochs=3", *TRAIN,
                             f"output_dir={root / 'runs'}", "name=colours"])
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A real 2-epoch run on a folder of 18 small PNG files (truth unknown)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(1)
    for k, name in enumerate(COLOURS):
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = colour_images(rng, np.array([k]), size=10)[0].transpose(1, 2, 0)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
    cfg = load_config(None, [f"data.root={root / 'images'}", "data.dataset=folder", "data.options.image_size=8",
                             "data.val_fraction=0", "noise.kind=none", "train.epochs=2", *TRAIN,
                             # flag nearly everything so that the grid has examples after two epochs
                             "detect.filter_by=low_self_confidence", "detect.threshold=0.99",
                             f"output_dir={root / 'runs'}", "name=own"])
    return train(cfg).run_dir


def test_real_run_with_known_truth_has_every_section(truth_run):
    out = write_html_report(truth_run)
    assert out == truth_run / "report.html"
    page = read_page(out)
    assert {"header", "noise", "curves", "memorization", "transition", "detection", "suspects"} <= page.ids
    text = page.all_text
    assert "colours" in text and "symmetric 0.4" in text and "config.yaml" in text
    assert "given: " in text and "suggested: " in text and "true: " in text
    assert "red" in text and "green" in text  # class names, not indices
    # images rebuilt from the dataset: curves, memorization, transition, PR curve + the thumbnails
    flagged = sum(r["is_label_issue"] == "1" for r in csv.DictReader((truth_run / "label_issues.csv").open()))
    assert thumbs(out) == min(GRID_SIZE, flagged) > 0
    assert len(page.images) == 4 + thumbs(out)


def test_real_run_without_truth_reads_the_images_by_path(folder_run, tmp_path):
    out = write_html_report(folder_run, tmp_path / "elsewhere" / "page.html")
    assert out == tmp_path / "elsewhere" / "page.html" and not (folder_run / "report.html").exists()
    page = read_page(out)
    assert {"header", "curves", "detection", "suspects"} <= page.ids
    assert "memorization" not in page.ids  # truth unknown
    assert ("transition" in page.ids) == ("transition_estimate" in (folder_run / "summary.json").read_text())
    rows = list(csv.DictReader((folder_run / "label_issues.csv").open()))
    assert "path" in rows[0] and "true: " not in page.all_text
    assert thumbs(out) == min(GRID_SIZE, sum(r["is_label_issue"] == "1" for r in rows)) > 0
    if "suspect_fit" in (folder_run / "metrics.csv").read_text().splitlines()[0]:
        assert "alarm" in page.ids  # the engine records the alarm: it is shown


# ----------------------------------------------------------------------------- hand-written run folders
def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def fake_run(folder: Path, truth: bool, image_dir: Path | None = None) -> Path:
    """A run folder with every file the engine may write, including the alarm, the detector's
    noise estimates and the ``part`` column. ``image_dir``: label_issues.csv gets a ``path`` column."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = list(COLOURS)
    n, epochs = 30, 5
    clean = rng.integers(0, 3, n)
    noisy = np.where(rng.random(n) < 0.4, (clean + rng.integers(1, 3, n)) % 3, clean)
    if truth:
        NoisyLabels(noisy, clean, 3, "symmetric", 0.4, 0).save(folder / "noisy_labels.npz")
    fit = [0.1, 0.15, 0.4, 0.7, 0.9]
    write_rows(folder / "metrics.csv", [
        {"epoch": e, "lr": 0.02 * 0.5 ** e, "train_loss": 1.0 - 0.1 * e, "train_acc": 0.5 + 0.05 * e,
         "test_top1": 0.6 + 0.05 * e if truth else "", "noisy_val_top1": 0.45 + 0.02 * e,
         "suspect_fit": "" if e == 0 else fit[e], "num_suspected": 0 if e == 0 else 10 + e, "time_s": 0.1}
        for e in range(epochs)])
    if truth:
        write_rows(folder / "memorization.csv", [
            {"epoch": e, "clean_correct": 0.9, "clean_wrong": 0.1, "noisy_true": 0.8 - 0.15 * e,
             "noisy_memorized": 0.1 + 0.15 * e, "noisy_other": 0.1} for e in range(epochs)])
    quality = np.sort(rng.random(n))
    rows = []
    for i in range(n):
        suggested = clean[i] if i < 12 else noisy[i]
        row = {"index": i, "part": "train" if i % 5 else "val", "given_label": noisy[i], "suggested_label": suggested,
               "quality": f"{quality[i]:.4f}", "is_label_issue": int(i < 12), "given_name": names[noisy[i]],
               "suggested_name": names[suggested]}
        if truth:
            row.update(true_label=clean[i], is_noisy=int(clean[i] != noisy[i]))
        if image_dir is not None:
            row["path"] = str(image_dir / f"{i}.png")
        rows.append(row)
    write_rows(folder / "label_issues.csv", rows)
    summary = {"name": "hand <made>", "dataset": "npz", "method": "standard", "loss": "elr",
               "noise": "symmetric 0.4" if truth else "none",
               "actual_noise_rate": float(np.mean(clean != noisy)) if truth else None, "epochs": epochs,
               "test_top1_last": 0.8 if truth else None, "test_top1_best": 0.85 if truth else None,
               "detect": {"detector": "history", "num_flagged": 12, "noise_rate_estimate": 0.4,
                          "noise_rate_per_class_estimate": [0.3, 0.4, 0.5],
                          "transition_estimate": [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.25, 0.25, 0.5]]},
               "alarm": {"warned_epoch": 3, "message": "memorization alarm <b>at epoch 3</b>: stop & use best.pt"},
               "wall_time_s": 12.5}
    if truth:
        summary["detect"].update(precision=0.75, recall=0.8, f1=0.77, auroc=0.9, auprc=0.8)
    (folder / "summary.json").write_text(json.dumps(summary))
    # the data are gone: the grid must give way to a note when it needs them
    (folder / "config.yaml").write_text(f"name: hand\ndata: {{dataset: npz, root: {folder / 'moved.npz'}}}\n")
    return folder


def test_hand_written_run_with_truth_shows_every_section(tmp_path):
    run = fake_run(tmp_path / "run", truth=True)
    page = read_page(write_html_report(run))
    assert {"header", "noise", "curves", "memorization", "transition", "detection", "suspects"} <= page.ids
    assert "alarm" not in page.ids  # the alarm rides on the memorization plot when truth is known
    raw = (run / "report.html").read_text()
    text = page.all_text
    assert "hand <made>" in text and "<made>" not in raw  # escaped
    assert "memorization alarm <b>at epoch 3</b>: stop & use best.pt" in text and 'class="warn"' in raw
    assert "Dashed black" in text  # suspect_fit over the true memorization
    assert "40.00%" in text and "30.0%" in text and "50.0%" in text  # estimated rate, per class
    assert "blue" in text and "auprc" in text and "history" in text
    assert "could not be loaded" in text and thumbs(run / "report.html") == 0
    assert len(page.images) == 4  # curves, memorization, transition matrices, precision-recall


def test_hand_written_run_without_truth_shows_the_alarm_and_images_by_path(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(30):
        if i != 5:  # one image has been deleted since training
            Image.new("L" if i % 2 else "RGB", (20, 12), 40 * (i % 6)).save(images / f"{i}.png")
    run = fake_run(tmp_path / "run", truth=False, image_dir=images)
    page = read_page(write_html_report(run))
    assert {"header", "noise", "curves", "alarm", "transition", "detection", "suspects"} <= page.ids
    assert "memorization" not in page.ids
    text = page.all_text
    assert "memorization alarm <b>at epoch 3</b>" in text and "true: " not in text
    assert "1 of 12 images could not be read" in text and thumbs(run / "report.html") == 11
    assert len(page.images) == 3 + 11  # curves, alarm, estimated transition; no PR curve (truth unknown)


def test_sections_are_left_out_when_their_files_are_missing(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"name": "bare", "noise": None}))
    page = read_page(write_html_report(run))
    assert page.ids == {"header"} and page.images == []


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("damage, fragment", [
    (lambda run: None, "does not exist"),
    (lambda run: run.mkdir(), "has no summary.json"),
    (lambda run: run.write_text("a file"), "is a file"),
])
def test_missing_run_folder_is_one_config_error(tmp_path, damage, fragment):
    run = tmp_path / "run"
    damage(run)
    with pytest.raises(ConfigError, match=fragment) as err:
        write_html_report(run)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, content, fragment", [
    ("summary.json", b'{"name": "x", ', "is damaged"),
    ("summary.json", b"[1, 2]", "is damaged"),
    ("metrics.csv", b"\xff\xfe\x00garbage\x00", "metrics.csv' is damaged"),
    ("noisy_labels.npz", b"PK\x03\x04 not a zip", "noisy_labels.npz"),
    ("label_issues.csv", b"index,quality\n1,0.5\n\xff\xfe\x00\n", "label_issues.csv' is damaged"),
    ("label_issues.csv", b"index,quality\n1,0.5,extra\n", "label_issues.csv' is damaged"),
])
def test_damaged_files_are_one_config_error(tmp_path, name, content, fragment):
    run = fake_run(tmp_path / "run", truth=True)
    (run / name).write_bytes(content)
    with pytest.raises(ConfigError, match=fragment) as err:
        write_html_report(run)
    assert "\n" not in str(err.value) and not (run / "report.html").exists()


def cli(capsys, *argv):
    try:
        code = main(["-q", "report", *map(str, argv)])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def test_cli_one_run_writes_the_page_several_runs_do_not(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a", truth=True), fake_run(tmp_path / "b", truth=False)
    code, out, _ = cli(capsys, a)
    assert code == 0 and out.splitlines()[2].startswith("a ") and f"report -> {a / 'report.html'}" in out
    assert (a / "report.html").is_file()
    (a / "report.html").unlink()
    assert cli(capsys, a, "--no-html")[0] == 0 and not (a / "report.html").exists()
    code, out, _ = cli(capsys, a, b, "-o", tmp_path / "m.png")
    assert code == 0 and (tmp_path / "m.png").is_file() and "report ->" not in out
    assert not (a / "report.html").exists() and not (b / "report.html").exists()
    assert cli(capsys, a, b, "--html")[0] == 0 and (a / "report.html").is_file() and (b / "report.html").is_file()
    assert cli(capsys, b, "--html-output", tmp_path / "x" / "b.html")[0] == 0 and (tmp_path / "x" / "b.html").is_file()


@pytest.mark.parametrize("argv, fragment", [
    (lambda t: [t / "nowhere"], "has no summary.json"),
    (lambda t: [t / "damaged"], "is damaged"),
    (lambda t: [t / "badlabels"], "noisy_labels.npz"),
    (lambda t: [t / "badlabels", t / "badlabels", "--html-output", t / "x.html"], "exactly one run folder"),
    (lambda t: [t / "badlabels", "--html", "--no-html"], "not allowed with argument"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "summary.json").write_text('{"name": ')
    fake_run(tmp_path / "badlabels", truth=True)
    (tmp_path / "badlabels" / "noisy_labels.npz").write_bytes(b"garbage")
    code, _, err = cli(capsys, *argv(tmp_path))
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("noisylab") and fragment in err, err
    assert not (tmp_path / "badlabels" / "report.html").exists()


def test_tables_for_the_terminal_and_for_markdown():
    from noisylab.report.summary import format_table, markdown_table

    header, rows = ["method", "test %"], [["CE", "51.60"], ["ELR+", 92.7]]
    md = markdown_table(header, rows).splitlines()
    # a GitHub table: header, separator, one line per row, every line with the same cells and width
    assert md == ["| method | test % |", "|--------|--------|", "| CE     |  51.60 |", "| ELR+   |   92.7 |"]
    text = format_table(header, [[str(c) for c in r] for r in rows]).splitlines()
    assert text[2].split() == ["CE", "51.60"] and len(text) == 4


def test_a_large_label_issues_file_is_read_as_columns_with_only_the_shown_rows_as_text(tmp_path):
    """30,000 rows: the page keeps the flagged rows it shows and the near-duplicate rows with their
    partners as text, everything else as arrays; the counts and the curve come from the arrays."""
    from noisylab.report.run_files import SHOWN_FLAGGED, read_issues

    rng = np.random.default_rng(0)
    n = 30_000
    noisy = rng.random(n) < 0.1
    quality = np.where(noisy, rng.random(n) * 0.6, 0.3 + rng.random(n) * 0.7)
    flagged = quality < 0.25
    order = np.lexsort((quality, ~flagged))
    lines = ["index,given_label,suggested_label,quality,is_label_issue,given_name,suggested_name,true_label,is_noisy,"
             "is_near_duplicate,near_duplicate_of"]
    for i in order:
        dup = i in (7, 8)
        lines.append(f"{i},{i % 3},{(i + 1) % 3},{quality[i]:.6f},{int(flagged[i])},c{i % 3},c{(i + 1) % 3},"
                     f"{i % 3},{int(noisy[i])},{int(dup)},{15 - i if dup else ''}")
    path = tmp_path / "label_issues.csv"
    path.write_text("\n".join(lines) + "\n")
    table = read_issues(path)
    assert len(table) == n and table.num_flagged == int(flagged.sum())
    assert len(table.top_flagged) == SHOWN_FLAGGED
    assert [r["index"] for r in table.top_flagged] == [str(i) for i in order[:SHOWN_FLAGGED]]
    assert sorted(r["index"] for r in table.graph_rows) == ["7", "8"] and sorted(table.partners) == ["7", "8"]
    assert table.max_label == 2 and table.names == {0: "c0", 1: "c1", 2: "c2"}
    np.testing.assert_allclose(np.sort(table.quality), np.sort(np.round(quality, 6)))
    assert np.array_equal(np.sort(np.flatnonzero(table.noisy[np.argsort(order)] == 1)), np.flatnonzero(noisy))


def test_the_alarm_note_says_when_the_held_out_check_withdrew_the_alarm():
    from types import SimpleNamespace

    from noisylab.report.html import alarm_note

    withdrawn = {"warned_epoch": None, "withdrawn_epoch": 6, "final_wrong_high": 0.024, "peak_suspect_fit": 0.39}
    text = alarm_note(SimpleNamespace(alarm=withdrawn))
    assert "did not go off (peak suspect fit 39.0%)" in text and "sounded at epoch 6 and was withdrawn" in text
    assert "at most 2.4%" in text and 'class="ok"' in text
    stood = alarm_note(SimpleNamespace(alarm={"warned_epoch": 6, "withdrawn_epoch": None, "final_wrong_high": 0.3,
                                              "peak_suspect_fit": 0.5}))
    assert "went off at epoch 6" in stood and "withdrawn" not in stood and 'class="warn"' in stood
    calm = alarm_note(SimpleNamespace(alarm={"warned_epoch": None, "withdrawn_epoch": None, "peak_suspect_fit": 0.1}))
    assert "did not go off" in calm and "withdrawn" not in calm
