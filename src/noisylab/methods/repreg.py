"""Regularization between representations (Cheng, Zhu, Sun and Liu, "Mitigating Memorization of
Noisy Labels via Regularization between Representations", ICLR 2023, arXiv 2110.09022).

Re-implemented from the official scripts (``CE_Reg.py``, ``GCE_Reg.py``, ``ELR_C10.py``,
``GCE_C100.py``, ``SCE_C100.py``, ``bootstrap_C100.py``; no code copied). One network: encoder h,
linear classifier W and projection head g. Each step sees three views of every example — the
weak view x1 (crop + flip) and two strong SimCLR views x2, x3 — and minimises::

    base_weight * loss(W h(x1), y)                          supervised (CE, GCE, SCE, bootstrap, ELR)
  + infonce_weight * InfoNCE(g h(x2), g h(x3))              self-supervised, tau 0.5
  + reg_weight * RKD(W h(x1), g h(x1))                      the regularizer between representations

with every weight 1 in the paper. ``RKD`` is ``rkd_dis`` (:class:`~noisylab.losses.RKDDistanceLoss`:
distances between the classifier's softmax outputs follow the squared distances between the
projections; the teacher g h(x1) is not detached) or ``rkd_angle``. Warm-up, as the CIFAR-100
scripts: CE alone for ``ce_warmup_epochs`` epochs, then the base loss alone until
``reg_start_epoch``, then everything; ``reg: none`` keeps the base loss alone (their ``--base``).
``ELR_C10.py`` is ``loss: elr`` with ``reg_start_epoch: 31`` (ELR alone while ``epoch <= 30``).

Differences from the official scripts, all deliberate: the strong views are computed only in the
epochs that use them (the scripts forward all three views even in warm-up, which also moves the
BatchNorm statistics); the weights are configurable; and the ``GCE_Reg.py`` ImportError and the
``ELR_C10.py`` class-count bug (ELR built for 100 classes on CIFAR-10) are not reproduced.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ..config import LossConfig, Schema
from ..losses import CELoss, NTXentLoss, RKDAngleLoss, RKDDistanceLoss
from ..losses.classification import CELossConfig
from ..losses.registry import loss_terms
from ..models import MultiViewNet
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, Method, MethodContext, Phase, StepOutput, build_network, loss_state

REGULARIZERS = {"rkd_dis": RKDDistanceLoss, "rkd_angle": RKDAngleLoss}


class RepRegConfig(Schema):
    """Regularization between representations (Cheng et al., ICLR 2023):
    ``base_weight * loss(weak) + infonce_weight * InfoNCE(strong, strong) + reg_weight * reg(weak)``.

    Warm-up (the CIFAR-100 scripts): CE alone for ``ce_warmup_epochs`` epochs, then ``loss`` alone
    until epoch ``reg_start_epoch``, then the whole objective. ``reg: none`` is the scripts'
    ``--base`` (the base loss alone after the CE warm-up)."""

    name: Literal["repreg"] = "repreg"
    loss: LossConfig = Field(default_factory=CELossConfig)
    reg: Literal["rkd_dis", "rkd_angle", "none"] = "rkd_dis"
    reg_variant: Literal["official", "park"] = Field(
        "official", description="official: squared teacher distances, teacher not detached; park: Park et al. 2019")
    tau: float = Field(0.5, gt=0.0, description="InfoNCE temperature")
    base_weight: float = Field(1.0, ge=0.0, description="weight of the base loss (the scripts' --alpha)")
    infonce_weight: float = Field(1.0, ge=0.0)
    reg_weight: float = Field(1.0, ge=0.0)
    ce_warmup_epochs: int = Field(0, ge=0, description="epochs of plain CE first (GCE_C100.py: --warmup_base 20 = 21)")
    reg_start_epoch: int = Field(0, ge=0, description="first epoch with InfoNCE + reg (GCE_C100.py: --warmup_reg 22 = 23)")

    @model_validator(mode="after")
    def _warmups_in_order(self) -> "RepRegConfig":
        if self.reg != "none" and self.reg_start_epoch < self.ce_warmup_epochs:
            raise ValueError(f"method.reg_start_epoch ({self.reg_start_epoch}) must not come before the end of "
                             f"method.ce_warmup_epochs ({self.ce_warmup_epochs})")
        return self


@register_method("repreg", schema=RepRegConfig)
class RepRegMethod(Method):
    """Views ``(weak, strong, strong)``; terms ``<base loss>``, ``infonce`` and ``rkd_dis`` /
    ``rkd_angle`` (module doc)."""

    name = "repreg"
    find_unused_parameters = True  # warm-up epochs leave the projection head without gradients

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg, mc = ctx.config, ctx.config.method
        self.mc = mc
        self.views = ("weak", "strong", "strong")
        self.models["net"] = MultiViewNet(build_network(ctx, projector=True))
        opt = build_optimizer(self.models["net"], cfg.optim)
        self.optimizers["net"] = opt
        self.schedulers["net"] = self.make_scheduler(opt)
        self.base = ctx.build_loss(mc.loss)
        if loss_state(self.base):
            self.losses["base"] = self.base
        self.ce = CELoss()
        self.infonce = NTXentLoss(tau=mc.tau)
        self.reg = None if mc.reg == "none" else REGULARIZERS[mc.reg](variant=mc.reg_variant)
        self.stage = "full"

    def stage_of(self, epoch: int) -> str:
        """``ce`` (CE warm-up), ``base`` (the base loss alone) or ``full`` (with InfoNCE + reg)."""
        if epoch < self.mc.ce_warmup_epochs:
            return "ce"
        if self.reg is None or epoch < self.mc.reg_start_epoch:
            return "base"
        return "full"

    def phases(self, epoch: int) -> list[Phase]:
        self.stage = self.stage_of(epoch)
        return [Phase("net", self.models["net"], self.optimizers["net"])]

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        mc, y = self.mc, batch.y
        if self.stage != "full":
            ((logits, _),) = phase.model(batch.views[:1], logits=(True,), proj=(False,))
            if self.stage == "ce":
                terms = {"ce": self.ce(logits, y)}
            else:
                terms = {k: mc.base_weight * v for k, v in loss_terms(self.base, mc.loss.name, logits, y, batch.index).items()}
            return StepOutput(sum(terms.values()), terms, logits)
        (logits, p1), (_, p2), (_, p3) = phase.model(batch.views, logits=(True, False, False), proj=(True, True, True))
        terms = {k: mc.base_weight * v for k, v in loss_terms(self.base, mc.loss.name, logits, y, batch.index).items()}
        terms["infonce"] = mc.infonce_weight * self.infonce(p2, p3)
        terms[mc.reg] = mc.reg_weight * self.reg(logits, p1)
        return StepOutput(sum(terms.values()), terms, logits)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.unwrap("net").net(x)

    def sample_state(self) -> dict[str, torch.Tensor]:
        return loss_state(self.base)
