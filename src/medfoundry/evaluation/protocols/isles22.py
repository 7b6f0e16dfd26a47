"""ISLES'22 (ischemic stroke lesions): Dice, absolute volume difference, lesion-wise F1, lesion count.

Definitions follow the challenge's published evaluation (github.com/ezequieldlrosa/isles22,
``utils/eval_utils.py``, MIT licence; the figures its ranking uses), written here anew:

* every nonzero voxel is lesion (the label maps are binary);
* ``dice``: ``2|P ∩ R| / (|P| + |R|)``; **1.0 when both maps are empty**;
* ``abs_volume_difference_ml``: ``| |R| - |P| | x voxel volume``, the voxel volume in ml being
  the product of the header's voxel sizes (mm) / 1000;
* lesions are 3D connected components with **26-connectivity** (8 in 2D);
  ``abs_lesion_count_difference`` is ``|#R - #P|``;
* ``lesion_f1``: a reference lesion touching the prediction in at least one voxel is a true
  positive, otherwise a false negative; a predicted lesion touching no reference voxel is a
  false positive; ``F1 = tp / (tp + (fp + fn) / 2)``, **1.0 when both maps are empty**.

A missing prediction is scored as an empty prediction except that Dice and F1 are 0 even
for an empty reference (the worst case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .instances import connected_components
from .registry import CaseFigures, SegmentationProtocol, register_protocol

__all__ = ["Isles22Protocol", "REGION"]

REGION = "lesion"


@dataclass(frozen=True)
class Isles22Protocol(SegmentationProtocol):
    """The ISLES'22 figures of one binary lesion map (region ``"lesion"``)."""

    name: str = "isles22"
    description: str = "ISLES'22 stroke lesions: Dice, absolute volume difference (ml), lesion-wise F1, lesion count"
    source: str = "github.com/ezequieldlrosa/isles22 utils/eval_utils.py (commit 31b7c8c)"

    def headline(self) -> tuple[str, ...]:
        return ("dice", "abs_volume_difference_ml", "lesion_f1", "abs_lesion_count_difference")

    def evaluate_case(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        p = np.asarray(pred) != 0
        r = np.asarray(ref) != 0
        voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
        n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        both = p & r
        dice = 1.0 if n_p + n_r == 0 else 2.0 * int(np.count_nonzero(both)) / (n_p + n_r)

        ndim = r.ndim
        ref_cc, n_ref = connected_components(r, connectivity=ndim)
        pred_cc, n_pred = connected_components(p, connectivity=ndim)
        tp = int(np.unique(ref_cc[both]).size)
        touched_pred = int(np.unique(pred_cc[both]).size)
        fn = n_ref - tp
        fp = n_pred - touched_pred
        f1 = 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)
        return {REGION: {
            "dice": dice,
            "abs_volume_difference_ml": abs(n_r * voxel_ml - n_p * voxel_ml),
            "lesion_f1": f1,
            "abs_lesion_count_difference": float(abs(n_ref - n_pred)),
            "tp": float(tp), "fp": float(fp), "fn": float(fn),
            "n_ref": float(n_ref), "n_pred": float(n_pred),
            "ref_volume_ml": n_r * voxel_ml, "pred_volume_ml": n_p * voxel_ml,
        }}

    def missing_case(self, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        figures = self.evaluate_case(np.zeros_like(ref), ref, spacing)
        figures[REGION].update(dice=0.0, lesion_f1=0.0)
        return figures


ISLES22 = register_protocol(Isles22Protocol())
