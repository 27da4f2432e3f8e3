"""A linear classifier on a frozen (pre-trained) encoder: the ICLR-2023 repo's
``CE.py --simclr_pretrain --finetune_fc_only`` (Cheng et al., "Mitigating Memorization of Noisy
Labels via Regularization between Representations", ICLR 2023, Sec. 3).

The encoder comes from ``model.encoder_checkpoint`` (``noisylab pretrain``'s ``encoder.pt`` or the
official SimCLR checkpoint) and never changes; it always runs in eval mode (BatchNorm running
statistics frozen, as the official ``model.eval()``). Only the classifier ``fc`` trains, with
``method.loss`` (CE, GCE, ...). Two modes:

* ``faithful``: each step encodes the augmented weak view of the batch, as the official code;
* ``fast``: the features of the un-augmented training images are computed once (at the first
  step) and the classifier trains on them: no image is augmented or encoded again.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from ..config import LossConfig, Schema
from ..losses.classification import CELossConfig
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, Method, MethodContext, Phase, StepOutput, build_network, loss_state, supervised_step

log = logging.getLogger("noisylab")


class FrozenEncoderClassifier(nn.Module):
    """``fc(encoder(x))`` with the encoder frozen and outside autograd; ``forward(features=f)``
    skips the encoder (cached features ``[B, D]``)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        backbone.requires_grad_(False)
        backbone.fc.requires_grad_(True)

    def forward(self, x: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        if features is None:
            with torch.no_grad():
                features = self.backbone.forward_features(x)
        return self.backbone.fc(features)

    def train(self, mode: bool = True) -> "FrozenEncoderClassifier":
        return super().train(False)  # BatchNorm and dropout of the frozen encoder stay in eval mode


class LinearProbeConfig(Schema):
    """A linear classifier on a frozen encoder (the ICLR-2023 repo's ``CE.py --finetune_fc_only``).
    ``faithful``: the frozen encoder (BatchNorm in eval mode) sees the augmented weak view every
    epoch, as the official code; ``fast``: features of the un-augmented images are computed once."""

    name: Literal["linear_probe"] = "linear_probe"
    loss: LossConfig = Field(default_factory=CELossConfig)
    mode: Literal["faithful", "fast"] = "faithful"


@register_method("linear_probe", schema=LinearProbeConfig)
class LinearProbeMethod(Method):
    """Linear probe: views ``(weak,)`` (faithful) or none (fast); loss ``method.loss`` on ``fc``."""

    name = "linear_probe"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg, mc = ctx.config, ctx.config.method
        if cfg.model.encoder_checkpoint is None:
            log.warning("linear_probe without model.encoder_checkpoint: the classifier trains on a randomly "
                        "initialised encoder (a baseline, not the paper's setting)")
        self.fast = mc.mode == "fast"
        self.views = () if self.fast else ("weak",)
        net = FrozenEncoderClassifier(build_network(ctx))
        self.models["net"] = net
        opt = build_optimizer(net.backbone.fc.parameters(), cfg.optim)
        self.optimizers["net"] = opt
        self.schedulers["net"] = self.make_scheduler(opt)
        self.loss_name = mc.loss.name
        self.criterion = ctx.build_loss(mc.loss)
        if loss_state(self.criterion):
            self.losses["loss"] = self.criterion
        self._features: torch.Tensor | None = None

    def cached_features(self) -> torch.Tensor:
        """Encoder features ``[N, D]`` of every training example's un-augmented image (computed once)."""
        if self._features is None:
            backbone = self.unwrap("net").backbone
            feats = None
            with torch.no_grad():
                for batch in self.ctx.feature_batches:
                    f = backbone.forward_features(batch.x).float()
                    if feats is None:
                        feats = torch.zeros(self.ctx.num_train, f.shape[1], device=f.device)
                    feats[batch.index] = f
            self._features = feats
        return self._features

    def phases(self, epoch: int) -> list[Phase]:
        return [Phase("net", self.models["net"], self.optimizers["net"])]

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        if self.fast:
            logits = phase.model(features=self.cached_features()[batch.index])
        else:
            logits = phase.model(batch.x)
        return supervised_step(self.criterion, self.loss_name, logits, batch)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.unwrap("net")(x)

    def sample_state(self) -> dict[str, torch.Tensor]:
        return loss_state(self.criterion)
