"""Small helpers shared by the test modules."""
import socket
import sys
from pathlib import Path

from noisylab.config import apply_settings, build_config


def config_with(base: dict, **over):
    """Validate ``base`` after setting each dotted key of ``over`` (``"train.epochs": 2``), as
    command-line overrides would (a new method or loss name starts its section afresh)."""
    return build_config(apply_settings(base, [((key.split("."), value), key) for key, value in over.items()]))


def free_port() -> int:
    """A free TCP port on the loopback interface, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, tmp_path: Path) -> list[str]:
    """The command that starts ``nproc`` local processes, with torchrun's log folder inside
    ``tmp_path`` (by default every launch leaves a ``torchelastic_*`` folder in the system's /tmp)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(free_port()), "--log-dir", str(tmp_path / "torchrun_logs")]


class Interrupt(Exception):
    """Raised from an epoch callback to cut a run short (its checkpoint is already written)."""


def full_and_resumed(cfg, tmp_path, stop_after_epoch: int):
    """Train ``cfg`` once uninterrupted (``tmp_path/full``) and once cut after ``stop_after_epoch``
    then resumed with every global RNG disturbed (``tmp_path/cut``); returns both results."""
    import numpy as np
    import pytest
    import torch

    from noisylab.engine import train

    full = train(cfg, run_dir=tmp_path / "full")

    def stop(epoch, row):
        if epoch == stop_after_epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, run_dir=tmp_path / "cut", callbacks=[stop])
    torch.manual_seed(999)
    np.random.seed(999)
    return full, train(cfg, resume=tmp_path / "cut")


def without_time(rows):
    """Metric rows without the wall-clock column, which differs between any two runs."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def default_detector_flag_count(arrays) -> int:
    """How many labels the default detector flags, recomputed from a run's ``predictions.npz``
    arrays by its documented rule: cleanlab's ``prune_by_class`` on the normalized prediction
    history, averaged 1:1 with the final predictions when no memorization alarm froze it."""
    import cleanlab.filter

    history = arrays["history"] / arrays["history"].sum(1, keepdims=True)
    if not arrays["history_frozen"]:
        history = (history + arrays["pred_probs"] / arrays["pred_probs"].sum(1, keepdims=True)) / 2
    return int(cleanlab.filter.find_label_issues(arrays["given_label"], history, filter_by="prune_by_class").sum())
