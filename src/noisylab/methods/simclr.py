"""SimCLR pre-training (Chen et al., ICML 2020) as the first stage of Cheng et al., "Mitigating
Memorization of Noisy Labels via Regularization between Representations" (ICLR 2023).

Re-implemented from the ICLR-2023 repo's ``main.py`` (itself from leftthomas/SimCLR): two strong
(SimCLR) views of each image, the encoder and the projection head on each, NT-Xent (tau 0.5)
between the two projections; no labels are used. The paper's recipe is Adam 1e-3, weight decay
1e-6, batch 512, ResNet-34 (``configs/simclr_cifar10.yaml``).

Monitoring: a weighted kNN classifier (Wu et al., "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", CVPR 2018; k 200, tau 0.5, as leftthomas/SimCLR) on the
L2-normalised encoder features: the memory bank is the training part with its labels, the
queries the held-out part (``data.val_fraction``) — not the test set, on which the official code
selects its checkpoint. ``knn_top1`` selects ``best.pt``.

At the end the run folder gets ``encoder.pt`` (the last epoch's encoder and projection head),
which the other methods load with ``model.encoder_checkpoint=RUN/encoder.pt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import ConfigError, Schema
from ..losses import NTXentLoss
from ..models import MultiViewNet, save_encoder_checkpoint
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, EvalData, Method, MethodContext, Phase, StepOutput, build_network


def weighted_knn_scores(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                        k: int = 200, tau: float = 0.5, chunk: int = 1024) -> torch.Tensor:
    """Class scores ``[Q, C]`` of a weighted kNN vote (Wu et al. 2018).

    ``queries [Q, D]`` and ``bank [N, D]`` are L2-normalised features, ``bank_labels int64 [N]``.
    Each query's k most similar bank rows (cosine similarity s) vote for their label with weight
    ``exp(s / tau)``; the prediction is the argmax of the scores.
    """
    k = min(k, len(bank))
    out = []
    for lo in range(0, len(queries), chunk):
        sim = queries[lo:lo + chunk] @ bank.T  # [q, N]
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / tau).exp()
        votes = F.one_hot(bank_labels[top_idx], num_classes).to(weights.dtype)  # [q, k, C]
        out.append((votes * weights[:, :, None]).sum(dim=1))
    return torch.cat(out) if out else torch.zeros(0, num_classes)


class SimCLRConfig(Schema):
    """SimCLR pre-training (Chen et al., ICML 2020) as in the ICLR-2023 repo's ``main.py``: NT-Xent
    between the projections of two strong views; no labels are used for training. Monitored by a
    weighted kNN classifier on the encoder features (Wu et al., CVPR 2018)."""

    name: Literal["simclr"] = "simclr"
    tau: float = Field(0.5, gt=0.0, description="NT-Xent temperature")
    knn_k: int = Field(200, ge=1, description="neighbours of the kNN monitor")
    knn_tau: float = Field(0.5, gt=0.0, description="temperature of the kNN monitor's weights")


@register_method("simclr", schema=SimCLRConfig)
class SimCLRMethod(Method):
    """SimCLR pre-training: views ``(strong, strong)``, loss NT-Xent, no classifier (module doc)."""

    name = "simclr"
    has_classifier = False
    monitor = "knn_top1"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg, mc = ctx.config, ctx.config.method
        if cfg.data.val_fraction <= 0:
            raise ConfigError("method simclr monitors a weighted kNN classifier on a held-out split: set "
                              "data.val_fraction (e.g. 0.1)")
        self.views = ("strong", "strong")
        net = build_network(ctx, projector=True)
        net.backbone.fc.requires_grad_(False)  # the classifier plays no part in pre-training
        self.models["net"] = MultiViewNet(net)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = build_optimizer(params, cfg.optim)
        self.optimizers["net"] = opt
        self.schedulers["net"] = self.make_scheduler(opt)
        self.criterion = NTXentLoss(tau=mc.tau)
        self.knn_k, self.knn_tau = mc.knn_k, mc.knn_tau

    def phases(self, epoch: int) -> list[Phase]:
        return [Phase("net", self.models["net"], self.optimizers["net"])]

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        (_, z1), (_, z2) = phase.model(batch.views, logits=(False, False), proj=(True, True))
        return StepOutput(self.criterion(z1, z2))

    @torch.no_grad()
    def features(self, batches) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised encoder features ``[n, D]`` and labels of un-augmented batches (eval mode)."""
        net = self.unwrap("net").net
        feats, labels = [], []
        for batch in batches:
            feats.append(F.normalize(net.features(batch.x).float(), dim=1))
            labels.append(batch.y)
        return torch.cat(feats), torch.cat(labels)

    def evaluate(self, data: EvalData) -> dict[str, float]:
        """``knn_top1``: weighted kNN accuracy on the held-out split, bank = the training part."""
        bank, bank_labels = self.features(data.train)
        queries, labels = self.features(data.sets["noisy_val"][0])
        scores = weighted_knn_scores(queries, bank, bank_labels, self.ctx.num_classes, self.knn_k, self.knn_tau)
        return {"knn_top1": float((scores.argmax(dim=1) == labels).float().mean())}

    def export(self, out: Path) -> list[Path]:
        cfg = self.ctx.config
        path = out / "encoder.pt"
        save_encoder_checkpoint(self.unwrap("net").net, path, cfg.model.arch, dict(cfg.model.options),
                                extra={"source": "noisylab simclr", "proj_dim": cfg.model.proj_dim})
        return [path]
