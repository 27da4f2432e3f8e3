"""Per-example state (one row of C numbers per training example) in the precision its size allows.

ELR's targets, ELR+'s target histories and the detection record are ``[N, C]`` tables. In float32
a 1.28M x 1000 table (ImageNet-1k, WebVision-1000) is 5.1 GB; in float16, 2.6 GB.
``train.state_precision`` chooses: ``float32``, ``float16``, or ``auto`` (float16 from
:data:`AUTO_HALF_ENTRIES` entries per table on, float32 below, so every CIFAR-size run keeps the
papers' float32).

Half precision only stores: each update reads the rows in float32, computes there and rounds
once when writing back (:func:`ema_rows_`). For a moving average ``s <- d s + (1 - d) x`` with
``d < 1`` the rounding errors do not pile up: each write is off by at most half a float16 ulp
(``2^-12`` for values in [0.5, 1), less below), and the recursion shrinks every earlier error by
``d``, so the stored value stays within ``2^-12 / (1 - d)`` of the float32 recursion fed the same
inputs (``2^-12 / 0.3 = 8.1e-4`` for ELR's beta = 0.7, ``2.4e-3`` for beta = 0.9), however many
epochs pass.
"""
from __future__ import annotations

import torch

PRECISIONS = ("auto", "float32", "float16")
AUTO_HALF_ENTRIES = 2**27
"""``auto`` keeps float32 below this many entries per table (134M: 134,217 examples x 1000
classes, 537 MB in float32) and uses float16 from there on."""
HALF_ULP_BELOW_ONE = 2.0**-12
"""Half the spacing of float16 numbers in [0.5, 1): the largest rounding error of one write."""


def state_dtype(precision: str, num_examples: int, num_classes: int) -> torch.dtype:
    """The dtype of the per-example tables for ``train.state_precision``."""
    if precision == "float32":
        return torch.float32
    if precision == "float16":
        return torch.float16
    if precision == "auto":
        return torch.float16 if num_examples * num_classes >= AUTO_HALF_ENTRIES else torch.float32
    raise ValueError(f"state precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def ema_bound(decay: float) -> float:
    """The largest distance of a float16-stored moving average from its float32 recursion (module doc)."""
    return HALF_ULP_BELOW_ONE / (1.0 - decay)


@torch.no_grad()
def ema_rows_(table: torch.Tensor, index: torch.Tensor, values: torch.Tensor, decay: float) -> None:
    """``table[index] <- decay * table[index] + (1 - decay) * values``, computed in float32 (float64
    for a float64 table) and written in ``table``'s dtype (one rounding per write). With repeated
    indices the last wins, as with plain indexed assignment."""
    compute = torch.promote_types(table.dtype, torch.float32)
    rows = table[index].to(compute)
    table[index] = (decay * rows + (1.0 - decay) * values.to(compute)).to(table.dtype)


def table_bytes(num_examples: int, num_classes: int, dtype: torch.dtype) -> int:
    return num_examples * num_classes * torch.empty((), dtype=dtype).element_size()
