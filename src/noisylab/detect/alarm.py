"""The memorization alarm: the epoch a model starts to fit the labels it doubted.

Read each epoch from the per-example record of training (:class:`TrainingDynamics`); when it
sounds, the record's history detector freezes at the last calm epoch, and the run tells the method
(``Method.on_memorization_alarm``: the own-data recipe switches ELR on there).

A rise of the reading is memorization only if there are wrong labels enough to make it. On nearly
clean data a model also comes to fit, late, hard images it had doubted, whose labels are right.
So in a run with a held-out part the alarm is provisional: training goes on as after any alarm,
but the history detector keeps its copy of the last calm epoch beside the running one, and at the
end :func:`settle_alarm` weighs the rise against the held-out check of the final model
(:func:`~noisylab.detect.estimate.held_out_check`), which bounds how many training labels can be
wrong. Checks made during training do not decide it: their models still err on many of the
examples they are surest of, and read several times the wrong labels there are.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from .dynamics import TrainingDynamics
from .estimate import HeldOutCheck

log = logging.getLogger("noisylab")

ALARM_RISE = 0.2
"""The memorization alarm sounds when ``suspect_fit`` has risen this much above its lowest value."""


def memorization_alarm(dynamics: TrainingDynamics, given: np.ndarray, train_idx: np.ndarray,
                       history: Sequence[dict[str, Any]], epoch: int, *, check: HeldOutCheck | None = None,
                       log_it: bool = True) -> dict[str, Any]:
    """``suspect_fit`` and ``num_suspected`` of the epoch (:meth:`TrainingDynamics.suspect_fit`),
    and ``alarm`` = 1 from the epoch ``suspect_fit`` has risen :data:`ALARM_RISE` (and three
    standard errors of its sampling noise) above its lowest value since the second epoch: the model
    has started to fit the labels it doubted.

    Args:
        dynamics: the run's record; freezes its history detector at the first alarm (it goes back
            to the last calm epoch, whose reading had risen less than half of :data:`ALARM_RISE`:
            the rise is only certain some epochs after it began), at once without a held-out
            part, else when :func:`settle_alarm` confirms it.
        given: ``[N]`` the labels the model sees; ``train_idx``: the training part.
        history: the metric rows of the earlier epochs (their ``suspect_fit`` and ``alarm``).
        check: the held-out check of this epoch's held-out predictions, or None (no held-out
            part). With one, the alarm is provisional (the history is not frozen until
            :func:`settle_alarm` confirms it) and the row keeps ``held_out_wrong_high``.
        log_it: log the freeze and warn once (rank 0).

    Returns:
        ``{"suspect_fit", "num_suspected", "alarm", "alarm_new"}``, with a check also
        ``held_out_wrong_high`` (``check.high``); at the first alarm ``alarm_min_fitted``, the
        suspects that must have come to fit their label for the rise (the rise needed times the
        suspected set). ``alarm_new`` is True only at the epoch the alarm first sounds (the caller
        then tells the method, and drops the key).
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
    row: dict[str, Any] = {"suspect_fit": fit, "num_suspected": size, "alarm": int(sounding)}
    if check is not None:
        row["held_out_wrong_high"] = check.high
    if new:
        row["alarm_min_fitted"] = rise_needed * size
        if check is None:
            _freeze(dynamics, epoch, log_it)
        if log_it:
            log.warning("epoch %d: memorization alarm: the model now fits %.0f%% of the %d labels it suspects "
                        "(lowest %.0f%%): it has started memorizing wrong labels; stop here (best.pt), lower the "
                        "learning rate, or raise the ELR lambda%s", epoch + 1, 100 * fit, size, 100 * low,
                        "" if check is None else " (provisional: the held-out check of the final model confirms "
                        "or withdraws it)")
    return row | {"alarm_new": new}


def _freeze(dynamics: TrainingDynamics, epoch: int | None, log_it: bool) -> None:
    calm = dynamics.freeze()  # the history detector keeps what the model thought before memorizing
    if log_it and calm is not None:
        log.info("%sthe history detector keeps the predictions up to epoch %d, before the rise began",
                 "" if epoch is None else f"epoch {epoch + 1}: ", calm + 1)


def settle_alarm(dynamics: TrainingDynamics, history: Sequence[dict[str, Any]], train_idx: np.ndarray,
                 *, log_it: bool = True) -> dict[str, Any] | None:
    """At the end of a run, confirm or withdraw a provisional alarm (one that sounded in a run with
    a held-out part, :func:`memorization_alarm`).

    The rise that set it off needed ``alarm_min_fitted`` suspects to come to fit their label. The
    held-out check of the final model (the last row's ``held_out_wrong_high``) allows at most that
    share of the alarm's training rows to be wrong. Fewer than the rise needed, and the rise cannot
    have been memorization of wrong labels: the alarm is withdrawn and the history detector keeps
    its running average. Otherwise the alarm stands and the history goes back to the last calm
    epoch (:meth:`TrainingDynamics.freeze`), as it does at once without a held-out part.

    Returns:
        None when there was no provisional alarm, else ``{"epoch", "withdrawn", "min_fitted",
        "wrong_high", "wrong_bound"}`` (``wrong_bound``: ``wrong_high`` times the rows read).
    """
    sounded = next((r for r in history if r.get("alarm")), None)
    if sounded is None or dynamics.is_frozen or sounded.get("alarm_min_fitted") is None:
        return None
    high = float(history[-1].get("held_out_wrong_high", float("nan")))
    bound = high * dynamics.rows_read(train_idx)
    withdrawn = bool(bound < float(sounded["alarm_min_fitted"]))  # nan: no check at the end, the alarm stands
    if withdrawn:
        if log_it:
            log.info("the memorization alarm of epoch %d is withdrawn: its rise needed %.0f suspects to come to fit "
                     "their label, and the held-out check of the final model allows at most %.1f%% wrong labels "
                     "(%.0f): the model was learning hard examples, not memorizing", sounded["epoch"] + 1,
                     sounded["alarm_min_fitted"], 100 * high, bound)
    else:
        if log_it:
            log.info("the memorization alarm of epoch %d stands: the held-out check of the final model allows up to "
                     "%.1f%% wrong labels (%.0f), enough for its rise (%.0f)", sounded["epoch"] + 1, 100 * high,
                     bound, sounded["alarm_min_fitted"])
        _freeze(dynamics, None, log_it)
    return {"epoch": sounded["epoch"], "withdrawn": withdrawn, "min_fitted": float(sounded["alarm_min_fitted"]),
            "wrong_high": high, "wrong_bound": bound}
