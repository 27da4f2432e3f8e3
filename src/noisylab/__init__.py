"""noisylab: train classifiers on noisy labels and find the wrong labels.

Public API::

    from noisylab import ELRLoss, GCELoss, CELoss, make_noisy_labels, find_label_issues, train
    noisylab.find_label_issues(features, labels)   # or (path), or cleanlab's (labels, pred_probs)
    from noisylab.estimator import NoisyLabelClassifier   # scikit-learn
    from noisylab.losses import NTXentLoss, RKDDistanceLoss, RKDAngleLoss, SCELoss, BootstrapLoss
"""
__version__ = "0.1.0"

from .losses import BootstrapLoss, CELoss, ELRLoss, GCELoss, SCELoss  # noqa: E402
from .detect import detection_metrics, label_quality_scores  # noqa: E402
from .find import find_label_issues  # noqa: E402
from .noise import NoisyLabels, make_noisy_labels  # noqa: E402
from .config import Config, load_config  # noqa: E402


def train(cfg, resume=None, callbacks=None, run_dir=None):
    """Train a :class:`Config` (see :func:`noisylab.training.train`)."""
    from .training import train as _train

    return _train(cfg, resume=resume, callbacks=callbacks, run_dir=run_dir)


__all__ = [
    "__version__", "CELoss", "ELRLoss", "GCELoss", "SCELoss", "BootstrapLoss", "NoisyLabels", "make_noisy_labels", "find_label_issues",
    "label_quality_scores", "detection_metrics", "Config", "load_config", "train",
]
