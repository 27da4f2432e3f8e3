"""Detection at the end of a run: the evidence of every training-split example (the method's
per-example state, the training history, final predictions, neighbour votes) -> the configured
detector -> ``predictions.npz`` and ``label_issues.csv``."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..data.pipeline import example_paths
from ..detect import DetectorUnavailable, Evidence, detect_label_issues, detection_summary, knn_vote, write_label_issues_csv
from ..detect.detectors import TableRows
from ..detect.io import evidence_arrays
from ..per_example import TableStorage
from ..run_folder import save_arrays
from .evaluation import predicted_batches
from .state import Run


@torch.no_grad()
def collect_evidence(run: Run) -> tuple[np.ndarray, Evidence]:
    """``(dataset indices, Evidence)`` of every example of the training split: the training part,
    then the held-out part (scored by its out-of-sample predictions, never by training targets)."""
    data, method = run.data, run.method
    scored = np.concatenate([data.train_idx, data.val_idx])
    in_training = np.r_[np.ones(len(data.train_idx), bool), np.zeros(len(data.val_idx), bool)]
    batch_sets = [run.eval_data.train] + ([run.eval_data.sets["noisy_val"][0]] if len(data.val_idx) else [])
    # the [N, C] arrays are views into the run's tables, read in chunks by detection and when saved
    # (float32, as predictions.npz stores them: `noisylab detect RUN` later gives the same verdict)
    predictions = predictions_table(run, batch_sets, len(scored))
    state = {k: TableRows(v.detach(), scored) if v.dim() == 2 else v.detach().float().cpu().numpy()[scored]
             for k, v in method.sample_state().items()}
    given = data.given[scored]
    knn = knn_vote_of(run, batch_sets, given)
    return scored, Evidence.from_method_state(
        state, given=given, history=run.dynamics.history_rows(scored),
        predictions=TableRows(predictions, np.arange(len(scored))), in_training=in_training,
        knn=None if knn is None else knn.astype(np.float32), history_frozen=run.dynamics.is_frozen)


def predictions_table(run: Run, batch_sets: list[Any], num_rows: int) -> torch.Tensor:
    """``float32 [num_rows, C]``: the final predictor's softmax over ``batch_sets`` in order, in a
    table kept where the run keeps its per-example tables (memory, or a memory-mapped file)."""
    table = TableStorage(torch.float32, run.tables.folder).zeros(num_rows, run.data.bundle.num_classes)
    at = 0
    for batches in batch_sets:
        for probs in predicted_batches(run.method, batches, run.amp):
            table[at:at + len(probs)] = probs.cpu()
            at += len(probs)
    return table


KNN_KEPT_ENTRIES = 2**27
"""Runs whose ``N x C`` is larger (134M: 134k examples x 1000 classes) compute the neighbour vote
only when their detector reads it (``detect.method`` knn or ensemble): it is a dense ``[N, C]``
array, and the other detectors do not need it."""


def knn_vote_of(run: Run, batch_sets: list[Any], given: np.ndarray) -> np.ndarray | None:
    """The neighbour vote in the final predictor's encoder features (None when it has none, or
    when the run is larger than :data:`KNN_KEPT_ENTRIES` and its detector does not read it)."""
    large = len(given) * run.data.bundle.num_classes > KNN_KEPT_ENTRIES
    if large and run.cfg.detect.method not in ("knn", "ensemble"):
        return None
    run.method.train(False)
    try:
        feats = [run.method.features(batch.x).float().cpu() for b in batch_sets for batch in b]
    except ConfigError:
        return None
    return knn_vote(torch.cat(feats).numpy(), given, run.data.bundle.num_classes)


def run_detection(run: Run) -> dict[str, Any]:
    """predictions.npz and label_issues.csv of a method with a classifier; the detection summary."""
    cfg, data, out = run.cfg, run.data, run.out
    scored, ev = collect_evidence(run)
    truth = data.bundle.train_labels[scored] if data.truth_known else None
    all_paths = example_paths(data.bundle, "train")
    paths = None if all_paths is None else [all_paths[i] for i in scored]
    save_arrays(out / "predictions.npz", **evidence_arrays(ev, scored, truth, data.bundle.class_names, paths))
    try:
        d = cfg.detect
        found = detect_label_issues(ev, d.method, d.filter_by, d.threshold, d.rank_by, keep_probs=False)
    except DetectorUnavailable as err:
        raise ConfigError(f"detect.method={cfg.detect.method}: {err}") from None
    write_label_issues_csv(out / "label_issues.csv", ev.given, found.suggested, found.flagged, found.quality,
                           indices=scored, true_labels=truth, class_names=data.bundle.class_names, paths=paths,
                           in_training=ev.in_training)
    return detection_summary(found, ev.given, truth, data.bundle.num_classes)
