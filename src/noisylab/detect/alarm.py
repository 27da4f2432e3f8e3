"""The memorization alarm: the epoch a model starts to fit the labels it doubted.

Read each epoch from the per-example record of training (:class:`TrainingDynamics`); when it
sounds, the record's history detector freezes at the last calm epoch, and the run tells the method
(``Method.on_memorization_alarm``: the own-data recipe switches ELR on there).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from .dynamics import TrainingDynamics

log = logging.getLogger("noisylab")

ALARM_RISE = 0.2
"""The memorization alarm sounds when ``suspect_fit`` has risen this much above its lowest value."""


def memorization_alarm(dynamics: TrainingDynamics, given: np.ndarray, train_idx: np.ndarray,
                       history: Sequence[dict[str, Any]], epoch: int, *, log_it: bool = True) -> dict[str, Any]:
    """``suspect_fit`` and ``num_suspected`` of the epoch (:meth:`TrainingDynamics.suspect_fit`),
    and ``alarm`` = 1 from the epoch ``suspect_fit`` has risen :data:`ALARM_RISE` (and three
    standard errors of its sampling noise) above its lowest value since the second epoch: the model
    has started to fit the labels it doubted.

    Args:
        dynamics: the run's record; freezes its history detector at the first alarm (it goes back
            to the last calm epoch, whose reading had risen less than half of :data:`ALARM_RISE`:
            the rise is only certain some epochs after it began).
        given: ``[N]`` the labels the model sees; ``train_idx``: the training part.
        history: the metric rows of the earlier epochs (their ``suspect_fit`` and ``alarm``).
        log_it: log the freeze and warn once (rank 0).

    Returns:
        ``{"suspect_fit", "num_suspected", "alarm", "alarm_new"}``; ``alarm_new`` is True only at
        the epoch the alarm first sounds (the caller then tells the method, and drops the key).
    """
    fit, size = dynamics.suspect_fit(given, train_idx)
    # the first epoch reads 0 by construction (its suspects are its own disagreements): the baseline
    # is the lowest reading from the second epoch on, so that rising from 0 (plain learning) is no alarm
    readable = epoch >= 1 and fit == fit
    readings = [v for r in history if r["epoch"] >= 1 for v in [r.get("suspect_fit", float("nan"))] if v == v]
    low = min(readings + ([fit] if readable else []), default=float("nan"))
    already = any(r.get("alarm") for r in history)
    # the rise must also stand out from the sampling noise of a small suspected set (3 standard errors)
    rise_needed = max(ALARM_RISE, 3.0 * float(np.sqrt(fit * (1.0 - fit) / max(size, 1)))) if readable else 1.0
    sounding = already or (readable and fit - low >= rise_needed)
    if not sounding and not (readable and fit - low >= ALARM_RISE / 2):
        dynamics.keep_calm(epoch)
    new = sounding and not already
    if new:
        calm = dynamics.freeze()  # the history detector keeps what the model thought before memorizing
        if log_it and calm is not None:
            log.info("epoch %d: the history detector keeps the predictions up to epoch %d, before the rise began",
                     epoch + 1, calm + 1)
        if log_it:
            log.warning("epoch %d: memorization alarm: the model now fits %.0f%% of the %d labels it suspects "
                        "(lowest %.0f%%): it has started memorizing wrong labels; stop here (best.pt), lower the "
                        "learning rate, or raise the ELR lambda", epoch + 1, 100 * fit, size, 100 * low)
    return {"suspect_fit": fit, "num_suspected": size, "alarm": int(sounding), "alarm_new": new}
