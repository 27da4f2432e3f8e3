"""The process a run lives in: its device, its place in a torchrun job, its stop requests, AMP.

Under ``torchrun`` (WORLD_SIZE > 1) every process joins one group (NCCL on GPUs, gloo on CPUs);
a SIGTERM / SIGINT handler calls :func:`request_stop` and the step loop stops after the current
step, at the same step on every rank (:func:`stop_now`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..config import ConfigError


class TrainingStopped(Exception):
    """A stop was requested (SIGTERM / SIGINT). ``progress``: where in its epoch the step loop
    stopped (:func:`~noisylab.training.step.fit_epoch`); the engine saves a checkpoint there, so
    a resumed run goes on from the step after it."""

    def __init__(self, message: str, progress: dict | None = None) -> None:
        super().__init__(message)
        self.progress = progress


_STOP: dict[str, str | None] = {"signal": None}


def request_stop(reason: str) -> None:
    """Ask the running training to stop after its current step (signal handlers call this)."""
    _STOP["signal"] = reason


@contextmanager
def stop_on_signals():
    """Within the block SIGTERM and SIGINT ask the training to stop after its current step (where
    it saves a checkpoint); a second SIGINT raises KeyboardInterrupt at once. The previous
    handlers come back after it. Main thread only (Python's signal rule)."""
    import signal

    asked = []

    def stop(signum, frame):
        if signum == signal.SIGINT and asked:
            raise KeyboardInterrupt  # a second Ctrl-C: now
        asked.append(signum)
        request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_device(name: str) -> tuple[torch.device, DistInfo]:
    """Resolve ``device`` and, when started by ``torchrun`` (WORLD_SIZE > 1), join the process group.

    Under torchrun each process uses ``cuda:LOCAL_RANK`` (NCCL) on GPU machines, else the CPU (gloo).
    """
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    want_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available here (use device=cpu)")
    if info.enabled:
        if want_cuda:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            join_process_group("nccl" if want_cuda else "gloo", info)
        return device, info
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), info
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available here (use device=cpu)")
    return torch.device(name), info


def join_process_group(backend: str, info: DistInfo) -> None:
    """``init_process_group`` from torchrun's environment, each restart attempt in its own key space.

    Under torchrun the workers share the launcher's key-value store (TORCHELASTIC_USE_AGENT_STORE),
    which outlives a failed attempt (``--max-restarts``) with the keys its group left there, among
    them each rank's gloo address: workers of the next attempt would read those and wait on
    processes that are gone (seen with torch 2.14, static and c10d rendezvous alike). A prefix
    per attempt (TORCHELASTIC_RESTART_COUNT) keeps every attempt to its own keys."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        dist.init_process_group(backend=backend)
        return
    from datetime import timedelta

    timeout = timedelta(minutes=30)  # torch's default for a process group
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world_size,
                          is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"noisylab/attempt_{attempt}", store),
                            rank=info.rank, world_size=info.world_size, timeout=timeout)


def epoch_seed(seed: int, epoch: int, phase: int) -> int:
    """Seed of the data order and augmentation of one phase of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, phase]).generate_state(1, dtype=np.uint64)[0] % 2**62)


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def stop_now(dinfo: DistInfo, step: int, log_every: int, device: torch.device) -> bool:
    """Whether to stop after this step. Under DDP the ranks agree every ``log_every`` steps (a
    signal may reach them at different steps; stopping apart would hang the others)."""
    if not dinfo.enabled:
        return _STOP["signal"] is not None
    if step % log_every:
        return False
    flag = torch.tensor([1.0 if _STOP["signal"] else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and _STOP["signal"] is None:
        _STOP["signal"] = "a stop request of another process"
    return flag.item() > 0
