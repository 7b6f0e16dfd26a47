"""The default protocol: per-label Dice, HD95 (mm), surface Dice and volumes (ml).

For every label other than 0 present in the reference or the prediction of a case
(or the fixed ``labels``), region ``label_<n>`` holds:

* ``dice``: ``2|P ∩ R| / (|P| + |R|)`` (a label absent from both maps is not reported);
* ``hd95``: 95th-percentile symmetric surface distance in mm, DeepMind's surfel definition
  (:mod:`medfoundry.evaluation.surface`, spacing from the header); when exactly one map
  holds the label, the diagonal of the image in mm (a finite worst case);
* ``nsd``: surface Dice at ``tolerance_mm`` (default 1 mm), 0 when exactly one map holds it;
* ``ref_volume_ml``, ``pred_volume_ml``, ``abs_volume_difference_ml``.

A missing prediction is scored as an empty one: Dice 0, HD95 the diagonal, NSD 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .registry import CaseFigures, SegmentationProtocol, register_protocol

__all__ = ["DefaultProtocol"]


@dataclass(frozen=True)
class DefaultProtocol(SegmentationProtocol):
    """Per-label figures (see the module docstring).

    Attributes:
        labels: labels to report in every case; ``None``: those present in either map.
        tolerance_mm: surface-Dice tolerance in mm.
    """

    name: str = "default"
    description: str = "per-label Dice, HD95 (mm), surface Dice at 1 mm, volumes (ml)"
    source: str = "DeepMind surface-distance definitions (medfoundry.evaluation.surface)"
    labels: tuple[int, ...] | None = None
    tolerance_mm: float = 1.0

    def headline(self) -> tuple[str, ...]:
        return ("dice", "hd95", "nsd", "abs_volume_difference_ml")

    def evaluate_case(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        from ..surface import hd95, surface_dice

        pred = np.asarray(pred)
        ref = np.asarray(ref)
        spacing = tuple(float(s) for s in spacing)
        voxel_ml = math.prod(spacing) / 1000.0
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, spacing)))
        labels = self.labels
        if labels is None:
            labels = tuple(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
        out: CaseFigures = {}
        for label in labels:
            p, r = pred == label, ref == label
            n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
            figures = {"ref_volume_ml": n_r * voxel_ml, "pred_volume_ml": n_p * voxel_ml,
                       "abs_volume_difference_ml": abs(n_r - n_p) * voxel_ml}
            if n_p == 0 and n_r == 0:
                figures.update(dice=float("nan"), hd95=float("nan"), nsd=float("nan"))
            elif n_p == 0 or n_r == 0:
                figures.update(dice=0.0, hd95=diagonal, nsd=0.0)
            else:
                figures.update(dice=2.0 * int(np.count_nonzero(p & r)) / (n_p + n_r),
                               hd95=float(hd95(p, r, spacing)),
                               nsd=surface_dice(p, r, spacing, self.tolerance_mm))
            out[f"label_{label}"] = figures
        return out

    def missing_case(self, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        return self.evaluate_case(np.zeros_like(ref), ref, spacing)


DEFAULT = register_protocol(DefaultProtocol())
