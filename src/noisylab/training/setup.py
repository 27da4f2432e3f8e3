"""Setting up a run: read and check every input, build the method and its batches, restore a
checkpoint, open the run folder (:func:`setup_run`); :class:`Run` is what the parts share."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..averaging import Lookahead
from ..checkpoint import resolve_checkpoint, run_folder_of, seed_everything
from ..config import Config, ConfigError
from ..data import make_eval_batches, make_train_batches
from ..data.transforms import resolve_recipe
from ..data.batching import EvalBatches
from ..data.pipeline import eval_split_names
from ..data.prepare import PreparedData, prepare_data, read_split
from ..data.batching import sample_indices
from ..detect import TrainingDynamics
from ..methods import Method, MethodContext, build_method
from ..methods.base import EvalData
from ..per_example import table_storage
from .outputs import open_run_folder
from .resume import config_changes, finished_epoch_instead, restore_run
from .runtime import _STOP, setup_device
from .state import Run

log = logging.getLogger("noisylab")


def view_recipes_of(method: Method, cfg: Config) -> tuple[str, ...]:
    """The method's view roles as recipe names: ``weak`` -> ``data.augment``, ``strong`` ->
    ``data.strong_augment``."""
    roles = {"weak": cfg.data.augment, "strong": cfg.data.strong_augment}
    unknown = [v for v in method.views if v not in roles]
    if unknown:
        raise ConfigError(f"method {method.name} asks for view '{unknown[0]}' (valid roles: {', '.join(roles)})")
    return tuple(roles[v] for v in method.views)


def setup_run(cfg: Config, resume: str | Path | None = None, run_dir: str | Path | None = None,
              train_idx: np.ndarray | None = None) -> Run:
    """Read and check every input, build the method, restore a checkpoint, create the run folder.

    Args:
        cfg: the validated config.
        resume: a run folder or checkpoint to continue from; the run keeps writing in its folder.
        run_dir: write into this (new or empty) folder instead of ``output_dir/name``.
        train_idx: train on these dataset indices instead of the configured split (the rest of
            the training set is then the held-out part; cross-validation folds).
    """
    _STOP["signal"] = None
    check_filter_available(cfg)
    device, dinfo = setup_device(cfg.device)
    state, changed, ckpt_file = None, [], None
    if resume is not None:
        ckpt_file, state = resolve_checkpoint(resume)
        ckpt_file, state = finished_epoch_instead(ckpt_file, state, cfg, dinfo.world_size)
        run_dir = run_folder_of(ckpt_file)
        changed = config_changes(state["config"], cfg)
        # the run keeps the name and folder it has (config.yaml records what the run used)
        cfg = cfg.model_copy(update={k: state["config"].get(k, getattr(cfg, k)) for k in ("name", "output_dir")})
    seed_everything(cfg.seed)
    data = prepare_data(cfg, Path(run_dir) / "noisy_labels.npz" if state is not None else None)
    if train_idx is None and state is not None and (Path(run_dir) / "split.npz").is_file():
        train_idx = read_split(Path(run_dir) / "split.npz")  # what the run trained on (a CV fold's part)
    if train_idx is not None:
        rest = np.setdiff1d(np.arange(data.bundle.num_train), train_idx)
        data = dataclasses.replace(data, train_idx=np.sort(np.asarray(train_idx)), val_idx=rest)
    bundle = data.bundle
    amp = cfg.train.amp and device.type == "cuda"
    ebs = cfg.train.eval_batch_size
    feature_batches = make_eval_batches(bundle, "train", ebs, device, labels=data.given)
    if cfg.eval.tta != "none" and len(bundle.input_shape) != 3:
        raise ConfigError(f"eval.tta={cfg.eval.tta} needs images; {bundle.name} has inputs of shape "
                          f"{tuple(bundle.input_shape)}: set eval.tta=none")
    # the number of batches per epoch does not depend on the views: count it first, so that the
    # method can build per-step schedules
    batching = dict(indices=data.train_idx, last_batch=cfg.train.last_batch, rank=dinfo.rank,
                    world_size=dinfo.world_size)
    batches_per_epoch = len(make_train_batches(bundle, data.given, cfg.train.batch_size, "cpu", None, **batching))
    if batches_per_epoch == 0:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} with train.last_batch=drop leaves no batch of the "
                          f"{len(data.train_idx)} training examples; lower train.batch_size")
    try:
        tables = table_storage(cfg.train.state_precision, cfg.train.state_storage, bundle.num_train,
                               bundle.num_classes, device, cfg.train.state_dir or cfg.output_dir)
    except ValueError as err:
        raise ConfigError(f"train.state_storage: {err}") from None
    probe = MethodContext(cfg, bundle.num_classes, bundle.num_train, bundle.input_shape, device, batches_per_epoch,
                          feature_batches, given=data.given[data.train_idx], tables=tables,
                          dataset_labels=data.labels.before_noise)
    method = build_method(probe)
    train_batches = make_train_batches(bundle, data.given, cfg.train.batch_size, device, view_recipes_of(method, cfg),
                                       **batching)
    if state is None:
        initialise_from_data(cfg, data, method, device)
    if cfg.train.compile:  # in place: the state_dict keys (and so checkpoints and resume) stay the same
        for model in method.models.values():
            model.compile()
    # every labelled evaluation set: "test", extra splits of file datasets (Clothing1M "val",
    # WebVision "imagenet"), and the noisy validation part of the training set
    eval_data = build_eval_data(cfg, data, device)
    if dinfo.enabled:
        method.wrap_distributed(device)
    lookahead = None
    if cfg.train.lookahead_every:
        lookahead = Lookahead({k: method.unwrap(k) for k in method.models}, cfg.train.lookahead_every,
                              cfg.train.lookahead_decay, cfg.train.lookahead_ramp)
    if method.has_classifier:
        monitor = next((f"{k}_top1" for k in ("noisy_val", "val", "test") if k in eval_data.sets), "train_acc")
    else:
        monitor = method.monitor or "train_loss"
    run = Run(cfg, device, dinfo, data, method, train_batches, eval_data, amp,
              torch.amp.GradScaler("cuda", enabled=amp), best={"monitor": monitor, "value": None, "epoch": -1},
              dynamics=TrainingDynamics(bundle.num_train, bundle.num_classes, device, tables=tables,
                                        alarm_rows=alarm_rows(data.train_idx, cfg.seed)) if method.has_classifier else None,
              lookahead=lookahead, tables=tables)
    if cfg.train.track_memorization and data.truth_known and method.has_classifier:
        if cfg.train.memorization_from == "sample":
            run.memo_idx = sample_indices(data.train_idx, cfg.train.memorization_sample, cfg.seed)
            run.memo_batches = make_eval_batches(bundle, "train", ebs, device, labels=data.given,
                                                 indices=run.memo_idx)
        else:  # the training examples whose latest training-pass prediction the record keeps
            run.memo_idx = np.intersect1d(data.train_idx, run.dynamics.alarm_rows)
    if state is not None:
        restore_run(run, state, changed)
    if dinfo.is_main:
        open_run_folder(run, run_dir, resumed_from=ckpt_file if state is not None else None, changed=changed,
                        views=[resolve_recipe(bundle, r) for r in view_recipes_of(method, cfg)])
    return run


def alarm_rows(train_idx: np.ndarray, seed: int) -> np.ndarray | None:
    """The training examples the memorization alarm reads: all of them up to ``ALARM_SAMPLE``,
    else a seeded draw of that many (None: all N rows of the dataset)."""
    from ..detect.dynamics import ALARM_SAMPLE

    return None if len(train_idx) <= ALARM_SAMPLE else sample_indices(train_idx, ALARM_SAMPLE, seed)


def initialise_from_data(cfg: Config, data: PreparedData, method: Method, device: torch.device) -> None:
    """The method's data-dependent initialisation (:meth:`Method.init_from_data`) on
    ``train.init_samples`` un-augmented training images (a seeded draw), once, for a new run."""
    def images() -> torch.Tensor:
        chosen = sample_indices(data.train_idx, cfg.train.init_samples, cfg.seed)
        return torch.cat([b.x for b in make_eval_batches(data.bundle, "train", cfg.train.eval_batch_size, device,
                                                          indices=chosen)])
    done = method.init_from_data(images)
    if done:
        log.info("initialised %s from %d training images", ", ".join(done), min(cfg.train.init_samples,
                                                                                 len(data.train_idx)))


def check_filter_available(cfg: Config) -> None:
    """Refuse before training, not after it, a ``detect.filter_by`` whose package is missing."""
    from ..detect.scores import NEEDS_CLEANLAB, import_cleanlab_filter

    if cfg.detect.filter_by in NEEDS_CLEANLAB:
        try:
            import_cleanlab_filter()
        except ImportError as err:
            raise ConfigError(f"detect.filter_by={cfg.detect.filter_by}: {err}") from None


def build_eval_data(cfg: Config, data: PreparedData, device: torch.device) -> EvalData:
    """Every labelled evaluation set — ``test``, the extra splits of file datasets (Clothing1M
    ``val``, WebVision ``imagenet``), the held-out part of the training set (``noisy_val``, with
    its given labels) — and the un-augmented training part."""
    bundle, ebs = data.bundle, cfg.train.eval_batch_size
    sets: dict[str, tuple[EvalBatches, np.ndarray]] = {}
    for split in eval_split_names(bundle):
        if split != "train":
            batches = make_eval_batches(bundle, split, ebs, device)
            sets[split] = (batches, np.asarray(batches.labels))
    if len(data.val_idx):
        sets["noisy_val"] = (make_eval_batches(bundle, "train", ebs, device, labels=data.given, indices=data.val_idx),
                             data.given[data.val_idx])
    return EvalData(make_eval_batches(bundle, "train", ebs, device, labels=data.given, indices=data.train_idx), sets)
