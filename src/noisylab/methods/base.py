"""What a training method is: the part that differs between papers.

A method owns its model(s), optimizer(s), schedulers and per-example state, and says what one
batch costs. The engine (``noisylab.training``) owns everything else: the loop, evaluation,
checkpoints, logging and devices. A method trains in one or more *phases* per epoch (ELR+
trains its two networks in turn); each phase has the model and optimizer the engine steps.

The contract, in the order the engine uses it:

* ``views``: the views of each training example the method needs, by role: ``"weak"`` (the recipe
  ``data.augment``, e.g. crop + flip) and ``"strong"`` (``data.strong_augment``, SimCLR's); the
  batch carries one tensor per entry, in order (``()`` for none: labels and indices only);
* :meth:`phases` then, per batch, :meth:`before_step`, :meth:`batch_loss` -> :class:`StepOutput` (the loss to minimise,
  its named terms for the logs, the logits for the training accuracy when there is a classifier),
  then :meth:`after_step`; :meth:`end_epoch` after the last phase;
* ``has_classifier``: False for methods without one (SimCLR pre-training): the engine then skips
  test accuracy, memorization tracking and label-issue detection, and selects ``best.pt`` by
  ``monitor`` from :meth:`evaluate`;
* :meth:`evaluate`: extra metrics each epoch (SimCLR: a weighted kNN accuracy);
* :meth:`predict`: logits of the final predictor; :meth:`sample_state`: per-example arrays worth
  exporting; :meth:`export`: files of its own in the run folder at the end (an encoder checkpoint).
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..config import Config, ConfigError
from ..data.batching import Batch
from ..losses.registry import build_loss
from ..per_example import TableStorage


@dataclass
class Phase:
    """One pass over the training batches: for each batch the engine back-propagates the loss once
    and steps ``optimizer`` and then each of ``more_optimizers`` (SOP's per-example u and v), all
    under one AMP gradient scaler (each optimizer's scheduler, if any, is the method's own)."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    more_optimizers: tuple[torch.optim.Optimizer, ...] = ()

    @property
    def optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        return (self.optimizer, *self.more_optimizers)


@dataclass
class StepOutput:
    """What one training step returns.

    Attributes:
        loss: the scalar the optimizer minimises.
        terms: named parts of the loss (``{"ce": ..., "infonce": ..., "rkd_dis": ...}``), scalars;
            the engine logs their epoch means as ``train_<name>`` (detached, one device sync per
            epoch).
        logits: ``[B, C]`` outputs on the labelled view, for the training accuracy and the
            per-example record of training (:class:`noisylab.detect.TrainingDynamics`); None
            without a classifier.
        example_logits: ``[B, C]`` outputs for the batch's own examples when ``logits`` are not
            (ELR+ trains on mixed-up pairs); None when ``logits`` are.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    example_logits: torch.Tensor | None = None

    @property
    def per_example_logits(self) -> torch.Tensor | None:
        """The outputs that belong to the batch's examples one by one."""
        return self.logits if self.example_logits is None else self.example_logits


@dataclass
class MethodContext:
    """What a method needs to know about the run to build itself."""

    config: Config
    num_classes: int
    num_train: int  # N: size of the indexable training set (per-example state has N rows)
    input_shape: tuple[int, ...]
    device: torch.device
    batches_per_epoch: int
    feature_batches: Any = None  # un-augmented batches (x, given y, index) over every training example
    given: np.ndarray | None = None  # int64 [n]: the given labels of the examples trained on
    tables: TableStorage = field(default_factory=TableStorage)  # how [N, C] per-example tables are kept
    dataset_labels: np.ndarray | None = None  # int64 [N]: every training example's label before any noise

    def build_loss(self, section) -> nn.Module:
        """The loss of config section ``section`` (``method.loss``, or a method's own loss section)
        for this run, on its device: the one place a method's loss learns the run's size, labels
        and table storage (:func:`noisylab.losses.registry.build_loss`)."""
        return build_loss(section, self.num_train, self.num_classes, self.given, tables=self.tables,
                          dataset_labels=self.dataset_labels).to(self.device)


@dataclass
class EvalData:
    """What :meth:`Method.evaluate` may look at: un-augmented batches ``(x, y, index)``.

    Attributes:
        train: the training part (the examples the method trains on) with their given labels.
        sets: the labelled evaluation sets by name (``test``, ``noisy_val`` — the held-out part of
            the training set with its given labels —, Clothing1M ``val``...): ``(batches, labels)``.
    """

    train: Any
    sets: dict[str, tuple[Any, Any]]


class Method(ABC):
    """Base class of training methods. Subclasses set ``self.models``/``self.optimizers``/
    ``self.schedulers`` (dicts by name) and implement :meth:`phases`, :meth:`batch_loss` and,
    with a classifier, :meth:`predict` (module doc: the contract)."""

    name = "method"
    has_classifier = True
    monitor: str | None = None  # the metric of evaluate() that selects best.pt (None: the engine's default)
    feature_model = "net"  # the model whose encoder :meth:`features` uses
    find_unused_parameters = False  # DDP: some parameters get no gradient in some steps (warm-ups)

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.views: tuple[str, ...] = ("weak",)
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.losses: dict[str, nn.Module] = {}  # loss modules holding per-example state

    # -- what differs between methods
    @abstractmethod
    def phases(self, epoch: int) -> list[Phase]:
        """The phases of epoch ``epoch`` in order (one for single-network methods)."""

    @abstractmethod
    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        """The loss of one training batch (see :class:`StepOutput`)."""

    def before_step(self, phase: Phase, batch: Batch, step: int) -> None:
        """Hook before each batch's loss (schedules that change per step, such as a forget rate)."""

    def after_step(self, phase: Phase, step: int) -> None:
        """Hook after each optimizer step (EMA updates)."""

    def init_from_data(self, images: Callable[[], torch.Tensor]) -> list[str]:
        """Data-dependent initialisation, run once by the engine before the first epoch of a new run
        (never on resume: what it sets lives in the models' state dicts, so the checkpoint keeps it).

        ``images()`` gives float ``[n, ...]`` un-augmented training inputs as the models see them
        (normalised; ``train.init_samples`` of them, a seeded draw; loaded on the first call only).
        By default every sub-module of every model that has an ``init_from_data(images)`` method
        (the patch-whitening layer of ``fastnet``) is fitted to them. Returns the names of the
        models initialised."""
        done, loaded = [], []
        for name in self.models:
            for module in self.unwrap(name).modules():
                hook = getattr(module, "init_from_data", None)
                if callable(hook):
                    if not loaded:
                        loaded.append(images())
                    hook(loaded[0])
                    if name not in done:
                        done.append(name)
        return done

    def start_epoch(self, epoch: int) -> None:
        """Hook before each epoch's first phase. By default calls ``start_epoch(epoch)`` on every
        sub-module of every model that has one (``fastnet`` freezes its whitening bias after
        ``whiten_bias_epochs``); it must depend only on ``epoch`` so that a resumed run agrees."""
        for name in self.models:
            for module in self.unwrap(name).modules():
                hook = getattr(module, "start_epoch", None)
                if callable(hook):
                    hook(epoch)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """The config's learning-rate schedule for ``optimizer`` over the run's epochs (a per-step
        schedule such as ``triangle`` counts ``ctx.batches_per_epoch`` steps per epoch)."""
        from ..optim import build_scheduler

        cfg = self.ctx.config
        return build_scheduler(optimizer, cfg.schedule, cfg.train.epochs, self.ctx.batches_per_epoch)

    def step_schedulers(self, phase: Phase) -> None:
        """After each optimizer step of ``phase``: advance the per-step schedulers (``per_step``)
        of the phase's optimizers. Per-epoch schedulers advance in :meth:`end_epoch`."""
        for name, sched in self.schedulers.items():
            if getattr(sched, "per_step", False) and sched.optimizer in phase.optimizers:
                sched.step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of the method's final predictor (the engine sets eval mode and no_grad)."""
        raise ConfigError(f"method {self.name} has no classifier to predict with")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Representation ``[B, D]`` of the final predictor's encoder (for the kNN detector; the
        engine sets eval mode and no_grad): the ``forward_features`` of the model ``feature_model``,
        looked up through wrappers (``.net``, ``.backbone``)."""
        module = self.unwrap(self.feature_model)
        while not hasattr(module, "forward_features"):
            inner = next((m for m in (getattr(module, a, None) for a in ("net", "backbone")) if isinstance(m, nn.Module)), None)
            if inner is None:
                raise ConfigError(f"method {self.name}: model '{self.feature_model}' has no forward_features")
            module = inner
        f = module.forward_features(x)
        return f.flatten(2).mean(dim=2) if f.dim() > 2 else f  # a spatial map: average-pool it

    def evaluate(self, data: EvalData) -> dict[str, float]:
        """Extra metrics of the epoch (the engine sets eval mode and no_grad); none by default."""
        return {}

    def sample_state(self) -> dict[str, torch.Tensor]:
        """Per-example arrays worth exporting (``[N, C]``), e.g. ELR targets."""
        return {}

    def export(self, out: Path) -> list[Path]:
        """Write the method's own files into the run folder ``out`` at the end; returns them."""
        return []

    def on_memorization_alarm(self) -> list[str]:
        """Called once when the engine's memorization alarm sounds (and again when a run resumes
        after it): losses that wait for it (ELR with ``start: alarm``) switch on. Returns their names."""
        started = []
        for name, loss in self.losses.items():
            if getattr(loss, "waits_for_alarm", False):
                loss.start()
                started.append(name)
        return started

    # -- shared mechanics
    def end_epoch(self, epoch: int) -> None:
        """Advance the per-epoch schedulers (per-step ones advance in :meth:`step_schedulers`)."""
        for sched in self.schedulers.values():
            if not getattr(sched, "per_step", False):
                with warnings.catch_warnings():
                    # a run resumed inside an epoch after the phase of this optimizer has not
                    # stepped it in this process; the schedule's count is right all the same
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                    sched.step()

    def current_lr(self) -> float:
        opt = next(iter(self.optimizers.values()))  # the first optimizer's (the network's)
        return float(opt.param_groups[0]["lr"])

    def train(self, mode: bool = True) -> None:
        for m in self.models.values():
            m.train(mode)

    def to(self, device: torch.device) -> "Method":
        for m in list(self.models.values()) + list(self.losses.values()):
            m.to(device)
        return self

    def unwrap(self, name: str) -> nn.Module:
        """The model without its DDP wrapper (for evaluation and saving)."""
        m = self.models[name]
        return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m

    def wrap_distributed(self, device: torch.device) -> None:
        """Wrap every trainable model in DistributedDataParallel (called by the engine under torchrun)."""
        ids = [device.index] if device.type == "cuda" else None
        for name, m in list(self.models.items()):
            if any(p.requires_grad for p in m.parameters()):
                if any(isinstance(b, nn.modules.batchnorm._BatchNorm) for b in m.modules()):
                    m = nn.SyncBatchNorm.convert_sync_batchnorm(m) if device.type == "cuda" else m
                # a model that freezes parameters mid-run (fastnet's whitening bias) leaves DDP's
                # reducer waiting for their gradients unless it looks for unused parameters
                unused = self.find_unused_parameters or bool(getattr(m, "freezes_parameters_mid_run", False))
                self.models[name] = nn.parallel.DistributedDataParallel(
                    m, device_ids=ids, find_unused_parameters=unused)
        # optimizers keep referencing the same parameter tensors, so they need no rebuild

    def unwrap_distributed(self) -> None:
        """Put back each model that :meth:`wrap_distributed` wrapped (the end of a torchrun run).

        A wrapper's reducer holds the process group, which would otherwise outlive
        ``destroy_process_group`` for as long as the method does (in a caller that keeps the run, up
        to interpreter shutdown, where tearing down gloo's threads can abort the process:
        pytorch/pytorch#179291)."""
        for name in list(self.models):
            self.models[name] = self.unwrap(name)

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {k: self.unwrap(k).state_dict() for k in self.models},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "losses": {k: l.state_dict() for k, l in self.losses.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's ``method`` state; one :class:`ConfigError` line when it was made
        by another method, architecture or number of classes."""
        try:
            for k in self.models:
                self.unwrap(k).load_state_dict(state["models"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(state["schedulers"][k])
            for k, l in self.losses.items():
                l.load_state_dict(state["losses"][k])
        except KeyError as err:
            raise ConfigError(f"the checkpoint has no '{err.args[0]}' state: it was written by another method than "
                              f"{self.name}; resume it with its own config (omit -c)") from None
        except (RuntimeError, ValueError) as err:
            first = " ".join(str(err).split())[:200]
            raise ConfigError(f"the checkpoint does not fit this {self.name} model (another architecture or number "
                              f"of classes?): {first}") from None
        self.load_extra_state(state.get("extra", {}))

    def reschedule(self, optim_cfg: Any, schedule_cfg: Any, epochs: int) -> None:
        """Apply a new learning rate / schedule / number of epochs to a resumed run: every
        optimizer restarts from ``optim_cfg.lr`` and its scheduler is rebuilt and advanced by the
        steps the old one had taken, so the new schedule holds from the next epoch on. Groups keep
        their ratio to the first group (the BatchNorm biases' ``optim.norm_bias_lr_scale``)."""

        from ..optim import build_scheduler

        for name, old in list(self.schedulers.items()):
            opt = self.optimizers[name]
            first = float(opt.param_groups[0]["initial_lr"])
            for group in opt.param_groups:
                ratio = float(group["initial_lr"]) / first if first else 1.0
                group["lr"] = group["initial_lr"] = float(optim_cfg.lr) * ratio
            new = build_scheduler(opt, schedule_cfg, epochs, self.ctx.batches_per_epoch)
            with warnings.catch_warnings():  # stepping before optimizer.step() is the point here
                warnings.simplefilter("ignore")
                for _ in range(int(old.last_epoch)):
                    new.step()
            self.schedulers[name] = new

    def extra_state(self) -> dict[str, Any]:
        """Anything else a subclass must checkpoint (counters); tensors, numbers, lists, dicts only."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def epoch_progress(self) -> dict[str, Any]:
        """What the method counts within an epoch that :meth:`phases` resets (numbers, strings,
        lists, dicts): saved when a run stops in the middle of an epoch, and handed back to
        :meth:`restore_epoch_progress` after :meth:`phases` when it resumes there."""
        return {}

    def restore_epoch_progress(self, state: dict[str, Any]) -> None:
        pass


def build_network(ctx: MethodContext, projector: bool = False) -> nn.Module:
    """The registry model ``model.arch`` for the run, on the device: a
    :class:`~noisylab.models.ContrastiveNet` (encoder + classifier + projection head) when
    ``projector``, else the plain classifier. With ``model.encoder_checkpoint`` the encoder (and
    the projection head, when there is one and it fits) start from that checkpoint."""
    import logging

    from ..models import ContrastiveNet, create_model, load_encoder_checkpoint

    mc = ctx.config.model
    backbone = create_model(mc.arch, ctx.num_classes, ctx.input_shape, **mc.options)
    net = ContrastiveNet(backbone, mc.proj_dim, mc.proj_hidden) if projector or mc.encoder_checkpoint else backbone
    if mc.encoder_checkpoint:
        info = load_encoder_checkpoint(net, mc.encoder_checkpoint, mc.arch)
        log = logging.getLogger("noisylab")
        log.info("encoder initialised from %s (%s layout)", mc.encoder_checkpoint, info["layout"])
        if projector and not info["projector"]:
            log.warning("the projection head starts from random weights: %s", info.get("projector_skipped"))
    return (net if projector else backbone).to(ctx.device)


def supervised_step(criterion: nn.Module, loss_name: str, logits: torch.Tensor, batch: Batch) -> StepOutput:
    """The :class:`StepOutput` of a classification loss on ``logits`` of the batch's labels
    (terms only when the loss has several, like ELR's ``ce`` and ``elr``)."""
    from ..losses.registry import loss_terms

    terms = loss_terms(criterion, loss_name, logits, batch.y, batch.index)
    return StepOutput(sum(terms.values()), terms if len(terms) > 1 else {}, logits)


def loss_state(criterion: nn.Module) -> dict[str, torch.Tensor]:
    """``{"targets": [N, C]}`` for a loss with per-example targets (ELR), else ``{}``."""
    targets = getattr(criterion, "targets", None)
    return {} if targets is None else {"targets": targets}
