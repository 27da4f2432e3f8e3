"""The step loop: one epoch of every phase of a method (:func:`fit_epoch`).

Per batch: the method's ``before_step``, its loss, one backward through the AMP scaler, a step
of every optimizer of the phase, its schedulers, ``after_step``, weight averaging; the epoch's
means of the loss and its named terms are all-reduced over the ranks. Host syncs happen only
every ``train.log_every`` steps (the progress bar, the DDP stop vote).
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..config import Config
from .resume import flatten
from .runtime import _STOP, DistInfo, TrainingStopped, autocast, epoch_seed, stop_now
from .state import Run

log = logging.getLogger("noisylab")


ETA_STEPS = 50  # an epoch of at least 4x this many steps says after this many how long the run will take


# the setting to blame when a loss term blows up (the term of largest magnitude before divergence)
TERM_SETTINGS = {"elr": "method.loss.lam", "infonce": "method.infonce_weight", "rkd_dis": "method.reg_weight",
                 "rkd_angle": "method.reg_weight"}


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says where and what to change."""


def fit_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """Train every phase of ``epoch``; returns ``lr``, ``train_loss``, ``train_<term>`` (epoch means
    over the examples of all ranks) and, with a classifier, ``train_acc``.

    Raises :class:`TrainingStopped` after the step during which a stop was requested (with its
    ``progress``: the place in the epoch, each rank's running sums, the method's ``epoch_progress()``), and :class:`TrainingDiverged` at the end of an epoch
    whose loss was not finite (with ``train.skip_nonfinite`` such batches are skipped instead: no
    optimizer step). A run resumed from a stop checkpoint (``run.within_epoch``) goes on from the
    step after the stop, with the epoch's sums so far."""
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
    resumed = run.within_epoch if epoch == run.start_epoch else None
    run.within_epoch = None
    start_phase, start_batch = 0, 0
    if resumed is not None:
        t0 -= resumed["time_s"]
        # a stop checkpoint resumes inside its epoch only on its own number of processes
        # (resume.finished_epoch_instead), so each rank takes back its own running sums
        mine = resumed["ranks"][run.dist.rank]
        sums = {k: torch.tensor(v, device=device) for k, v in mine["sums"].items()}
        peaks = {k: torch.tensor(v, device=device) for k, v in mine["peaks"].items()}
        seen, skipped, lr = int(mine["seen"]), int(mine["skipped"]), float(resumed["lr"])
        start_phase, start_batch = int(resumed["phase"]), int(resumed["batch"])
        method.restore_epoch_progress(resumed["method"])
    bar = progress_bar(cfg, run.dist, len(run.train_batches) * len(phases), epoch)
    if bar is not None and resumed is not None:
        bar.update(start_phase * per_phase + start_batch)
    for p_i, phase in enumerate(phases):
        if p_i < start_phase or (p_i == start_phase and start_batch >= per_phase):
            continue  # trained before the stop
        batches = run.train_batches.epoch(epoch_seed(cfg.seed, epoch, p_i), epoch)
        first = start_batch if p_i == start_phase else 0
        # the batches before the stop are drawn and dropped: a store's augmentation randomness
        # runs on from batch to batch, so the next batch is the one the whole run would see
        for b_i, batch in enumerate(itertools.islice(batches, first, None), start=first):
            method.before_step(phase, batch, run.step)
            with autocast(device, run.amp):
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
            n = len(batch.y)
            for name, value in (("loss", out.loss), *((f"term_{k}", v) for k, v in out.terms.items())):
                v = value.detach().float()
                sums[name] = sums.get(name, torch.zeros((), device=device)) + v * n
                peaks[name] = torch.maximum(peaks.get(name, torch.zeros((), device=device)),
                                            v.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0))
            logits = out.per_example_logits
            if logits is not None:
                correct = (logits.detach().argmax(dim=1) == batch.y).sum().float()
                sums["correct"] = sums.get("correct", torch.zeros((), device=device)) + correct
                if run.dynamics is not None:
                    run.dynamics.record_logits(logits, batch.index)
            seen += n
            if bar is not None:
                bar.update(1)
                if bar.n % cfg.train.log_every == 0:  # a host sync, so only every log_every steps
                    bar.set_postfix(loss=f"{sums['loss'].item() / seen:.4f}",
                                    ex_s=f"{seen / max(time.time() - t0, 1e-9):.0f}")
            if b_i + 1 == ETA_STEPS and p_i == 0 and epoch == run.start_epoch and per_phase >= 4 * ETA_STEPS \
                    and resumed is None and run.dist.is_main:  # a long epoch: say early how long the run takes
                epoch_s = (time.time() - t0) / ETA_STEPS * per_phase * len(phases)
                log.info("epoch %d: about %s an epoch; %s", epoch + 1, f"{epoch_s / 60:.1f} min" if epoch_s >= 90
                         else f"{epoch_s:.0f} s", eta_line(epoch_s, cfg.train.epochs - epoch))
            if stop_now(run.dist, run.step, cfg.train.log_every, device):
                if bar is not None:
                    bar.close()
                tallies = {"sums": {k: float(v) for k, v in sums.items()},
                           "peaks": {k: float(v) for k, v in peaks.items()}, "seen": seen, "skipped": skipped}
                progress = {"epoch": epoch, "phase": p_i, "batch": b_i + 1, "of": per_phase,
                            "ranks": every_rank(tallies, run.dist), "lr": float(lr), "time_s": time.time() - t0,
                            "method": method.epoch_progress()}
                raise TrainingStopped(f"stopped by {_STOP['signal']} in epoch {epoch + 1}", progress)
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
        raise TrainingDiverged(divergence_message(run, epoch, means["loss"], lr, peaks))
    row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": means.pop("loss")}
    if "correct" in means:
        row["train_acc"] = means.pop("correct")
    row.update({f"train_{k.removeprefix('term_')}": v for k, v in means.items()})
    row["time_s"] = time.time() - t0
    return row


def every_rank(tallies: dict[str, Any], dinfo: DistInfo) -> list[dict[str, Any]]:
    """``[tallies of rank 0, rank 1, ...]``: each process's running sums of the epoch (they are
    added across processes only at its end). Collective under DDP: every rank stops at one step."""
    if not dinfo.enabled:
        return [tallies]
    gathered: list[Any] = [None] * dinfo.world_size
    dist.all_gather_object(gathered, tallies)
    return gathered


def divergence_message(run: Run, epoch: int, loss: float, lr: float, peaks: dict[str, torch.Tensor]) -> str:
    """One line: where the loss stopped being finite, the setting that most likely caused it, what to do."""
    cfg = run.cfg
    terms = {k.removeprefix("term_"): float(v) for k, v in peaks.items() if k.startswith("term_")}
    culprit = max(terms, key=terms.get) if terms else None
    setting = TERM_SETTINGS.get(culprit or "", "optim.lr")
    values = flatten(cfg.to_dict())
    now = lr if setting == "optim.lr" else values.get(setting)
    where = f"the {culprit} term reached {terms[culprit]:.3g} first; " if culprit else ""
    last_good = run.history[-1]["epoch"] + 1 if run.history else 0
    resume = (f"resume from the last good checkpoint (epoch {last_good}) with noisylab train -r {run.out} "
              f"optim.lr={lr / 10:g}" if setting == "optim.lr" and run.history else "start a new run with a lower value")
    return (f"training diverged in epoch {epoch + 1} (loss {loss:g}): {where}lower {setting} (now {now:g}), or set "
            f"train.skip_nonfinite=true to skip such batches; {resume}")


def eta_line(epoch_s: float, epochs_left: int, now: float | None = None) -> str:
    """``the 59 epochs left take about 35 min (until 14:05, ...)`` at ``epoch_s`` seconds an epoch."""
    left = epoch_s * epochs_left
    until = time.strftime("%H:%M", time.localtime((time.time() if now is None else now) + left))
    size = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
    return f"the {epochs_left} epoch{'s' * (epochs_left > 1)} left take about {size} (until {until}, " \
           f"then the final evaluation)"


def progress_bar(cfg: Config, dinfo: DistInfo, total: int, epoch: int):
    if not (cfg.train.progress and dinfo.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True)
