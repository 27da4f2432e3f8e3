"""Dataset registry: ``name -> loader(root, **options) -> DataBundle``."""
from __future__ import annotations

import inspect
from typing import Callable

from .base import DataBundle, DataError

DatasetLoader = Callable[..., DataBundle]
_DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: make ``loader(root=None, **options)`` available as ``data.dataset: <name>``."""

    def wrap(fn: DatasetLoader) -> DatasetLoader:
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' registered twice")
        _DATASETS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(name: str, root: str | None = None, **options) -> DataBundle:
    """Load dataset ``name`` from ``root`` (each loader documents its layout and defaults)."""
    if name not in _DATASETS:
        from ..config import did_you_mean

        raise DataError(f"unknown dataset '{name}'{did_you_mean(name, list_datasets())} (valid: {', '.join(list_datasets())})")
    loader = _DATASETS[name]
    params = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(params)) if not any(p.kind is p.VAR_KEYWORD for p in params.values()) else []
    if unknown:
        valid = [p for p in params if p != "root"]
        from ..config import did_you_mean

        raise DataError(f"dataset '{name}' has no option '{unknown[0]}'{did_you_mean(unknown[0], valid)} "
                        f"(valid: {', '.join(valid) or 'none'})")
    return loader(root=root, **options)
