"""Small models for vector, 1-D signal and small-image inputs: ``mlp``, ``cnn1d``, ``cnn_small``.

All models here (and in :mod:`noisylab.models.resnet` / :mod:`noisylab.models.external`)
derive from :class:`FeatureClassifier`, which fixes the interface the training code relies on:

* ``forward_features(x) -> [B, D]`` -- the representation (what ELR-style regularisers and the
  representation regulariser of Cheng et al., ICLR 2023, operate on);
* ``forward_head(f) -> [B, num_classes]`` -- a single ``nn.Linear`` stored as ``self.fc``;
* ``forward(x) = forward_head(forward_features(x))``;
* ``num_features = D`` and ``num_classes``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import math
from typing import Sequence

import torch
import torch.nn as nn

from .registry import ModelError, register_model


class FeatureClassifier(nn.Module, ABC):
    """Base class: a feature extractor followed by one linear layer ``fc``.

    Subclasses implement :meth:`forward_features` and must create ``self.fc`` (an
    ``nn.Linear(num_features, num_classes)``) and set ``self.num_features``.
    """

    num_features: int
    num_classes: int
    fc: nn.Linear

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x -> [B, num_features]`` representation."""

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, num_features] -> [B, num_classes]`` logits."""
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x -> [B, num_classes]`` logits (``forward_head(forward_features(x))``)."""
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- argument checks
def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive int, got {value!r}")
    return value


def check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as err:
        raise ModelError(f"input_shape must be a tuple of ints, got {input_shape!r}") from err
    if not shape or any(s < 1 for s in shape):
        raise ModelError(f"input_shape must be non-empty with positive sizes, got {input_shape!r}")
    return shape


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Normalise an image ``input_shape`` to ``(C, H, W)``; ``(H, W)`` means one channel."""
    shape = check_shape(input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ModelError(f"model '{model}' needs input_shape (C, H, W) or (H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------- MLP
class MLP(FeatureClassifier):
    """Fully connected network on flattened inputs.

    ``x: [B, *input_shape]`` is flattened to ``[B, prod(input_shape)]`` and passed through
    ``Linear -> ReLU (-> Dropout)`` for each width in ``hidden``; the last hidden layer is the
    feature (``D = hidden[-1]``; with ``hidden=()`` the flattened input itself is the feature).
    Architecture: the standard multilayer perceptron (Rumelhart, Hinton & Williams, 1986).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        hidden: Sequence[int] = (512, 512),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        shape = check_shape(input_shape)
        self.num_classes = check_num_classes(num_classes)
        if isinstance(hidden, int):
            hidden = (hidden,)
        try:
            widths = [check_positive_int("hidden width", h) for h in hidden]
        except TypeError as err:
            raise ModelError(f"hidden must be a tuple/list of ints, got {hidden!r}") from err
        if not 0.0 <= float(dropout) < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        d = math.prod(shape)
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            d = w
        self.input_shape = shape
        self.features = nn.Sequential(*layers)
        self.num_features = d
        self.fc = nn.Linear(d, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, *input_shape] -> [B, hidden[-1]]``."""
        return self.features(x.flatten(1))


@register_model("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: Sequence[int] = (512, 512),
        dropout: float = 0.0) -> MLP:
    """MLP on flattened inputs of any shape. kwargs: ``hidden=(512, 512)``, ``dropout=0.0``."""
    return MLP(num_classes, input_shape, hidden=hidden, dropout=dropout)


# --------------------------------------------------------------------------- 1-D CNN (MNIST-1D)
class CNN1d(FeatureClassifier):
    """Small 1-D CNN for MNIST-1D-like signals.

    Input ``[B, L]`` or ``[B, C, L]`` (``input_shape`` ``(L,)`` or ``(C, L)``).
    Layers: ``Conv1d(C, width, 5, pad 2)`` then ``depth - 1`` blocks ``Conv1d(width, width, 3,
    stride 2, pad 1)``, each conv followed by BatchNorm1d (if ``batch_norm``) and ReLU.
    With ``pool="flatten"`` (default) the final ``[B, width, L']`` map is flattened
    (``D = width * L'``, ``L' = ceil(L / 2**(depth-1))``; for L = 40, depth 3: ``D = 10 * width``),
    which keeps the position information MNIST-1D needs; ``pool="avg"`` averages over length
    (``D = width``).
    Architecture source: the convolutional baseline of MNIST-1D (Greydanus, "Scaling down deep
    learning", 2020: strided 1-D convolutions followed by a linear classifier on the flattened
    map), widened and with BatchNorm.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        width: int = 64,
        depth: int = 3,
        batch_norm: bool = True,
        pool: str = "flatten",
    ) -> None:
        super().__init__()
        shape = check_shape(input_shape)
        if len(shape) == 1:
            shape = (1, shape[0])
        if len(shape) != 2:
            raise ModelError(f"model 'cnn1d' needs input_shape (L,) or (C, L), got {input_shape!r}")
        self.num_classes = check_num_classes(num_classes)
        width = check_positive_int("width", width)
        depth = check_positive_int("depth", depth)
        if pool not in ("flatten", "avg"):
            raise ModelError(f"pool must be 'flatten' or 'avg', got {pool!r}")
        in_ch, length = shape
        layers: list[nn.Module] = []
        for i in range(depth):
            if i == 0:
                conv = nn.Conv1d(in_ch, width, 5, padding=2, bias=not batch_norm)
            else:
                conv = nn.Conv1d(width, width, 3, stride=2, padding=1, bias=not batch_norm)
                length = (length - 1) // 2 + 1
            layers.append(conv)
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
        self.input_shape = shape
        self.pool = pool
        self.features = nn.Sequential(*layers)
        self.num_features = width * length if pool == "flatten" else width
        self.fc = nn.Linear(self.num_features, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` or ``[B, C, L] -> [B, D]``."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        h = self.features(x)
        return h.flatten(1) if self.pool == "flatten" else h.mean(dim=2)


@register_model("cnn1d")
def cnn1d(num_classes: int, input_shape: tuple[int, ...], width: int = 64, depth: int = 3,
          batch_norm: bool = True, pool: str = "flatten") -> CNN1d:
    """1-D CNN for MNIST-1D. kwargs: ``width=64``, ``depth=3``, ``batch_norm=True``,
    ``pool='flatten'|'avg'``."""
    return CNN1d(num_classes, input_shape, width=width, depth=depth, batch_norm=batch_norm, pool=pool)


# --------------------------------------------------------------------------- small 2-D CNN
class SmallCNN(FeatureClassifier):
    """Small VGG-style CNN for 28x28 / 32x32 images with 1 or 3 channels.

    Input ``[B, C, H, W]`` (``[B, H, W]`` accepted when C = 1). Three stages with widths
    ``width, 2*width, 4*width``; each stage is ``(Conv3x3-BN-ReLU) x 2`` followed by 2x2 max-pool
    (28 -> 14 -> 7 -> 3, 32 -> 16 -> 8 -> 4); then global average pooling gives
    ``D = 4 * width`` features. Optional dropout before the classifier.
    Architecture source: VGG-style conv blocks (Simonyan & Zisserman, ICLR 2015) with
    BatchNorm (Ioffe & Szegedy, 2015), scaled down for MNIST/CIFAR-sized inputs.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        width: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = image_shape(input_shape, "cnn_small")
        if min(h, w) < 8:
            raise ModelError(f"model 'cnn_small' needs images of at least 8x8, got {input_shape!r}")
        self.num_classes = check_num_classes(num_classes)
        width = check_positive_int("width", width)
        if not 0.0 <= float(dropout) < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        in_ch = c
        for mult in (1, 2, 4):
            out_ch = width * mult
            for _ in range(2):
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                           nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2))
        self.input_shape = (c, h, w)
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (or ``[B, H, W]``) ``-> [B, 4 * width]``."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.dropout(self.features(x).mean(dim=(2, 3)))


@register_model("cnn_small")
def cnn_small(num_classes: int, input_shape: tuple[int, ...], width: int = 32,
              dropout: float = 0.0) -> SmallCNN:
    """Small CNN for 28x28/32x32 images, 1 or 3 channels. kwargs: ``width=32``, ``dropout=0.0``."""
    return SmallCNN(num_classes, input_shape, width=width, dropout=dropout)
