"""The recipes ship with the package: `noisylab configs`, `-c NAME`, and a wheel installed (not
editable) into a fresh virtual environment that trains from a folder without the repository."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from noisylab.cli import main
from noisylab.config import PACKAGED_CONFIGS, packaged_configs, read_yaml, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_packaged_recipe_is_listed_with_its_header_and_readable_by_name(capsys):
    names = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    assert len(names) >= 20 and "own_images_elr" in names and "fast_cifar10" in names
    recipes = packaged_configs()
    assert list(recipes) == names and all(recipes.values())
    assert recipes["mnist1d_elr"] == "The demo's ELR run as a config"  # the header's first sentence
    assert main(["configs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == names
    # by name, with or without .yaml; a path still works; the repo's configs/ is the same folder
    assert resolve_config("mnist1d_elr") == resolve_config("mnist1d_elr.yaml") == PACKAGED_CONFIGS / "mnist1d_elr.yaml"
    assert read_yaml("mnist1d_elr") == read_yaml(ROOT / "configs" / "mnist1d_elr.yaml")
    assert main(["configs", "fast_cifar10"]) == 0
    assert capsys.readouterr().out == (PACKAGED_CONFIGS / "fast_cifar10.yaml").read_text()


def test_an_unknown_recipe_is_one_line_with_a_suggestion(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-c", "own_imags"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'own_images_elr'" in err and "noisylab configs" in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_trains_from_a_folder_without_the_repository(tmp_path):
    # nothing of the repository on the path (CI may set PYTHONPATH=src: pip would then take the
    # checkout for an installed noisylab and skip the wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=600, env=env)
    (wheel,) = wheels.glob("noisylab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {Path(n).name for n in z.namelist() if n.startswith("noisylab/configs/")}
    assert shipped == {p.name for p in PACKAGED_CONFIGS.glob("*.yaml")}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300, env=env)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=600, env=env)
    # the dependencies (torch, ...) come from this environment, read as a plain folder: its
    # editable-install hook for noisylab is not run, so `import noisylab` is the wheel's
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=env).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "somewhere"
    work.mkdir()
    run = lambda *args: subprocess.run([str(venv / "bin" / "noisylab"), *args], cwd=work, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=600)
    where = subprocess.run([str(py), "-c", "import noisylab; print(noisylab.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    listed = run("configs")
    assert listed.returncode == 0 and "own_images_elr" in listed.stdout
    trained = run("-q", "train", "-c", "mnist1d_elr", "train.epochs=1", "data.train_size=300", "train.progress=false",
                  "train.tensorboard=false")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (work / "runs" / "mnist1d_elr" / "label_issues.csv").is_file()
    # the practitioner's command, from embeddings: the table on stdout, the files in runs/
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    np.save(work / "emb.npy", (rng.normal(0, 1, (3, 5))[y] * 3 + rng.normal(0, 1, (120, 5))).astype(np.float32))
    (work / "y.csv").write_text("".join(f"{c}\n" for c in y))
    found = run("find-issues", "--features", "emb.npy", "--labels", "y.csv")
    assert found.returncode == 0, found.stderr[-2000:]
    assert "estimated noise rate" in found.stdout and (work / "runs" / "find_issues_emb" / "report.html").is_file()
