"""Detector ``sop``: SOP's learned label noise (Liu et al., "Robust Training under Label Noise by
Over-parameterization", ICML 2022; github.com/shengliu66/SOP).

SOP models each given label as ``onehot(y) = clean + s`` with ``s = u**2 * onehot(y) -
v**2 * (1 - onehot(y))``; ``U[i] = s[i, y_i]`` in [0, 1] is how much of example ``i``'s given
label SOP has taken away (near 1: SOP judges it wrong). The detector reads ``U`` as the
probability that the given label is wrong and spreads it over the other classes as the final
model ranks them:

    P[i, y_i] = 1 - U[i],    P[i, k] = U[i] * q[i, k] / sum_{j != y_i} q[i, j]  (k != y_i)

with ``q`` the model's predictions (uniform over the other classes where they are all 0), so a
label SOP left alone stands, and one it emptied is replaced by the model's best other class even
where the model itself has fitted the wrong label.
Held-out rows (never trained on, so ``s`` was never learned for them) come from the history.
The method's signal is ``Evidence.signals["sop_s"]`` ``[n, C]`` (:meth:`noisylab.methods.sop.SOP.sample_state`).
"""
from __future__ import annotations

import numpy as np

from ..registry import register_detector
from .detectors import DetectorUnavailable, Evidence, _held_out_from_history
from .scores import normalize_rows


@register_detector("sop")
def from_sop(ev: Evidence) -> np.ndarray:
    """``P [n, C]`` from SOP's ``s`` (module docstring)."""
    s = ev.signals.get("sop_s")
    if s is None:
        raise DetectorUnavailable("detector 'sop' needs SOP's learned label noise: train with method sop")
    rows = np.arange(len(ev.given))
    taken = np.clip(np.asarray(s, dtype=np.float64)[rows, ev.given], 0.0, 1.0)[:, None]  # U[i, y_i]
    onehot = np.eye(ev.num_classes, dtype=bool)[ev.given]
    others = np.where(onehot, 0.0, normalize_rows(ev.predictions).astype(np.float64))
    total = others.sum(axis=1, keepdims=True)
    others = np.where(total > 0, others / np.where(total > 0, total, 1.0), (~onehot) / (ev.num_classes - 1))
    return _held_out_from_history(ev, np.where(onehot, 1.0 - taken, taken * others))
