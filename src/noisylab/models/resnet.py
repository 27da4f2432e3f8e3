"""CIFAR-style residual networks: ``resnet18``, ``resnet34`` and ``preact_resnet18``.

* ``resnet34`` is the network of ELR (Liu et al., "Early-Learning Regularization Prevents
  Memorization of Noisy Labels", NeurIPS 2020) for CIFAR-10/100: the CIFAR adaptation of
  ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with a 3x3
  stride-1 stem and no max-pool. The same network (torchvision ``resnet34`` with a 3x3 stride-1
  ``conv1`` and the max-pool removed) is the SimCLR encoder of Cheng et al., "Mitigating
  Memorization of Noisy Labels via Regularization between Representations", ICLR 2023.
* ``resnet18`` is the same family with [2, 2, 2, 2] blocks.
* ``preact_resnet18`` is the pre-activation ResNet-18 (He et al., "Identity Mappings in Deep
  Residual Networks", ECCV 2016) in the variant used by ELR+ (and DivideMix): BN-ReLU stem,
  every block's shortcut is taken from the block's pre-activated input, and there is no final
  BN-ReLU before pooling.

All take ``[B, C, H, W]`` images (any H, W >= 8; designed for 32x32), return ``[B, 8*width]``
features after global average pooling (= ``avg_pool2d(4)`` at 32x32 input) and have a linear
classifier ``fc: Linear(8*width, num_classes)``. ``width`` is the base width (64 in the papers).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import ModelError, register_model
from .small import FeatureClassifier, check_num_classes, check_positive_int, image_shape


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation residual block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``shortcut`` is the identity, or ``Conv1x1(stride) + BN`` (projection, He et al. 2016 option B)
    when the stride or the number of channels changes. ``[B, in, H, W] -> [B, out, H/s, W/s]``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (ELR+/DivideMix variant).

    ``a = relu(bn1(x)); out = conv2(relu(bn2(conv1(a)))) + shortcut(a)``. The shortcut is applied
    to the pre-activated input ``a`` -- an identity when shapes match, else a ``Conv1x1(stride)``
    without BN. No activation after the addition. ``[B, in, H, W] -> [B, out, H/s, W/s]``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + self.shortcut(a)


class CifarResNet(FeatureClassifier):
    """CIFAR-style ResNet: 3x3 stem (stride 1, no max-pool) + 4 stages + global avg pool + fc.

    Stem: ``Conv3x3(C, width) + BN + ReLU``. Stages ``layer1..layer4`` have widths
    ``width * (1, 2, 4, 8)``, strides ``(1, 2, 2, 2)`` and ``blocks[i]`` residual blocks of type
    ``block`` (:class:`BasicBlock` or :class:`PreActBlock`). Features: global average pool of the
    last stage, ``[B, 8 * width]``; head ``fc = Linear(8 * width, num_classes)``.
    For :class:`PreActBlock` networks there is no BN-ReLU after the last stage (ELR+ variant).
    """

    def __init__(
        self,
        block: type[nn.Module],
        blocks: Sequence[int],
        num_classes: int,
        input_shape: Sequence[int],
        width: int = 64,
        name: str = "resnet",
    ) -> None:
        super().__init__()
        c, h, w = image_shape(input_shape, name)
        if min(h, w) < 8:
            raise ModelError(f"model '{name}' needs images of at least 8x8, got {tuple(input_shape)!r}")
        self.num_classes = check_num_classes(num_classes)
        width = check_positive_int("width", width)
        self.input_shape = (c, h, w)
        self.stage_blocks = tuple(blocks)
        self.conv1 = _conv3x3(c, width)
        self.bn1 = nn.BatchNorm2d(width)
        in_ch = width
        stages = []
        for i, (n, stride) in enumerate(zip(self.stage_blocks, (1, 2, 2, 2))):
            out_ch = width * 2**i
            layers = []
            for j in range(n):
                layers.append(block(in_ch, out_ch, stride if j == 0 else 1))
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 8 * width]`` (``[B, H, W]`` accepted for one-channel inputs)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_model("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, ...], width: int = 64) -> CifarResNet:
    """CIFAR ResNet-18 (BasicBlock [2, 2, 2, 2]; He et al. 2016). kwargs: ``width=64``."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), num_classes, input_shape, width=width, name="resnet18")


@register_model("resnet34")
def resnet34(num_classes: int, input_shape: tuple[int, ...], width: int = 64) -> CifarResNet:
    """CIFAR ResNet-34 of ELR (BasicBlock [3, 4, 6, 3]; He et al. 2016). kwargs: ``width=64``."""
    return CifarResNet(BasicBlock, (3, 4, 6, 3), num_classes, input_shape, width=width, name="resnet34")


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, input_shape: tuple[int, ...], width: int = 64) -> CifarResNet:
    """PreAct ResNet-18 of ELR+ (PreActBlock [2, 2, 2, 2]; He et al. ECCV 2016). kwargs: ``width=64``."""
    return CifarResNet(PreActBlock, (2, 2, 2, 2), num_classes, input_shape, width=width,
                       name="preact_resnet18")
