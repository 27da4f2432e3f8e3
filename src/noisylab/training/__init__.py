"""The one training loop every method plugs into.

dataset -> noise -> input pipeline -> method -> **training** -> outputs. A run is three parts,
each in its own module, and a caller can drive them itself (cross-validation folds do):

1. :func:`~noisylab.training.setup.setup_run` (``setup.py``): read and check every input, build
   the method and its batches, resume a checkpoint (``resume.py``), open the run folder;
   :class:`~noisylab.training.state.Run` is what the parts share;
2. per epoch, :func:`~noisylab.training.loop.run_epochs` (``loop.py``):
   :func:`~noisylab.training.step.fit_epoch` (``step.py``, the step loop) +
   :func:`~noisylab.training.evaluation.evaluate` (``evaluation.py``, accuracy, memorization and
   the alarm) + :func:`~noisylab.training.outputs.write_epoch` (``outputs.py``, CSV rows and
   checkpoints);
3. :func:`~noisylab.training.loop.finish_run`: the final outputs, with detection
   (``detection.py``).

``runtime.py`` holds the process side (devices, torchrun, stop signals, AMP) and
``cross_validation.py`` the K-fold runs of ``cv.folds``. :mod:`noisylab.run_folder` lists the
files a run writes.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from .cross_validation import train_cross_validated
from .loop import EpochCallback, finish_run, run_epochs
from .resume import config_from_checkpoint, has_checkpoint
from .runtime import TrainingStopped, request_stop, stop_on_signals
from .setup import setup_run
from .state import Run, RunResult
from .step import TrainingDiverged, fit_epoch


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


__all__ = ["train", "setup_run", "run_epochs", "fit_epoch", "finish_run", "train_cross_validated", "Run", "RunResult",
           "TrainingDiverged", "TrainingStopped", "request_stop", "stop_on_signals", "config_from_checkpoint", "has_checkpoint"]
