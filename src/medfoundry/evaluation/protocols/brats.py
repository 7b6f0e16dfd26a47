"""BraTS 2024/25 protocols: global and lesion-wise figures per tumour region.

Equal (within 1e-6) to the official package ``brats-evaluation`` 0.0.10 (its bundled configs
``gli``, ``mets``, ``ped``, ``MenPre``, ``MenRT``, ``GoAT``, all built on panoptica) followed by
its ``parse_seg_results`` (``parse_mets_results`` for metastases, :mod:`.brats_mets`); checked in
tests/evaluation/protocols/test_protocol_brats.py. Per region:

* **Lesion-wise** (instances = connected components, matched one to one by Dice, any overlap,
  see :mod:`.instances`): ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``
  (panoptica's recognition quality), ``lesionwise_dice`` / ``_nsd`` / ``_hd95`` (mean over the
  matched lesions; panoptica's segmentation quality) with their ``_std``, and ``pq_dice``
  (lesion-wise Dice x f1, the panoptic quality). HD95 and NSD per lesion use the voxel
  spacing (mm); the NSD tolerance is the smallest voxel side.
* **Global** (the region as one binary mask): ``dice``, ``nsd``, ``hd95``. As in the official
  code these ignore the voxel spacing: distances in voxels, NSD tolerance 0.5 voxel.

Edge cases, as the official configuration sets them: a region empty in both maps gives NaN for
every Dice, NSD, HD95, f1 and pq figure; a region present in one map only, or two maps that do
not overlap, give Dice 0, NSD 0 and HD95 inf (global HD95 is then reported as 373, the diagonal
of the 240 x 240 x 155 SRI atlas in mm, as the official parser does). With no matched lesion
the lesion-wise means take those values and their ``_std`` is NaN. ``precision`` is NaN
without predicted lesions, ``recall`` NaN without reference lesions. Labels outside the
protocol's regions are an error (the official code refuses them too). Reading order: see
``official_axis_order``.

A missing prediction is scored as the official parser scores a missing subject: HD95 figures
373, every other figure 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from ...errors import DataError
from .instances import (
    border_distances,
    border_hd95,
    border_nsd,
    connected_components,
    crop_box,
    match_instances,
    overlap_counts,
)
from .registry import CaseFigures, SegmentationProtocol, register_protocol

__all__ = ["BratsProtocol", "Lesion", "HD95_PENALTY", "OFFICIAL_COLUMNS", "FIGURES", "region_figures",
           "region_figures_and_lesions"]

HD95_PENALTY = 373.0
NAN = float("nan")
INF = float("inf")

# Our figure name -> the column stem of the official parse_seg_results CSV (``<stem>_<region>``).
OFFICIAL_COLUMNS = {
    "tp": "all_instance_tp", "fp": "all_instance_fp", "fn": "all_instance_fn",
    "precision": "all_instance_prec", "recall": "all_instance_rec", "f1": "all_instance_f1",
    "dice": "global_dsc", "nsd": "global_nsd", "hd95": "global_hd95",
    "lesionwise_dice": "lesionwise_dsc_mean", "lesionwise_dice_std": "lesionwise_dsc_std",
    "lesionwise_nsd": "lesionwise_nsd_mean", "lesionwise_nsd_std": "lesionwise_nsd_std",
    "lesionwise_hd95": "lesionwise_hd95_mean", "lesionwise_hd95_std": "lesionwise_hd95_std",
}
# Figures of panoptica's result that the official CSV leaves out.
_EXTRA = ("n_ref", "n_pred", "pq_dice")
FIGURES = tuple(OFFICIAL_COLUMNS) + _EXTRA


@dataclass(frozen=True)
class BratsProtocol(SegmentationProtocol):
    """One BraTS task: its regions (name -> labels merged into one mask) and the match threshold.

    Attributes:
        name: registry key.
        regions: region name -> label values that form it.
        description: one line.
        matching_threshold: smallest Dice for a lesion pair to match (official: 1e-6).
        hd95_penalty: global HD95 reported instead of inf, in mm (official: 373).
        lesion_split: ``(volume_threshold_mm3, overlap_threshold)`` for the metastasis scoring
            (:mod:`.brats_mets`): size-split detection figures, lesion-wise means over large
            lesions; ``None`` for the other tasks.
        official_axis_order: reproduce how the official package pairs axes and spacing. It
            reads NIfTI with SimpleITK, which gives the array in (k, j, i) order but the
            spacing in (i, j, k) order, so on anisotropic grids each axis is measured with
            another axis's voxel size (and components are numbered in that order). Identical
            for BraTS's 1 mm isotropic data; ``False`` gives the geometrically correct figures.
    """

    name: str
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    matching_threshold: float = 1e-6
    hd95_penalty: float = HD95_PENALTY
    lesion_split: tuple[float, float] | None = None
    official_axis_order: bool = True

    def headline(self) -> tuple[str, ...]:
        return ("dice", "hd95", "lesionwise_dice", "lesionwise_hd95", "f1")

    def official_columns(self) -> dict[str, str]:
        """Figure name -> column stem of the official CSV (``<stem>_<region>``)."""
        if self.lesion_split is None:
            return dict(OFFICIAL_COLUMNS)
        from .brats_mets import SPLIT_COLUMNS

        return {**OFFICIAL_COLUMNS, **SPLIT_COLUMNS}

    def _labels(self) -> set[int]:
        return {label for labels in self.regions.values() for label in labels}

    def _check_labels(self, array: np.ndarray, which: str) -> None:
        present = {int(v) for v in np.unique(array)} - {0}
        unknown = sorted(present - self._labels())
        if unknown:
            raise DataError(f"[{which}] label(s) {unknown} are not part of protocol {self.name!r} "
                            f"(expected labels {sorted(self._labels())})")

    def evaluate_case(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        pred = np.asarray(pred)
        ref = np.asarray(ref)
        self._check_labels(pred, "prediction")
        self._check_labels(ref, "reference")
        spacing = tuple(float(s) for s in spacing)
        if self.official_axis_order:
            pred, ref = pred.T, ref.T
        # Every figure is unchanged by cutting away background more than one voxel from both maps.
        box = crop_box(pred != 0, ref != 0, pad=1)
        pred, ref = np.ascontiguousarray(pred[box]), np.ascontiguousarray(ref[box])
        out: CaseFigures = {}
        for region, labels in self.regions.items():
            figures, lesions = region_figures_and_lesions(np.isin(pred, labels), np.isin(ref, labels), spacing,
                                                          self.matching_threshold)
            if self.lesion_split is not None:
                from .brats_mets import lesion_split_figures

                figures.update(lesion_split_figures(lesions, int(figures["fp"]), *self.lesion_split,
                                                    hd95_penalty=self.hd95_penalty))
            if figures["hd95"] == INF:
                figures["hd95"] = self.hd95_penalty
            out[region] = figures
        return out

    def missing_case(self, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        out: CaseFigures = {}
        for region, labels in self.regions.items():
            figures = {k: (self.hd95_penalty if "hd95" in k and not k.endswith("_std") else 0.0)
                       for k in self.official_columns()}
            figures.update(n_ref=float(connected_components(np.isin(ref, labels))[1]), n_pred=0.0, pq_dice=0.0)
            out[region] = figures
        return out


class Lesion(NamedTuple):
    """One reference lesion: its volume (mm^3) and, when matched, the figures of its pair."""

    volume_mm3: float
    matched: bool
    dice: float = NAN
    nsd: float = NAN
    hd95: float = NAN


def _padded_union(a: tuple[slice, ...], b: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(min(x.start, y.start) - 1, 0), min(max(x.stop, y.stop) + 1, n))
                 for x, y, n in zip(a, b, shape))


def region_figures(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                   matching_threshold: float = 1e-6) -> dict[str, float]:
    """Global and lesion-wise figures of one binary region (see the module docstring).

    Args:
        pred: predicted binary mask.
        ref: reference binary mask, same shape.
        spacing: voxel size per axis in mm (used by the lesion-wise HD95 and NSD only).
        matching_threshold: smallest Dice for a lesion pair to match.

    Returns:
        Figure name -> value; global ``hd95`` may be inf here (the protocol applies the penalty).
    """
    return region_figures_and_lesions(pred, ref, spacing, matching_threshold)[0]


def region_figures_and_lesions(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                               matching_threshold: float = 1e-6) -> tuple[dict[str, float], list[Lesion]]:
    """:func:`region_figures` and one :class:`Lesion` per reference lesion (matched ones first)."""
    ref_cc, n_ref = connected_components(ref)
    pred_cc, n_pred = connected_components(pred)
    ref_sizes, pred_sizes, inter = overlap_counts(ref_cc, n_ref, pred_cc, n_pred)
    matches = match_instances(ref_sizes, pred_sizes, inter, matching_threshold)
    tp = len(matches)
    any_instance = n_ref + n_pred > 0

    lesion: dict[str, list[float]] = {"dice": [], "nsd": [], "hd95": []}
    voxel_mm3 = float(np.prod(spacing))
    rows: list[Lesion] = []
    ref_boxes = ndimage.find_objects(ref_cc)
    pred_boxes = ndimage.find_objects(pred_cc)
    tolerance_mm = min(spacing)
    for r, p, dice in matches:
        box = _padded_union(ref_boxes[r], pred_boxes[p], ref.shape)
        to_pred, to_ref = border_distances(ref_cc[box] == r + 1, pred_cc[box] == p + 1, spacing)
        lesion["dice"].append(dice)
        lesion["nsd"].append(border_nsd(to_pred, to_ref, tolerance_mm))
        lesion["hd95"].append(border_hd95(to_pred, to_ref))
        rows.append(Lesion(float(ref_sizes[r]) * voxel_mm3, True, dice, lesion["nsd"][-1], lesion["hd95"][-1]))
    matched = {r for r, _, _ in matches}
    rows += [Lesion(float(ref_sizes[r]) * voxel_mm3, False) for r in range(n_ref) if r not in matched]

    fp, fn = n_pred - tp, n_ref - tp
    out: dict[str, float] = {
        "tp": float(tp), "fp": float(fp), "fn": float(fn),
        "precision": tp / n_pred if n_pred else NAN,
        "recall": tp / n_ref if n_ref else NAN,
        "f1": tp / (tp + 0.5 * fp + 0.5 * fn) if tp else (0.0 if any_instance else NAN),
    }
    for key, values in lesion.items():
        if tp:
            out[f"lesionwise_{key}"] = float(np.mean(values))
            out[f"lesionwise_{key}_std"] = float(np.std(values))
        else:
            worst = INF if key == "hd95" else 0.0
            out[f"lesionwise_{key}"] = worst if any_instance else NAN
            out[f"lesionwise_{key}_std"] = NAN
    out["pq_dice"] = out["lesionwise_dice"] * out["f1"]
    out.update(_global_figures(pred, ref, any_instance))
    out["n_ref"] = float(n_ref)
    out["n_pred"] = float(n_pred)
    return out, rows


def _global_figures(pred: np.ndarray, ref: np.ndarray, any_instance: bool) -> dict[str, float]:
    overlap = int(np.count_nonzero(pred & ref))
    if overlap == 0:
        return ({"dice": 0.0, "nsd": 0.0, "hd95": INF} if any_instance
                else {"dice": NAN, "nsd": NAN, "hd95": NAN})
    dice = 2 * overlap / (int(np.count_nonzero(pred)) + int(np.count_nonzero(ref)))
    box = crop_box(pred, ref, pad=1)
    # The official global figures pass no spacing: voxels, with panoptica's default tolerance.
    to_pred, to_ref = border_distances(ref[box], pred[box], None)
    return {"dice": dice, "nsd": border_nsd(to_pred, to_ref, 0.5), "hd95": border_hd95(to_pred, to_ref)}


_GLI = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,), "netc": (1,), "snfh": (2,), "rc": (4,)}
_TASKS = [
    ("brats-gli", "gli", _GLI, "BraTS 2024/25 adult glioma (post-treatment): WT, TC, ET, NETC, SNFH, RC"),
    ("brats-mets", "mets", {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,), "rc": (4,)},
     "BraTS 2024/25 brain metastases: WT, TC, ET, RC; lesions split at 20 mm^3, detection at Dice 0.1"),
    ("brats-ped", "ped", {"wt": (1, 2, 3, 4), "tc": (1, 2, 3), "et": (1,), "netc": (2,), "cc": (3,), "ed": (4,)},
     "BraTS 2024/25 paediatric tumours: WT, TC, ET, NETC, CC, ED"),
    ("brats-men", "MenPre", {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)},
     "BraTS 2024/25 pre-operative meningioma: WT, TC, ET"),
    ("brats-men-rt", "MenRT", {"gtv": (1,)}, "BraTS 2024/25 meningioma radiotherapy: GTV"),
    ("brats-goat", "GoAT", {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)},
     "BraTS 2024/25 generalisability across tumours (GoAT): WT, TC, ET"),
]

PROTOCOLS = {
    name: register_protocol(BratsProtocol(
        name=name, regions=regions, description=text,
        lesion_split=(20.0, 0.1) if config == "mets" else None,
        source=f"brats-evaluation 0.0.10 (panoptica 2.1.7), config {config}; "
               + ("parse_mets_results" if config == "mets" else "parse_seg_results")))
    for name, config, regions, text in _TASKS
}
