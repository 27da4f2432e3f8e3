"""The ``detect`` block of a run's summary.json."""
from __future__ import annotations

from typing import Any

import numpy as np

from .estimate import noise_estimates
from .metrics import detection_metrics


def detection_summary(found, given: np.ndarray, truth: np.ndarray | None, num_classes: int) -> dict[str, Any]:
    """The ``detect`` block of summary.json: the detector, the flagged count, the noise estimates,
    and precision / recall / F1 / AUROC / AUPRC when the truth is known."""
    summary = {"method": found.method, "filter_by": found.filter_by, "rank_by": found.rank_by,
               "num_scored": len(given), "num_flagged": int(found.flagged.sum()),
               **noise_estimates(given, found.flagged, found.suggested, num_classes,
                                  confident_joint=found.confident_joint, check=found.check)}
    if truth is not None:
        summary.update(detection_metrics(found.flagged, given != truth, found.quality).as_dict())
    return summary
