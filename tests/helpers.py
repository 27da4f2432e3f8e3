"""Small helpers shared by the test modules."""
import socket

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
