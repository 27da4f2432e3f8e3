"""``cv.folds=K``: K ordinary runs, one per fold, and the out-of-sample probabilities they give."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write
from ..config import Config, ConfigError, save_config
from ..data.pipeline import example_paths
from ..data.prepare import PreparedData, prepare_data
from ..detect import detection_summary, write_label_issues_csv
from ..run_folder import ensure_dir, new_run_dir, write_json
from .loop import EpochCallback, finish_run, run_epochs
from .outputs import noise_line
from .resume import has_checkpoint
from .setup import check_filter_available, setup_run
from .state import RunResult

log = logging.getLogger("noisylab")


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
    from ..noise import stratified_folds

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
    from ..detect.detectors import detection_from_probs

    given = data.given
    atomic_write(parent / "pred_probs.npy", lambda tmp: np.save(tmp, pred_probs))
    atomic_write(parent / "labels.npy", lambda tmp: np.save(tmp, given))
    d = cfg.detect
    found = detection_from_probs("cross_validated", given, pred_probs, d.filter_by, d.threshold, d.rank_by,
                                 out_of_sample=True)
    truth = data.bundle.train_labels if data.truth_known else None
    paths = example_paths(data.bundle, "train")
    write_label_issues_csv(parent / "label_issues.csv", given, found.suggested, found.flagged, found.quality,
                           true_labels=truth, class_names=data.bundle.class_names, paths=paths)
    summary = {"name": cfg.name, "dataset": cfg.data.dataset, "method": cfg.method.name,
               "noise": noise_line(data.labels, data.truth_known),
               "cv_folds": cfg.cv.folds, "detect": detection_summary(found, given, truth, data.bundle.num_classes),
               "wall_time_s": wall_time_s}
    write_json(parent / "summary.json", summary)
    log.info("cross-validation done: %d suspected wrong labels (%s) -> %s; out-of-sample probabilities -> %s",
             int(found.flagged.sum()), found.filter_by, parent / "label_issues.csv", parent / "pred_probs.npy")
    return summary
