"""Model registry: ``create_model(name, num_classes, input_shape, **kwargs) -> nn.Module``.

Plus :mod:`noisylab.models.contrastive`: encoder + projection head (Cheng et al., ICLR 2023) and
encoder checkpoints (noisylab format or the official SelfSup_NoisyLabel ``f.*``/``g.*`` layout).
"""
from .contrastive import ContrastiveNet, MultiViewNet, ProjectionHead, load_encoder_checkpoint, save_encoder_checkpoint
from .registry import create_model, list_models, register_model

# each model module registers its architectures on import (timm-style @register_model)
from . import small, resnet, external, fast, pretrained  # noqa: E402,F401  isort: skip

__all__ = [
    "create_model", "list_models", "register_model",
    "ContrastiveNet", "MultiViewNet", "ProjectionHead", "load_encoder_checkpoint", "save_encoder_checkpoint",
]
