"""Lookahead weight averaging for any method (Zhang et al., "Lookahead Optimizer: k steps forward,
1 step back", NeurIPS 2019), in the form airbench uses (Jordan 2024, arXiv 2404.00498).

Every ``every`` optimizer steps the slow copy of each trainable model moves toward the trained
("fast") weights, ``slow <- decay_t * slow + (1 - decay_t) * fast``, and the fast weights are set to
it; ``decay_t = decay * progress ** ramp`` with ``progress`` in (0, 1] the share of the run done,
so averaging is weak early and strong at the end. :meth:`Lookahead.finish` updates once more
after the last step, so the final model (and every later evaluation) is the average. Every floating-point entry of a model's state dict is averaged, batch-norm
running statistics included (as airbench). The slow copy is saved in the checkpoint, so a resumed
run continues the same average.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class Lookahead:
    """Slow weights of ``models`` (those with trainable parameters).

    Args:
        models: the method's models by name (only those with a trainable parameter are averaged:
            ELR+'s own EMA copies are left alone).
        every: steps between updates (airbench: 5).
        decay: the largest decay, reached at the end (airbench: ``0.95 ** 5``).
        ramp: exponent of the ramp ``progress ** ramp`` (airbench: 3).
    """

    def __init__(self, models: dict[str, nn.Module], every: int, decay: float, ramp: float) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.decay, self.ramp = int(every), float(decay), float(ramp)
        self.models = {k: m for k, m in models.items() if any(p.requires_grad for p in m.parameters())}
        self.slow = {k: {n: t.detach().clone() for n, t in self._floats(m).items()} for k, m in self.models.items()}

    @staticmethod
    def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: t for n, t in model.state_dict().items() if t.is_floating_point()}

    def decay_at(self, progress: float) -> float:
        """``decay * progress ** ramp`` for ``progress`` clipped to [0, 1]."""
        return self.decay * min(max(float(progress), 0.0), 1.0) ** self.ramp

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """``slow <- decay * slow + (1 - decay) * fast``, then ``fast <- slow``."""
        for name, model in self.models.items():
            slow = self.slow[name]
            for n, fast in self._floats(model).items():
                slow[n].lerp_(fast, 1.0 - decay)
                fast.copy_(slow[n])

    def after_step(self, step: int, progress: float) -> None:
        """Called after optimizer step number ``step`` (counted from 0 over the run) with the
        share of the run done: an update every ``every`` steps."""
        if (step + 1) % self.every == 0:
            self.update(self.decay_at(progress))

    @torch.no_grad()
    def finish(self) -> None:
        """After the last step of the run: one last update at the final decay, so the steps since
        the last update count too (airbench drops them; with fewer steps than ``every`` that would
        throw the whole run away), and the model keeps the average."""
        self.update(self.decay_at(1.0))

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, tensors in state["slow"].items():
            if name in self.slow:
                for n, t in tensors.items():
                    self.slow[name][n].copy_(t)
