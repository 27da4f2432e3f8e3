"""Training methods: ``build_method(ctx)`` picks one by ``config.method.name``."""
from .base import Method, MethodContext, Phase
from .elr_plus import ELRPlusMethod
from .standard import StandardMethod

METHODS: dict[str, type[Method]] = {"standard": StandardMethod, "elr_plus": ELRPlusMethod}


def build_method(ctx: MethodContext) -> Method:
    return METHODS[ctx.config.method.name](ctx)


__all__ = ["Method", "MethodContext", "Phase", "StandardMethod", "ELRPlusMethod", "METHODS", "build_method"]
