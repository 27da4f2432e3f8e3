"""The catalogue of bad inputs: every one gets exit status 2, ONE line on stderr naming the
problem (the fragment below), no traceback, and leaves an existing run folder byte for byte as
it was. The CLI runs in-process (``noisylab.cli.main`` is what the console script calls)."""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from noisylab.cli import main

TINY = ["device=cpu", "data.options.num_samples=300", "model.arch=mlp", "model.options.hidden=[16]",
        "train.epochs=1", "train.batch_size=50", "train.progress=false", "train.tensorboard=false"]


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run, a config file and the bad files the cases point at."""
    root = tmp_path_factory.mktemp("bad")
    cfg = root / "ok.yaml"
    cfg.write_text("name: run\nnoise: {kind: symmetric, rate: 0.4}\nmethod: {loss: {name: elr}}\n")
    assert main(["-q", "train", "-c", str(cfg), f"output_dir={root / 'runs'}", *TINY]) == 0
    run = root / "runs" / "run"
    files = {
        "empty.yaml": "", "list.yaml": "- 1\n- 2\n", "broken.yaml": "optim: {lr: 0.1\n", "twice.yaml": "name: a\ndata: {dataset: mnist1d}\nname: b\n",
        "kind_none_rate.yaml": "noise: {kind: none, rate: 0.4}\n", "notes.txt": "hello\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "garbage.pt").write_bytes(os.urandom(3000))
    (root / "short_labels.npy").write_bytes(b"")
    np.save(root / "labels.npy", np.array([0, 1, 2, 1]))
    np.save(root / "labels_big.npy", np.array([0, 1, 7, 1]))
    np.save(root / "probs3.npy", np.full((3, 3), 1 / 3))
    np.save(root / "probs_nan.npy", np.array([[0.5, 0.5, 0.0]] * 3 + [[np.nan, 0.5, 0.5]]))
    np.save(root / "probs4.npy", np.full((4, 3), 1 / 3))
    # a run whose predictions.npz is damaged, one whose summary.json is, one that died before its first checkpoint
    for name in ("damaged_pred", "damaged_summary", "no_ckpt", "bad_ckpt", "cut_ckpt"):
        (root / name / "checkpoints").mkdir(parents=True)
        (root / name / "config.yaml").write_text((run / "config.yaml").read_text())
    (root / "damaged_pred" / "predictions.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "damaged_summary" / "summary.json").write_text('{"name": "x", ')
    (root / "bad_ckpt" / "checkpoints" / "last.pt").write_bytes(os.urandom(500))
    whole = (run / "checkpoints" / "last.pt").read_bytes()
    (root / "cut_ckpt" / "checkpoints" / "last.pt").write_bytes(whole[:len(whole) // 2])  # a copy cut short
    # image data with bad labels
    csv_dir = root / "csvdata"
    csv_dir.mkdir()
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(csv_dir / f"{i}.png")
    (csv_dir / "labels.csv").write_text("0.png,0\n1.png,1\n2.png,1.5\n3.png,0\n")
    for cls in ("cat", "dog"):
        (root / "folder" / cls).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(root / "folder" / "cat" / f"{i}.png")
    # a CIFAR batch that would run code
    cifar = root / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'pwned'}",))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps(Evil()))
    (root / "afile").write_text("not a folder")
    np.savez(root / "no_y.npz", x=np.zeros((4, 3)))
    return {"root": root, "run": run, "cfg": cfg, "digest": folder_digest(run)}


def R(world, name: str) -> str:
    return str(world["root"] / name)


# (case id, argv builder, fragment of the one error line)
CASES = [
    # ---- config files
    ("config missing", lambda w: ["train", "-c", R(w, "nope.yaml")], "config file"),
    ("config empty", lambda w: ["train", "-c", R(w, "empty.yaml")], "is empty"),
    ("config a list", lambda w: ["train", "-c", R(w, "list.yaml")], "must contain a mapping"),
    ("config invalid YAML", lambda w: ["train", "-c", R(w, "broken.yaml")], "is not valid YAML at line"),
    ("config key twice", lambda w: ["train", "-c", R(w, "twice.yaml")], "key 'name' is given twice (lines 1 and 3)"),
    ("override key twice", lambda w: ["train", "-c", str(w["cfg"]), "optim={lr: 0.1, lr: 0.2}"], "key 'lr' is given twice"),
    ("unknown packaged recipe", lambda w: ["train", "-c", "own_imags"], "did you mean 'own_images_elr'?"),
    ("config binary", lambda w: ["train", "-c", R(w, "binary.yaml")], "is not text"),
    ("config is a folder", lambda w: ["train", "-c", R(w, "runs")], "not found"),
    ("kind none with a rate", lambda w: ["train", "-c", R(w, "kind_none_rate.yaml")], "means nothing for noise kind 'none'"),
    # ---- keys and values
    ("unknown key", lambda w: ["train", "-c", str(w["cfg"]), "foo=1"], "unknown config key 'foo'"),
    ("misspelled key", lambda w: ["train", "-c", str(w["cfg"]), "optim.lrr=1"], "did you mean 'lr'?"),
    ("misspelled method", lambda w: ["train", "-c", str(w["cfg"]), "method.name=elr_pluss"], "did you mean 'elr_plus'?"),
    ("misspelled loss", lambda w: ["train", "-c", str(w["cfg"]), "method.loss.name=elrr"], "did you mean 'elr'?"),
    ("misspelled noise kind", lambda w: ["train", "-c", str(w["cfg"]), "noise.kind=symetric"], "did you mean 'symmetric'?"),
    ("misspelled model", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "model.arch=resnet43"], "did you mean 'resnet34'?"),
    ("misspelled dataset", lambda w: ["train", "-c", str(w["cfg"]), "data.dataset=mnist1e"], "did you mean 'mnist1d'?"),
    ("misspelled augmentation", lambda w: ["train", "-c", str(w["cfg"]), "data.augment=crop_flop"], "did you mean 'crop_flip'?"),
    ("rate above 1", lambda w: ["train", "-c", str(w["cfg"]), "noise.rate=1.5"], "noise.rate"),
    ("rate NaN", lambda w: ["train", "-c", str(w["cfg"]), "noise.rate=.nan"], "not a number"),
    ("lr negative", lambda w: ["train", "-c", str(w["cfg"]), "optim.lr=-1"], "optim.lr"),
    ("lr infinite", lambda w: ["train", "-c", str(w["cfg"]), "optim.lr=.inf"], "not a finite number"),
    ("epochs zero", lambda w: ["train", "-c", str(w["cfg"]), "train.epochs=0"], "train.epochs"),
    ("epochs text", lambda w: ["train", "-c", str(w["cfg"]), "train.epochs=abc"], "train.epochs"),
    ("batch zero", lambda w: ["train", "-c", str(w["cfg"]), "train.batch_size=0"], "train.batch_size"),
    ("unknown device", lambda w: ["train", "-c", str(w["cfg"]), "device=gpu7"], "unknown device 'gpu7'"),
    ("cuda missing", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "device=cuda"], "CUDA is not available"),
    ("ELR+ key on standard", lambda w: ["train", "-c", str(w["cfg"]), "method.mixup_alpha=2"], "method.mixup_alpha"),
    ("ELR key on GCE", lambda w: ["train", "-c", str(w["cfg"]), "method.loss.name=gce", "method.loss.lam=2"],
     "unknown config key 'method.loss.lam'"),
    ("warm-ups out of order", lambda w: ["train", "-c", str(w["cfg"]), "method.name=repreg", "method.ce_warmup_epochs=3",
                                          "method.reg_start_epoch=1"], "must not come before"),
    ("train_size below classes", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "data.train_size=5"],
     "smaller than the 10 classes"),
    ("SimCLR views on vectors", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "data.augment=simclr"], "needs images"),
    ("simclr without held-out", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "method.name=simclr", "noise.kind=none"],
     "set data.val_fraction"),
    ("last_batch=drop leaves nothing", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "train.batch_size=5000",
                                             "train.last_batch=drop"], "leaves no batch"),
    # ---- run names and output folders
    ("name escapes output_dir", lambda w: ["train", "-c", str(w["cfg"]), "name=../x"], "plain folder name"),
    ("absolute name", lambda w: ["train", "-c", str(w["cfg"]), "name=/tmp/x"], "plain folder name"),
    ("empty name", lambda w: ["train", "-c", str(w["cfg"]), "name="], "plain folder name"),
    ("300-character name", lambda w: ["train", "-c", str(w["cfg"]), "name=" + "n" * 300], "use at most 100"),
    ("output_dir is a file", lambda w: ["train", "-c", str(w["cfg"]), *TINY, f"output_dir={R(w, 'afile')}"], "is a file"),
    ("output_dir under a file", lambda w: ["train", "-c", str(w["cfg"]), *TINY, f"output_dir={R(w, 'afile')}/sub"],
     "under a file"),
    # ---- flags
    ("asym not a boolean", lambda w: ["train", "-c", str(w["cfg"]), "--asym", "maybe"], "expected true or false"),
    ("asym vs noise_type", lambda w: ["train", "-c", str(w["cfg"]), "--asym", "true", "--noise_type", "symmetric"],
     "--asym true means noise kind asymmetric"),
    ("percent vs override", lambda w: ["train", "-c", str(w["cfg"]), "--percent", "0.2", "noise.rate=0.6"],
     "give one of them"),
    ("percent vs noise_rate", lambda w: ["train", "-c", str(w["cfg"]), "--percent", "0.2", "--noise_rate", "0.6"],
     "disagree"),
    ("lr not a number", lambda w: ["train", "-c", str(w["cfg"]), "--lr", "fast"], "invalid float value"),
    ("override without =", lambda w: ["train", "-c", str(w["cfg"]), "--lr", "0.1", "optimlr"], "is not of the form key.sub=value"),
    ("stray argument after flags", lambda w: ["train", "-c", str(w["cfg"]), "noise.rate=0.2", "--lr", "0.1", "junk"],
     "unrecognized arguments: junk"),
    ("override empty key part", lambda w: ["train", "-c", str(w["cfg"]), "optim..lr=1"], "empty key part"),
    ("override into a value", lambda w: ["train", "-c", str(w["cfg"]), "noise.kind.x=1"], "is a value, not a section"),
    ("no config", lambda w: ["train"], "no config given"),
    ("pretrain a classifier config", lambda w: ["pretrain", "-c", str(w["cfg"])], "method simclr"),
    ("resume auto without config", lambda w: ["train", "-r", "auto"], "-r auto needs the config"),
    # ---- label and encoder files
    ("noise file missing", lambda w: ["train", "-c", str(w["cfg"]), *TINY, f"noise.file={R(w, 'nope.npz')}"], "nope.npz"),
    ("noise file of another length", lambda w: ["train", "-c", str(w["cfg"]), *TINY,
                                                 f"noise.file={w['run'] / 'noisy_labels.npz'}", "data.options.num_samples=400"],
     "labels but mnist1d has"),
    ("noise file garbage", lambda w: ["train", "-c", str(w["cfg"]), *TINY, f"noise.file={R(w, 'garbage.pt')}"], "garbage.pt"),
    ("encoder missing", lambda w: ["train", "-c", str(w["cfg"]), *TINY, f"model.encoder_checkpoint={R(w, 'nope.pt')}"],
     "nope.pt"),
    ("encoder garbage", lambda w: ["train", "-c", str(w["cfg"]), *TINY, f"model.encoder_checkpoint={R(w, 'garbage.pt')}"],
     "garbage.pt"),
    # ---- data
    ("CSV label 1.5", lambda w: ["train", "-c", str(w["cfg"]), *TINY[:1], "data.dataset=csv", f"data.root={R(w, 'csvdata/labels.csv')}",
                                 "noise.kind=none", "model.arch=mlp"], "1.5"),
    ("class folder without images", lambda w: ["train", "-c", str(w["cfg"]), "device=cpu", "data.dataset=folder",
                                               f"data.root={R(w, 'folder')}", "noise.kind=none"], "has no images"),
    ("CIFAR pickle that runs code", lambda w: ["train", "-c", str(w["cfg"]), "device=cpu", "data.dataset=cifar10",
                                               f"data.root={R(w, 'cifar')}"], "nothing was executed"),
    ("npz without y", lambda w: ["train", "-c", str(w["cfg"]), "device=cpu", "data.dataset=npz", f"data.root={R(w, 'no_y.npz')}",
                                 "noise.kind=none"], "no_y.npz"),
    ("unknown state storage", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "train.state_storage=disk"],
     "train.state_storage"),
    ("state files in a file", lambda w: ["train", "-c", str(w["cfg"]), *TINY, "train.state_storage=file",
                                         f"train.state_dir={R(w, 'notes.txt')}", f"output_dir={R(w, 'runs_state')}"],
     "cannot write"),
    # ---- resume
    ("resume a missing path", lambda w: ["train", "-r", R(w, "nowhere")], "does not exist"),
    ("resume before the first checkpoint", lambda w: ["train", "-r", R(w, "no_ckpt")], "has no checkpoint"),
    ("resume a folder that is no run", lambda w: ["train", "-r", R(w, "csvdata")], "not a noisylab run folder"),
    ("resume a damaged checkpoint", lambda w: ["train", "-r", R(w, "bad_ckpt")], "is damaged"),
    ("resume a checkpoint cut short", lambda w: ["train", "-r", R(w, "cut_ckpt")], "is damaged"),
    ("resume a garbage file", lambda w: ["train", "-r", R(w, "garbage.pt")], "not a readable noisylab checkpoint"),
    ("resume with another model", lambda w: ["train", "-r", str(w["run"]), "model.arch=cnn1d"],
     "'model.arch' cannot change when resuming"),
    ("resume with another noise", lambda w: ["train", "-r", str(w["run"]), "noise.rate=0.8"],
     "'noise.rate' cannot change when resuming"),
    ("resume with another method", lambda w: ["train", "-r", str(w["run"]), "method.name=elr_plus"], "cannot change when resuming"),
    ("resume with another config", lambda w: ["train", "-c", str(w["cfg"]), "-r", str(w["run"]), *TINY[:-2], "seed=5"],
     "'seed' cannot change when resuming"),
    # ---- detect
    ("detect a missing run", lambda w: ["detect", R(w, "nowhere")], "has no predictions.npz"),
    ("detect without predictions", lambda w: ["detect", R(w, "no_ckpt")], "has no predictions.npz"),
    ("detect damaged predictions", lambda w: ["detect", R(w, "damaged_pred")], "is damaged"),
    ("detect threshold 5", lambda w: ["detect", str(w["run"]), "--threshold", "5"], "expected a number from 0 to 1"),
    ("detect labels only", lambda w: ["detect", "--labels", R(w, "labels.npy")], "give a run folder, or both"),
    ("detect lengths differ", lambda w: ["detect", "--labels", R(w, "labels.npy"), "--pred-probs", R(w, "probs3.npy"),
                                         "-o", R(w, "x.csv")], "must match"),
    ("detect NaN probabilities", lambda w: ["detect", "--labels", R(w, "labels.npy"), "--pred-probs", R(w, "probs_nan.npy"),
                                            "-o", R(w, "x.csv")], "finite"),
    ("detect label out of range", lambda w: ["detect", "--labels", R(w, "labels_big.npy"), "--pred-probs",
                                             R(w, "probs4.npy"), "-o", R(w, "x.csv")], "must lie in [0, 3)"),
    ("detect empty label file", lambda w: ["detect", "--labels", R(w, "short_labels.npy"), "--pred-probs",
                                           R(w, "probs4.npy"), "-o", R(w, "x.csv")], "short_labels.npy"),
    ("detect arrays with a run's detector", lambda w: ["detect", "--labels", R(w, "labels.npy"), "--pred-probs",
                                                      R(w, "probs4.npy"), "-o", R(w, "x.csv"), "--method", "knn"],
     "drop --method"),
    ("detect arrays without -o", lambda w: ["detect", "--labels", R(w, "labels.npy"), "--pred-probs",
                                            R(w, "probs4.npy")], "give -o OUTPUT.csv"),
    ("detect unknown filter", lambda w: ["detect", str(w["run"]), "--filter-by", "magic"], "invalid choice: 'magic'"),
    # ---- report and noise
    ("report a missing run", lambda w: ["report", R(w, "nowhere")], "has no summary.json"),
    ("report a damaged summary", lambda w: ["report", R(w, "damaged_summary")], "is damaged"),
    ("noise unknown kind", lambda w: ["noise", "--dataset", "mnist1d", "--kind", "symetric", "--rate", "0.4", "-o",
                                      R(w, "n.npz")], "symetric"),
    ("noise rate 2", lambda w: ["noise", "--dataset", "mnist1d", "--kind", "symmetric", "--rate", "2", "-o", R(w, "n.npz")],
     "rate"),
]


@pytest.mark.parametrize("case, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_exit_2(world, capsys, case, argv, fragment):
    try:
        code = main(["-q", *argv(world)])
    except SystemExit as exit_:  # argparse's own errors exit from inside main, as the console script does
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (case, err)
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith("noisylab") and fragment in err, err
    assert folder_digest(world["run"]) == world["digest"]  # the finished run is untouched
    assert not (world["root"] / "pwned").exists()


def test_the_catalogue_is_large():
    assert len(CASES) >= 60
