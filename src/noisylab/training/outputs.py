"""What a run writes (rank 0): the folder and its logs, each epoch's CSV rows, checkpoints and
TensorBoard scalars, and the final outputs (:mod:`noisylab.run_folder` lists the files)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import OutputError, atomic_write, capture_rng, save_checkpoint
from ..config import save_config
from ..detect.alarm import settle_alarm
from ..detect.estimate import noise_rate_text
from ..noise import NoisyLabels
from ..report.memorization import MEMO_COLUMNS
from ..run_folder import (attach_file_log, ensure_dir, epoch_log_line, new_run_dir, open_tensorboard, save_arrays,
                          write_csv, write_json)
from .detection import run_detection
from .evaluation import evaluate_with_tta, learned_nothing
from .state import Run

log = logging.getLogger("noisylab")


def open_run_folder(run: Run, run_dir: str | Path | None, resumed_from: Path | None, changed: list[str],
                    views: list[str]) -> None:
    """Rank 0: check the free space, create (or reopen) the run folder, write the config, labels and
    split of a new run, open the logs (``views``: the input pipeline's view recipes, for the log).
    Called only after every input was read and checked."""
    cfg, data = run.cfg, run.data
    check_free_space(run, Path(run_dir) if run_dir is not None else Path(cfg.output_dir))
    run.out = new_run_dir(cfg.output_dir, cfg.name) if run_dir is None else ensure_dir(Path(run_dir))
    attach_file_log(run.out)
    save_config(cfg, run.out / "config.yaml")
    if resumed_from is None:
        atomic_write(run.out / "noisy_labels.npz", data.labels.save)
        save_arrays(run.out / "split.npz", train_idx=data.train_idx, val_idx=data.val_idx)
    if data.bundle.extra.get("skipped_files"):  # damaged image files the loader left out
        from ..data.files import write_skipped_files

        write_skipped_files(run.out / "skipped_files.csv", data.bundle.extra["skipped_files"])
    run.writer = open_tensorboard(cfg, run.out)
    bundle = data.bundle
    log.info("run folder: %s", run.out)
    log.info("data: %s, %d training / %d validation / %d test examples, %d classes; labels: %s; views: %s",
             bundle.name, len(data.train_idx), len(data.val_idx),
             0 if bundle.test_labels is None else len(bundle.test_labels), bundle.num_classes,
             noise_line(data.labels, data.truth_known),
             ", ".join(views) or "none (cached features)")
    if resumed_from is not None:
        w = run.within_epoch
        inside = "" if w is None else f" after its step {w['batch']} of {w['of']}" + \
            (f" of phase {w['phase'] + 1}" if w["phase"] else "")
        log.info("resumed at epoch %d of %d%s from %s%s", run.start_epoch + 1, cfg.train.epochs, inside, resumed_from,
                 f" with new {', '.join(changed)}" if changed else "")


def check_free_space(run: Run, where: Path) -> None:
    """Refuse to start when the disk of ``where`` (or its nearest existing parent) cannot hold the
    checkpoints the run will write: last, prev and best, plus the temporary copy of one."""
    import shutil

    while not where.exists() and where != where.parent:
        where = where.parent
    def size(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)
    weights = size(t for m in run.method.models.values() for t in m.state_dict().values())
    per_example = size(t for m in run.method.losses.values() for t in m.state_dict().values())
    per_example += size(run.dynamics.state_dict().values()) if run.dynamics is not None else 0
    need = 4 * (3 * weights + per_example)  # weights + up to 2 optimizer moments, the tables; 4 files
    free = shutil.disk_usage(where).free
    if free < need:
        raise OutputError(28, f"the disk of '{where}' has {free / 2**20:.0f} MiB free; the run's checkpoints need about "
                              f"{need / 2**20:.0f} MiB: free space or choose another output_dir")


def write_epoch(run: Run, row: dict[str, Any], improved: bool) -> None:
    """Rank 0: the epoch's CSV rows, the checkpoints (last, and best when ``improved``), TensorBoard, log."""
    if not run.dist.is_main or run.out is None:
        return
    out = run.out
    write_csv(out / "metrics.csv", run.history)
    if run.memorization:
        write_csv(out / "memorization.csv", run.memorization)
    ckpt = checkpoint_state(run, row["epoch"])
    save_checkpoint(ckpt, out / "checkpoints" / "last.pt", keep_old_as=out / "checkpoints" / "prev.pt")
    if improved:
        save_checkpoint(ckpt, out / "checkpoints" / "best.pt")
    if run.writer is not None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                run.writer.add_scalar(k, v, row["epoch"])
        run.writer.flush()
    log.info(epoch_log_line(row, run.cfg.train.epochs))


def checkpoint_state(run: Run, epoch: int) -> dict[str, Any]:
    """What a checkpoint holds after epoch ``epoch`` (the last finished one) and ``run.step`` steps."""
    ckpt = {"epoch": epoch, "step": run.step, "method": run.method.state_dict(), "history": run.history,
            "memorization": run.memorization, "best": run.best, "rng": capture_rng(run.device), "config": run.cfg.to_dict(),
            "scaler": run.scaler.state_dict() if run.amp else {}, "world_size": run.dist.world_size,
            "lookahead": run.lookahead.state_dict() if run.lookahead is not None else {}}
    if run.dynamics is not None:
        ckpt["dynamics"] = run.dynamics.state_dict()
    return ckpt


def write_stop_checkpoint(run: Run, progress: dict[str, Any]) -> None:
    """Rank 0: ``last.pt`` at the step where a stop request ended training inside epoch
    ``progress["epoch"]`` (the finished epoch's checkpoint moves to ``prev.pt``; a second stop in
    the same epoch replaces the first), so resuming loses no step; ``within_epoch`` holds the
    epoch's place and sums so far (:func:`fit_epoch`)."""
    if not run.dist.is_main or run.out is None:
        return
    ckpt = checkpoint_state(run, int(progress["epoch"]) - 1)
    ckpt["within_epoch"] = progress
    # a second stop in the same epoch replaces the first: prev.pt keeps the finished epoch to go back to
    again = run.stop_saved_in == int(progress["epoch"])
    save_checkpoint(ckpt, run.out / "checkpoints" / "last.pt",
                    keep_old_as=None if again else run.out / "checkpoints" / "prev.pt")
    run.stop_saved_in = int(progress["epoch"])
    log.info("stopped in epoch %d after step %d of %d%s; saved to %s", progress["epoch"] + 1, progress["batch"],
             progress["of"], f" of phase {progress['phase'] + 1}" if progress["phase"] else "",
             run.out / "checkpoints" / "last.pt")


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
        settled = settle_alarm(run.dynamics, run.history, run.data.train_idx) if run.dynamics is not None else None
        withdrawn = settled is not None and settled["withdrawn"]
        summary["detect"] = run_detection(run)  # after the alarm is settled: it decides what the history holds
        alarms = [r["epoch"] for r in run.history if r.get("alarm")]
        summary["alarm"] = {"warned_epoch": alarms[0] if alarms and not withdrawn else None,
                            "withdrawn_epoch": settled["epoch"] if withdrawn else None,
                            "final_wrong_high": settled["wrong_high"] if settled else None,
                            "history_until_epoch": run.dynamics.history_until_epoch if run.dynamics else None,
                            "peak_suspect_fit": max((r["suspect_fit"] for r in run.history if r.get("suspect_fit") == r.get("suspect_fit")), default=None)}
    if run.memorization:
        summary["memorization_last"] = {k: run.memorization[-1][k] for k in MEMO_COLUMNS}
    summary["wall_time_s"] = time.time() - run.t_start
    write_json(out / "summary.json", summary)
    if run.memorization:
        from ..report.plots import plot_memorization

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
        log.info("noise rate %s (detector %s, %s)", noise_rate_text(det), det["method"], det["filter_by"])
    if det.get("num_noisy"):
        log.info("against the known wrong labels: precision %.4f recall %.4f F1 %.4f AUROC %.4f AUPRC %.4f",
                 det["precision"], det["recall"], det["f1"], det["auroc"] or float("nan"), det["auprc"] or float("nan"))
    return summary


def noise_line(labels: NoisyLabels, truth_known: bool = True) -> str:
    """``kind rate, actual r`` for the log; no actual rate where the true labels are unknown (own
    data); a file written by ``noisylab detect --relabel`` says so and names its run."""
    rate = "" if labels.rate is None else f" {labels.rate:g}"
    actual = f", actual {labels.actual_rate:.4f}" if labels.clean is not None and truth_known else ""
    relabelled = labels.options.get("relabelled")
    then = f", then {relabelled} relabelled by {labels.options.get('relabelled_from')}" if relabelled is not None else ""
    return f"{labels.kind}{rate}{then}{actual}"
