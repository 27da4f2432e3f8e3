"""Batched augmentations: crop/flip and the SimCLR views, against per-image references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from noisylab.data import DataBundle, EpochPlan, StandardAugment, TensorStore, TrainBatches, make_train_batches
from noisylab.data.transforms import (
    CropFlipNormalize,
    SimCLRAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    random_grayscale,
    resized_crop,
    rgb_to_grayscale,
    sample_resized_crop_params,
)


def _images(n, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("transform", [StandardAugment, CropFlipNormalize])
def test_batched_crop_flip_equals_slicing_the_padded_image(transform):
    x = _images(64)
    out = transform(mean=None, std=None, padding=4, flip=True)(x, torch.Generator().manual_seed(3))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    padded = F.pad(x, (4, 4, 4, 4))
    offsets, flips = [], []
    for i in range(64):
        # per-image reference: every (dy, dx, flip) crop of the zero-padded image
        hits = [(dy, dx, fl) for dy in range(9) for dx in range(9) for fl in (False, True)
                if torch.allclose((padded[i, :, dy:dy + 32, dx:dx + 32].flip(2) if fl
                                   else padded[i, :, dy:dy + 32, dx:dx + 32]).float() / 255, out[i], atol=1e-6)]
        assert len(hits) == 1, f"image {i} is not exactly one crop of its padded input"
        offsets.append(hits[0][:2])
        flips.append(hits[0][2])
    assert len(set(offsets)) > 30 and 15 < sum(flips) < 49  # random offsets and flips, not a constant


def test_fused_weak_view_gives_the_same_batches_as_standard_augment():
    x = _images(100)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    bundle = DataBundle("toy", x, np.arange(100) % 10, None, None, 10, mean=mean, std=std, augment="crop_flip")
    ref = TrainBatches(EpochPlan(bundle.train_labels, 32), TensorStore(x, "cpu", [StandardAugment(mean, std, 4, True)]),
                       "cpu")
    ours = make_train_batches(bundle, bundle.train_labels, 32, "cpu")
    assert isinstance(ours.store.transforms[0], CropFlipNormalize)
    for a, b in zip(ref.epoch(9), ours.epoch(9)):
        assert torch.equal(a.index, b.index) and torch.equal(a.y, b.y)
        assert torch.allclose(a.x, b.x, atol=2e-6)
    for pad, flip in ((0, True), (2, False)):
        a = StandardAugment(mean, std, pad, flip)(x, torch.Generator().manual_seed(1))
        b = CropFlipNormalize(mean, std, pad, flip)(x, torch.Generator().manual_seed(1))
        assert torch.allclose(a, b, atol=2e-6)


def test_resized_crop_equals_per_image_interpolation():
    x = _images(48).float() / 255
    g = torch.Generator().manual_seed(1)
    top, left, h, w = sample_resized_crop_params(48, 32, 32, generator=g)
    # add hand-picked edge cases: full image, 1-pixel crop, corner crops
    top[:4] = torch.tensor([0, 31, 0, 20])
    left[:4] = torch.tensor([0, 31, 24, 0])
    h[:4] = torch.tensor([32, 1, 8, 12])
    w[:4] = torch.tensor([32, 1, 8, 32])
    flip = torch.rand(48, generator=g) < 0.5
    out = resized_crop(x, top, left, h, w, 32, flip)
    for i in range(48):
        crop = x[i : i + 1, :, top[i] : top[i] + h[i], left[i] : left[i] + w[i]]
        ref = F.interpolate(crop, size=(32, 32), mode="bilinear", align_corners=False)[0]
        if flip[i]:
            ref = ref.flip(2)
        assert torch.allclose(out[i], ref, atol=1e-5), i
    assert torch.allclose(out[0], x[0] if not flip[0] else x[0].flip(2), atol=1e-6)  # full crop = identity


def test_resized_crop_params_follow_the_torchvision_ranges():
    top, left, h, w = sample_resized_crop_params(4000, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).float() / 1024
    ratio = w.float() / h.float()
    # rounding of w and h to integers widens the ranges slightly on a 32x32 image
    assert area.min() >= 0.05 and area.max() <= 1.0
    assert ratio.min() >= 0.6 and ratio.max() <= 1.6
    assert (area < 0.2).float().mean() > 0.1 and (area > 0.8).float().mean() > 0.1
    assert 0.4 < area.mean() < 0.6
    # positions are spread over the free range
    free = 32 - h
    assert (top[free > 10] > 0).float().mean() > 0.8


def test_colour_operations_match_torchvision_per_image():
    x = _images(32).float() / 255
    g = torch.Generator().manual_seed(2)
    f = 0.6 + 0.8 * torch.rand(32, generator=g)
    hue = 0.2 * torch.rand(32, generator=g) - 0.1
    b, c, s, hh = adjust_brightness(x.clone(), f), adjust_contrast(x, f), adjust_saturation(x, f), adjust_hue(x, hue)
    for i in range(32):
        assert torch.allclose(b[i], TF.adjust_brightness(x[i], f[i].item()), atol=1e-6)
        assert torch.allclose(c[i], TF.adjust_contrast(x[i], f[i].item()), atol=1e-6)
        assert torch.allclose(s[i], TF.adjust_saturation(x[i], f[i].item()), atol=1e-6)
        assert torch.allclose(hh[i], TF.adjust_hue(x[i], hue[i].item()), atol=1e-5)
    assert torch.allclose(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
    # grey images: contrast works on one channel, saturation / hue leave it alone
    gx = x[:, :1]
    assert torch.allclose(adjust_contrast(gx, f)[5], TF.adjust_contrast(gx[5], f[5].item()), atol=1e-6)
    assert torch.equal(adjust_saturation(gx, f), gx) and torch.equal(adjust_hue(gx, hue), gx)
    # hue rotation by 0 and by a full turn is the identity
    assert torch.allclose(adjust_hue(x, torch.zeros(32)), x, atol=1e-5)


def test_colour_jitter_probability_and_identity():
    x = _images(2000).float() / 255
    g = torch.Generator().manual_seed(4)
    assert torch.equal(color_jitter(x, p=0.0, generator=g), x)
    assert torch.allclose(color_jitter(x, 0, 0, 0, 0, p=1.0, generator=g), x)
    out = color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=g)
    changed = (out - x).abs().flatten(1).amax(1) > 1e-4
    assert abs(changed.float().mean().item() - 0.8) < 0.04
    # a jittered image's brightness changes by at most the factor range
    ratio = out[changed].mean() / x[changed].mean()
    assert 0.8 < ratio < 1.2


def test_random_grayscale_rate():
    x = _images(4000).float() / 255
    out = random_grayscale(x, 0.2, torch.Generator().manual_seed(5))
    grey = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert abs(grey.float().mean().item() - 0.2) < 0.03
    assert torch.allclose(out[grey][:, :1], rgb_to_grayscale(x[grey]))
    assert torch.equal(out[~grey], x[~grey])


def test_simclr_view_shapes_statistics_and_determinism():
    x = _images(1500)
    aug = SimCLRAugment(mean=None, std=None)
    v1 = aug(x, torch.Generator().manual_seed(7))
    v2 = aug(x, torch.Generator().manual_seed(7))
    v3 = aug(x, torch.Generator().manual_seed(8))
    assert v1.shape == (1500, 3, 32, 32) and v1.dtype == torch.float32
    assert torch.equal(v1, v2) and not torch.equal(v1, v3)
    assert v1.min() >= 0 and v1.max() <= 1
    spread = (v1.amax(1) - v1.amin(1)).flatten(1).amax(1)  # largest channel difference per image
    grey = spread < 1e-6
    assert abs(grey.float().mean().item() - 0.2) < 0.04
    # normalisation uses the given constants, and a larger output size works
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    n1 = SimCLRAugment(mean, std)(x[:8], torch.Generator().manual_seed(7))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    raw = SimCLRAugment(None, None)(x[:8], torch.Generator().manual_seed(7))
    assert torch.allclose(n1 * s + m, raw, atol=1e-5)
    assert SimCLRAugment(None, None, size=48)(x[:4], None).shape == (4, 3, 48, 48)
    assert SimCLRAugment(None, None)(_images(4, c=1), None).shape == (4, 1, 32, 32)


def test_pipeline_views_for_the_regularizer():
    x = _images(40)
    bundle = DataBundle("toy", x, np.arange(40) % 10, None, None, 10, mean=(0.5,) * 3, std=(0.25,) * 3,
                        augment="crop_flip")
    labels = (np.arange(40) + 1) % 10
    tb = make_train_batches(bundle, labels, 16, "cpu", views=("crop_flip", "simclr", "simclr"))
    batch = next(iter(tb.epoch(0)))
    weak, s1, s2 = batch.views
    assert weak.shape == s1.shape == s2.shape == (16, 3, 32, 32)
    assert torch.equal(batch.y, torch.as_tensor(labels)[batch.index])
    # the weak view is an exact crop+flip of the normalised image: its values are on the uint8 grid
    grid = (weak * 0.25 + 0.5) * 255
    assert torch.allclose(grid, grid.round(), atol=1e-3)
    assert not torch.equal(s1, s2)
    pair = next(iter(make_train_batches(bundle, labels, 16, "cpu", views=("simclr", "simclr")).epoch(0))).views
    assert isinstance(pair, tuple) and len(pair) == 2
    one = next(iter(make_train_batches(bundle, labels, 16, "cpu", views="simclr").epoch(0))).views
    assert len(one) == 1 and one[0].shape == (16, 3, 32, 32)
    # same seed -> same views
    a = next(iter(make_train_batches(bundle, labels, 16, "cpu", views="simclr").epoch(5))).x
    b = next(iter(make_train_batches(bundle, labels, 16, "cpu", views="simclr").epoch(5))).x
    assert torch.equal(a, b)


def _mirrored(views: torch.Tensor, raw: torch.Tensor, pad: int = 2) -> list[bool]:
    """Which of ``views [B, C, H, W]`` (floats on the [0, 1] grid) are a mirrored reflection-padded
    shift of ``raw [B, C, H, W]`` (uint8); each must be exactly one shift, mirrored or not."""
    h, w = raw.shape[-2:]
    padded = F.pad(raw.float(), (pad,) * 4, mode="reflect") / 255
    out = []
    for i in range(len(raw)):
        hits = {fl for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for fl in (False, True)
                if torch.allclose((padded[i, :, dy:dy + h, dx:dx + w].flip(2) if fl
                                   else padded[i, :, dy:dy + h, dx:dx + w]), views[i], atol=1e-6)}
        assert len(hits) == 1, f"view {i} is not one shift of its image"
        out.append(hits.pop())
    return out


def _golden_bit(i: int) -> bool:
    return bool(((i * 0x9E3779B97F4A7C15) % 2**64) >> 63)


def test_alternating_flips_mirror_each_example_in_every_other_epoch():
    """translate_altflip (airbench's alternating flips): epoch 0 mirrors the examples whose hashed
    index has its top bit set (about half), and every later epoch reverses each example's flip; the
    shifts stay random. Checked by finding each view among its image's 50 shifted copies."""
    x = _images(48, h=12, w=12, seed=5)
    bundle = DataBundle("toy", x, np.arange(48) % 10, None, None, 10, mean=None, std=None, augment="translate_altflip")
    tb = make_train_batches(bundle, bundle.train_labels, 16, "cpu", indices=np.arange(3, 48))
    flips = {}
    for epoch in range(3):
        for b in tb.epoch(seed=100 + epoch, epoch=epoch):
            for i, fl in zip(b.index.tolist(), _mirrored(b.x, x[b.index])):
                flips[(i, epoch)] = fl
    first = [flips[(i, 0)] for i in range(3, 48)]
    assert first == [_golden_bit(i) for i in range(3, 48)] and 12 < sum(first) < 33
    for i in range(3, 48):
        assert flips[(i, 1)] == (not flips[(i, 0)]) and flips[(i, 2)] == flips[(i, 0)]
    # random flips (translate_flip) do not alternate: some example keeps its flip between epochs
    rnd = make_train_batches(bundle, bundle.train_labels, 16, "cpu", views="translate_flip")
    per_epoch = [{i: fl for b in rnd.epoch(seed=7 + e, epoch=e) for i, fl in zip(b.index.tolist(), _mirrored(b.x, x[b.index]))}
                 for e in range(2)]
    assert any(per_epoch[0][i] == per_epoch[1][i] for i in range(48))
    with pytest.raises(ValueError, match="dataset indices"):
        CropFlipNormalize(None, None, 2, reflect=True, alternate=True)(x[:4], None)
    with pytest.raises(ValueError, match="pass the epoch's number"):
        next(iter(tb.epoch(seed=1)))  # an alternating view refuses to guess the epoch


def test_alternating_flips_in_a_file_backed_dataset(tmp_path):
    """The file store's device-side views get the batch's dataset indices too."""
    from noisylab.data.files import decode_view
    from test_data_files import make_bundle

    bundle, labels = make_bundle(tmp_path)
    tb = make_train_batches(bundle, labels, 5, "cpu", views="translate_altflip", num_workers=0)
    for epoch in (0, 1):
        for b in tb.epoch(seed=3, epoch=epoch):
            raw = torch.stack([decode_view(bundle.train_x.path(int(i)), 8, 10) for i in b.index])
            got = _mirrored(b.x * 0.25 + 0.5, raw)
            assert got == [_golden_bit(int(i)) != bool(epoch) for i in b.index]
