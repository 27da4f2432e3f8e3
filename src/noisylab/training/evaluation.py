"""Evaluation: accuracy on every labelled set each epoch, the memorization fractions and alarm,
model selection (:func:`update_best`), and the final test-time-augmented pass."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..data.batching import EvalBatches
from ..detect.alarm import memorization_alarm
from ..detect.estimate import held_out_check
from ..methods import Method
from ..report.memorization import memorization_fractions
from ..tta import tta_logits
from .runtime import autocast
from .state import Run

log = logging.getLogger("noisylab")


@torch.no_grad()
def predict_probs(method: Method, batches: EvalBatches, amp: bool, tta: str = "none") -> np.ndarray:
    """Softmax outputs ``float32 [batches.num_examples, C]`` of the method's predictor, eval mode,
    with test-time augmentation ``tta`` (:mod:`noisylab.tta`)."""
    out = list(predicted_batches(method, batches, amp, tta))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


def predicted_batches(method: Method, batches: EvalBatches, amp: bool, tta: str = "none"):
    """:func:`predict_probs` one batch at a time: ``float32 [B, C]`` tensors on the batches' device."""
    method.train(False)
    for batch in batches:
        with autocast(batch.x.device, amp):
            yield torch.softmax(tta_logits(method.predict, batch.x, tta), dim=1).float()


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def evaluate(run: Run, epoch: int) -> dict[str, Any]:
    """Accuracy on every labelled evaluation set and the memorization fractions (with a
    classifier), plus the method's own metrics."""
    method, row, check = run.method, {}, None
    if method.has_classifier:
        show_top5 = run.data.bundle.num_classes > 10
        for split, (batches, split_labels) in run.eval_data.sets.items():
            probs = predict_probs(method, batches, run.amp)
            row[f"{split}_top1"] = topk_accuracy(probs, split_labels, 1)
            if show_top5 and split != "noisy_val":
                row[f"{split}_top5"] = topk_accuracy(probs, split_labels, 5)
            if split == "noisy_val" and run.dynamics is not None:
                run.dynamics.record_probs(probs, run.data.val_idx)  # the held-out part's history
                check = held_out_check(split_labels, probs)  # bounds the wrong labels the alarm can blame
        if run.dynamics is not None:
            alarm = memorization_alarm(run.dynamics, run.data.given, run.data.train_idx, run.history, epoch,
                                       check=check, log_it=run.dist.is_main)
            if alarm.pop("alarm_new") and method.on_memorization_alarm() and run.dist.is_main:
                log.info("epoch %d: the memorization alarm switches on the ELR regularizer (method.loss.start=alarm)",
                         epoch + 1)
            row.update(alarm)
        if run.memo_idx is not None:
            tr, pred = memorization_predictions(run)
            memo = memorization_fractions(pred, run.data.given[tr], run.data.bundle.train_labels[tr])
            run.memorization.append({"epoch": epoch, **memo})
            row["memorized"] = memo["noisy_memorized"]
    method.train(False)
    with torch.no_grad():
        row.update(method.evaluate(run.eval_data))
    return row


def memorization_predictions(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, predicted class)`` for the memorization curves (``train.memorization_from``): an
    evaluation pass over the sample, or the latest training-pass prediction of each row the record
    keeps (rows not seen yet, e.g. outside a balanced subset, are left out)."""
    if run.memo_batches is not None:
        return run.memo_idx, predict_probs(run.method, run.memo_batches, run.amp).argmax(axis=1)
    d = run.dynamics
    at = d.alarm_position[torch.as_tensor(run.memo_idx, device=d.last_pred.device)]
    pred = d.last_pred[at].cpu().numpy()
    seen = pred >= 0
    return run.memo_idx[seen], pred[seen]


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
