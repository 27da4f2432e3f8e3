"""A timm-style registry: every model factory has the signature
``factory(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module``.

Every registered model exposes ``forward_features(x) -> [B, D]`` (the representation) and
``forward_head(features) -> [B, num_classes]`` (the linear classifier), with
``forward(x) == forward_head(forward_features(x))``, and an int attribute ``num_features`` (D).

Models register with ``@register_model(name)`` (:mod:`noisylab.registry`) beside their factory;
the registry imports every module of :mod:`noisylab.models` when it is first read, so a new model
is a new module and nothing else, and this module imports none of them (no cycle). A *family* (``register_model_family("timm")``) builds every name of a library: ``timm:convnext_tiny``
calls the family's factory with ``model_name="convnext_tiny"``.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..registry import MODEL_FAMILIES, MODELS, did_you_mean, register_model, register_model_family

ModelFactory = Callable[..., nn.Module]

__all__ = ["ModelError", "ModelFactory", "create_model", "list_models", "register_model", "register_model_family"]


class ModelError(ValueError):
    """Unknown model name or arguments that do not fit the model."""


def list_models() -> list[str]:
    """The registered names, then each family as ``prefix:NAME``."""
    return sorted(MODELS) + [f"{p}:NAME" for p in sorted(MODEL_FAMILIES)]


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and inputs of ``input_shape`` (no batch dim)."""
    prefix, _, model_name = name.partition(":")
    if model_name and prefix in MODEL_FAMILIES:
        factory, kwargs = MODEL_FAMILIES[prefix], {"model_name": model_name, **kwargs}
    elif name in MODELS:
        factory = MODELS[name]
    else:
        raise ModelError(f"unknown model '{name}'{did_you_mean(name, list(MODELS))} (valid: {', '.join(list_models())})")
    try:
        return factory(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except TypeError as err:
        raise ModelError(f"model '{name}': {err}") from err
