"""Pure loss modules. Every classification loss has ``forward(logits, labels, index)``; losses
without per-example state ignore ``index``, so a method can swap them freely."""
from .classification import CELoss, GCELoss
from .elr import ELRLoss
from .elr_plus import ELRPlusLoss

__all__ = ["CELoss", "GCELoss", "ELRLoss", "ELRPlusLoss"]
