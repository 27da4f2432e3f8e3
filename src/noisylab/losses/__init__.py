"""Pure loss modules. Every classification loss has ``forward(logits, labels, index)``; losses
without per-example state ignore ``index``, so a method can swap them freely.
The representation losses (NT-Xent / InfoNCE, RKD distance and angle) take two embeddings
instead: ``forward(z1, z2)`` and ``forward(student_logits, teacher)``."""
from .classification import BootstrapLoss, CELoss, GCELoss, SCELoss
from .elr import ELRLoss
from .elr_plus import ELRPlusLoss
from .representation import InfoNCELoss, NTXentLoss, RKDAngleLoss, RKDDistanceLoss

__all__ = [
    "CELoss", "GCELoss", "SCELoss", "BootstrapLoss", "ELRLoss", "ELRPlusLoss",
    "NTXentLoss", "InfoNCELoss", "RKDDistanceLoss", "RKDAngleLoss",
]
