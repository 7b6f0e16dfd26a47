"""Dice per label or per region of a predicted label map (the numbers training validation and
``segment predict --labels`` report; challenge protocols live in ``medfoundry.evaluation``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..evaluation.segmentation import dice
from .regions import Region, labels_to_region_masks

__all__ = ["dice_scores", "mean_scores"]


def dice_scores(pred: np.ndarray, ref: np.ndarray, classes: Sequence[str],
                regions: Sequence[Region] | None = None) -> dict[str, float]:
    """Dice of each region (when ``regions``) or each foreground class (by class name) of two
    label maps of class indices; NaN when a structure is absent from both."""
    if regions:
        p = labels_to_region_masks(pred, list(regions))
        r = labels_to_region_masks(ref, list(regions))
        return {reg.name: dice(p[i], r[i], label=1) for i, reg in enumerate(regions)}
    return {name: dice(pred, ref, label=k) for k, name in enumerate(classes) if k > 0}


def mean_scores(per_case: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean over cases of each structure, ignoring NaN (a structure absent from a case)."""
    names = list(per_case[0]) if per_case else []
    out = {}
    for n in names:
        values = np.array([c[n] for c in per_case], dtype=np.float64)
        out[n] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out
