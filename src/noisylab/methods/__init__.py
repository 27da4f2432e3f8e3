"""Training methods: ``build_method(ctx)`` picks one by its config schema (``method.name``)."""
from ..config import MethodConfig, union_members
from .base import Batch, EvalData, Method, MethodContext, Phase, StepOutput
from .elr_plus import ELRPlusMethod
from .linear_probe import LinearProbeMethod
from .repreg import RepRegMethod
from .simclr import SimCLRMethod
from .standard import StandardMethod

_CLASSES = (StandardMethod, ELRPlusMethod, SimCLRMethod, LinearProbeMethod, RepRegMethod)
METHODS: dict[str, type[Method]] = {
    name: next(m for m in _CLASSES if m.config_class is schema) for name, schema in union_members(MethodConfig).items()
}
"""Every method by its name (the names are those of the config schemas)."""


def build_method(ctx: MethodContext) -> Method:
    return METHODS[ctx.config.method.name](ctx)


__all__ = ["Method", "MethodContext", "Phase", "Batch", "StepOutput", "EvalData", "METHODS", "build_method",
           "StandardMethod", "ELRPlusMethod", "SimCLRMethod", "LinearProbeMethod", "RepRegMethod"]
