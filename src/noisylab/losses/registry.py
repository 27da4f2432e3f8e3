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

from ..per_example import TableStorage
from ..registry import LOSSES


def loss_names() -> list[str]:
    """The registered loss names, in registration order."""
    return LOSSES.names()


def build_loss(cfg, num_examples: int, num_classes: int, given: np.ndarray | None = None,
               tables: TableStorage | None = None, dataset_labels: np.ndarray | None = None) -> nn.Module:
    """The loss module of the section ``cfg`` (its ``name`` picks the registered builder); ``given``
    are the given labels of the examples trained on (ELR's ``prior_from: labels`` takes their shares).
    A builder that declares them also gets ``tables``, how per-example state is kept
    (:class:`~noisylab.per_example.TableStorage`), and ``dataset_labels``, ``int64 [N]`` the labels
    of every training example before any noise, in dataset order (which examples these are: the
    distillation loss checks its teacher run against them)."""
    import inspect

    builder = LOSSES.get(cfg.name).obj
    declared = inspect.signature(builder).parameters
    context = {k: v for k, v in (("tables", tables), ("dataset_labels", dataset_labels)) if k in declared}
    return builder(cfg, num_examples, num_classes, given, **context)


def loss_terms(criterion: nn.Module, name: str, logits: torch.Tensor, labels: torch.Tensor,
               index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named parts of ``criterion``'s loss on a batch: its declared ``terms`` (ELR's ``{"ce",
    "elr"}``), else ``{name: loss}``. Their sum is the loss."""
    terms = getattr(criterion, "terms", None)
    if callable(terms):
        return terms(logits, labels, index)
    return {name: criterion(logits, labels, index)}
