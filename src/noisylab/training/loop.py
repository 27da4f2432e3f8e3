"""The epochs of a run (:func:`run_epochs`: fit, evaluate, select, write) and its end
(:func:`finish_run`)."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch.distributed as dist

from ..run_folder import detach_file_log
from .evaluation import evaluate, update_best
from .outputs import write_epoch, write_final_outputs, write_stop_checkpoint
from .runtime import TrainingStopped
from .state import Run, RunResult
from .step import eta_line, fit_epoch

log = logging.getLogger("noisylab")


EpochCallback = Callable[[int, dict[str, Any]], None]


def run_epochs(run: Run, callbacks: list[EpochCallback] | None = None) -> None:
    """The epochs of ``run`` from where it stands to ``train.epochs``: fit, evaluate, write; after
    the first one, how long the rest will take. A stop request inside an epoch writes a checkpoint
    at that step before :class:`TrainingStopped` goes on up."""
    t0 = time.time()
    for epoch in range(run.start_epoch, run.cfg.train.epochs):
        try:
            row = fit_epoch(run, epoch)
        except TrainingStopped as stop:
            if stop.progress is not None:
                write_stop_checkpoint(run, stop.progress)
                if run.dist.enabled:
                    dist.barrier()  # the others wait for rank 0's checkpoint before they exit
            raise
        row.update(evaluate(run, epoch))
        improved = update_best(run, row)
        row["time_s"] = row.pop("time_s")  # wall time last, as before
        run.history.append(row)
        write_epoch(run, row, improved)
        if epoch == run.start_epoch and epoch + 1 < run.cfg.train.epochs and run.dist.is_main:
            log.info(eta_line(time.time() - t0, run.cfg.train.epochs - epoch - 1))
        for cb in callbacks or []:
            cb(epoch, row)


def finish_run(run: Run) -> RunResult:
    """Rank 0 writes the final outputs; every rank closes the log and the process group."""
    result = RunResult(run.out, run.history, run.memorization)
    try:
        if run.dist.is_main and run.out is not None:
            result.summary = write_final_outputs(run)
    finally:
        if run.writer is not None:
            run.writer.close()
        detach_file_log()
        if run.dist.enabled and dist.is_initialized():
            dist.barrier()  # rank 0 has written the outputs
            run.method.unwrap_distributed()  # the wrappers' reducers hold the group
            dist.destroy_process_group()
    return result
