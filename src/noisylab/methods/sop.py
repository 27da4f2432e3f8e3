"""SOP: Sparse Over-Parameterization (Liu, Zhu, Qu, You, "Robust Training under Label Noise by
Over-parameterization", ICML 2022, PMLR 162:14153-14172, arXiv 2202.14026; official code
github.com/shengliu66/SOP: ``train.py``, ``trainer/trainer.py``, ``model/loss.py``,
``config_cifar100.json``, read for the method and its settings and re-implemented here).

What SOP is: every training example ``i`` gets its own label-noise estimate ``s_i`` in R^C, written as
a difference of squares ``s_i = u_i (.) u_i (.) y_i - v_i (.) v_i (.) (1 - y_i)`` with a tiny
initialisation (``u, v ~ N(0, 1e-8^2)``). Plain gradient descent on ``u, v`` from there is implicitly
sparse: an ``s_i`` only grows where the network persistently disagrees with the given label, so
the wrong labels are absorbed by ``s`` instead of being memorised by the network. The formulas
(:mod:`noisylab.losses.sop`, :class:`~noisylab.losses.sop.SOPLoss`): with ``U = clamp(u^2 y, 0, 1)``,
``V = clamp(v^2 (1 - y), 0, 1)`` and the corrected prediction ``q = normalise(clamp(softmax(z) + U -
sg(V), eps))``, the loss of a batch is ``CE(q, y) + mean ||onehot(argmax z) + U - V - y||^2
+ ratio_balance * KL(uniform || mean q) + ratio_consistency * KL(sg(softmax z) || softmax z2)``;
the network learns from the CE, balance and consistency terms, ``u`` from CE, balance and (official
code) MSE, ``v`` from the MSE only. SOP+ is SOP with the last two terms on (``z2``: the logits of a
second, strongly augmented view of the same images).

What this method owns: the network ``net`` with the config's optimizer and schedule
(``optimizers["net"]``, first, so :meth:`current_lr` reports it; the only scheduler); the loss
module in ``losses["sop"]`` (``u``, ``v`` ``[N, C]``, checkpointed for an exact resume); and the
plain SGD over ``u`` at ``lr_u`` and ``v`` at ``lr_v`` in ``optimizers["sop"]`` (its state is
checkpointed too). One phase per epoch: the engine back-propagates the loss once and steps the
network's optimizer, then the ``u``/``v`` optimizer, under one AMP gradient scaler.

Hyper-parameters of the official code (``config_cifar100.json``, its only config, and
``train.py``): PreActResNet18; batch 128; SGD lr 0.02, momentum 0.9, weight decay 1e-3 (CIFAR-100);
cosine annealing over 300 epochs to 2e-4; ``u, v ~ N(0, (1e-8)^2)``; their SGD has momentum 0,
weight decay 0 and a constant learning rate (``lr_scheduler_overparametrization = None``);
``lr_u = 1``, ``lr_v = 10``; ``ratio_consistency = 0.9``, ``ratio_balance = 0.1``; the second view is
crop + flip + AutoAugment's CIFAR-10 policy + Cutout 16 (``data_augmentation``). The README: CIFAR-100
with 40% asymmetric noise uses ``lr_u = 0.1``, ``lr_v = 100`` ("for asymmetric noise we use lr for
u equals 0.1 rather than 1 in the paper"). CIFAR-10 (the paper's Table A.1, which the README points
to): ``lr_u = lr_v = 10``, weight decay 5e-4, the rest as above. The SOP+ CIFAR results use
PreActResNet18 (the author in shengliu66/SOP issue #9: Table 2's "ResNet-34" was a mistake). The
defaults of :class:`SOPConfig` are the official config file's; ``configs/sop_cifar10.yaml`` has the
CIFAR-10 values.

Differences from the official code (deliberate):

* The second view is ``data.strong_augment`` (default ``simclr``: resized crop, colour jitter,
  grayscale): noisylab has no AutoAugment / Cutout recipe.
* As the official trainer, both views go through the network in one forward pass (``cat``), so
  BatchNorm sees the 2B images together; the training accuracy and the per-example record of
  training use the first (weak) view's logits, as the official ``torch.chunk``.
* ``u`` is ``[N, C]`` (official ``[N, 1]``): the same, see :mod:`noisylab.losses.sop`.
* The official code steps the ``u``/``v`` optimizer before the network's; both follow the same
  backward pass, so the order changes nothing.
* Under AMP the loss is computed in float32 and the ``u``/``v`` step is skipped with the network's
  when the scaled gradients are not finite (one scaler for both).
* Under DDP (torchrun) the gradients of ``u`` and ``v`` are summed across processes
  (:meth:`SOPMethod.wrap_distributed`); the official code is single-process.
* :meth:`export` writes ``sop_noise.npz``: ``s`` ``[N, C]`` and ``noise_score`` ``[N]`` =
  ``U[i, y_i]``, the learned mass removed from each example's given label (rows the method never
  trained on, the held-out part, stay at their ~1e-16 initial value).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from pydantic import Field

from ..config import Schema
from ..losses.sop import SOPLoss
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, Method, MethodContext, Phase, StepOutput, build_network


class SOPConfig(Schema):
    """SOP's settings (defaults: the official ``config_cifar100.json``; SOP+, both extra terms on)."""

    name: Literal["sop"] = "sop"
    lr_u: float = Field(1.0, ge=0.0, description=(
        "constant SGD learning rate of u (official: 1 for CIFAR-100, 10 for CIFAR-10, 0.1 for asymmetric noise)"))
    lr_v: float = Field(10.0, ge=0.0, description=(
        "constant SGD learning rate of v (official: 10 for CIFAR-10/100, 100 for asymmetric noise)"))
    ratio_consistency: float = Field(0.9, ge=0.0, description=(
        "weight of the KL consistency between a weak and a strong view (SOP+: 0.9; SOP: 0, one view only)"))
    ratio_balance: float = Field(0.1, ge=0.0, description=(
        "weight of the class-balance term KL(uniform || mean corrected prediction) (SOP+: 0.1; SOP: 0)"))
    init_mean: float = Field(0.0, description="u and v start N(init_mean, init_std^2) (official: 0)")
    init_std: float = Field(1e-8, ge=0.0, description=(
        "u and v start N(init_mean, init_std^2) (official: 1e-8; the tiny scale makes the learned noise sparse)"))
    eps: float = Field(1e-4, gt=0.0, lt=1.0, description="clamp floor of the corrected prediction (official: 1e-4)")
    mse_trains_u: bool = Field(True, description=(
        "u also learns from the MSE term (official code since 2022-09); false: the paper's Algorithm 1 "
        "(u from the CE term only)"))


def _sum_across_ranks(grad: torch.Tensor) -> torch.Tensor:
    """Gradient hook of ``u`` and ``v``: the sum of the gradient over the processes of the group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        grad = grad.clone()  # a hook must not change its argument in place; it returns the new gradient
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
    return grad


@register_method("sop", schema=SOPConfig)
class SOPMethod(Method):
    """One network trained through :class:`~noisylab.losses.sop.SOPLoss` (module doc).

    Config keys used (``method.*``): every field of :class:`SOPConfig`; plus ``model``, ``optim``,
    ``schedule`` (the network's) and ``data.strong_augment`` (the second view, when
    ``ratio_consistency > 0``).
    """

    name = "sop"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg, mc = ctx.config, ctx.config.method
        net = build_network(ctx)
        self.models["net"] = net
        opt = build_optimizer(net, cfg.optim)  # the model's parameters only: u and v are not in it
        self.optimizers["net"] = opt  # first: current_lr() reads the first optimizer
        self.schedulers["net"] = self.make_scheduler(opt)  # u and v keep constant rates (official)
        self.criterion = SOPLoss(ctx.num_train, ctx.num_classes, ratio_consistency=mc.ratio_consistency,
                                 ratio_balance=mc.ratio_balance, init_mean=mc.init_mean, init_std=mc.init_std,
                                 eps=mc.eps, mse_trains_u=mc.mse_trains_u).to(ctx.device)
        self.losses["sop"] = self.criterion  # u, v in the checkpoint
        self.optimizers["sop"] = self.criterion.make_optimizer(mc.lr_u, mc.lr_v)  # no scheduler: reschedule skips it
        self.views = ("weak", "strong") if mc.ratio_consistency > 0 else ("weak",)
        self._hooks: list = []

    # ------------------------------------------------------------------ the engine's hooks
    def phases(self, epoch: int) -> list[Phase]:
        return [Phase("net", self.models["net"], self.optimizers["net"], (self.optimizers["sop"],))]

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        """The SOP loss of the batch; with two views both pass through the network together
        (official), the first view's logits ``[B, C]`` are the batch's logits."""
        if len(batch.views) > 1:
            b = len(batch.y)
            both = phase.model(torch.cat(batch.views[:2]))  # [2B, C]
            logits, logits2 = both[:b], both[b:]
        else:
            logits, logits2 = phase.model(batch.x), None
        terms = self.criterion.terms(logits, batch.y, batch.index, logits2)
        return StepOutput(sum(terms.values()), terms, logits)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.unwrap("net")(x)

    def _given_labels(self) -> torch.Tensor | None:
        """``int64 [N]``: the given label of every row of ``u``/``v`` (from the engine's un-augmented
        batches over the training split), None when the context does not carry them."""
        labels = getattr(self.ctx.feature_batches, "labels", None)
        if labels is None or len(labels) != self.ctx.num_train:
            return None
        return torch.as_tensor(labels, dtype=torch.long).to(self.criterion.u.device)

    def sample_state(self) -> dict[str, torch.Tensor]:
        """``{"sop_s": s [N, C]}``, the learned label-noise estimate (``onehot(y) - s`` is the cleaned
        label); empty without the given labels."""
        given = self._given_labels()
        if given is None:
            return {}
        return {"sop_s": self.criterion.noise_estimate(given, torch.arange(len(given), device=given.device))}

    def export(self, out: Path) -> list[Path]:
        """``sop_noise.npz``: ``index`` ``[N]``, ``given_label`` ``[N]``, ``s`` ``[N, C]`` float32 and
        ``noise_score`` ``[N]`` = ``U[i, y_i]`` (in [0, 1]; near 1: SOP has taken the label away)."""
        from ..run_folder import save_arrays

        given = self._given_labels()
        if given is None:
            return []
        s = self.sample_state()["sop_s"].float()
        score = s.gather(1, given[:, None]).squeeze(1).clamp_min(0.0)  # V is 0 at the given label
        path = out / "sop_noise.npz"
        save_arrays(path, index=torch.arange(len(given)).numpy(), given_label=given.cpu().numpy(),
                    s=s.cpu().numpy(), noise_score=score.cpu().numpy())
        return [path]

    # ------------------------------------------------------------------ distributed training
    def wrap_distributed(self, device: torch.device) -> None:
        """Wrap the network in DDP (base class) and sum the gradients of ``u`` and ``v`` across the
        processes.

        Why a sum: DDP averages the network's gradients, as every process computes one for the same
        weights. ``u``/``v`` live in the loss module, outside any DDP wrapper, and row ``i`` gets a
        gradient only on the process whose batch holds example ``i`` (zero on the others): without a
        reduction each process would update only its own rows and the copies would drift apart
        (rank 0 checkpoints and exports its copy, with the other ranks' updates missing). The SUM
        gives every process every row's own gradient, unchanged (what one process with batch
        ``train.batch_size`` computes: ``lr_u``, ``lr_v`` keep their meaning), so all take the same
        step and stay identical; a mean would divide each example's step by the world size. An
        example drawn by two processes in one step counts twice, like an index repeated in one batch.
        The hook sees the (AMP-scaled) gradient before it is accumulated, so an inf on one process
        reaches all and the scaler skips the step everywhere. Cost: one all-reduce of the two dense
        ``[N, C]`` gradients per step (2 x 2 MB for CIFAR-10, 2 x 20 MB for CIFAR-100)."""
        super().wrap_distributed(device)
        if not self._hooks:
            self._hooks = [p.register_hook(_sum_across_ranks) for p in (self.criterion.u, self.criterion.v)]

    def unwrap_distributed(self) -> None:
        """Put the network back (base class) and remove the gradient hooks of ``u`` and ``v``."""
        super().unwrap_distributed()
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
