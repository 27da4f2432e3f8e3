"""Tests for the model registry and the models in noisylab.models (small, resnet, external)."""
from __future__ import annotations

import sys
import urllib.error

import pytest
import torch
import torch.nn as nn

from noisylab.models import create_model, list_models
from noisylab.models.registry import ModelError
from noisylab.models.resnet import PreActBlock

torch.set_num_threads(1)

# (name, input_shape, kwargs) -- small widths keep the test fast
CASES = [
    ("mlp", (40,), {}),
    ("mlp", (1, 28, 28), {"hidden": (32, 16), "dropout": 0.1}),
    ("mlp", (3, 32, 32), {"hidden": [64]}),
    ("cnn1d", (40,), {}),
    ("cnn1d", (1, 40), {"width": 16, "depth": 2}),
    ("cnn1d", (40,), {"width": 8, "pool": "avg", "batch_norm": False}),
    ("cnn_small", (1, 28, 28), {"width": 8}),
    ("cnn_small", (3, 32, 32), {"width": 8, "dropout": 0.2}),
    ("cnn_small", (28, 28), {"width": 4}),
    ("resnet18", (3, 32, 32), {"width": 8}),
    ("resnet18", (1, 28, 28), {"width": 4}),
    ("resnet34", (3, 32, 32), {"width": 8}),
    ("preact_resnet18", (3, 32, 32), {"width": 8}),
    ("preact_resnet18", (1, 28, 28), {"width": 4}),
]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_models_registered():
    assert set(list_models()) >= {
        "mlp", "cnn1d", "cnn_small", "resnet18", "resnet34", "preact_resnet18", "resnet50",
        "inception_resnet_v2",
    }


@pytest.mark.parametrize("name,shape,kwargs", CASES)
def test_shapes_and_interface(name, shape, kwargs):
    torch.manual_seed(0)
    model = create_model(name, 7, shape, **kwargs)
    x = torch.randn(3, *shape)
    for train in (True, False):
        model.train(train)
        out = model(x)
        assert out.shape == (3, 7)
        assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (3, model.num_features)
        assert isinstance(model.fc, nn.Linear)
        assert (model.fc.in_features, model.fc.out_features) == (model.num_features, 7)
        assert torch.allclose(model(x), model.forward_head(feats), atol=1e-6)
        assert torch.equal(model(x), model(x))  # eval mode is deterministic


@pytest.mark.parametrize("name,shape,kwargs", [CASES[1], CASES[3], CASES[7], CASES[12]])
def test_deterministic_given_seed(name, shape, kwargs):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model(name, 5, shape, **kwargs)
        x = torch.randn(4, *shape)
        torch.manual_seed(7)  # dropout masks
        outs.append((model.state_dict(), model.train()(x)))
    (sd1, y1), (sd2, y2) = outs
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert torch.equal(y1, y2)


def test_cnn1d_accepts_2d_and_3d_inputs():
    torch.manual_seed(0)
    for shape in [(40,), (1, 40)]:
        model = create_model("cnn1d", 10, shape).eval()
        x = torch.randn(5, 40)
        with torch.no_grad():
            assert torch.equal(model(x), model(x.unsqueeze(1)))
    # default: flatten keeps positions, 40 -> 40 -> 20 -> 10 positions x 64 channels
    assert model.num_features == 640


def test_cnn1d_capacity_memorizes_random_labels():
    """1,000 random points with random labels must be fit (needed to show memorisation under noise)."""
    torch.manual_seed(0)
    x, y = torch.randn(1000, 40), torch.randint(0, 10, (1000,))
    model = create_model("cnn1d", 10, (40,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(400):
        idx = torch.randint(0, 1000, (250,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 49:
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            model.train()
            if acc > 0.95:
                break
    assert acc > 0.95


# ----------------------------------------------------------------------------- parameter counts
def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k  # convolutions have no bias (followed by BN)


def _bn(c: int) -> int:
    return 2 * c  # weight + bias (running stats are buffers)


def _cifar_resnet_count(blocks, num_classes, width=64, in_ch=3, preact=False) -> int:
    """Parameter count from the architecture description (ELR's ResNet_Zoo.py)."""
    n = _conv(in_ch, width, 3) + _bn(width)  # 3x3 stem + BN (both variants)
    c_in = width
    for stage, n_blocks in enumerate(blocks):
        c_out = width * 2**stage
        for j in range(n_blocks):
            stride = 2 if (stage > 0 and j == 0) else 1
            if preact:  # BN(c_in) - conv3x3 - BN(c_out) - conv3x3 ; shortcut conv1x1 without BN
                n += _bn(c_in) + _conv(c_in, c_out, 3) + _bn(c_out) + _conv(c_out, c_out, 3)
                if stride != 1 or c_in != c_out:
                    n += _conv(c_in, c_out, 1)
            else:  # conv3x3 - BN - conv3x3 - BN ; shortcut conv1x1 + BN
                n += _conv(c_in, c_out, 3) + _bn(c_out) + _conv(c_out, c_out, 3) + _bn(c_out)
                if stride != 1 or c_in != c_out:
                    n += _conv(c_in, c_out, 1) + _bn(c_out)
            c_in = c_out
    return n + c_in * num_classes + num_classes  # no final BN for preact; Linear(8w, C)


def test_param_count_resnet34_cifar10():
    expected = _cifar_resnet_count((3, 4, 6, 3), 10)
    assert expected == 21_282_122  # the known CIFAR ResNet-34 size (~21.28M)
    assert _n_params(create_model("resnet34", 10, (3, 32, 32))) == expected


def test_param_count_preact_resnet18_cifar10():
    expected = _cifar_resnet_count((2, 2, 2, 2), 10, preact=True)
    assert expected == 11_171_274  # ~11.17M (ELR+ PreResNet18 incl. the stem BN)
    assert _n_params(create_model("preact_resnet18", 10, (3, 32, 32))) == expected


def test_param_count_resnet18_and_width_scaling():
    assert _n_params(create_model("resnet18", 100, (3, 32, 32), width=8)) == _cifar_resnet_count(
        (2, 2, 2, 2), 100, width=8)
    assert _n_params(create_model("preact_resnet18", 10, (1, 28, 28), width=4)) == _cifar_resnet_count(
        (2, 2, 2, 2), 10, width=4, in_ch=1, preact=True)
    small = _n_params(create_model("resnet34", 10, (3, 32, 32), width=8))
    big = _n_params(create_model("resnet34", 10, (3, 32, 32), width=16))
    assert small == _cifar_resnet_count((3, 4, 6, 3), 10, width=8)
    assert 3.5 * small < big < 4.0 * small  # conv params scale with width**2
    for name, shape, narrow, wide in [
        ("cnn1d", (40,), {"width": 16}, {"width": 32}),
        ("cnn_small", (1, 28, 28), {"width": 16}, {"width": 32}),
        ("mlp", (40,), {"hidden": (64, 64)}, {"hidden": (128, 128)}),
    ]:
        assert _n_params(create_model(name, 10, shape, **wide)) > _n_params(create_model(name, 10, shape, **narrow))


def test_resnet34_matches_iclr_simclr_encoder_shapes():
    """ICLR 2023 encoder = torchvision resnet34 with conv1 -> 3x3 stride 1 and no max-pool."""
    import torchvision

    tv = torchvision.models.resnet34(num_classes=10)
    tv.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ours = create_model("resnet34", 10, (3, 32, 32))
    assert sorted(tuple(p.shape) for p in tv.parameters()) == sorted(tuple(p.shape) for p in ours.parameters())


# ----------------------------------------------------------------------------- structure
def _param_modules_in_execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in model.modules() if list(m.parameters(recurse=False))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return order


def test_resnet_structure():
    model = create_model("resnet34", 10, (3, 32, 32), width=8)
    assert [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)] == [3, 4, 6, 3]
    r18 = create_model("resnet18", 10, (3, 32, 32), width=8)
    assert [len(getattr(r18, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    # CIFAR stem: 3x3 stride 1, no max-pool anywhere
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # projection shortcut = 1x1 conv + BN at each stage transition
    proj = model.layer2[0].shortcut
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1) and proj[0].stride == (2, 2)
    assert isinstance(proj[1], nn.BatchNorm2d)
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    # post-activation: the last parametrised op before the classifier is a BN
    order = _param_modules_in_execution_order(model, torch.randn(2, 3, 32, 32))
    assert order[-1] is model.fc and isinstance(order[-2], nn.BatchNorm2d)
    # 32x32 input -> 4x4 map at layer4 (so global avg pool == avg_pool2d(4))
    seen = []
    model.layer4.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)) and None)
    model(torch.randn(2, 3, 32, 32))
    assert seen == [(2, 64, 4, 4)]


def test_preact_structure():
    model = create_model("preact_resnet18", 10, (3, 32, 32), width=8)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    # stem conv-BN-ReLU, then the first op of each block is a BN (pre-activation)
    order = _param_modules_in_execution_order(model, torch.randn(2, 3, 32, 32))
    assert order[0] is model.conv1 and order[1] is model.bn1
    assert order[2] is model.layer1[0].bn1
    # no final BN-ReLU: the last op before pooling/fc is a conv
    assert order[-1] is model.fc and isinstance(order[-2], nn.Conv2d)
    # shortcut: 1x1 conv WITHOUT BN when the shape changes
    sc = model.layer3[0].shortcut
    assert isinstance(sc, nn.Conv2d) and sc.kernel_size == (1, 1) and sc.stride == (2, 2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.layer3[0].shortcut.modules())


def test_preact_shortcut_uses_preactivated_input():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    for c_out, stride in [(4, 1), (6, 2)]:
        block = PreActBlock(4, c_out, stride).eval()
        nn.init.zeros_(block.conv2.weight)  # residual branch -> 0: output == shortcut(relu(bn1(x)))
        with torch.no_grad():
            a = torch.relu(block.bn1(x))
            assert torch.allclose(block(x), block.shortcut(a))
            if c_out == 4:
                assert torch.allclose(block(x), a) and not torch.allclose(block(x), x)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name,shape,kwargs,match", [
    ("no_such_model", (3, 32, 32), {}, "unknown model"),
    ("mlp", (40,), {"widht": 3}, "unexpected keyword"),
    ("resnet34", (3, 32, 32), {"depth": 3}, "unexpected keyword"),
    ("cnn1d", (40,), {"width": 0}, "width"),
    ("cnn1d", (3, 32, 32), {}, "input_shape"),
    ("cnn1d", (40,), {"pool": "max"}, "pool"),
    ("mlp", (40,), {"hidden": (10, -1)}, "hidden"),
    ("mlp", (40,), {"dropout": 1.5}, "dropout"),
    ("cnn_small", (40,), {}, "input_shape"),
    ("resnet18", (3, 4, 4), {}, "at least"),
    ("preact_resnet18", (3, 32, 32), {"width": 2.5}, "width"),
    ("mlp", (40,), {"hidden": "wide"}, "hidden"),
    ("resnet50", (3, 16, 16), {}, "at least"),
    ("inception_resnet_v2", (3, 32, 32), {}, "at least 75"),
])
def test_model_errors(name, shape, kwargs, match):
    with pytest.raises(ModelError, match=match):
        create_model(name, 10, shape, **kwargs)


def test_bad_num_classes():
    with pytest.raises(ModelError, match="num_classes"):
        create_model("mlp", 0, (40,))


# ----------------------------------------------------------------------------- external models
def test_resnet50_shapes():
    torch.manual_seed(0)
    model = create_model("resnet50", 14, (3, 64, 64)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 2048) and model.num_features == 2048
        assert torch.allclose(model(x), model.forward_head(f), atol=1e-6)
    assert (model.fc.in_features, model.fc.out_features) == (2048, 14)
    assert model.conv1.kernel_size == (7, 7)  # ImageNet stem kept


def test_resnet50_pretrained_without_network_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelError) as info:
        create_model("resnet50", 14, (3, 224, 224), pretrained=True)
    msg = str(info.value)
    assert "could not be downloaded" in msg and "TORCH_HOME" in msg
    assert str(tmp_path) in msg and "resnet50-" in msg
    assert "\n" not in msg


def test_resnet50_pretrained_loads_from_hub_cache(tmp_path, monkeypatch):
    """With the weight file in $TORCH_HOME/hub/checkpoints, no network is needed; fc is replaced."""
    import os

    import torchvision
    from torchvision.models import ResNet50_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("tried to download despite cache"))
    torch.manual_seed(1)
    ref = torchvision.models.resnet50()  # stand-in for the ImageNet weights (1000-class fc)
    ckpt_dir = tmp_path / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt_dir / os.path.basename(ResNet50_Weights.IMAGENET1K_V1.url))
    model = create_model("resnet50", 14, (3, 224, 224), pretrained=True)
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.layer4[2].bn3.running_var, ref.layer4[2].bn3.running_var)
    assert model.fc.out_features == 14


def test_inception_resnet_v2_without_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ModelError, match=r"pip install 'noisylab\[timm\]'"):
        create_model("inception_resnet_v2", 50, (3, 299, 299))


def test_inception_resnet_v2_shapes():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = create_model("inception_resnet_v2", 50, (3, 75, 75)).eval()
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 1536) and model.num_features == 1536
        out = model(x)
        assert out.shape == (2, 50)
        assert torch.allclose(out, model.forward_head(f), atol=1e-6)
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (1536, 50)
    # timm's own classifier is removed: the only head is our fc
    assert model.backbone.get_classifier().__class__ is not nn.Linear
