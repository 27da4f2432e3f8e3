"""Dataset loading: ``load_dataset(name, root, **options) -> DataBundle`` for a loader registered
with ``@register_dataset(name)`` (:mod:`noisylab.registry`) in any module of :mod:`noisylab.data`."""
from __future__ import annotations

import inspect
from typing import Callable

from ..registry import DATASETS, did_you_mean, register_dataset
from .base import DataBundle, DataError

DatasetLoader = Callable[..., DataBundle]

__all__ = ["DatasetLoader", "list_datasets", "load_dataset", "register_dataset"]


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def load_dataset(name: str, root: str | None = None, **options) -> DataBundle:
    """Load dataset ``name`` from ``root`` (each loader documents its layout and defaults)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'{did_you_mean(name, list_datasets())} (valid: {', '.join(list_datasets())})")
    loader = DATASETS[name]
    params = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(params)) if not any(p.kind is p.VAR_KEYWORD for p in params.values()) else []
    if unknown:
        valid = [p for p in params if p != "root"]
        raise DataError(f"dataset '{name}' has no option '{unknown[0]}'{did_you_mean(unknown[0], valid)} "
                        f"(valid: {', '.join(valid) or 'none'})")
    return loader(root=root, **options)
