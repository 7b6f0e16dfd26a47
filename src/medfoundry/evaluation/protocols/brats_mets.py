"""The BraTS metastasis scoring: lesions split by size, small ones judged by detection only.

Equal to ``parse_mets_results`` of brats-evaluation 0.0.10 (its leaderboard parser for the
metastasis task, defaults ``vol_threshold=20``, ``overlap_threshold=0.1``), written anew from
its definitions:

* a reference lesion is *large* when its volume (voxels x voxel volume, mm^3) is at least the
  volume threshold, otherwise *small*;
* a matched lesion (see :mod:`.brats`) is detected when its Dice reaches the overlap threshold;
  undetected and unmatched lesions are false negatives of their size class; every false-positive
  lesion counts in both classes (the official code cannot size them yet);
* ``large_*`` / ``small_*``: tp, fp, fn, precision, recall, f1 = 2tp / (2tp + fp + fn), with 0
  for a zero denominator, NaN when the reference has no lesion of that class;
* ``lesionwise_dice`` / ``_nsd`` / ``_hd95`` (and ``_std``) are over the large lesions only:
  matched ones with their figures, unmatched ones and every false positive with Dice 0, NSD 0,
  HD95 373; NaN when there is no large reference lesion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .brats import Lesion

__all__ = ["lesion_split_figures", "SPLIT_COLUMNS"]

NAN = float("nan")
# Our figure name -> column stem of the official parse_mets_results CSV.
SPLIT_COLUMNS = {f"{size}_{ours}": f"{size}_instance_{theirs}"
                 for size in ("large", "small")
                 for ours, theirs in (("tp", "tp"), ("fp", "fp"), ("fn", "fn"), ("precision", "prec"),
                                      ("recall", "rec"), ("f1", "f1"))}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def _detection(prefix: str, tp: int, fp: int, fn: int) -> dict[str, float]:
    return {f"{prefix}_tp": float(tp), f"{prefix}_fp": float(fp), f"{prefix}_fn": float(fn),
            f"{prefix}_precision": _ratio(tp, tp + fp), f"{prefix}_recall": _ratio(tp, tp + fn),
            f"{prefix}_f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def lesion_split_figures(lesions: Sequence[Lesion], n_fp: int, volume_threshold_mm3: float = 20.0,
                         overlap_threshold: float = 0.1, hd95_penalty: float = 373.0) -> dict[str, float]:
    """Size-split detection figures and large-lesion means of one region.

    Args:
        lesions: every reference lesion of the region with its match (see :class:`Lesion`).
        n_fp: predicted lesions matched to no reference lesion.
        volume_threshold_mm3: smallest volume of a large lesion, mm^3.
        overlap_threshold: smallest Dice of a detected lesion.
        hd95_penalty: HD95 of a missed or false-positive lesion, mm.
    """
    large = [les for les in lesions if les.volume_mm3 >= volume_threshold_mm3]
    small = [les for les in lesions if les.volume_mm3 < volume_threshold_mm3]
    out: dict[str, float] = {}
    for prefix, group in (("large", large), ("small", small)):
        if group:
            tp = sum(les.matched and les.dice >= overlap_threshold for les in group)
            out.update(_detection(prefix, tp, n_fp, len(group) - tp))
        else:
            out.update({f"{prefix}_{k}": NAN for k in ("tp", "fp", "fn", "precision", "recall", "f1")})

    if not large:
        out.update({f"lesionwise_{k}{s}": NAN for k in ("dice", "nsd", "hd95") for s in ("", "_std")})
        return out
    missed = [les for les in large if not les.matched]
    dice = [les.dice for les in large if les.matched] + [0.0] * (len(missed) + n_fp)
    nsd = [les.nsd for les in large if les.matched] + [0.0] * (len(missed) + n_fp)
    hd95 = [les.hd95 for les in large if les.matched] + [hd95_penalty] * (len(missed) + n_fp)
    finite_hd95 = [v for v in hd95 if np.isfinite(v)]
    out.update(lesionwise_dice=float(np.mean(dice)), lesionwise_dice_std=float(np.std(dice)),
               lesionwise_nsd=float(np.mean(nsd)), lesionwise_nsd_std=float(np.std(nsd)),
               lesionwise_hd95=float(np.mean(finite_hd95)) if finite_hd95 else hd95_penalty,
               lesionwise_hd95_std=float(np.std(finite_hd95)) if finite_hd95 else 0.0)
    return out
