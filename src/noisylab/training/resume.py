"""Continuing a run: which settings may change, and putting a checkpoint back into a :class:`Run`.

A resumed run repeats the uninterrupted one exactly (same RNG streams, same AMP scale, same
per-example state) unless a key of :data:`RESCHEDULE_KEYS` changed (then the schedule is rebuilt
for the new values) or the process count changed (then the log says what that changes).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, load_checkpoint, read_checkpoint_file, restore_rng, run_folder_of
from ..config import Config, ConfigError, build_config
from .state import Run

log = logging.getLogger("noisylab")


# Config keys a resumed run may change (a prefix covers its sub-keys). Anything else — the data,
# the noise, the model, the method, the seed — would make the checkpoint mean something else.
RESUMABLE_KEYS = ("train.epochs", "optim.lr", "schedule", "train.progress", "train.log_every", "train.tensorboard",
                  "train.eval_batch_size", "train.skip_nonfinite", "train.compile", "device", "detect")


RESCHEDULE_KEYS = ("train.epochs", "optim.lr", "schedule")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(stored: dict[str, Any], cfg: Config) -> list[str]:
    """The keys of ``cfg`` that differ from the checkpoint's config; refuses (one line) a change
    of a key outside :data:`RESUMABLE_KEYS`."""
    try:  # through today's schema: settings added since the run started read as their defaults
        stored = build_config(dict(stored)).to_dict()
    except ConfigError:
        pass
    old, new = flatten(stored), flatten(cfg.to_dict())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>")
                     and k not in ("name", "output_dir"))  # the run folder is given: these only name it
    for key in changed:
        if not any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS):
            raise ConfigError(f"'{key}' cannot change when resuming (the run used {old.get(key, '<unset>')!r}, "
                              f"now {new.get(key, '<unset>')!r}): only {', '.join(RESUMABLE_KEYS)} may; "
                              "start a new run for anything else")
    return changed


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint (a finished epoch's, or a stop's inside one; a temporary
    file does not count)."""
    return any((folder / "checkpoints" / name).is_file() for name in ("last.pt", "prev.pt", "best.pt"))


def finished_epoch_instead(ckpt_file: Path, state: dict[str, Any], cfg: Config,
                           world_size: int) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume: ``state`` itself, unless it is a stop checkpoint (saved inside an
    epoch) that cannot go on from its step: on another number of processes (its step counts the
    old processes' batches) or with ``train.epochs`` no longer above the stopped epoch. Then the
    run's last finished epoch (``prev.pt``) replaces it, with a warning; a ConfigError of one line
    when there is none (stopped in its first epoch, or the file is damaged)."""
    within = state.get("within_epoch")
    if within is None:
        return ckpt_file, state
    stopped, trained_on = int(within["epoch"]), int(state.get("world_size", 1))
    if trained_on != world_size:
        reason = f"it ran on {trained_on} process(es) and now on {world_size}"
    elif cfg.train.epochs <= stopped:
        reason = f"train.epochs is now {cfg.train.epochs}"
    else:
        return ckpt_file, state
    prev, prev_state = ckpt_file.parent / "prev.pt", None
    if prev.is_file() and prev != ckpt_file:
        try:
            prev_state = read_checkpoint_file(prev)
        except CheckpointError:
            prev_state = None
    if prev_state is None or prev_state.get("within_epoch") is not None or int(prev_state["epoch"]) != stopped - 1:
        raise ConfigError(f"'{run_folder_of(ckpt_file)}' stopped inside epoch {stopped + 1} and cannot go on from "
                          f"there ({reason}), and has no checkpoint of the epoch before to go back to: resume it on "
                          f"{trained_on} process(es) with train.epochs above {stopped}, or start it again")
    log.warning("the run stopped inside epoch %d; %s, so it goes back to the end of epoch %d (%s) and trains "
                "epoch %d again from its start", stopped + 1, reason, stopped, prev, stopped + 1)
    return prev, prev_state


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
    run.within_epoch = state.get("within_epoch")  # a stop checkpoint: go on from the step after it
    if run.within_epoch is not None:
        run.stop_saved_in = int(run.within_epoch["epoch"])
    restore_rng(state["rng"], run.device)
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


def config_from_checkpoint(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The config stored in a checkpoint, with dotted overrides applied (e.g. more epochs)."""
    from ..config import apply_overrides

    folder = Path(path)
    if folder.is_dir() and not (folder / "checkpoints").exists() and (folder / "config.yaml").is_file() \
            and any(folder.glob("fold_*")):  # a cross-validation's parent folder: its config is the file
        from ..config import read_yaml

        return build_config(apply_overrides(read_yaml(folder / "config.yaml"), list(overrides or [])))
    state = load_checkpoint(path)
    return build_config(apply_overrides(dict(state["config"]), list(overrides or [])))
