"""Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with Extremely
Noisy Labels", NeurIPS 2018; official code github.com/bhanML/Co-teaching).

Two networks see the same batch. Each ranks the batch by its own per-example cross-entropy and
keeps the ``R(T)`` share with the smallest loss; each network is then trained on the examples the
*other* kept, so the errors one network has learned are not fed back to itself. The kept share
falls from 1 to ``1 - forget_rate`` over the first ``num_gradual`` epochs and stays there:

    forget(T) = tau ** c * T / (num_gradual - 1)   for epochs T = 0 .. num_gradual - 1,  tau after
    R(T) = 1 - forget(T),   kept per batch: floor(R(T) * B)

which is the official code's schedule (``linspace(0, tau ** c, num_gradual)``, then tau; the
paper writes ``R(T) = 1 - min(T / T_k * tau, tau)``, which reaches tau one epoch later). ``forget_rate``
defaults to the noise rate (the paper's tau = epsilon).

The two networks have an optimizer each (one phase, two optimizers: the engine back-propagates
the sum of the two losses once, and each network's gradient comes only from its own term). The
first network is the final predictor.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import ConfigError, Schema
from ..losses.classification import upcast
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, Method, MethodContext, Phase, StepOutput, build_network


class CoTeachingConfig(Schema):
    """Co-teaching's settings (defaults: the paper's; ``forget_rate`` null = ``noise.rate``)."""

    name: Literal["coteaching"] = "coteaching"
    forget_rate: float | None = Field(None, ge=0.0, lt=1.0, description="tau; null: the noise rate")
    num_gradual: int = Field(10, ge=1, description="epochs over which the forget rate rises to tau (T_k)")
    exponent: float = Field(1.0, gt=0.0, description="the schedule's exponent c (1: linear)")


def forget_rate_at(epoch: int, forget_rate: float, num_gradual: int, exponent: float = 1.0) -> float:
    """The share of each batch a network drops in epoch ``epoch`` (0-based), as above."""
    if epoch >= num_gradual:
        return forget_rate
    return 0.0 if num_gradual == 1 else forget_rate ** exponent * epoch / (num_gradual - 1)


def small_loss_indices(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """Positions of the ``keep`` smallest of ``losses`` ``[B]`` (ties broken by position)."""
    order = torch.sort(losses.detach(), stable=True).indices
    return order[:keep]


@register_method("coteaching", schema=CoTeachingConfig)
class CoTeachingMethod(Method):
    """Two networks ``net1``, ``net2``, each with its own optimizer and scheduler."""

    name = "coteaching"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg, mc = ctx.config, ctx.config.method
        rate = mc.forget_rate if mc.forget_rate is not None else cfg.noise.rate
        if rate is None or (mc.forget_rate is None and cfg.noise.kind in ("none", "human", "matrix")):
            raise ConfigError(f"method coteaching needs method.forget_rate with noise.kind={cfg.noise.kind} "
                              "(set it to your estimate of the noise rate, e.g. method.forget_rate=0.2)")
        self.tau = float(rate)
        for name in ("net1", "net2"):
            torch.manual_seed(cfg.seed + (name == "net2"))  # two different initialisations, seeded
            self.models[name] = build_network(ctx)
            self.optimizers[name] = build_optimizer(self.models[name], cfg.optim)
            self.schedulers[name] = self.make_scheduler(self.optimizers[name])
        self.feature_model = "net1"
        self.forget = 0.0

    def phases(self, epoch: int) -> list[Phase]:
        mc = self.ctx.config.method
        self.forget = forget_rate_at(epoch, self.tau, mc.num_gradual, mc.exponent)
        return [Phase("coteach", self.models["net1"], self.optimizers["net1"], (self.optimizers["net2"],))]

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        logits1, logits2 = self.models["net1"](batch.x), self.models["net2"](batch.x)
        ce1 = F.cross_entropy(upcast(logits1), batch.y, reduction="none")
        ce2 = F.cross_entropy(upcast(logits2), batch.y, reduction="none")
        keep = max(1, int((1.0 - self.forget) * len(batch.y)))
        kept_by_1, kept_by_2 = small_loss_indices(ce1, keep), small_loss_indices(ce2, keep)
        loss1, loss2 = ce1[kept_by_2].mean(), ce2[kept_by_1].mean()  # each learns from the other's choice
        return StepOutput(loss1 + loss2, {"net1": loss1, "net2": loss2}, logits1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.unwrap("net1")(x)

    def extra_state(self) -> dict:
        return {"forget": self.forget}

    def load_extra_state(self, state: dict) -> None:
        self.forget = float(state.get("forget", 0.0))
