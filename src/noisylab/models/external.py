"""Large ImageNet-style models built from libraries: ``resnet50`` (torchvision) and
``inception_resnet_v2`` (timm, optional extra ``noisylab[timm]``).

These are the real-noise networks of ELR/ELR+ (Liu et al., NeurIPS 2020): an ImageNet-pretrained
ResNet-50 for Clothing1M and a randomly initialised Inception-ResNet-v2 for (mini-)WebVision.
Both are wrapped to the common interface (``forward_features`` / ``forward_head`` / ``fc`` /
``num_features``) of :class:`noisylab.models.small.FeatureClassifier`.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from .registry import ModelError, register_model
from .small import FeatureClassifier, check_num_classes, image_shape

try:  # torchvision is a hard dependency, but keep import errors readable
    from torchvision.models import ResNet50_Weights
    from torchvision.models.resnet import Bottleneck, ResNet
except ImportError as _err:  # pragma: no cover
    raise ImportError("noisylab.models.external needs torchvision (pip install torchvision)") from _err


class TorchvisionResNet50(FeatureClassifier, ResNet):
    """torchvision ResNet-50 (He et al., CVPR 2016) with ``fc = Linear(2048, num_classes)``.

    A subclass of ``torchvision.models.ResNet`` so parameter names equal torchvision's (ImageNet
    weights and checkpoints of ``resnet50(); model.fc = Linear(2048, C)`` load directly).
    Input ``[B, C, H, W]`` (ImageNet-sized, e.g. 224x224; anything >= 32x32 runs);
    ``forward_features`` returns the global-average-pooled ``[B, 2048]`` representation.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        ResNet.__init__(self, Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.num_classes = num_classes
        self.num_features = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 2048]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, num_classes]``."""
        return self.forward_head(self.forward_features(x))


def _load_imagenet_weights(model: TorchvisionResNet50, weights_name: str) -> None:
    try:
        weights = ResNet50_Weights[weights_name]
    except KeyError as err:
        valid = ", ".join(w.name for w in ResNet50_Weights)
        raise ModelError(f"model 'resnet50': unknown weights '{weights_name}' (valid: {valid})") from err
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as err:  # no network, no cache, corrupt file, ...
        hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
        fname = os.path.basename(weights.url)
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise ModelError(
            f"model 'resnet50': the ImageNet weights ({weights_name}) could not be downloaded "
            f"({reason}); download {weights.url} and put it at "
            f"{os.path.join(hub_dir, fname)} (the torch hub cache, set by TORCH_HOME), or use "
            f"pretrained=False"
        ) from err
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise ModelError(f"model 'resnet50': weights do not fit (missing {missing}, unexpected {unexpected})")


@register_model("resnet50")
def resnet50(num_classes: int, input_shape: tuple[int, ...], pretrained: bool | str = False
             ) -> TorchvisionResNet50:
    """torchvision ResNet-50 with a new ``fc``: Linear(2048, num_classes) (ELR, Clothing1M).

    kwargs: ``pretrained=False``; ``True`` loads torchvision's ImageNet ``IMAGENET1K_V1`` weights
    (the legacy ``pretrained=True`` weights ELR used) except ``fc``; a string selects another
    ``ResNet50_Weights`` member (e.g. ``"IMAGENET1K_V2"``). Weights come from the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``) or are downloaded; failure raises :class:`ModelError`.
    """
    c, h, w = image_shape(input_shape, "resnet50")
    if min(h, w) < 32:
        raise ModelError(f"model 'resnet50' needs images of at least 32x32, got {tuple(input_shape)!r}")
    model = TorchvisionResNet50(check_num_classes(num_classes), in_channels=c)
    model.input_shape = (c, h, w)
    if pretrained:
        if c != 3:
            raise ModelError(f"model 'resnet50': ImageNet weights need 3 input channels, got {c}")
        _load_imagenet_weights(model, "IMAGENET1K_V1" if pretrained is True else str(pretrained))
    return model


class TimmInceptionResNetV2(FeatureClassifier):
    """Inception-ResNet-v2 (Szegedy et al., AAAI 2017) from timm, randomly initialised (ELR+ WebVision).

    ``backbone`` is ``timm.create_model("inception_resnet_v2", num_classes=0)``; features are its
    ``forward_head(forward_features(x), pre_logits=True)`` (global average pool), ``[B, 1536]``;
    ``fc = Linear(1536, num_classes)``. Input ``[B, C, H, W]`` with H, W >= 75 (ELR+ feeds 227x227).
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as err:
            raise ModelError(
                "model 'inception_resnet_v2' needs the optional dependency timm: pip install 'noisylab[timm]'"
            ) from err
        self.backbone = timm.create_model(
            "inception_resnet_v2", pretrained=False, num_classes=0, in_chans=in_channels
        )
        self.num_classes = num_classes
        self.num_features = int(self.backbone.num_features)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 1536]``."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)


@register_model("inception_resnet_v2")
def inception_resnet_v2(num_classes: int, input_shape: tuple[int, ...]) -> TimmInceptionResNetV2:
    """timm Inception-ResNet-v2, random init, ``fc = Linear(1536, num_classes)`` (ELR+, WebVision).
    No kwargs. Needs ``pip install 'noisylab[timm]'``."""
    c, h, w = image_shape(input_shape, "inception_resnet_v2")
    if min(h, w) < 75:
        raise ModelError(
            f"model 'inception_resnet_v2' needs images of at least 75x75, got {tuple(input_shape)!r}"
        )
    model = TimmInceptionResNetV2(check_num_classes(num_classes), in_channels=c)
    model.input_shape = (c, h, w)
    return model
