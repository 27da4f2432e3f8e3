"""The one training loop every method plugs into.

dataset -> noise -> input pipeline -> method -> **engine** -> outputs. The engine owns the
loop, evaluation, memorization tracking, checkpoints (atomic, resumable to the same numbers),
logging (CSV, TensorBoard when installed, a progress bar), devices, AMP and DDP under torchrun;
:mod:`noisylab.run_folder` lists the files a run writes.

:func:`train` is four parts a caller can also drive itself (cross-validation folds do):
:func:`setup_run` (read and check the inputs, build the method, resume, create the folder), then
per epoch :func:`fit_epoch` + :func:`evaluate` + :func:`write_epoch`, and :func:`finish_run`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import (
    OutputError,
    atomic_write,
    capture_rng,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng,
    run_folder_of,
    save_checkpoint,
    seed_everything,
)
from .config import Config, ConfigError, build_config, save_config
from .data import DataBundle, load_dataset, make_eval_batches, make_train_batches
from .data.augment import resolve_recipe
from .data.pipeline import AnyEvalBatches, eval_split_names, example_paths
from .detect import (DetectorUnavailable, Evidence, TrainingDynamics, detect_label_issues, detection_metrics, knn_vote,
                     noise_estimates, write_label_issues_csv)
from .detect.io import evidence_arrays
from .methods import Method, MethodContext, build_method
from .methods.base import Batch, EvalData
from .noise import DAMAGED_NPZ_ERRORS, NoiseError, NoisyLabels, down_sample, make_noisy_labels, split_per_class
from .report.memorization import MEMO_COLUMNS, memorization_fractions
from .averaging import Lookahead
from .per_example import state_dtype
from .tta import tta_logits
from .run_folder import (
    attach_file_log,
    detach_file_log,
    epoch_log_line,
    ensure_dir,
    new_run_dir,
    open_tensorboard,
    save_arrays,
    write_csv,
    write_json,
)

log = logging.getLogger("noisylab")

EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says where and what to change."""


class TrainingStopped(Exception):
    """A stop was requested (SIGTERM / SIGINT); the last finished epoch's checkpoint is on disk."""


_STOP: dict[str, str | None] = {"signal": None}


def request_stop(reason: str) -> None:
    """Ask the running training to stop after its current step (signal handlers call this)."""
    _STOP["signal"] = reason


# ----------------------------------------------------------------------------- resuming
# Config keys a resumed run may change (a prefix covers its sub-keys). Anything else — the data,
# the noise, the model, the method, the seed — would make the checkpoint mean something else.
RESUMABLE_KEYS = ("train.epochs", "optim.lr", "schedule", "train.progress", "train.log_every", "train.tensorboard",
                  "train.eval_batch_size", "train.skip_nonfinite", "device", "detect")
RESCHEDULE_KEYS = ("train.epochs", "optim.lr", "schedule")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(stored: dict[str, Any], cfg: Config) -> list[str]:
    """The keys of ``cfg`` that differ from the checkpoint's config; refuses (one line) a change
    of a key outside :data:`RESUMABLE_KEYS`."""
    try:  # through today's schema: settings added since the run started read as their defaults
        stored = build_config(dict(stored)).to_dict()
    except ConfigError:
        pass
    old, new = _flatten(stored), _flatten(cfg.to_dict())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>")
                     and k not in ("name", "output_dir"))  # the run folder is given: these only name it
    for key in changed:
        if not any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS):
            raise ConfigError(f"'{key}' cannot change when resuming (the run used {old.get(key, '<unset>')!r}, "
                              f"now {new.get(key, '<unset>')!r}): only {', '.join(RESUMABLE_KEYS)} may; "
                              "start a new run for anything else")
    return changed


# ----------------------------------------------------------------------------- devices
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_device(name: str) -> tuple[torch.device, DistInfo]:
    """Resolve ``device`` and, when started by ``torchrun`` (WORLD_SIZE > 1), join the process group.

    Under torchrun each process uses ``cuda:LOCAL_RANK`` (NCCL) on GPU machines, else the CPU (gloo).
    """
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    want_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available here (use device=cpu)")
    if info.enabled:
        if want_cuda:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        return device, info
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), info
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available here (use device=cpu)")
    return torch.device(name), info


def epoch_seed(seed: int, epoch: int, phase: int) -> int:
    """Seed of the data order and augmentation of one phase of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, phase]).generate_state(1, dtype=np.uint64)[0] % 2**62)


# ----------------------------------------------------------------------------- data + noise
@dataclass
class PreparedData:
    """The dataset, the labels the model will see, and the split."""

    bundle: DataBundle
    labels: NoisyLabels
    train_idx: np.ndarray  # indices of training examples (the rest of the train split is validation)
    val_idx: np.ndarray  # possibly empty
    truth_known: bool  # whether true labels exist for memorization tracking and detection metrics

    @property
    def given(self) -> np.ndarray:
        return self.labels.noisy


def subset_bundle(bundle: DataBundle, train_size: int | None, test_size: int | None, seed: int) -> DataBundle:
    """A smaller copy of an in-memory bundle: ``train_size`` training examples drawn per class in
    proportion to the class sizes (seeded, kept in dataset order), the first ``test_size`` test examples."""
    if not torch.is_tensor(bundle.train_x):
        raise ConfigError(f"data.train_size/test_size need an in-memory dataset; {bundle.name} reads files")
    changes: dict[str, Any] = {}
    n = bundle.num_train
    if train_size is not None and train_size < bundle.num_classes:
        raise ConfigError(f"data.train_size {train_size} is smaller than the {bundle.num_classes} classes of "
                          f"{bundle.name}: every class needs at least one example; use at least {bundle.num_classes}")
    if train_size is not None and train_size < n:
        rng = np.random.default_rng([seed, 7])
        keep = []
        classes, counts = np.unique(bundle.train_labels, return_counts=True)
        quota = np.floor(counts * train_size / n).astype(int)
        quota[np.argsort(-(counts * train_size / n - quota))[: train_size - quota.sum()]] += 1  # largest remainders
        for c, q in zip(classes, quota):
            members = np.flatnonzero(bundle.train_labels == c)
            keep.append(rng.choice(members, size=q, replace=False))
        idx = np.sort(np.concatenate(keep))
        changes.update(train_x=bundle.train_x[torch.as_tensor(idx)], train_labels=bundle.train_labels[idx],
                       extra={k: (v[idx] if isinstance(v, np.ndarray) and len(v) == n else v)
                              for k, v in bundle.extra.items()})
    if test_size is not None and bundle.test_x is not None and test_size < len(bundle.test_labels):
        changes.update(test_x=bundle.test_x[:test_size], test_labels=bundle.test_labels[:test_size])
    return dataclasses.replace(bundle, **changes) if changes else bundle


def prepare_data(cfg: Config, labels_file: str | Path | None = None) -> PreparedData:
    """Load the dataset, make or load the noisy labels, split off the noisy validation set."""
    bundle = load_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.options)
    if cfg.data.train_size is not None and cfg.noise.kind == "human" and labels_file is None and cfg.noise.file is None:
        raise ConfigError("data.train_size cannot be combined with noise.kind=human: the human labels cover the "
                          "full training set in its original order")
    if cfg.data.train_size is not None or cfg.data.test_size is not None:
        bundle = subset_bundle(bundle, cfg.data.train_size, cfg.data.test_size, cfg.seed)
    n, c = bundle.num_train, bundle.num_classes
    file = labels_file or cfg.noise.file
    if file is not None:
        labels = NoisyLabels.load(file)
        if len(labels.noisy) != n:
            raise NoiseError(f"label file '{file}' has {len(labels.noisy)} labels but {cfg.data.dataset} has {n} "
                             "training examples (was it made for another dataset?)")
        if labels.noisy.min() < 0 or labels.noisy.max() >= c:
            raise NoiseError(f"label file '{file}' has labels outside [0, {c})")
    else:
        options = dict(cfg.noise.options)
        if cfg.noise.kind == "instance":
            options.setdefault("inputs", bundle.train_x.numpy())
        if options.get("superclass") == "coarse" and "coarse_labels" in bundle.extra:
            options.setdefault("coarse_labels", bundle.extra["coarse_labels"])
        seed = cfg.seed if cfg.noise.seed is None else cfg.noise.seed
        # the rate means nothing for these kinds (the matrix or file sets the noise level)
        rate = None if cfg.noise.kind in ("none", "matrix", "human") else cfg.noise.rate
        labels = make_noisy_labels(bundle.train_labels, cfg.noise.kind, rate, c, seed, **options)
    truth_known = bundle.labels_are_clean
    if cfg.data.val_fraction > 0:
        # the ELR protocol: split per (true) class, before noise, noisy labels on both parts
        split_on = bundle.train_labels if truth_known else labels.noisy
        train_idx, val_idx = split_per_class(split_on, cfg.data.val_fraction, cfg.seed)
    else:
        train_idx, val_idx = np.arange(n), np.zeros(0, dtype=np.int64)
    train_idx = np.sort(train_idx)
    if cfg.data.down_sample:  # after the noise, on the training part: balanced in the given labels
        train_idx = train_idx[down_sample(labels.noisy[train_idx], cfg.seed, c)]
    return PreparedData(bundle, labels, train_idx, np.sort(val_idx), truth_known)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_probs(method: Method, batches: AnyEvalBatches, amp: bool, tta: str = "none") -> np.ndarray:
    """Softmax outputs ``float32 [len(batches.indices), C]`` of the method's predictor, eval mode,
    with test-time augmentation ``tta`` (:mod:`noisylab.tta`)."""
    method.train(False)
    out = []
    for x, _, _ in batches:
        with _autocast(x.device, amp):
            out.append(torch.softmax(tta_logits(method.predict, x, tta), dim=1))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


# ----------------------------------------------------------------------------- a run
@dataclass
class RunResult:
    run_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    memorization: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """Everything one training run holds between its parts (:func:`setup_run`, :func:`fit_epoch`,
    :func:`evaluate`, :func:`write_epoch`, :func:`finish_run`)."""

    cfg: Config
    device: torch.device
    dist: DistInfo
    data: PreparedData
    method: Method
    train_batches: Any  # AnyTrainBatches, yields the method's views
    eval_data: EvalData  # un-augmented training part + labelled evaluation sets
    amp: bool
    scaler: Any
    dynamics: TrainingDynamics | None = None  # per-example record of training (methods with a classifier)
    lookahead: Lookahead | None = None  # weight averaging (train.lookahead_every)
    memo_idx: np.ndarray | None = None  # the training examples of the memorization curves
    memo_batches: Any = None  # their un-augmented batches
    out: Path | None = None  # the run folder (rank 0 only)
    writer: Any = None  # TensorBoard
    history: list[dict[str, Any]] = field(default_factory=list)
    memorization: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    step: int = 0
    t_start: float = field(default_factory=time.time)


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
    table_dtype = state_dtype(cfg.train.state_precision, bundle.num_train, bundle.num_classes)
    probe = MethodContext(cfg, bundle.num_classes, bundle.num_train, bundle.input_shape, device, batches_per_epoch,
                          feature_batches, given=data.given[data.train_idx], state_dtype=table_dtype)
    method = build_method(probe)
    train_batches = make_train_batches(bundle, data.given, cfg.train.batch_size, device, view_recipes_of(method, cfg),
                                       **batching)
    if state is None:
        initialise_from_data(cfg, data, method, device)
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
              dynamics=TrainingDynamics(bundle.num_train, bundle.num_classes, device, dtype=table_dtype,
                                        alarm_rows=alarm_rows(data.train_idx, cfg.seed)) if method.has_classifier else None,
              lookahead=lookahead)
    if cfg.train.track_memorization and data.truth_known and method.has_classifier:
        run.memo_idx = sample_indices(data.train_idx, cfg.train.memorization_sample, cfg.seed)
        run.memo_batches = make_eval_batches(bundle, "train", ebs, device, labels=data.given, indices=run.memo_idx)
    if state is not None:
        restore_run(run, state, changed)
    if dinfo.is_main:
        open_run_folder(run, run_dir, resumed_from=ckpt_file if state is not None else None, changed=changed)
    return run


def alarm_rows(train_idx: np.ndarray, seed: int) -> np.ndarray | None:
    """The training examples the memorization alarm reads: all of them up to ``ALARM_SAMPLE``,
    else a seeded draw of that many (None: all N rows of the dataset)."""
    from .detect.dynamics import ALARM_SAMPLE

    return None if len(train_idx) <= ALARM_SAMPLE else sample_indices(train_idx, ALARM_SAMPLE, seed)


def sample_indices(indices: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed seeded draw of ``size`` of ``indices``, sorted (all of them when ``size`` is 0 or
    not smaller); its own generator, so the run's random streams are untouched."""
    indices = np.asarray(indices, dtype=np.int64)
    if size == 0 or size >= len(indices):
        return indices
    return np.sort(np.random.default_rng([seed, 0x6D656D6F]).choice(indices, size, replace=False))


def initialise_from_data(cfg: Config, data: PreparedData, method: Method, device: torch.device) -> None:
    """The method's data-dependent initialisation (:meth:`Method.init_from_data`) on
    ``train.init_samples`` un-augmented training images (a seeded draw), once, for a new run."""
    def images() -> torch.Tensor:
        chosen = sample_indices(data.train_idx, cfg.train.init_samples, cfg.seed)
        return torch.cat([x for x, _, _ in make_eval_batches(data.bundle, "train", cfg.train.eval_batch_size, device,
                                                              indices=chosen)])
    done = method.init_from_data(images)
    if done:
        log.info("initialised %s from %d training images", ", ".join(done), min(cfg.train.init_samples,
                                                                                 len(data.train_idx)))


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a finished epoch's checkpoint (a temporary file does not count)."""
    return any((folder / "checkpoints" / name).is_file() for name in ("last.pt", "prev.pt", "best.pt"))


def read_split(path: Path) -> np.ndarray:
    """The training indices of a run's ``split.npz``; one line when the file is damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["train_idx"], dtype=np.int64)
    except (KeyError, ValueError, *DAMAGED_NPZ_ERRORS):
        raise ConfigError(f"'{path}' is damaged; restore it or start the run again") from None


def check_filter_available(cfg: Config) -> None:
    """Refuse before training, not after it, a ``detect.filter_by`` whose package is missing."""
    from .detect.scores import NEEDS_CLEANLAB, import_cleanlab_filter

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
    sets: dict[str, tuple[AnyEvalBatches, np.ndarray]] = {}
    for split in eval_split_names(bundle):
        if split != "train":
            batches = make_eval_batches(bundle, split, ebs, device)
            sets[split] = (batches, np.asarray(batches.labels))
    if len(data.val_idx):
        sets["noisy_val"] = (make_eval_batches(bundle, "train", ebs, device, labels=data.given, indices=data.val_idx),
                             data.given[data.val_idx])
    return EvalData(make_eval_batches(bundle, "train", ebs, device, labels=data.given, indices=data.train_idx), sets)


def restore_run(run: Run, state: dict[str, Any], changed: list[str]) -> None:
    """Put a checkpoint's state into ``run``: the method, the history, the RNGs, the AMP scale;
    apply a new learning rate / schedule / epoch count; say what a new process count changes."""
    cfg = run.cfg
    run.method.load_state_dict(state["method"])
    if run.dynamics is not None and "dynamics" in state:
        run.dynamics.load_state_dict(state["dynamics"])
    if any(r.get("alarm") for r in state["history"]):
        run.method.on_memorization_alarm()  # what the alarm switched on stays on
    run.history, run.memorization, run.best = state["history"], state["memorization"], state["best"]
    run.start_epoch, run.step = int(state["epoch"]) + 1, int(state["step"])
    restore_rng(state["rng"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])  # AMP loss scale: part of an exact resume
    if run.lookahead is not None and state.get("lookahead"):
        run.lookahead.load_state_dict(state["lookahead"])
    if any(k == r or k.startswith(r + ".") for k in changed for r in RESCHEDULE_KEYS):
        run.method.reschedule(cfg.optim, cfg.schedule, cfg.train.epochs)
    trained_on, now = int(state.get("world_size", 1)), run.dist.world_size
    if trained_on != now and run.dist.is_main:
        log.warning("resuming a run trained on %d process(es) with %d: train.batch_size is per process, so the "
                    "global batch changes from %d to %d and each process sees another shard of every epoch; "
                    "the run continues correctly but will not repeat an uninterrupted one", trained_on, now,
                    trained_on * cfg.train.batch_size, now * cfg.train.batch_size)


def open_run_folder(run: Run, run_dir: str | Path | None, resumed_from: Path | None, changed: list[str]) -> None:
    """Rank 0: check the free space, create (or reopen) the run folder, write the config, labels and
    split of a new run, open the logs. Called only after every input was read and checked."""
    cfg, data = run.cfg, run.data
    check_free_space(run, Path(run_dir) if run_dir is not None else Path(cfg.output_dir))
    run.out = new_run_dir(cfg.output_dir, cfg.name) if run_dir is None else ensure_dir(Path(run_dir))
    attach_file_log(run.out)
    save_config(cfg, run.out / "config.yaml")
    if resumed_from is None:
        atomic_write(run.out / "noisy_labels.npz", data.labels.save)
        save_arrays(run.out / "split.npz", train_idx=data.train_idx, val_idx=data.val_idx)
    if data.bundle.extra.get("skipped_files"):  # damaged image files the loader left out
        from .data.files import write_skipped_files

        write_skipped_files(run.out / "skipped_files.csv", data.bundle.extra["skipped_files"])
    run.writer = open_tensorboard(cfg, run.out)
    bundle = data.bundle
    log.info("run folder: %s", run.out)
    log.info("data: %s, %d training / %d validation / %d test examples, %d classes; labels: %s; views: %s",
             bundle.name, len(data.train_idx), len(data.val_idx),
             0 if bundle.test_labels is None else len(bundle.test_labels), bundle.num_classes,
             noise_line(data.labels, data.truth_known),
             ", ".join(resolve_recipe(bundle, r) for r in view_recipes_of(run.method, cfg)) or "none (cached features)")
    if resumed_from is not None:
        log.info("resumed at epoch %d of %d from %s%s", run.start_epoch + 1, cfg.train.epochs, resumed_from,
                 f" with new {', '.join(changed)}" if changed else "")


def check_free_space(run: Run, where: Path) -> None:
    """Refuse to start when the disk of ``where`` (or its nearest existing parent) cannot hold the
    checkpoints the run will write: last, prev and best, plus the temporary copy of one."""
    import shutil

    while not where.exists() and where != where.parent:
        where = where.parent
    tensors = [t for m in [*run.method.models.values(), *run.method.losses.values()] for t in m.state_dict().values()]
    need = 4 * 3 * sum(t.numel() * t.element_size() for t in tensors)  # weights + up to 2 optimizer moments, 4 files
    free = shutil.disk_usage(where).free
    if free < need:
        raise OutputError(28, f"the disk of '{where}' has {free / 2**20:.0f} MiB free; the run's checkpoints need about "
                              f"{need / 2**20:.0f} MiB: free space or choose another output_dir")


ETA_STEPS = 50  # an epoch of at least 4x this many steps says after this many how long the run will take

# the setting to blame when a loss term blows up (the term of largest magnitude before divergence)
TERM_SETTINGS = {"elr": "method.loss.lam", "infonce": "method.infonce_weight", "rkd_dis": "method.reg_weight",
                 "rkd_angle": "method.reg_weight"}


def fit_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """Train every phase of ``epoch``; returns ``lr``, ``train_loss``, ``train_<term>`` (epoch means
    over the examples of all ranks) and, with a classifier, ``train_acc``.

    Raises :class:`TrainingStopped` after the step during which a stop was requested, and
    :class:`TrainingDiverged` at the end of an epoch whose loss was not finite (with
    ``train.skip_nonfinite`` such batches are skipped instead: no optimizer step)."""
    cfg, method, device = run.cfg, run.method, run.device
    t0 = time.time()
    method.train(True)
    sums: dict[str, torch.Tensor] = {}  # loss, terms and correct predictions, weighted by batch size
    peaks: dict[str, torch.Tensor] = {}  # the largest finite |term| of the epoch, to name a culprit
    seen = skipped = 0
    lr = method.current_lr()
    method.start_epoch(epoch)
    phases = method.phases(epoch)
    per_phase = len(run.train_batches)
    bar = _progress(cfg, run.dist, len(run.train_batches) * len(phases), epoch)
    for p_i, phase in enumerate(phases):
        for b_i, (x, y, idx) in enumerate(run.train_batches.epoch(epoch_seed(cfg.seed, epoch, p_i))):
            batch = Batch(x if isinstance(x, tuple) else (x,), y, idx)
            method.before_step(phase, batch, run.step)
            with _autocast(device, run.amp):
                out = method.batch_loss(phase, batch, run.step)
            for opt in phase.optimizers:
                opt.zero_grad(set_to_none=True)
            if cfg.train.skip_nonfinite and not bool(torch.isfinite(out.loss)):  # a host sync, only when asked
                skipped += 1
            else:
                run.scaler.scale(out.loss).backward()
                for opt in phase.optimizers:  # each unscaled and checked for inf on its own, one update after
                    run.scaler.step(opt)
                run.scaler.update()
                lr = method.current_lr()  # of this step: a per-step schedule moves it next
                method.step_schedulers(phase)
                method.after_step(phase, run.step)
                if run.lookahead is not None:
                    run.lookahead.after_step(run.step, (epoch + (b_i + 1) / per_phase) / cfg.train.epochs)
            run.step += 1
            n = len(y)
            for name, value in (("loss", out.loss), *((f"term_{k}", v) for k, v in out.terms.items())):
                v = value.detach().float()
                sums[name] = sums.get(name, torch.zeros((), device=device)) + v * n
                peaks[name] = torch.maximum(peaks.get(name, torch.zeros((), device=device)),
                                            v.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0))
            logits = out.per_example_logits
            if logits is not None:
                correct = (logits.detach().argmax(dim=1) == y).sum().float()
                sums["correct"] = sums.get("correct", torch.zeros((), device=device)) + correct
                if run.dynamics is not None:
                    run.dynamics.record_logits(logits, idx)
            seen += n
            if bar is not None:
                bar.update(1)
                if bar.n % cfg.train.log_every == 0:  # a host sync, so only every log_every steps
                    bar.set_postfix(loss=f"{sums['loss'].item() / seen:.4f}",
                                    ex_s=f"{seen / max(time.time() - t0, 1e-9):.0f}")
            if b_i + 1 == ETA_STEPS and p_i == 0 and epoch == run.start_epoch and per_phase >= 4 * ETA_STEPS \
                    and run.dist.is_main:  # a long epoch: say early how long the run takes
                epoch_s = (time.time() - t0) / ETA_STEPS * per_phase * len(phases)
                log.info("epoch %d: about %s an epoch; %s", epoch + 1, f"{epoch_s / 60:.1f} min" if epoch_s >= 90
                         else f"{epoch_s:.0f} s", eta_line(epoch_s, cfg.train.epochs - epoch))
            if _stop_now(run):
                if bar is not None:
                    bar.close()
                raise TrainingStopped(f"stopped by {_STOP['signal']} in epoch {epoch + 1}")
    if bar is not None:
        bar.close()
    method.end_epoch(epoch)
    if run.lookahead is not None and epoch == cfg.train.epochs - 1:
        run.lookahead.finish()  # the final model is the average
    names = sorted(sums)
    totals = torch.stack([sums[k] for k in names] + [torch.tensor(float(seen), device=device)])
    if run.dist.enabled:  # every rank trains the same phases with the same terms
        dist.all_reduce(totals)
    means = {k: float(v) / float(totals[-1]) for k, v in zip(names, totals[:-1])}
    if skipped:
        log.warning("epoch %d: skipped %d batch(es) whose loss was not finite (train.skip_nonfinite)", epoch + 1, skipped)
    if not np.isfinite(means["loss"]) and not cfg.train.skip_nonfinite:
        raise TrainingDiverged(_divergence_message(run, epoch, means["loss"], lr, peaks))
    row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": means.pop("loss")}
    if "correct" in means:
        row["train_acc"] = means.pop("correct")
    row.update({f"train_{k.removeprefix('term_')}": v for k, v in means.items()})
    row["time_s"] = time.time() - t0
    return row


def _stop_now(run: Run) -> bool:
    """Whether to stop after this step. Under DDP the ranks agree every ``log_every`` steps (a
    signal may reach them at different steps; stopping apart would hang the others)."""
    if not run.dist.enabled:
        return _STOP["signal"] is not None
    if run.step % run.cfg.train.log_every:
        return False
    flag = torch.tensor([1.0 if _STOP["signal"] else 0.0], device=run.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and _STOP["signal"] is None:
        _STOP["signal"] = "a stop request of another process"
    return flag.item() > 0


def _divergence_message(run: Run, epoch: int, loss: float, lr: float, peaks: dict[str, torch.Tensor]) -> str:
    """One line: where the loss stopped being finite, the setting that most likely caused it, what to do."""
    cfg = run.cfg
    terms = {k.removeprefix("term_"): float(v) for k, v in peaks.items() if k.startswith("term_")}
    culprit = max(terms, key=terms.get) if terms else None
    setting = TERM_SETTINGS.get(culprit or "", "optim.lr")
    values = _flatten(cfg.to_dict())
    now = lr if setting == "optim.lr" else values.get(setting)
    where = f"the {culprit} term reached {terms[culprit]:.3g} first; " if culprit else ""
    last_good = run.history[-1]["epoch"] + 1 if run.history else 0
    resume = (f"resume from the last good checkpoint (epoch {last_good}) with noisylab train -r {run.out} "
              f"optim.lr={lr / 10:g}" if setting == "optim.lr" and run.history else "start a new run with a lower value")
    return (f"training diverged in epoch {epoch + 1} (loss {loss:g}): {where}lower {setting} (now {now:g}), or set "
            f"train.skip_nonfinite=true to skip such batches; {resume}")


def evaluate(run: Run, epoch: int) -> dict[str, Any]:
    """Accuracy on every labelled evaluation set and the memorization fractions (with a
    classifier), plus the method's own metrics."""
    method, row = run.method, {}
    if method.has_classifier:
        show_top5 = run.data.bundle.num_classes > 10
        for split, (batches, split_labels) in run.eval_data.sets.items():
            probs = predict_probs(method, batches, run.amp)
            row[f"{split}_top1"] = topk_accuracy(probs, split_labels, 1)
            if show_top5 and split != "noisy_val":
                row[f"{split}_top5"] = topk_accuracy(probs, split_labels, 5)
            if split == "noisy_val" and run.dynamics is not None:
                run.dynamics.record_probs(probs, run.data.val_idx)  # the held-out part's history
        if run.dynamics is not None:
            row.update(memorization_alarm(run, epoch))
        if run.memo_batches is not None:
            tr = run.memo_idx
            pred = predict_probs(method, run.memo_batches, run.amp).argmax(axis=1)
            memo = memorization_fractions(pred, run.data.given[tr], run.data.bundle.train_labels[tr])
            run.memorization.append({"epoch": epoch, **memo})
            row["memorized"] = memo["noisy_memorized"]
    method.train(False)
    with torch.no_grad():
        row.update(method.evaluate(run.eval_data))
    return row


ALARM_RISE = 0.2
"""The memorization alarm sounds when ``suspect_fit`` has risen this much above its lowest value."""


def memorization_alarm(run: Run, epoch: int) -> dict[str, Any]:
    """``suspect_fit`` and ``num_suspected`` of the epoch (:meth:`TrainingDynamics.suspect_fit`),
    and ``alarm`` = 1 from the epoch ``suspect_fit`` has risen :data:`ALARM_RISE` (and three
    standard errors of its sampling noise) above its lowest value since the second epoch: the model
    has started to fit the labels it doubted. Warned about once in the log. The history detector
    stops there and goes back to the last calm epoch, whose reading had risen less than half of
    :data:`ALARM_RISE`: the rise is only certain some epochs after it began."""
    fit, size = run.dynamics.suspect_fit(run.data.given, run.data.train_idx)
    # the first epoch reads 0 by construction (its suspects are its own disagreements): the baseline
    # is the lowest reading from the second epoch on, so that rising from 0 (plain learning) is no alarm
    readable = epoch >= 1 and fit == fit
    readings = [v for r in run.history if r["epoch"] >= 1 for v in [r.get("suspect_fit", float("nan"))] if v == v]
    low = min(readings + ([fit] if readable else []), default=float("nan"))
    already = any(r.get("alarm") for r in run.history)
    # the rise must also stand out from the sampling noise of a small suspected set (3 standard errors)
    rise_needed = max(ALARM_RISE, 3.0 * float(np.sqrt(fit * (1.0 - fit) / max(size, 1)))) if readable else 1.0
    sounding = already or (readable and fit - low >= rise_needed)
    if not sounding and not (readable and fit - low >= ALARM_RISE / 2):
        run.dynamics.keep_calm(epoch)
    if sounding and not already:
        calm = run.dynamics.freeze()  # the history detector keeps what the model thought before memorizing
        if run.dist.is_main and calm is not None:
            log.info("epoch %d: the history detector keeps the predictions up to epoch %d, before the rise began",
                     epoch + 1, calm + 1)
        if run.method.on_memorization_alarm() and run.dist.is_main:
            log.info("epoch %d: the memorization alarm switches on the ELR regularizer (method.loss.start=alarm)",
                     epoch + 1)
    if sounding and not already and run.dist.is_main:
        log.warning("epoch %d: memorization alarm: the model now fits %.0f%% of the %d labels it suspects (lowest "
                    "%.0f%%): it has started memorizing wrong labels; stop here (best.pt), lower the learning rate, "
                    "or raise the ELR lambda", epoch + 1, 100 * fit, size, 100 * low)
    return {"suspect_fit": fit, "num_suspected": size, "alarm": int(sounding)}


def update_best(run: Run, row: dict[str, Any]) -> bool:
    """Track the best epoch by the monitored metric; True when this row is (ties: the later epoch,
    as the official trainers)."""
    monitor = row.get(run.best["monitor"], float("nan"))
    if run.best["monitor"] == "train_loss":
        monitor = -monitor  # lower is better
    improved = monitor == monitor and (run.best["value"] is None or monitor >= run.best["value"])
    if improved:
        run.best = {"monitor": run.best["monitor"], "value": float(monitor), "epoch": row["epoch"]}
    if "test_top1" in row:
        row["best_test_top1"] = max([r["test_top1"] for r in run.history] + [row["test_top1"]])
    return improved


def write_epoch(run: Run, row: dict[str, Any], improved: bool) -> None:
    """Rank 0: the epoch's CSV rows, the checkpoints (last, and best when ``improved``), TensorBoard, log."""
    if not run.dist.is_main or run.out is None:
        return
    out = run.out
    write_csv(out / "metrics.csv", run.history)
    if run.memorization:
        write_csv(out / "memorization.csv", run.memorization)
    ckpt = {"epoch": row["epoch"], "step": run.step, "method": run.method.state_dict(), "history": run.history,
            "memorization": run.memorization, "best": run.best, "rng": capture_rng(), "config": run.cfg.to_dict(),
            "scaler": run.scaler.state_dict() if run.amp else {}, "world_size": run.dist.world_size,
            "lookahead": run.lookahead.state_dict() if run.lookahead is not None else {}}
    if run.dynamics is not None:
        ckpt["dynamics"] = run.dynamics.state_dict()
    save_checkpoint(ckpt, out / "checkpoints" / "last.pt", keep_old_as=out / "checkpoints" / "prev.pt")
    if improved:
        save_checkpoint(ckpt, out / "checkpoints" / "best.pt")
    if run.writer is not None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                run.writer.add_scalar(k, v, row["epoch"])
        run.writer.flush()
    log.info(epoch_log_line(row, run.cfg.train.epochs))


def finish_run(run: Run) -> RunResult:
    """Rank 0 writes the final outputs; every rank closes the log and the process group."""
    result = RunResult(run.out, run.history, run.memorization)
    try:
        if run.dist.is_main and run.out is not None:
            result.summary = write_final_outputs(run)
    finally:
        if run.writer is not None:
            run.writer.close()
        detach_file_log()
        if run.dist.enabled and dist.is_initialized():
            dist.barrier()  # rank 0 has written the outputs
            run.method.unwrap_distributed()  # the wrappers' reducers hold the group
            dist.destroy_process_group()
    return result


def train(
    cfg: Config,
    resume: str | Path | None = None,
    callbacks: list[EpochCallback] | None = None,
    run_dir: str | Path | None = None,
) -> RunResult:
    """Train ``cfg`` to the end (or continue the run in ``resume``) and write the run folder.

    Args:
        cfg: the validated config.
        resume: a run folder or checkpoint to continue from; the run keeps writing in its folder.
        callbacks: called as ``cb(epoch, metrics_row)`` after each epoch's checkpoint is written
            (raising from a callback stops training; the checkpoint is already safe).
        run_dir: write into this (new or empty) folder instead of ``output_dir/name``.

    Returns:
        The per-epoch history, memorization rows and summary.
    """
    if cfg.cv.folds:
        return train_cross_validated(cfg, resume if resume is not None else run_dir, callbacks)
    run = setup_run(cfg, resume, run_dir)
    run_epochs(run, callbacks)
    return finish_run(run)


def run_epochs(run: Run, callbacks: list[EpochCallback] | None = None) -> None:
    """The epochs of ``run`` from where it stands to ``train.epochs``: fit, evaluate, write; after
    the first one, how long the rest will take."""
    t0 = time.time()
    for epoch in range(run.start_epoch, run.cfg.train.epochs):
        row = fit_epoch(run, epoch)
        row.update(evaluate(run, epoch))
        improved = update_best(run, row)
        row["time_s"] = row.pop("time_s")  # wall time last, as before
        run.history.append(row)
        write_epoch(run, row, improved)
        if epoch == run.start_epoch and epoch + 1 < run.cfg.train.epochs and run.dist.is_main:
            log.info(eta_line(time.time() - t0, run.cfg.train.epochs - epoch - 1))
        for cb in callbacks or []:
            cb(epoch, row)


def eta_line(epoch_s: float, epochs_left: int, now: float | None = None) -> str:
    """``the 59 epochs left take about 35 min (until 14:05, ...)`` at ``epoch_s`` seconds an epoch."""
    left = epoch_s * epochs_left
    until = time.strftime("%H:%M", time.localtime((time.time() if now is None else now) + left))
    size = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
    return f"the {epochs_left} epoch{'s' * (epochs_left > 1)} left take about {size} (until {until}, " \
           f"then the final evaluation)"


def train_cross_validated(cfg: Config, folder: str | Path | None = None,
                          callbacks: list[EpochCallback] | None = None) -> RunResult:
    """``cv.folds=K``: K ordinary runs of ``cfg``, run k trained on every example of the training
    split outside fold k (stratified by the given labels, seeded), then out-of-sample
    probabilities for every example: ``pred_probs.npy [N, C]`` with ``labels.npy [N]`` (the given
    labels), ready for ``cleanlab.filter.find_label_issues``, and the flags of ``detect.filter_by``
    on them in ``label_issues.csv``.

    The runs are ``fold_<k>/`` folders of the parent ``folder`` (a new ``output_dir/name`` when
    None). Given an existing parent, finished folds are kept and an interrupted one is resumed, so
    the same command continues a stopped cross-validation.
    """
    from .noise import stratified_folds

    check_filter_available(cfg)
    data = prepare_data(cfg)
    n, c = data.bundle.num_train, data.bundle.num_classes
    folds = stratified_folds(data.given, cfg.cv.folds, cfg.seed)
    main = int(os.environ.get("RANK", 0)) == 0
    parent = Path(folder) if folder is not None else None
    if main:
        parent = new_run_dir(cfg.output_dir, cfg.name) if parent is None else ensure_dir(parent)
        save_config(cfg, parent / "config.yaml")
    elif parent is None:
        raise ConfigError("cv.folds under torchrun needs a run folder: pass -r auto or --run-dir")
    t0 = time.time()
    pred_probs = np.zeros((n, c), np.float32)
    results = []
    fold_cfg = cfg.model_copy(update={"cv": cfg.cv.model_copy(update={"folds": 0})})
    for k, held in enumerate(folds):
        fold_dir = parent / f"fold_{k}"
        if not (fold_dir / "summary.json").is_file():
            resume = fold_dir if has_checkpoint(fold_dir) else None
            # a fold is an ordinary run of its own (resumable alone: noisylab train -r fold_<k>)
            run = setup_run(fold_cfg, resume=resume, run_dir=None if resume else fold_dir,
                            train_idx=np.setdiff1d(np.arange(n), held))
            log.info("cross-validation fold %d of %d: %d training / %d held-out examples", k + 1, len(folds),
                     len(run.data.train_idx), len(held))
            run_epochs(run, callbacks)
            results.append(finish_run(run))
        if main:
            with np.load(fold_dir / "predictions.npz", allow_pickle=False) as z:
                out_of_fold = ~z["in_training"]
                pred_probs[z["index"][out_of_fold]] = z["pred_probs"][out_of_fold]
    result = RunResult(parent, memorization=[])
    if main:
        result.summary = write_cross_validated_outputs(cfg, data, parent, pred_probs, time.time() - t0)
    return result


def write_cross_validated_outputs(cfg: Config, data: PreparedData, parent: Path, pred_probs: np.ndarray,
                                  wall_time_s: float) -> dict[str, Any]:
    """``pred_probs.npy``, ``labels.npy``, ``label_issues.csv`` and ``summary.json`` of a cross-validation."""
    from .detect.detectors import detection_from_probs

    given = data.given
    atomic_write(parent / "pred_probs.npy", lambda tmp: np.save(tmp, pred_probs))
    atomic_write(parent / "labels.npy", lambda tmp: np.save(tmp, given))
    d = cfg.detect
    found = detection_from_probs("cross_validated", given, pred_probs, d.filter_by, d.threshold, d.rank_by)
    truth = data.bundle.train_labels if data.truth_known else None
    paths = example_paths(data.bundle, "train")
    write_label_issues_csv(parent / "label_issues.csv", given, pred_probs, found.flagged, found.quality,
                           true_labels=truth, class_names=data.bundle.class_names, paths=paths)
    summary = {"name": cfg.name, "dataset": cfg.data.dataset, "method": cfg.method.name,
               "noise": noise_line(data.labels, data.truth_known),
               "cv_folds": cfg.cv.folds, "detect": detection_summary(found, given, truth, data.bundle.num_classes),
               "wall_time_s": wall_time_s}
    write_json(parent / "summary.json", summary)
    log.info("cross-validation done: %d suspected wrong labels (%s) -> %s; out-of-sample probabilities -> %s",
             int(found.flagged.sum()), found.filter_by, parent / "label_issues.csv", parent / "pred_probs.npy")
    return summary


def write_final_outputs(run: Run) -> dict[str, Any]:
    """Final predictions, suspected wrong labels, the method's own files, summary and plot."""
    cfg, method, data, out = run.cfg, run.method, run.data, run.out
    tr = data.train_idx
    last = run.history[-1] if run.history else {}
    summary: dict[str, Any] = {
        "name": cfg.name, "dataset": cfg.data.dataset, "method": cfg.method.name,
        "loss": getattr(getattr(cfg.method, "loss", None), "name", None),
        "noise": noise_line(data.labels, data.truth_known),
        "actual_noise_rate": float(np.mean(data.labels.is_noisy[tr])) if data.truth_known else None,
        "epochs": len(run.history),
        "test_top1_last": last.get("test_top1"), "test_top1_best": last.get("best_test_top1"),
        "selected": run.best,
    }
    if data.bundle.extra.get("skipped_files"):
        summary["skipped_files"] = len(data.bundle.extra["skipped_files"])
    if cfg.eval.tta != "none" and method.has_classifier:
        summary["tta"] = evaluate_with_tta(run)
    exported = method.export(out)
    if exported:
        summary["files"] = [str(p.relative_to(out)) for p in exported]
    if method.has_classifier:
        summary["learned_nothing"] = learned_nothing(run)
        summary["detect"] = _detect(run)
        alarms = [r["epoch"] for r in run.history if r.get("alarm")]
        summary["alarm"] = {"warned_epoch": alarms[0] if alarms else None,
                            "history_until_epoch": run.dynamics.history_until_epoch if run.dynamics else None,
                            "peak_suspect_fit": max((r["suspect_fit"] for r in run.history if r.get("suspect_fit") == r.get("suspect_fit")), default=None)}
    if run.memorization:
        summary["memorization_last"] = {k: run.memorization[-1][k] for k in MEMO_COLUMNS}
    summary["wall_time_s"] = time.time() - run.t_start
    write_json(out / "summary.json", summary)
    if run.memorization:
        from .report.plots import plot_memorization

        curves = {f"{cfg.name} ({summary['loss'] or cfg.method.name})":
                  {k: np.array([r[k] for r in run.memorization]) for k in ["epoch", *MEMO_COLUMNS]}}
        plot_memorization(curves, out / "memorization.png")
    tested = f"test top-1 last {last['test_top1']:.4f} best {last['best_test_top1']:.4f}; " if "test_top1" in last else ""
    if "test_top1" in summary.get("tta", {}):
        tested += f"with TTA ({cfg.eval.tta}) {summary['tta']['test_top1']:.4f}; "
    found = (f"{summary['detect']['num_flagged']} suspected wrong labels -> {out / 'label_issues.csv'}"
             if "detect" in summary else f"outputs in {out}")
    log.info("done: %s%s", tested, found)
    det = summary.get("detect", {})
    if "detect" in summary:
        log.info("estimated noise rate %.4f (detector %s, %s)", det["noise_rate_estimate"], det["method"], det["filter_by"])
    if det.get("num_noisy"):
        log.info("against the known wrong labels: precision %.4f recall %.4f F1 %.4f AUROC %.4f AUPRC %.4f",
                 det["precision"], det["recall"], det["f1"], det["auroc"] or float("nan"), det["auprc"] or float("nan"))
    return summary


def evaluate_with_tta(run: Run) -> dict[str, Any]:
    """The final model's top-1 accuracy on every labelled evaluation set with test-time
    augmentation ``eval.tta`` (once, at the end: it costs several forward passes per image)."""
    row: dict[str, Any] = {"level": run.cfg.eval.tta}
    for split, (batches, split_labels) in run.eval_data.sets.items():
        probs = predict_probs(run.method, batches, run.amp, run.cfg.eval.tta)
        row[f"{split}_top1"] = topk_accuracy(probs, split_labels, 1)
    return row


def learned_nothing(run: Run) -> bool:
    """Whether the final model does no better than always answering the most common given label,
    on the held-out part (or, without one, on the training part); warns once in the log, since its
    suspected labels then mean nothing."""
    last = run.history[-1] if run.history else {}
    part, acc = ("noisy_val", last.get("noisy_val_top1")) if "noisy_val_top1" in last else ("train", last.get("train_acc"))
    idx = run.data.val_idx if part == "noisy_val" else run.data.train_idx
    if acc is None or len(idx) == 0:
        return False
    majority = float(np.bincount(run.data.given[idx]).max() / len(idx))
    if acc > majority + 0.02:
        return False
    log.warning("the model learned nothing: %s accuracy %.3f, no better than always answering the most common label "
                "(%.3f), so its suspected labels mean nothing; train longer (train.epochs), take more steps per epoch "
                "(a smaller train.batch_size) or a smaller model (model.arch=cnn_small), or check the data",
                "held-out" if part == "noisy_val" else "training", acc, majority)
    return True


@torch.no_grad()
def collect_evidence(run: Run) -> tuple[np.ndarray, Evidence]:
    """``(dataset indices, Evidence)`` of every example of the training split: the training part,
    then the held-out part (scored by its out-of-sample predictions, never by training targets)."""
    data, method = run.data, run.method
    scored = np.concatenate([data.train_idx, data.val_idx])
    in_training = np.r_[np.ones(len(data.train_idx), bool), np.zeros(len(data.val_idx), bool)]
    batch_sets = [run.eval_data.train] + ([run.eval_data.sets["noisy_val"][0]] if len(data.val_idx) else [])
    predictions = np.concatenate([predict_probs(method, b, run.amp) for b in batch_sets])
    # float32, as predictions.npz stores them: `noisylab detect RUN` later gives the same verdict
    state = {k: v.detach().float().cpu().numpy()[scored] for k, v in method.sample_state().items()}
    given = data.given[scored]
    knn = _knn_vote_of(run, batch_sets, given)
    return scored, Evidence.from_method_state(
        state, given=given, history=run.dynamics.history_probs()[scored].astype(np.float32), predictions=predictions,
        in_training=in_training, knn=None if knn is None else knn.astype(np.float32),
        history_frozen=run.dynamics.is_frozen)


def _knn_vote_of(run: Run, batch_sets: list[Any], given: np.ndarray) -> np.ndarray | None:
    """The neighbour vote in the final predictor's encoder features (None when it has none)."""
    run.method.train(False)
    try:
        feats = [run.method.features(x).float().cpu() for b in batch_sets for x, _, _ in b]
    except ConfigError:
        return None
    return knn_vote(torch.cat(feats).numpy(), given, run.data.bundle.num_classes)


def _detect(run: Run) -> dict[str, Any]:
    """predictions.npz and label_issues.csv of a method with a classifier; the detection summary."""
    cfg, data, out = run.cfg, run.data, run.out
    scored, ev = collect_evidence(run)
    truth = data.bundle.train_labels[scored] if data.truth_known else None
    all_paths = example_paths(data.bundle, "train")
    paths = None if all_paths is None else [all_paths[i] for i in scored]
    save_arrays(out / "predictions.npz", **evidence_arrays(ev, scored, truth, data.bundle.class_names, paths))
    try:
        d = cfg.detect
        found = detect_label_issues(ev, d.method, d.filter_by, d.threshold, d.rank_by)
    except DetectorUnavailable as err:
        raise ConfigError(f"detect.method={cfg.detect.method}: {err}") from None
    write_label_issues_csv(out / "label_issues.csv", ev.given, found.probs, found.flagged, found.quality,
                           indices=scored, true_labels=truth, class_names=data.bundle.class_names, paths=paths,
                           in_training=ev.in_training)
    return detection_summary(found, ev.given, truth, data.bundle.num_classes)


def detection_summary(found, given: np.ndarray, truth: np.ndarray | None, num_classes: int) -> dict[str, Any]:
    """The ``detect`` block of summary.json: the detector, the flagged count, the noise estimates,
    and precision / recall / F1 / AUROC / AUPRC when the truth is known."""
    summary = {"method": found.method, "filter_by": found.filter_by, "rank_by": found.rank_by,
               "num_scored": len(given), "num_flagged": int(found.flagged.sum()),
               **noise_estimates(given, found.flagged, found.suggested, num_classes, found.probs)}
    if truth is not None:
        summary.update(detection_metrics(found.flagged, given != truth, found.quality).as_dict())
    return summary


def noise_line(labels: NoisyLabels, truth_known: bool = True) -> str:
    """``kind rate, actual r`` for the log; no actual rate where the true labels are unknown (own data)."""
    rate = "" if labels.rate is None else f" {labels.rate:g}"
    actual = f", actual {labels.actual_rate:.4f}" if labels.clean is not None and truth_known else ""
    return f"{labels.kind}{rate}{actual}"


def _progress(cfg: Config, dinfo: DistInfo, total: int, epoch: int):
    if not (cfg.train.progress and dinfo.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True)


def config_from_checkpoint(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The config stored in a checkpoint, with dotted overrides applied (e.g. more epochs)."""
    from .config import apply_overrides

    folder = Path(path)
    if folder.is_dir() and not (folder / "checkpoints").exists() and (folder / "config.yaml").is_file() \
            and any(folder.glob("fold_*")):  # a cross-validation's parent folder: its config is the file
        from .config import read_yaml

        return build_config(apply_overrides(read_yaml(folder / "config.yaml"), list(overrides or [])))
    state = load_checkpoint(path)
    return build_config(apply_overrides(dict(state["config"]), list(overrides or [])))
