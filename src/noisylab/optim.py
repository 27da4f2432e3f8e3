"""Optimizers and learning-rate schedules from the config."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LambdaLR,
    LRScheduler,
    MultiStepLR,
)

from .config import OptimConfig, ScheduleConfig


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The trainable parameters of ``model`` as optimizer groups: with
    ``cfg.norm_bias_lr_scale = s != 1`` the biases of its normalisation layers form a group with
    learning rate ``s * lr`` and weight decay ``weight_decay / s``, so that their decay per step
    (``lr * weight_decay``) stays that of the other weights (airbench's ``bias_scaler``, Jordan
    2024, arXiv 2404.00498); otherwise one group of every trainable parameter."""
    params = list(model.parameters())  # frozen ones too, as model.parameters(): they get no gradient, so no step
    scale = float(cfg.norm_bias_lr_scale)
    if scale == 1.0:
        return [{"params": params}]
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    biases = {id(m.bias) for m in model.modules() if isinstance(m, norm_types) and getattr(m, "bias", None) is not None}
    norm = [p for p in params if id(p) in biases]
    other = [p for p in params if id(p) not in biases]
    groups = [{"params": other}]
    if norm:
        groups.append({"params": norm, "lr": cfg.lr * scale, "weight_decay": cfg.weight_decay / scale})
    return groups


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over ``params``: an iterable of parameters or groups, or a model
    (then :func:`parameter_groups` of it)."""
    if isinstance(params, nn.Module):
        params = parameter_groups(params, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int,
                    steps_per_epoch: int = 1) -> LRScheduler:
    """The learning-rate schedule of ``cfg`` for a run of ``epochs`` epochs.

    ``constant``, ``multistep``, ``cosine`` and ``cosine_restarts`` are stepped once after every
    epoch (the ELR repos' convention). ``triangle`` is stepped after every optimizer step (its
    scheduler has ``per_step = True``; :meth:`noisylab.methods.Method.step_schedulers`): a linear
    rise from ``start`` to 1 over the first ``peak`` share of the ``epochs * steps_per_epoch``
    steps, then a linear fall to ``end`` (airbench, Jordan 2024, arXiv 2404.00498: start 0.2,
    peak 0.23, end 0.07).
    """
    if cfg.name == "triangle":
        return triangle_scheduler(optimizer, epochs * max(int(steps_per_epoch), 1), cfg.start, cfg.peak, cfg.end)
    if cfg.name == "multistep":
        return MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.eta_min)
    if cfg.name == "cosine_restarts":
        return CosineAnnealingWarmRestarts(optimizer, T_0=cfg.T_0, T_mult=cfg.T_mult, eta_min=cfg.eta_min)
    return LambdaLR(optimizer, lambda epoch: 1.0)


def triangle_factor(step: int, total: int, start: float, peak: float, end: float) -> float:
    """The learning-rate multiplier at optimizer step ``step`` of ``total``: ``start`` at step 0,
    1 at step ``int(peak * total)``, ``end`` at step ``total``, linear in between (and ``end``
    after ``total``)."""
    top = int(peak * total)
    if step <= 0:
        return float(start) if top > 0 else 1.0
    if step < top:
        return start + (1.0 - start) * step / top
    if step >= total:
        return float(end)
    return 1.0 + (end - 1.0) * (step - top) / max(total - top, 1)


def triangle_scheduler(optimizer: torch.optim.Optimizer, total: int, start: float, peak: float,
                       end: float) -> LRScheduler:
    """:func:`triangle_factor` as a ``LambdaLR`` stepped once per optimizer step (``per_step``)."""
    sched = LambdaLR(optimizer, lambda step: triangle_factor(step, total, start, peak, end))
    sched.per_step = True
    return sched
