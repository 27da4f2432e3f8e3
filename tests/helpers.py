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


def worker_failure(stderr: str, tail: int = 2000) -> str:
    """What to show when a torchrun launch fails: the lines of its workers' own errors (a C++ abort
    prints its reason long before torchrun's summary), then the end of the output."""
    words = ("terminate called", "what():", "Error", "error:", "gloo", "Exception")
    causes = [ln for ln in stderr.splitlines() if any(w in ln for w in words)][:20]
    return "\n".join(causes) + "\n...\n" + stderr[-tail:]


def full_and_resumed(cfg, tmp_path, stop_after_epoch: int):
    """Train ``cfg`` once uninterrupted (``tmp_path/full``) and once cut after ``stop_after_epoch``
    then resumed with every global RNG disturbed (``tmp_path/cut``); returns both results."""
    import numpy as np
    import pytest
    import torch

    from noisylab.training import train

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


def confident_class(given, probs):
    """``(counted bool [N], guess int [N])``: the confident joint's view of each example, from its
    definition (Northcutt et al., JAIR 2021): class k's threshold is the mean p[k] of the examples
    labelled k; an example is counted when some class's p reaches its threshold, and belongs to that
    class (the largest p among several)."""
    import numpy as np

    c = probs.shape[1]
    thresholds = np.array([probs[given == k, k].mean() for k in range(c)])
    confident = probs >= thresholds - 1e-6
    guess = np.where(confident.sum(1) > 1, probs.argmax(1), confident.argmax(1))
    return confident.any(1), guess


def confidently_other(given, probs):
    """``bool [N]``: membership in the confident joint's off-diagonal (counted, and its confident
    class is not its label)."""
    counted, guess = confident_class(given, probs)
    return counted & (guess != given)


def pool_adjacent_violators(values):
    """The non-increasing least-squares fit to ``values`` (in their order): merge neighbouring blocks
    while a later block's mean exceeds an earlier one's."""
    import numpy as np

    blocks = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] > blocks[-2][0] / blocks[-2][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    return np.concatenate([np.full(n, s / n) for s, n in blocks])


def expected_f1_flags(given, probs, counted_by=None):
    """The ``expected_f1`` filter's flags from its documented rule, written independently: rank by
    relative confidence ``p[y] / (p[y] + max_{k != y} p[k])``; estimate P(wrong) along the ranking
    as the monotone fit of confident-joint off-diagonal membership (of ``counted_by`` when given,
    a detector's ``counts_with``, else of ``probs``); flag the prefix that maximises
    ``2 * sum(P(wrong) flagged) / (k + sum(P(wrong)))``. Scores must have no ties."""
    import numpy as np

    probs = probs / probs.sum(1, keepdims=True)
    counted_by = probs if counted_by is None else counted_by / counted_by.sum(1, keepdims=True)
    rows = np.arange(len(given))
    p_y = probs[rows, given]
    rival = np.where(np.eye(probs.shape[1], dtype=bool)[given], -1.0, probs).max(1)
    order = np.argsort(p_y / (p_y + rival), kind="stable")
    wrong = pool_adjacent_violators(confidently_other(given, counted_by)[order])
    flags = np.zeros(len(given), dtype=bool)
    if wrong.sum() == 0:
        return flags
    expected_f1 = 2 * np.cumsum(wrong) / (np.arange(1, len(order) + 1) + wrong.sum())
    flags[order[:int(np.argmax(expected_f1)) + 1]] = True
    return flags


def default_detector_flag_count(arrays) -> int:
    """How many labels the default detector flags, recomputed from a run's ``predictions.npz``
    arrays by its documented rule: the ``expected_f1`` filter on the normalized prediction history,
    averaged 1:1 with the final predictions when no memorization alarm froze it, with the wrong
    labels counted on the history alone."""
    history = arrays["history"] / arrays["history"].sum(1, keepdims=True)
    ranked = history
    if not arrays["history_frozen"]:
        ranked = (history + arrays["pred_probs"] / arrays["pred_probs"].sum(1, keepdims=True)) / 2
    return int(expected_f1_flags(arrays["given_label"], ranked, counted_by=history).sum())


def image_npz(tmp_path, n=96, n_test=30, size=12, classes=3, seed=0):
    """A tiny image ``.npz`` (``x, y, x_test, y_test``, uint8 ``[N, 3, size, size]``): class k is
    brighter in channel k, learnable in a few steps. Returns its path (``tmp_path/images.npz``)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def make(count):
        y = np.arange(count) % classes
        x = rng.integers(0, 120, (count, 3, size, size))
        for i, k in enumerate(y):
            x[i, k] += 100 + rng.integers(0, 30)
        return x.astype(np.uint8), y

    (x, y), (xt, yt) = make(n), make(n_test)
    path = tmp_path / "images.npz"
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)
    return path
