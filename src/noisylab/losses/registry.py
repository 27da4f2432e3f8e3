"""The classification losses by config section: ``build_loss(config.method.loss, N, C, given)``.

Each loss registers a builder with its schema beside its class (``@register_loss`` in
:mod:`noisylab.registry`); every loss built here is called as ``loss(logits [B, C], labels [B],
index [B])``. A loss whose value has several named parts declares them with a method
``terms(logits, labels, index) -> {name: scalar}`` whose values sum to the loss (ELR's ``ce`` and
``elr``); the engine logs each as a ``train_<name>`` column.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..registry import LOSSES


def loss_names() -> list[str]:
    """The registered loss names, in registration order."""
    return LOSSES.names()


def build_loss(cfg, num_examples: int, num_classes: int, given: np.ndarray | None = None,
               state_dtype: torch.dtype = torch.float32) -> nn.Module:
    """The loss module of the section ``cfg`` (its ``name`` picks the registered builder); ``given``
    are the given labels of the examples trained on (ELR's ``prior_from: labels`` takes their shares);
    ``state_dtype`` the storage of per-example state, for the builders that keep some (a builder
    declares a ``state_dtype`` parameter; :mod:`noisylab.per_example`)."""
    import inspect

    builder = LOSSES.get(cfg.name).obj
    if "state_dtype" in inspect.signature(builder).parameters:
        return builder(cfg, num_examples, num_classes, given, state_dtype=state_dtype)
    return builder(cfg, num_examples, num_classes, given)


def loss_terms(criterion: nn.Module, name: str, logits: torch.Tensor, labels: torch.Tensor,
               index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named parts of ``criterion``'s loss on a batch: its declared ``terms`` (ELR's ``{"ce",
    "elr"}``), else ``{name: loss}``. Their sum is the loss."""
    terms = getattr(criterion, "terms", None)
    if callable(terms):
        return terms(logits, labels, index)
    return {name: criterion(logits, labels, index)}
