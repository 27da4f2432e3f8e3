"""ELR+ (Liu et al., NeurIPS 2020, arXiv 2007.00151, Sec. 4) as a method of the one engine.

Re-implemented from the official ``ELR_plus/trainer/trainer.py`` (``_train_epoch``,
``_warmup_epoch``, ``update_ema_variables``), ``ELR_plus/base/base_trainer.py`` (the epoch loop)
and ``ELR_plus/model/loss.py`` (``elr_plus_loss``), with the hyper-parameters per dataset of
``ELR_plus/config_*.json``; the official code's bugs are not reproduced (below).

What the method owns (``self.models`` / ``optimizers`` / ``schedulers`` / ``losses``):

* ``net1``, ``net2``: the two networks, each with its own optimizer and scheduler;
* ``ema1``, ``ema2``: their weight-averaged (EMA, "mean teacher") copies, never trained
  (``requires_grad`` False, so the engine's DDP wrapping skips them);
* ``net1``, ``net2`` in ``losses``: :class:`~noisylab.losses.elr_plus.ELRPlusLoss`, each holding its
  network's per-example target history ``pred_hist`` ``[N, C]``;
* the iteration counter ``global_step`` (checkpointed through :meth:`extra_state`).

Every epoch has two phases, ``net1`` then ``net2`` (the networks are trained in turn, as the
paper's single-GPU path): the targets of ``net1`` come from ``ema2`` and those of ``net2`` from
``ema1`` — which ``net1``'s phase has just updated. One step of network k is documented in
:mod:`noisylab.losses.elr_plus`; the iteration counter is ``t = global_step + local_step`` with
``local_step`` counting from 1 in each phase, and ``global_step`` growing by one phase's number of
iterations after each (non-warm-up) epoch, so both networks see the same ``t`` sequence.
Prediction is ``(net1(x) + net2(x)) / 2`` on the raw networks in eval mode (single-GPU path;
the EMA copies are never evaluated).

Choices and differences from the official code (all deliberate):

* Both networks train on the same split and the same noisy labels (the engine prepares them once;
  the official code builds two loaders that each redraw the split and the noise). Each phase has
  its own data order (the engine seeds each phase differently).
* The EMA copies start as copies of their network (official: a fresh random initialisation). The
  EMA decay ramp makes this irrelevant for ``ema_update: true`` (the first decay is
  ``0.0067 * ema_alpha``, so the copy becomes the network within a few steps); for
  ``ema_update: false`` the first average is ``(init + network) / 2``, and a copy of the
  network's own initial weights is a better ``init`` than unrelated random weights.
* EMA BatchNorm buffers are not averaged: the EMA models always run in train mode (batch
  statistics, as official) and their running statistics come from their own target-producing
  forward passes, starting from the network's initial buffers. :meth:`train` keeps them in train
  mode even when the engine switches to evaluation.
* Mixup draws (``Beta`` weight, permutation) use the global torch RNG (official: numpy for the
  weight), so the engine's RNG checkpoint makes resume exact.
* Warm-up (``method.warmup_epochs``, the official ``--warm``): plain cross-entropy on the
  un-mixed batch, with ``pred_hist`` still updated from the network's own outputs; as the official
  ``_warmup_epoch`` there is no EMA update, the counter does not advance and the LR schedulers are
  not stepped (the schedule and both ramps start with ELR+ training).
* ``method.reweight_labels``: ``auto`` re-weights the mixed labels by the target only when C = 100
  (the official code's hidden CIFAR-100 rule); ``true``/``false`` force it.
* Under DDP, ``pred_hist`` updates are gathered across ranks (identical histories everywhere); the
  EMA models are per-rank copies of the synchronised networks (their BN running statistics may
  differ between ranks, which never matters since they are not evaluated).
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field

from ..config import Schema
from ..losses.classification import upcast
from ..losses.elr import ELRLossConfig
from ..losses.elr_plus import ELRPlusLoss, ema_decay, mix, sample_mixup, update_ema
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, Method, MethodContext, Phase, StepOutput, build_network

NETS = ("net1", "net2")
_OTHER_EMA = {"net1": "ema2", "net2": "ema1"}
_OWN_EMA = {"net1": "ema1", "net2": "ema2"}


def resolve_reweight(option: bool | str, num_classes: int) -> bool:
    """``method.reweight_labels``: ``"auto"`` -> ``num_classes == 100`` (the official rule), else the bool."""
    if option == "auto":
        return num_classes == 100
    return bool(option)


class ELRPlusConfig(Schema):
    """ELR+ (Liu et al., NeurIPS 2020, Sec. 4): two networks, mixup, weight-averaged targets.
    Defaults: the paper's CIFAR-10 settings."""

    name: Literal["elr_plus"] = "elr_plus"
    loss: ELRLossConfig = Field(default_factory=ELRLossConfig)
    mixup_alpha: float = Field(1.0, gt=0.0, description="mixup Beta(alpha, alpha)")
    ema_alpha: float = Field(0.997, ge=0.0, lt=1.0, description="weight-averaging decay")
    ema_update: bool = Field(True, description="ramp the decay up over ema_step iterations")
    ema_step: int = Field(40000, ge=0, description="iterations of the EMA decay ramp")
    coef_step: int = Field(0, ge=0, description="iterations of the regularizer ramp (0: none)")
    warmup_epochs: int = Field(0, ge=0, description="epochs of plain CE first")
    reweight_labels: bool | Literal["auto"] = Field(
        "auto", description="weight the mixed labels by the target (auto: only for 100 classes, as the paper's code)")


@register_method("elr_plus", schema=ELRPlusConfig)
class ELRPlusMethod(Method):
    """ELR+: two networks, mixup, targets from the other network's weight average (module doc).

    Config keys used (``method.*``): ``loss.lam``, ``loss.beta``, ``mixup_alpha``, ``ema_alpha``,
    ``ema_update``, ``ema_step``, ``coef_step``, ``warmup_epochs``, ``reweight_labels``; plus
    ``model``, ``optim``, ``schedule`` (one copy per network) and ``train.epochs``.
    """

    name = "elr_plus"
    feature_model = "net1"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        mc = cfg.method
        self.mixup_alpha = float(mc.mixup_alpha)
        self.ema_alpha, self.ema_update, self.ema_step = float(mc.ema_alpha), bool(mc.ema_update), int(mc.ema_step)
        self.warmup_epochs = int(mc.warmup_epochs)
        self.reweight = resolve_reweight(mc.reweight_labels, ctx.num_classes)
        for k, net_name in enumerate(NETS, start=1):
            net = build_network(ctx)
            ema = copy.deepcopy(net)
            ema.requires_grad_(False)
            self.models[net_name] = net
            self.models[f"ema{k}"] = ema
            opt = build_optimizer(net, cfg.optim)
            self.optimizers[net_name] = opt
            self.schedulers[net_name] = self.make_scheduler(opt)
            self.losses[net_name] = ELRPlusLoss(ctx.num_train, ctx.num_classes, lam=mc.loss.lam, beta=mc.loss.beta,
                                                coef_step=mc.coef_step, reweight_labels=self.reweight,
                                                tables=ctx.tables).to(ctx.device)
        self.global_step = 0
        self._warm = False
        self._phase_name: str | None = None
        self._local_step = 0
        self._phase_steps: dict[str, int] = {}
        self._t = 0

    # ------------------------------------------------------------------ the engine's hooks
    def phases(self, epoch: int) -> list[Phase]:
        """``[net1, net2]``: each network trains a full pass over the batches, in turn."""
        self._warm = epoch < self.warmup_epochs
        self._phase_name, self._local_step, self._phase_steps = None, 0, {}
        return [Phase(n, self.models[n], self.optimizers[n]) for n in NETS]

    def iteration(self) -> int:
        """The ramps' iteration counter ``t = (global_step + local_step) * W``.

        Under DDP each of the W processes takes 1/W of an epoch's iterations, so its own count is
        multiplied by W: ``coef_step`` / ``ema_step`` then mean the iterations of one process with
        the same per-process batch, and the ramps cover the same epochs whatever W is."""
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return (self.global_step + self._local_step) * world

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        """One step of ``phase``'s network; the logits are those on the mixed batch."""
        x, y, index = batch.x, batch.y, batch.index
        if phase.name != self._phase_name:
            self._phase_name, self._local_step = phase.name, 0
        self._local_step += 1
        self._phase_steps[phase.name] = self._local_step
        crit: ELRPlusLoss = self.losses[phase.name]
        if self._warm:
            logits = phase.model(x)
            crit.update_targets(logits, index)
            return StepOutput(F.cross_entropy(upcast(logits), y), logits=logits)
        t = self._t = self.iteration()
        lam, perm = sample_mixup(len(y), self.mixup_alpha, y.device)
        x_mix = mix(x, lam, perm)
        y_mix = mix(F.one_hot(y, self.ctx.num_classes).float(), lam, perm)
        logits = phase.model(x_mix)
        with torch.no_grad():
            ema_logits = self.models[_OTHER_EMA[phase.name]](x)
        q = crit.update_targets(ema_logits, index, lam, perm)
        # the networks see mixed pairs: the other network's EMA outputs on the batch are its per-example view
        return StepOutput(crit(logits, y_mix, q, t), logits=logits, example_logits=ema_logits)

    def after_step(self, phase: Phase, step: int) -> None:
        """Weight-average the network just stepped into its own EMA copy (not during warm-up)."""
        if self._warm:
            return
        decay = ema_decay(self._t, self.ema_alpha, self.ema_update, self.ema_step)
        update_ema(self.models[_OWN_EMA[phase.name]], self.unwrap(phase.name), decay)

    def end_epoch(self, epoch: int) -> None:
        """Advance the counter by one phase's iterations and step both schedulers (not in warm-up)."""
        if epoch < self.warmup_epochs:
            return
        self.global_step += self._phase_steps.get(NETS[0], 0)
        super().end_epoch(epoch)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(net1(x) + net2(x)) / 2``, logits ``[B, C]`` of the raw networks (the engine sets eval mode)."""
        return 0.5 * (self.unwrap("net1")(x) + self.unwrap("net2")(x))

    def train(self, mode: bool = True) -> None:
        """Networks to ``mode``; the EMA copies always stay in train mode (batch statistics)."""
        for name, m in self.models.items():
            m.train(True if name.startswith("ema") else mode)

    def sample_state(self) -> dict[str, torch.Tensor]:
        """``targets`` = the mean of the two target histories (for wrong-label detection, like ELR's
        targets), and ``pred_hist1`` / ``pred_hist2``, all ``[N, C]``."""
        h1, h2 = self.losses["net1"].pred_hist, self.losses["net2"].pred_hist
        return {"targets": 0.5 * (h1 + h2), "pred_hist1": h1, "pred_hist2": h2}

    def extra_state(self) -> dict[str, int]:
        return {"global_step": int(self.global_step)}

    def load_extra_state(self, state: dict) -> None:
        self.global_step = int(state.get("global_step", 0))

    def epoch_progress(self) -> dict:
        """The phase being trained and the steps each phase took so far (the ramps' ``local_step``)."""
        return {"phase_name": self._phase_name, "local_step": int(self._local_step),
                "phase_steps": {k: int(v) for k, v in self._phase_steps.items()}}

    def restore_epoch_progress(self, state: dict) -> None:
        self._phase_name, self._local_step = state.get("phase_name"), int(state.get("local_step", 0))
        self._phase_steps = {k: int(v) for k, v in state.get("phase_steps", {}).items()}
