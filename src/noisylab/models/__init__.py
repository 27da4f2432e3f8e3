"""Model registry: ``create_model(name, num_classes, input_shape, **kwargs) -> nn.Module``."""
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
