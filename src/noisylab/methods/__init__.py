"""Training methods: ``build_method(ctx)`` builds the one registered under ``method.name``.

Each method registers itself with its config schema beside its class
(``@register_method(name, schema=...)``, :mod:`noisylab.registry`); nothing here lists them.
"""
from ..registry import METHODS as _REGISTRY
from .base import Batch, EvalData, Method, MethodContext, Phase, StepOutput


def method_class(name: str) -> type[Method]:
    """The class registered as method ``name``."""
    return _REGISTRY.get(name).obj


def build_method(ctx: MethodContext) -> Method:
    return method_class(ctx.config.method.name)(ctx)


def __getattr__(attr: str):
    # METHODS and the built-in classes by name, read from the registry on first use
    if attr == "METHODS":
        return {e.name: e.obj for e in _REGISTRY.entries()}
    for entry in _REGISTRY.entries():
        if entry.obj.__name__ == attr:
            return entry.obj
    raise AttributeError(f"module 'noisylab.methods' has no attribute '{attr}'")


__all__ = ["Method", "MethodContext", "Phase", "Batch", "StepOutput", "EvalData", "build_method", "method_class"]
