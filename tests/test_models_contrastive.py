"""Tests for noisylab.models.contrastive: projection head, ContrastiveNet and encoder checkpoints
(noisylab format and the official SelfSup_NoisyLabel ``f.*``/``g.*`` layout)."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn as nn
import torchvision

from noisylab.models import (ContrastiveNet, ProjectionHead, create_model, load_encoder_checkpoint,
                             save_encoder_checkpoint)
from noisylab.models.registry import ModelError

torch.set_num_threads(1)
SHAPE = (3, 32, 32)


# ----------------------------------------------------------------------------------- helpers
class OfficialModel(nn.Module):
    """The official SimCLR model's structure, rebuilt from its description: encoder ``f`` = the
    children of a torchvision resnet with conv1 -> 3x3 stride 1, max-pool and fc dropped;
    projection head ``g`` = Linear(512, 512, no bias) - BN1d - ReLU - Linear(512, 128)."""

    def __init__(self, depth: str = "resnet34") -> None:
        super().__init__()
        tv = getattr(torchvision.models, depth)()
        children = []
        for name, child in tv.named_children():
            if name == "conv1":
                child = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            if name in ("maxpool", "fc"):
                continue
            children.append(child)
        self.f = nn.Sequential(*children)
        self.g = nn.Sequential(nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
                               nn.Linear(512, 128))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.flatten(self.f(x), 1)
        return feat, self.g(feat)


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics, so eval-mode BN is not ~identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)


def net_outputs(net: ContrastiveNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    net.eval()
    with torch.no_grad():
        feat = net.features(x)
        return feat, net.project(feat)


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def refused(net: ContrastiveNet, path, arch: str) -> str:
    """Load must raise ModelError with a one-line message naming the file; net unchanged."""
    before = state_copy(net)
    with pytest.raises(ModelError) as info:
        load_encoder_checkpoint(net, path, arch)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert same_state(before, net.state_dict())
    return msg


@pytest.fixture(scope="module")
def official34(tmp_path_factory):
    """A full-size official resnet34 SimCLR model (random weights, randomised BN) and its file."""
    torch.manual_seed(0)
    model = OfficialModel("resnet34")
    randomise_bn(model)
    model.eval()
    path = tmp_path_factory.mktemp("official") / "128_0.5_200_512_1000_model.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------ modules
def test_projection_head_layout_and_shapes():
    head = ProjectionHead(64)
    assert isinstance(head[0], nn.Linear) and head[0].bias is None and head[0].weight.shape == (64, 64)
    assert isinstance(head[1], nn.BatchNorm1d) and isinstance(head[2], nn.ReLU)
    assert isinstance(head[3], nn.Linear) and head[3].weight.shape == (128, 64) and head[3].bias is not None
    assert set(head.state_dict()) >= {"0.weight", "1.weight", "1.running_mean", "3.weight", "3.bias"}
    head = ProjectionHead(64, hidden=32, out_dim=16)
    assert head(torch.randn(5, 64)).shape == (5, 16)
    with pytest.raises(ModelError):
        ProjectionHead(64, out_dim=0)


@pytest.mark.parametrize("arch,shape,kwargs", [
    ("resnet18", SHAPE, {"width": 8}),
    ("cnn_small", (1, 28, 28), {"width": 4}),
    ("mlp", (20,), {}),
])
def test_contrastive_net_shapes_and_forward(arch, shape, kwargs):
    torch.manual_seed(0)
    net = ContrastiveNet(create_model(arch, 7, shape, **kwargs), proj_dim=16, proj_hidden=24)
    d = net.backbone.num_features
    assert net.num_features == d and net.num_classes == 7 and net.proj_dim == 16
    assert net.projector[0].weight.shape == (24, d)
    xb = torch.randn(3, *shape)
    for train in (True, False):
        net.train(train)
        feat = net.features(xb)
        assert feat.shape == (3, d)
        assert net.project(feat).shape == (3, 16)
        assert net.classify(feat).shape == (3, 7)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(xb), net.classify(net.features(xb)))
        assert torch.equal(net(xb), net.backbone(xb))
        assert torch.equal(net.forward_features(xb), net.features(xb))
    with pytest.raises(ModelError):
        ContrastiveNet(nn.Linear(3, 3))  # type: ignore[arg-type]


# -------------------------------------------------------------------- official layout
def test_official_resnet34_loads_exactly(official34, x):
    official, path = official34
    net = ContrastiveNet(create_model("resnet34", 10, SHAPE))
    fc_before = state_copy(net.backbone.fc)
    info = load_encoder_checkpoint(net, path, "resnet34")
    assert info["layout"] == "official" and info["projector"] is True and info["projector_skipped"] is None
    with torch.no_grad():
        feat_ref, proj_ref = official.outputs(x)
    feat, proj = net_outputs(net, x)
    assert feat.shape == (2, 512) and proj.shape == (2, 128)
    torch.testing.assert_close(feat, feat_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(proj, proj_ref, atol=1e-5, rtol=0)
    assert same_state(fc_before, net.backbone.fc.state_dict())  # classifier stays fresh


def test_official_wrapped_resnet18_with_module_prefix_and_fc(tmp_path, x):
    """{"state_dict": ...} + DataParallel ``module.`` prefix; official fc.* (CE_Reg's Net) is ignored."""
    torch.manual_seed(1)
    official = OfficialModel("resnet18")
    randomise_bn(official, seed=3)
    official.eval()
    state = dict(official.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(10, 512), torch.randn(10)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    net = ContrastiveNet(create_model("resnet18", 10, SHAPE))
    fc_before = state_copy(net.backbone.fc)
    info = load_encoder_checkpoint(net, path, "resnet18")
    assert info["layout"] == "official" and info["projector"] is True
    with torch.no_grad():
        feat_ref, proj_ref = official.outputs(x)
    feat, proj = net_outputs(net, x)
    torch.testing.assert_close(feat, feat_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(proj, proj_ref, atol=1e-5, rtol=0)
    assert same_state(fc_before, net.backbone.fc.state_dict())

    # encoder only (no g.*): projector left as initialised and reported
    enc_only = tmp_path / "enc_only.pth"
    torch.save({k: v for k, v in official.state_dict().items() if k.startswith("f.")}, enc_only)
    net2 = ContrastiveNet(create_model("resnet18", 10, SHAPE))
    proj_before = state_copy(net2.projector)
    info = load_encoder_checkpoint(net2, enc_only, "resnet18")
    assert info["projector"] is False and "no projector" in info["projector_skipped"]
    assert same_state(proj_before, net2.projector.state_dict())
    torch.testing.assert_close(net_outputs(net2, x)[0], feat_ref, atol=1e-5, rtol=0)

    # a different proj_dim: encoder loads, projector is skipped with the reason
    net3 = ContrastiveNet(create_model("resnet18", 10, SHAPE), proj_dim=64)
    info = load_encoder_checkpoint(net3, path, "resnet18")
    assert info["projector"] is False and "proj_dim" in info["projector_skipped"]

    # depth mismatch: official resnet18 into a resnet34 -> refused, message names resnet18
    msg = refused(ContrastiveNet(create_model("resnet34", 10, SHAPE, width=8)), path, "resnet34")
    assert "missing encoder keys" in msg and "resnet18" in msg


def test_official_layout_refused_for_other_archs(official34):
    _, path = official34
    net = ContrastiveNet(create_model("cnn_small", 10, SHAPE, width=8))
    msg = refused(net, path, "cnn_small")
    assert "official" in msg and "cnn_small" in msg and "resnet34" in msg


def test_official_layout_shape_mismatch(official34):
    _, path = official34
    msg = refused(ContrastiveNet(create_model("resnet34", 10, SHAPE, width=8)), path, "resnet34")
    assert "shape mismatch" in msg and "width=64" in msg


def test_official_layout_foreign_keys(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"f.0.weight": torch.zeros(8, 3, 3, 3), "h.weight": torch.zeros(3)}, path)
    net = ContrastiveNet(create_model("resnet18", 10, SHAPE, width=8))
    assert "h.weight" in refused(net, path, "resnet18")
    torch.save({"f.9.weight": torch.zeros(8, 3, 3, 3)}, path)
    assert "f.9.weight" in refused(net, path, "resnet18")
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    assert "f.*" in refused(net, path, "resnet18")


# ---------------------------------------------------------------------- noisylab format
def test_noisylab_round_trip(tmp_path, x):
    torch.manual_seed(2)
    src = ContrastiveNet(create_model("resnet34", 10, SHAPE, width=8), proj_dim=32)
    randomise_bn(src, seed=5)
    path = tmp_path / "enc" / "encoder.pt"
    save_encoder_checkpoint(src, path, "resnet34", {"width": 8}, extra={"epoch": 3, "loss": 1.5})
    assert path.is_file() and not (path.parent / "encoder.pt.tmp").exists()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "noisylab-encoder-v1" and raw["arch"] == "resnet34"
    assert raw["num_features"] == 64 and raw["epoch"] == 3
    assert not any(k.startswith("fc.") for k in raw["encoder"])
    assert set(raw["projector"]) == set(src.projector.state_dict())

    torch.manual_seed(3)
    dst = ContrastiveNet(create_model("resnet34", 10, SHAPE, width=8), proj_dim=32)
    fc_before = state_copy(dst.backbone.fc)
    info = load_encoder_checkpoint(dst, path, "resnet34")
    assert info["layout"] == "noisylab" and info["projector"] is True
    assert info["meta"]["arch_options"] == {"width": 8} and info["meta"]["loss"] == 1.5
    for a, b in zip(net_outputs(src, x), net_outputs(dst, x)):
        assert torch.equal(a, b)
    assert same_state(fc_before, dst.backbone.fc.state_dict())
    assert not torch.equal(dst.backbone.fc.weight, src.backbone.fc.weight)


def test_save_rejects_reserved_or_unloadable_extra(tmp_path):
    net = ContrastiveNet(create_model("mlp", 3, (10,)))
    with pytest.raises(ModelError, match="reserved"):
        save_encoder_checkpoint(net, tmp_path / "a.pt", "mlp", {}, extra={"encoder": 1})
    with pytest.raises(ModelError, match="weights_only"):
        save_encoder_checkpoint(net, tmp_path / "a.pt", "mlp", {}, extra={"obj": object()})
    assert not list(tmp_path.iterdir())


def test_noisylab_refusals(tmp_path):
    torch.manual_seed(4)
    small = ContrastiveNet(create_model("resnet18", 10, SHAPE, width=8))
    path = tmp_path / "r18_w8.pt"
    save_encoder_checkpoint(small, path, "resnet18", {"width": 8})

    # arch mismatch names both archs
    msg = refused(ContrastiveNet(create_model("resnet34", 10, SHAPE, width=8)), path, "resnet34")
    assert "'resnet18'" in msg and "'resnet34'" in msg

    # width 8 checkpoint into a width 64 net: shape mismatch, fix names the arch_options
    msg = refused(ContrastiveNet(create_model("resnet18", 10, SHAPE)), path, "resnet18")
    assert "shape mismatch" in msg and "'width': 8" in msg

    # another noisylab format (e.g. a training checkpoint)
    other = tmp_path / "last.pt"
    torch.save({"format": "noisylab-checkpoint-v1", "model": {}}, other)
    assert "noisylab-checkpoint-v1" in refused(small, other, "resnet18")


def test_unreadable_files_refused(tmp_path):
    net = ContrastiveNet(create_model("resnet18", 10, SHAPE, width=8))
    good = tmp_path / "good.pt"
    save_encoder_checkpoint(net, good, "resnet18", {"width": 8})

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable torch file" in refused(net, truncated, "resnet18")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(300) + b"not a checkpoint")
    assert "not a readable torch file" in refused(net, garbage, "resnet18")

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    refused(net, empty, "resnet18")

    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], not_dict)
    assert "not a state dict" in refused(net, not_dict, "resnet18")

    assert "does not exist" in refused(net, tmp_path / "missing.pt", "resnet18")
    assert "does not exist" in refused(net, tmp_path, "resnet18")


class _RunsCode:
    """Unpickling this calls os.system (it must never happen)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle-2", "pickle-default"])
def test_code_running_pickle_refused(tmp_path, writer):
    marker = tmp_path / "PWNED"
    payload = {"f.0.weight": _RunsCode(f"touch '{marker}'")}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2 if writer == "pickle-2" else None)
    net = ContrastiveNet(create_model("resnet18", 10, SHAPE, width=8))
    msg = refused(net, path, "resnet18")
    if writer != "pickle-default":  # newer pickle protocols are rejected even before the global
        assert "system" in msg and "weights_only" in msg and "nothing was executed" in msg
    assert not marker.exists()
