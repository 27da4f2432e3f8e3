"""Test-time augmentation of image classifiers: average the logits over flipped and translated
copies of each image (airbench's levels 1 and 2, Jordan 2024, arXiv 2404.00498).

``flip``: the mean logits of the image and its mirror image. ``flip_translate``: half that, plus a
quarter each of the same for the image shifted by one pixel either way along both axes (reflection
padding, crops at offsets (0, 0) and (2, 2) of the padded image). Inputs are float
``[B, C, H, W]``; other shapes are refused.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

TTA_LEVELS = ("none", "flip", "flip_translate")

Predict = Callable[[torch.Tensor], torch.Tensor]


def _mirror_logits(predict: Predict, x: torch.Tensor) -> torch.Tensor:
    both = predict(torch.cat([x, x.flip(-1)])).float()  # one forward pass for the pair
    return 0.5 * (both[: len(x)] + both[len(x):])


def tta_logits(predict: Predict, x: torch.Tensor, level: str) -> torch.Tensor:
    """Logits ``float32 [B, C]`` of ``predict`` on ``x`` at TTA ``level`` (:data:`TTA_LEVELS`)."""
    if level == "none":
        return predict(x).float()
    if level not in TTA_LEVELS:
        raise ValueError(f"unknown TTA level '{level}' (valid: {', '.join(TTA_LEVELS)})")
    if x.dim() != 4:
        raise ValueError(f"test-time augmentation needs images [B, C, H, W], got a {x.dim()}-d batch")
    logits = _mirror_logits(predict, x)
    if level == "flip":
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = (padded[..., 0:h, 0:w], padded[..., 2:h + 2, 2:w + 2])
    return 0.5 * logits + 0.25 * sum(_mirror_logits(predict, s) for s in shifted)
