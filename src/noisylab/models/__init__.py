"""Model registry: ``create_model(name, num_classes, input_shape, **kwargs) -> nn.Module``.

Plus :mod:`noisylab.models.contrastive`: encoder + projection head (Cheng et al., ICLR 2023) and
encoder checkpoints (noisylab format or the official SelfSup_NoisyLabel ``f.*``/``g.*`` layout).
"""
from .contrastive import ContrastiveNet, MultiViewNet, ProjectionHead, load_encoder_checkpoint, save_encoder_checkpoint
from .registry import create_model, list_models, register_model

# the model modules register their architectures (timm-style @register_model) when the registry
# (noisylab.registry.MODELS) is first read: it imports every module of this package

__all__ = [
    "create_model", "list_models", "register_model",
    "ContrastiveNet", "MultiViewNet", "ProjectionHead", "load_encoder_checkpoint", "save_encoder_checkpoint",
]
