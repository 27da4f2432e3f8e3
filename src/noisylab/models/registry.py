"""A timm-style registry: every model factory has the signature
``factory(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module``.

Every registered model exposes ``forward_features(x) -> [B, D]`` (the representation) and
``forward_head(features) -> [B, num_classes]`` (the linear classifier), with
``forward(x) == forward_head(forward_features(x))``, and an int attribute ``num_features`` (D).

The model modules register themselves when :mod:`noisylab.models` imports them, so this module
imports none of them (no cycle); a new model is a new module plus one import line there. A
*family* (``register_model_family("timm")``) builds every name of a library: ``timm:convnext_tiny``
calls the family's factory with ``model_name="convnext_tiny"``.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}
_FAMILIES: dict[str, ModelFactory] = {}


class ModelError(ValueError):
    """Unknown model name or arguments that do not fit the model."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def wrap(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model '{name}' registered twice")
        _MODELS[name] = fn
        return fn

    return wrap


def register_model_family(prefix: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(model_name, num_classes, input_shape, **kwargs)`` for every ``prefix:NAME``."""
    def wrap(fn: ModelFactory) -> ModelFactory:
        if prefix in _FAMILIES:
            raise ValueError(f"model family '{prefix}' registered twice")
        _FAMILIES[prefix] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered names, then each family as ``prefix:NAME``."""
    return sorted(_MODELS) + [f"{p}:NAME" for p in sorted(_FAMILIES)]


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and inputs of ``input_shape`` (no batch dim)."""
    prefix, _, model_name = name.partition(":")
    if model_name and prefix in _FAMILIES:
        try:
            return _FAMILIES[prefix](model_name=model_name, num_classes=num_classes, input_shape=tuple(input_shape),
                                     **kwargs)
        except TypeError as err:
            raise ModelError(f"model '{name}': {err}") from err
    if name not in _MODELS:
        from ..config import did_you_mean

        raise ModelError(f"unknown model '{name}'{did_you_mean(name, _MODELS)} (valid: {', '.join(list_models())})")
    try:
        return _MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except TypeError as err:
        raise ModelError(f"model '{name}': {err}") from err
