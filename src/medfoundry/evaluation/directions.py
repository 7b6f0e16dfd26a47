"""Which metrics are better when lower: one list for task metrics, rankings and reports.

Names may carry a suffix after ``/`` (``hd95/label_1``); only the part before it counts.
"""

from __future__ import annotations

__all__ = ["LOWER_IS_BETTER", "higher_is_better"]

LOWER_IS_BETTER = frozenset({
    "loss", "hd95", "hd95_mm", "assd", "assd_mm", "tre", "tre30", "sdlogj", "sdlogj_official",
    "runtime", "folding_percent", "ndv_percent", "ece", "volume_difference_ml",
    "abs_volume_difference_ml", "abs_lesion_count_difference",
})


def higher_is_better(metric: str) -> bool:
    """``False`` for metrics where a smaller value is better (distances, errors, time)."""
    return metric.split("/")[0] not in LOWER_IS_BETTER
