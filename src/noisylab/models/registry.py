"""A timm-style registry: every model factory has the signature
``factory(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module``.

Every registered model exposes ``forward_features(x) -> [B, D]`` (the representation) and
``forward_head(features) -> [B, num_classes]`` (the linear classifier), with
``forward(x) == forward_head(forward_features(x))``, and an int attribute ``num_features`` (D).

The model modules register themselves when :mod:`noisylab.models` imports them, so this module
imports none of them (no cycle); a new model is a new module plus one import line there.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


class ModelError(ValueError):
    """Unknown model name or arguments that do not fit the model."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def wrap(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model '{name}' registered twice")
        _MODELS[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and inputs of ``input_shape`` (no batch dim)."""
    if name not in _MODELS:
        from ..config import did_you_mean

        raise ModelError(f"unknown model '{name}'{did_you_mean(name, _MODELS)} (valid: {', '.join(sorted(_MODELS))})")
    try:
        return _MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except TypeError as err:
        raise ModelError(f"model '{name}': {err}") from err
