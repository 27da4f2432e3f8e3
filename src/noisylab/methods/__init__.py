"""Training methods: ``build_method(ctx)`` picks one by ``config.method.name``."""
from .base import Method, MethodContext, Phase
from .standard import StandardMethod

METHODS: dict[str, type[Method]] = {"standard": StandardMethod}


def build_method(ctx: MethodContext) -> Method:
    return METHODS[ctx.config.method.name](ctx)


__all__ = ["Method", "MethodContext", "Phase", "StandardMethod", "METHODS", "build_method"]
