"""MNIST-1D (Greydanus 2020): 1-D signals of length 40, 10 classes, generated offline.

With default options this is the canonical frozen split (4,000 train / 1,000 test) that the
``mnist1d`` package regenerates bit-for-bit from seed 42 without network access.
"""
from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
import torch

from .base import DataBundle, DataError
from .registry import register_dataset


@functools.lru_cache(maxsize=4)
def _generate(num_samples: int, seed: int) -> dict:
    """The generated arrays (cached: the demo trains three runs on the same data)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset seeds numpy's global RNG; keep the caller's global state untouched
    state = np.random.get_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = make_dataset(args)
    finally:
        np.random.set_state(state)
    for key in ("x", "y", "x_test", "y_test"):
        data[key].setflags(write=False)  # shared between calls
    return data


@register_dataset("mnist1d")
def load_mnist1d(root: str | None = None, num_samples: int = 5000, seed: int = 42) -> DataBundle:
    """Generate MNIST-1D with the package's default arguments (80/20 train/test split).

    Args:
        root: unused (the data is procedural); accepted for a uniform loader signature.
        num_samples: total examples before the 80/20 split (5,000 gives the canonical set).
        seed: the generator's seed (42 gives the canonical set).
    """
    try:
        import mnist1d  # noqa: F401
    except ImportError as err:  # pragma: no cover - it is a core dependency
        raise DataError("the 'mnist1d' package is missing: pip install mnist1d") from err
    data = _generate(int(num_samples), int(seed))
    return DataBundle(
        name="mnist1d",
        train_x=torch.from_numpy(np.ascontiguousarray(data["x"], dtype=np.float32)),
        train_labels=np.array(data["y"]),
        test_x=torch.from_numpy(np.ascontiguousarray(data["x_test"], dtype=np.float32)),
        test_labels=np.array(data["y_test"]),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        augment="none",
    )
