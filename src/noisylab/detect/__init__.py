"""Finding wrong labels, in cleanlab's shapes (``labels [N]``, ``pred_probs [N, C]``, a boolean
mask or indices ranked by a quality score in [0, 1], lower = more likely wrong).

- :mod:`.detectors`: the named detectors that read one training run (``DETECTORS``,
  ``@register_detector``: a detector in a new module here is found by itself); :mod:`.sop_noise`:
  detector ``sop`` from SOP's learned label noise;
- :mod:`.scores`: quality scores and filters (confident learning through ``cleanlab``);
- :mod:`.dynamics`: the per-example record of training the history detector and the alarm use;
- :mod:`.estimate`: noise rate and transition matrix from a flagged set;
- :mod:`.metrics`: precision, recall, F1, AUROC, AUPRC against known truth, and how sure a
  difference in F1 between two detectors is;
- :mod:`.io`: ``label_issues.csv``.
"""
from ..registry import DETECTORS, register_detector  # every module here is read for detectors on first use
from .detectors import Detection, DetectorUnavailable, Evidence, detect_label_issues, knn_vote, run_detector
from .dynamics import TrainingDynamics
from .estimate import noise_estimates
from .io import write_label_issues_csv
from .summary import detection_summary
from .alarm import ALARM_RISE, memorization_alarm
from .metrics import (DetectionMetrics, PairedDifference, auroc, average_precision, detection_metrics,
                      paired_f1_difference, precision_recall_curve)
from .scores import (CLEANLAB_FILTERS, CORE_FILTERS, FILTERS, NEEDS_CLEANLAB, SCORES, expected_f1_issues,
                     find_label_issues, label_quality_scores, normalize_rows)

__all__ = [
    "ALARM_RISE", "CLEANLAB_FILTERS", "CORE_FILTERS", "DETECTORS", "Detection", "DetectionMetrics", "DetectorUnavailable", "Evidence",
    "FILTERS", "NEEDS_CLEANLAB", "PairedDifference", "SCORES", "TrainingDynamics", "auroc", "average_precision",
    "detect_label_issues", "detection_metrics", "detection_summary", "memorization_alarm", "expected_f1_issues", "find_label_issues", "knn_vote",
    "label_quality_scores", "noise_estimates", "normalize_rows", "paired_f1_difference", "precision_recall_curve",
    "register_detector", "run_detector", "write_label_issues_csv",
]
