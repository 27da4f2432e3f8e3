"""Pretrained backbones by name (timm, torchvision), offline: each test writes weights into a
temporary cache (HF_HOME's hub layout, TORCH_HOME/hub/checkpoints) and loads them from there."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from noisylab.models import create_model  # noqa: E402
from noisylab.models.pretrained import create_backbone  # noqa: E402
from noisylab.models.registry import ModelError  # noqa: E402

TIMM_NAME = "test_resnet.r160_in1k"  # timm's 0.37M-parameter test network (hub id timm/test_resnet.r160_in1k)
TV_NAME = "mobilenet_v3_small"


def write_timm_hub_cache(hf_home: Path, seed: int = 0) -> dict:
    """The hub cache layout ``hub/models--timm--NAME/{refs/main, snapshots/REV/model.safetensors}``
    with random weights; returns them."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(TIMM_NAME, pretrained=False).state_dict().items()}
    repo = hf_home / "hub" / f"models--timm--{TIMM_NAME}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / rev / "model.safetensors"))
    return state


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HOME in tmp_path, offline; huggingface_hub reads its constants at import, so they are set too."""
    import huggingface_hub.constants as hc

    hf_home = tmp_path / "hf"
    state = write_timm_hub_cache(hf_home)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return state


def test_timm_backbone_loads_the_cached_weights_and_its_data_config(hub_cache):
    net, inp = create_backbone(f"timm:{TIMM_NAME}")
    got = net.state_dict()
    assert all(torch.equal(got[k], hub_cache[k]) for k in got)  # every backbone tensor from the file (no fc)
    assert (inp.size, inp.resize, inp.mean, inp.std) == (160, round(160 / 0.95), (0.5,) * 3, (0.5,) * 3)


def test_timm_family_fine_tunes_through_the_registry(hub_cache):
    m = create_model(f"timm:{TIMM_NAME}", 5, (3, 32, 32), pretrained=True)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    assert m(x).shape == (2, 5) and m.num_features == 96
    assert torch.equal(m(x), m.forward_head(m.forward_features(x)))
    with pytest.raises(ModelError, match="timm has no model 'no_such_net'"):
        create_model("timm:no_such_net", 5, (3, 32, 32))
    with pytest.raises(ModelError, match=r"RGB images \[3, H, W\]"):
        create_model(f"timm:{TIMM_NAME}", 5, (1, 28, 28))


def test_a_missing_download_is_one_line_saying_where_the_file_goes(hub_cache, tmp_path, monkeypatch):
    with pytest.raises(ModelError) as err:
        create_backbone("timm:test_vit.r160_in1k")
    assert "HF_HOME" in str(err.value) and "--checkpoint FILE" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(ModelError) as err:
        create_backbone(f"torchvision:{TV_NAME}")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in str(err.value)


def _offline(*args, **kwargs):
    import urllib.error

    raise urllib.error.URLError("no network")


def test_torchvision_backbone_from_torch_home_and_from_a_local_file(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.get_model(TV_NAME, weights=None).state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "mobilenet_v3_small-047dcff4.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    net, inp = create_backbone(f"torchvision:{TV_NAME}")
    assert (inp.size, inp.resize) == (224, 256) and inp.mean == (0.485, 0.456, 0.406)
    assert torch.equal(net.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    net.eval()
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1024)  # the classifier's last Linear removed
    torch.save({"state_dict": state}, tmp_path / "mine.pt")
    mine, _ = create_backbone(f"torchvision:{TV_NAME}", checkpoint=tmp_path / "mine.pt")
    assert torch.equal(mine.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    with pytest.raises(ModelError, match="not found"):
        create_backbone(f"torchvision:{TV_NAME}", checkpoint=tmp_path / "missing.pt")


def colour_folder(root: Path, n: int = 12, wrong: int = 1, size: int = 20) -> set[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    mislabelled = set()
    for k, name in enumerate(colours):
        (root / name).mkdir(parents=True)
        for i in range(n):
            true = list(colours)[(k + 1) % 3] if i < wrong else name
            pixels = np.clip(np.array(colours[true]) + rng.integers(-25, 25, (size, size, 3)), 0, 255)
            path = root / name / f"{name}_{i:02d}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            if true != name:
                mislabelled.add(str(path))
    return mislabelled


def test_embeddings_are_the_backbone_on_its_prepared_input_and_are_cached(hub_cache, tmp_path, monkeypatch):
    from PIL import Image

    from noisylab.data.files import crop_array, resize_short_side
    from noisylab.embed import embed_dataset

    monkeypatch.setenv("NOISYLAB_CACHE", str(tmp_path / "cache"))
    colour_folder(tmp_path / "photos", n=4)
    first = embed_dataset(tmp_path / "photos", f"timm:{TIMM_NAME}", progress=False)
    assert first.features.shape == (12, 96) and not first.cached and first.class_names == ["blue", "green", "red"]
    # one image by hand: resized, cropped, normalised as timm's data config says, one forward pass
    net, inp = create_backbone(f"timm:{TIMM_NAME}")
    i = 5
    a = crop_array(np.asarray(resize_short_side(Image.open(first.names[i]).convert("RGB"), inp.resize)), inp.size)
    x = (torch.from_numpy(np.array(a)).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
    with torch.no_grad():
        want = net.eval()(x).numpy()[0]
    np.testing.assert_allclose(first.features[i], want, rtol=1e-4, atol=1e-4)
    again = embed_dataset(tmp_path / "photos", f"timm:{TIMM_NAME}", progress=False)
    import noisylab

    found = noisylab.find_label_issues(tmp_path / "photos", backbone=f"timm:{TIMM_NAME}")  # the Python form, cached
    assert found.names == first.names and found.probs.shape == (12, 3)
    assert again.cached and np.array_equal(again.features, first.features) and again.names == first.names
    Image.new("RGB", (20, 20), (0, 0, 0)).save(first.names[0])  # a changed image: embedded again
    os.utime(first.names[0], ns=(1, 1))
    changed = embed_dataset(tmp_path / "photos", f"timm:{TIMM_NAME}", progress=False)
    assert not changed.cached and not np.array_equal(changed.features[0], first.features[0])


def test_find_issues_with_a_frozen_timm_backbone_from_a_fresh_process(tmp_path):
    """The command as a user runs it: HF_HOME and NOISYLAB_CACHE in the environment, offline."""
    write_timm_hub_cache(tmp_path / "hf")
    wrong = colour_folder(tmp_path / "photos", n=15, wrong=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {
        "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "NOISYLAB_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "noisylab.cli", "find-issues", str(tmp_path / "photos"),
                           "--backbone", f"timm:{TIMM_NAME}", "-o", str(tmp_path / "runs"), "--top", "6"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = {line.split()[0] for line in done.stdout.splitlines()[2:8] if line.split()}
    assert len(shown & wrong) >= 4, (done.stdout, wrong)  # random weights: colour alone tells the classes apart
    assert "embeddings timm:" in done.stderr and "estimated noise rate" in done.stdout
    folder = tmp_path / "runs" / "find_issues_photos"
    import csv

    rows = list(csv.DictReader(open(folder / "label_issues.csv")))
    assert len(rows) == 45 and Path(rows[0]["path"]).is_file()
    page = (folder / "report.html").read_text()
    assert 'class="thumb"' in page and Path(rows[0]["path"]).name in page  # thumbnails named by their files
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 1


def test_find_issues_fine_tunes_the_backbone_with_its_input(hub_cache, tmp_path, capsys):
    from noisylab.cli import main
    from noisylab.config import load_config

    colour_folder(tmp_path / "photos", n=6)
    assert main(["-q", "find-issues", str(tmp_path / "photos"), "--backbone", f"timm:{TIMM_NAME}", "--finetune",
                 "-o", str(tmp_path / "runs"), "train.epochs=1", "train.batch_size=8", "device=cpu",
                 "train.tensorboard=false"]) == 0
    cfg = load_config(tmp_path / "runs" / "find_issues_photos" / "config.yaml")
    assert cfg.model.arch == f"timm:{TIMM_NAME}" and cfg.model.options["pretrained"] is True
    assert cfg.data.options["image_size"] == 160 and cfg.data.options["mean"] == [0.5, 0.5, 0.5]
    assert "estimated noise rate" in capsys.readouterr().out
