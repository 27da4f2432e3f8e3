"""The one training loop every method plugs into.

dataset -> noise -> input pipeline -> method -> **engine** -> outputs. The engine owns the
loop, evaluation, memorization tracking, checkpoints (atomic, resumable to the same numbers),
logging (CSV, TensorBoard when installed, a progress bar), devices, AMP and DDP under torchrun.
A run writes into its own folder:

    config.yaml          the resolved config
    noisy_labels.npz     the labels it trained on (re-usable as noise.file)
    split.npz            training / noisy-validation indices
    metrics.csv          one row per epoch (test_top1, noisy_val_top1, val_top1 / imagenet_top1 for
                         the extra splits of Clothing1M / WebVision, ...)
    memorization.csv     the five memorization fractions per epoch (when true labels are known)
    checkpoints/last.pt, checkpoints/best.pt
    predictions.npz      final pred_probs on the training set (+ per-example method state)
    label_issues.csv     every training example, suspected wrong labels first
    summary.json         final numbers
    memorization.png     the memorization curves
"""
from __future__ import annotations

import csv
import dataclasses
import json
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

from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, seed_everything
from .config import Config, ConfigError, build_config, save_config
from .data import DataBundle, load_dataset, make_eval_batches, make_train_batches
from .data.pipeline import AnyEvalBatches, eval_split_names, example_paths
from .detect import detection_metrics, find_label_issues, label_quality_scores, normalize_rows, write_label_issues_csv
from .methods import Method, MethodContext, build_method
from .noise import NoiseError, NoisyLabels, make_noisy_labels, split_per_class
from .report.memorization import MEMO_COLUMNS, memorization_fractions

log = logging.getLogger("noisylab")

EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says where and what to change."""


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
    return PreparedData(bundle, labels, np.sort(train_idx), np.sort(val_idx), truth_known)


# ----------------------------------------------------------------------------- run folder
def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """``output_dir/name``, or ``name_2``, ``name_3``... so that no earlier run is overwritten."""
    base = Path(output_dir)
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        cand = base / (name if k == 1 else f"{name}_{k}")
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue
    raise ConfigError(f"too many runs named '{name}' in '{base}'")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_probs(method: Method, batches: AnyEvalBatches, amp: bool) -> np.ndarray:
    """Softmax outputs ``float32 [len(batches.indices), C]`` of the method's predictor, eval mode."""
    method.train(False)
    out = []
    for x, _, _ in batches:
        with _autocast(x.device, amp):
            out.append(torch.softmax(method.predict(x).float(), dim=1))
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


# ----------------------------------------------------------------------------- the loop
@dataclass
class RunResult:
    run_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    memorization: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


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
    t_start = time.time()
    device, dinfo = setup_device(cfg.device)
    state = None
    if resume is not None:
        state = load_checkpoint(resume)
        resume_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent.parent
        run_dir = resume_dir
    seed_everything(cfg.seed)
    labels_file = Path(run_dir) / "noisy_labels.npz" if state is not None else None
    data = prepare_data(cfg, labels_file)
    bundle = data.bundle
    amp = cfg.train.amp and device.type == "cuda"

    train_batches = make_train_batches(bundle, data.given, cfg.train.batch_size, device, cfg.data.augment,
                                       indices=data.train_idx, drop_last=cfg.train.drop_last, rank=dinfo.rank,
                                       world_size=dinfo.world_size)
    ebs = cfg.train.eval_batch_size
    # every labelled evaluation set: "test", extra splits of file datasets (Clothing1M "val",
    # WebVision "imagenet"), and the noisy validation part of the training set
    eval_sets: dict[str, tuple[AnyEvalBatches, np.ndarray]] = {}
    for split in eval_split_names(bundle):
        if split != "train":
            batches = make_eval_batches(bundle, split, ebs, device)
            eval_sets[split] = (batches, np.asarray(batches.labels))
    if len(data.val_idx):
        eval_sets["noisy_val"] = (make_eval_batches(bundle, "train", ebs, device, labels=data.given,
                                                    indices=data.val_idx), data.given[data.val_idx])
    track_batches = make_eval_batches(bundle, "train", ebs, device, labels=data.given, indices=data.train_idx)

    ctx = MethodContext(cfg, bundle.num_classes, bundle.num_train, bundle.input_shape, device, len(train_batches))
    method = build_method(ctx)
    if dinfo.enabled:
        method.wrap_distributed(device)

    history: list[dict[str, Any]] = []
    memo_rows: list[dict[str, Any]] = []
    monitor_key = next((f"{k}_top1" for k in ("noisy_val", "val", "test") if k in eval_sets), "train_acc")
    best: dict[str, Any] = {"monitor": monitor_key, "value": -1.0, "epoch": -1}
    start_epoch, step = 0, 0
    if state is not None:
        method.load_state_dict(state["method"])
        history, memo_rows, best = state["history"], state["memorization"], state["best"]
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        restore_rng(state["rng"])

    # ---- the run folder: created only now, after every input was read and checked
    out: Path | None = None
    writer = None
    if dinfo.is_main:
        if run_dir is None:
            out = new_run_dir(cfg.output_dir, cfg.name)
        else:
            out = Path(run_dir)
            out.mkdir(parents=True, exist_ok=True)
        _attach_file_log(out)
        if state is None:
            save_config(cfg, out / "config.yaml")
            data.labels.save(out / "noisy_labels.npz")
            np.savez(out / "split.npz", train_idx=data.train_idx, val_idx=data.val_idx)
        else:
            save_config(cfg, out / "config.yaml")
        writer = _tensorboard(cfg, out)
        log.info("run folder: %s", out)
        log.info("data: %s, %d training / %d validation / %d test examples, %d classes; labels: %s",
                 bundle.name, len(data.train_idx), len(data.val_idx),
                 0 if bundle.test_labels is None else len(bundle.test_labels), bundle.num_classes,
                 _noise_line(data.labels))

    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if state is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # AMP loss scale: part of an exact resume
    truth = bundle.train_labels if data.truth_known else None
    show_top5 = bundle.num_classes > 10
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.time()
        method.train(True)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        phases = method.phases(epoch)
        bar = _progress(cfg, dinfo, len(train_batches) * len(phases), epoch)
        for p_i, phase in enumerate(phases):
            phase.model.train(True)
            for x, y, idx in train_batches.epoch(epoch_seed(cfg.seed, epoch, p_i)):
                with _autocast(device, amp):
                    loss, logits = method.batch_loss(phase, x, y, idx, step)
                phase.optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(phase.optimizer)
                scaler.update()
                method.after_step(phase, step)
                step += 1
                loss_sum += loss.detach().float() * len(y)
                correct += (logits.detach().argmax(dim=1) == y).sum()
                seen += len(y)
                if bar is not None:
                    bar.update(1)
                    if bar.n % cfg.train.log_every == 0:  # a host sync, so only every log_every steps
                        bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}",
                                        ex_s=f"{seen / max(time.time() - t0, 1e-9):.0f}")
        if bar is not None:
            bar.close()
        lr = method.current_lr()
        method.end_epoch(epoch)
        totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=device)])
        if dinfo.enabled:
            dist.all_reduce(totals)
        train_time = time.time() - t0
        if not torch.isfinite(totals[0]):
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1} (loss {float(totals[0]):g}); "
                                   f"lower optim.lr (now {lr:g}) or check the inputs' scale")

        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": float(totals[0] / totals[2]),
                               "train_acc": float(totals[1] / totals[2])}
        for split, (batches, split_labels) in eval_sets.items():
            probs = predict_probs(method, batches, amp)
            row[f"{split}_top1"] = topk_accuracy(probs, split_labels, 1)
            if show_top5 and split != "noisy_val":
                row[f"{split}_top5"] = topk_accuracy(probs, split_labels, 5)
        if cfg.train.track_memorization and truth is not None:
            pred = predict_probs(method, track_batches, amp).argmax(axis=1)
            memo = memorization_fractions(pred, data.given[data.train_idx], truth[data.train_idx])
            memo_rows.append({"epoch": epoch, **memo})
            row["memorized"] = memo["noisy_memorized"]
        monitor = row.get(best["monitor"], float("nan"))
        improved = monitor == monitor and monitor >= best["value"]  # ties: the later epoch, as the official trainers
        if improved:
            best = {"monitor": best["monitor"], "value": float(monitor), "epoch": epoch}
        if "test_top1" in row:
            row["best_test_top1"] = max([r["test_top1"] for r in history] + [row["test_top1"]])
        row["time_s"] = train_time
        history.append(row)

        if dinfo.is_main and out is not None:
            _write_csv(out / "metrics.csv", history)
            if memo_rows:
                _write_csv(out / "memorization.csv", memo_rows)
            ckpt = {"epoch": epoch, "step": step, "method": method.state_dict(), "history": history,
                    "memorization": memo_rows, "best": best, "rng": capture_rng(), "config": cfg.to_dict(),
                    "scaler": scaler.state_dict() if amp else {}}
            save_checkpoint(ckpt, out / "checkpoints" / "last.pt")
            if improved:
                save_checkpoint(ckpt, out / "checkpoints" / "best.pt")
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        writer.add_scalar(k, v, epoch)
                writer.flush()
            log.info("epoch %d/%d  %s", epoch + 1, cfg.train.epochs,
                     "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch",) and isinstance(v, float)))
        for cb in callbacks or []:
            cb(epoch, row)

    result = RunResult(out, history, memo_rows)
    if dinfo.is_main and out is not None:
        result.summary = _finish(cfg, method, data, track_batches, out, history, memo_rows, best, amp,
                                 time.time() - t_start)
    if writer is not None:
        writer.close()
    _detach_file_log()
    if dinfo.enabled and dist.is_initialized():
        dist.barrier()  # rank 0 has written the outputs
        dist.destroy_process_group()
    return result


def _finish(cfg: Config, method: Method, data: PreparedData, track_batches: AnyEvalBatches, out: Path,
            history: list[dict[str, Any]], memo_rows: list[dict[str, Any]], best: dict[str, Any], amp: bool,
            wall_time: float) -> dict[str, Any]:
    """Final predictions, suspected wrong labels, summary and plot."""
    tr = data.train_idx
    given = data.given[tr]
    probs = predict_probs(method, track_batches, amp)
    sample_state = {k: v.detach().float().cpu().numpy() for k, v in method.sample_state().items()}
    np.savez_compressed(out / "predictions.npz", index=tr, pred_probs=probs, given_label=given,
                        **{k: v for k, v in sample_state.items()})
    source = cfg.detect.source
    if source == "auto":
        source = "targets" if "targets" in sample_state else "pred_probs"
    if source == "targets" and "targets" not in sample_state:
        raise ConfigError("detect.source=targets needs a method with per-example targets (ELR); use pred_probs")
    scores_from = normalize_rows(sample_state["targets"][tr]) if source == "targets" else probs
    flagged = find_label_issues(given, scores_from, filter_by=cfg.detect.filter_by, threshold=cfg.detect.threshold)
    quality = label_quality_scores(given, scores_from, "self_confidence")
    truth = data.bundle.train_labels[tr] if data.truth_known else None
    all_paths = example_paths(data.bundle, "train")
    write_label_issues_csv(out / "label_issues.csv", given, scores_from, flagged, quality, indices=tr,
                           true_labels=truth, class_names=data.bundle.class_names,
                           paths=None if all_paths is None else [all_paths[i] for i in tr])
    last = history[-1] if history else {}
    summary: dict[str, Any] = {
        "name": cfg.name, "dataset": cfg.data.dataset, "method": cfg.method.name, "loss": cfg.method.loss.name,
        "noise": _noise_line(data.labels), "actual_noise_rate": float(np.mean(data.labels.is_noisy[tr])) if data.truth_known else None,
        "epochs": len(history),
        "test_top1_last": last.get("test_top1"), "test_top1_best": last.get("best_test_top1"),
        "selected": best, "detect": {"source": source, "filter_by": cfg.detect.filter_by,
                                     "num_flagged": int(flagged.sum())},
        "wall_time_s": wall_time,
    }
    if memo_rows:
        summary["memorization_last"] = {k: memo_rows[-1][k] for k in MEMO_COLUMNS}
    if truth is not None:
        m = detection_metrics(flagged, given != truth, quality)
        summary["detect"].update(m.as_dict())
    (out / "summary.json").write_text(json.dumps({k: _fmt(v) for k, v in summary.items()}, indent=2, default=float))
    if memo_rows:
        from .report.plots import plot_memorization

        curves = {f"{cfg.name} ({cfg.method.loss.name})": {k: np.array([r[k] for r in memo_rows]) for k in ["epoch", *MEMO_COLUMNS]}}
        plot_memorization(curves, out / "memorization.png")
    tested = f"test top-1 last {last['test_top1']:.4f} best {last['best_test_top1']:.4f}; " if "test_top1" in last else ""
    log.info("done: %s%d suspected wrong labels -> %s", tested, int(flagged.sum()), out / "label_issues.csv")
    return summary


def _noise_line(labels: NoisyLabels) -> str:
    rate = "" if labels.rate is None else f" {labels.rate:g}"
    actual = f", actual {labels.actual_rate:.4f}" if labels.clean is not None else ""
    return f"{labels.kind}{rate}{actual}"


def _progress(cfg: Config, dinfo: DistInfo, total: int, epoch: int):
    if not (cfg.train.progress and dinfo.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True)


def _tensorboard(cfg: Config, out: Path):
    if cfg.train.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if cfg.train.tensorboard is True:
            raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'noisylab[tb]'") from None
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


_FILE_HANDLER: logging.Handler | None = None


def _attach_file_log(out: Path) -> None:
    global _FILE_HANDLER
    _detach_file_log()
    _FILE_HANDLER = logging.FileHandler(out / "train.log")
    _FILE_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    _FILE_HANDLER.setLevel(logging.INFO)
    log.addHandler(_FILE_HANDLER)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)  # the file always gets INFO; console handlers filter for themselves


def _detach_file_log() -> None:
    global _FILE_HANDLER
    if _FILE_HANDLER is not None:
        log.removeHandler(_FILE_HANDLER)
        _FILE_HANDLER.close()
        _FILE_HANDLER = None


def config_from_checkpoint(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The config stored in a checkpoint, with dotted overrides applied (e.g. more epochs)."""
    from .config import apply_overrides

    state = load_checkpoint(path)
    return build_config(apply_overrides(dict(state["config"]), list(overrides or [])))
