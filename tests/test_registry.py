"""Every pluggable kind registers one way (noisylab.registry): a plugin module outside the package
adds a dataset, a model, a view and a detector, and a training run uses all four by name, with no
file of noisylab edited."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from noisylab.registry import DATASETS, DETECTORS, MODEL_FAMILIES, MODELS, VIEWS, Registry

PLUGIN = textwrap.dedent('''
    import os
    from pathlib import Path

    import numpy as np
    import torch
    import torch.nn as nn

    from noisylab.data.base import DataBundle
    from noisylab.data.transforms import Normalize
    from noisylab.registry import register_dataset, register_detector, register_model, register_view


    @register_dataset("toy_blobs")
    def load_blobs(root=None, n=240):
        g = np.random.default_rng(0)
        centres = 4.0 * np.eye(3, 6)
        y = np.arange(n) % 3
        x = (centres[y] + g.normal(size=(n, 6))).astype(np.float32)
        yt = np.arange(60) % 3
        xt = (centres[yt] + g.normal(size=(60, 6))).astype(np.float32)
        return DataBundle("toy_blobs", torch.from_numpy(x), y, torch.from_numpy(xt), yt, 3)


    class Linear(nn.Module):
        def __init__(self, num_classes, dim):
            super().__init__()
            self.num_features = dim
            self.head = nn.Linear(dim, num_classes)

        def forward_features(self, x):
            return x

        def forward_head(self, f):
            return self.head(f)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))


    @register_model("toy_linear")
    def toy_linear(num_classes, input_shape, **options):
        return Linear(num_classes, input_shape[0])


    @register_view("toy_marked")
    def toy_marked(bundle):
        Path(os.environ["TOY_MARKER"]).write_text("view built")
        return Normalize(bundle.mean, bundle.std)


    @register_detector("toy_uniform_but_given")
    def toy_detector(ev):
        """Every label wrong but the given one's class gets 0.9 (a detector that trusts the labels)."""
        p = np.full((len(ev.given), ev.history.shape[1]), 0.1 / (ev.history.shape[1] - 1))
        p[np.arange(len(ev.given)), ev.given] = 0.9
        return p
''')


def test_a_plugin_adds_a_dataset_model_view_and_detector_that_a_run_uses(tmp_path):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    marker = tmp_path / "marker.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", NOISYLAB_PLUGINS="toy_plugin", TOY_MARKER=str(marker),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "toy.yaml").write_text("name: toy\n")
    args = ["train", "-c", "toy.yaml", "seed=0", "device=cpu", "data.dataset=toy_blobs", "data.options.n=300", "data.augment=toy_marked",
            "model.arch=toy_linear", "detect.method=toy_uniform_but_given", "train.epochs=2", "train.batch_size=32",
            "train.progress=false", "train.tensorboard=off", "noise.kind=symmetric", "noise.rate=0.2", "--name", "toy"]
    proc = subprocess.run([sys.executable, "-m", "noisylab.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "toy"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["detect"]["method"] == "toy_uniform_but_given"
    assert marker.read_text() == "view built"
    # the detector trusts every label: nothing is flagged, and every quality is 0.9 / (0.9 + 0.05)
    rows = list(csv.DictReader((run / "label_issues.csv").open()))
    assert len(rows) == 300 and {r["is_label_issue"] for r in rows} == {"0"}
    assert {r["quality"] for r in rows} == {"0.947368"}
    # the test split of 60 examples, separable blobs: the toy model learned them
    assert summary["test_top1_last"] > 0.9
    # a misspelled plugin name gets the registry's did-you-mean, one line, exit 2
    proc = subprocess.run([sys.executable, "-m", "noisylab.cli", *args[:-2], "model.arch=toy_linaer", "--name", "t2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "did you mean 'toy_linear'" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_every_kind_is_one_registry_read_as_a_mapping():
    for registry, builtin in ((MODELS, "fastnet"), (MODEL_FAMILIES, "timm"), (DATASETS, "cifar10-jpeg"),
                              (VIEWS, "crop_flip"), (DETECTORS, "history")):
        assert isinstance(registry, Registry)
        assert builtin in registry and builtin in list(registry) and len(registry) == len(list(registry))
        assert registry[builtin] is registry.get(builtin).obj
    with pytest.raises(ValueError, match=r"unknown detector 'histroy' \(did you mean 'history'\?\)"):
        DETECTORS.get("histroy")


def test_a_name_registered_twice_is_refused():
    reg = Registry("widget", "noisylab.registry")
    reg.register("a")(len)
    reg.register("a")(len)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        reg.register("a")(abs)


def test_an_entry_keeps_what_its_registration_added():
    reg = Registry("widget", "noisylab.detect")  # a package whose modules register nothing here
    reg.register("counted", counts_with=abs)(len)
    reg.register("plain")(len)
    assert reg.get("counted").extras == {"counts_with": abs} and reg.get("plain").extras == {}
    # the history detector counts wrong labels with the history alone
    from noisylab.detect.detectors import count_estimate, history_alone

    assert DETECTORS.get("history").extras["counts_with"] is history_alone
    assert count_estimate("history") is history_alone and count_estimate("predictions") is DETECTORS["predictions"]
