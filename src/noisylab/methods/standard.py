"""The standard method: one network trained with CE, GCE or ELR (the ELR paper's basic recipe)."""
from __future__ import annotations

import torch

from ..losses import CELoss, ELRLoss, GCELoss
from ..models import create_model
from ..optim import build_optimizer, build_scheduler
from .base import Method, MethodContext, Phase


class StandardMethod(Method):
    """One model, one optimizer, one loss ``loss(logits, labels, index)``.

    Per-example state: the ELR targets ``[N, C]`` when ``method.loss.name == "elr"``.
    """

    name = "standard"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        model = create_model(cfg.model.arch, ctx.num_classes, ctx.input_shape, **cfg.model.options)
        self.models["net"] = model.to(ctx.device)
        opt = build_optimizer(model.parameters(), cfg.optim)
        self.optimizers["net"] = opt
        self.schedulers["net"] = build_scheduler(opt, cfg.schedule, cfg.train.epochs)
        lc = cfg.method.loss
        if lc.name == "elr":
            self.criterion = ELRLoss(ctx.num_train, ctx.num_classes, lam=lc.lam, beta=lc.beta).to(ctx.device)
            self.losses["elr"] = self.criterion
        elif lc.name == "gce":
            self.criterion = GCELoss(q=lc.q)
        else:
            self.criterion = CELoss()

    def phases(self, epoch: int) -> list[Phase]:
        return [Phase("net", self.models["net"], self.optimizers["net"])]

    def batch_loss(self, phase, x, y, index, step):
        logits = phase.model(x)
        return self.criterion(logits, y, index), logits

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.unwrap("net")(x)

    def sample_state(self) -> dict[str, torch.Tensor]:
        if isinstance(self.criterion, ELRLoss):
            return {"targets": self.criterion.targets}
        return {}
