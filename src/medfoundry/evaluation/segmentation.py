"""Segmentation metrics on label maps (numpy): Dice, HD95 and surface Dice (NSD) per class.

Conventions (arguments, never hidden):

* ``pred`` and ``ref`` are integer label maps of the same shape, (H, W) or (D, H, W); label 0
  is background and is left out of means unless ``include_background=True``.
* ``empty`` policy for Dice when a class is absent from both ``pred`` and ``ref``:
  ``"nan"`` (default, the class is excluded from means, as in Learn2Reg and nnU-Net) or
  ``"one"`` (perfect agreement counts as 1). When only one of them is empty Dice is 0.
* HD95 is the 95th percentile of the symmetric surface distances (via
  :mod:`medfoundry.evaluation.surface`), in **mm** when ``spacing`` is given, else in pixels.
  When exactly one mask is empty the distance is undefined: ``hd_empty="nan"`` (default,
  excluded from means) or ``"diagonal"`` (the image diagonal in the same units, a worst-case
  penalty). Both empty: NaN (nothing to measure) regardless of the policy.
* NSD (surface Dice at ``tolerance_mm``, :func:`medfoundry.evaluation.surface.surface_dice`):
  0 when exactly one mask is empty; ``empty`` (``"nan"`` by default, or ``"one"``) when both are.
* Surface figures equal DeepMind's surface-distance code (see :mod:`.surface`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["dice", "per_class_dice", "hd95", "per_class_hd95", "nsd", "per_class_nsd", "EMPTY_POLICIES",
           "HD_EMPTY_POLICIES"]

EMPTY_POLICIES = ("nan", "one")
HD_EMPTY_POLICIES = ("nan", "diagonal")


def _check(pred, ref, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    r = np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"{name}(): pred shape {p.shape} differs from ref shape {r.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"{name}(): expected a 2-D or 3-D label map, got {p.ndim}-D")
    return p, r


def _policy(value: str, valid: tuple[str, ...], name: str, arg: str) -> str:
    if value not in valid:
        raise ValueError(f"{name}(): {arg} must be one of {valid}, got {value!r}")
    return value


def dice(pred, ref, label: int = 1, empty: str = "nan") -> float:
    """Dice ``2|P ∩ R| / (|P| + |R|)`` of one label.

    Args:
        pred: predicted label map.
        ref: reference label map, same shape.
        label: the class index compared.
        empty: policy when the label is absent from both (``"nan"`` or ``"one"``).
    """
    _policy(empty, EMPTY_POLICIES, "dice", "empty")
    p, r = _check(pred, ref, "dice")
    pm = p == label
    rm = r == label
    denom = int(pm.sum()) + int(rm.sum())
    if denom == 0:
        return float("nan") if empty == "nan" else 1.0
    return 2.0 * int(np.logical_and(pm, rm).sum()) / denom


def _labels(num_classes: int | None, labels: Sequence[int] | None, include_background: bool,
            p: np.ndarray, r: np.ndarray) -> list[int]:
    if labels is not None:
        return [int(x) for x in labels]
    if num_classes is None:
        num_classes = int(max(p.max(initial=0), r.max(initial=0))) + 1
    return list(range(0 if include_background else 1, num_classes))


def per_class_dice(pred, ref, num_classes: int | None = None, labels: Sequence[int] | None = None,
                   include_background: bool = False, empty: str = "nan") -> np.ndarray:
    """Dice for each label (default ``1 .. num_classes-1``), as a float array."""
    p, r = _check(pred, ref, "per_class_dice")
    return np.array([dice(p, r, c, empty) for c in _labels(num_classes, labels, include_background, p, r)],
                    dtype=float)


def _diagonal(shape: tuple[int, ...], spacing: Sequence[float] | None) -> float:
    sp = [1.0] * len(shape) if spacing is None else [float(s) for s in spacing]
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp)))


def hd95(pred, ref, label: int = 1, spacing: Sequence[float] | None = None, percentile: float = 95.0,
         empty: str = "nan") -> float:
    """95th-percentile symmetric Hausdorff distance of one label.

    Args:
        pred: predicted label map (H, W) or (D, H, W).
        ref: reference label map, same shape.
        label: class index compared.
        spacing: mm per pixel/voxel in the array's axis order; ``None`` gives pixels.
        percentile: the percentile of the surface distances (95 for HD95, 100 for HD).
        empty: ``"nan"`` or ``"diagonal"`` when exactly one of the masks is empty.

    Returns:
        Distance in mm (or pixels without spacing); NaN when both masks are empty.
    """
    _policy(empty, HD_EMPTY_POLICIES, "hd95", "empty")
    p, r = _check(pred, ref, "hd95")
    if spacing is not None and len(spacing) != p.ndim:
        raise ValueError(f"hd95(): spacing has {len(spacing)} entries for a {p.ndim}-D map")
    pm = p == label
    rm = r == label
    has_p, has_r = bool(pm.any()), bool(rm.any())
    if not has_p and not has_r:
        return float("nan")
    if has_p != has_r:
        return float("nan") if empty == "nan" else _diagonal(p.shape, spacing)
    from .surface import hd95 as _surface_hd95

    sp = None if spacing is None else tuple(float(s) for s in spacing)
    return float(_surface_hd95(pm, rm, spacing=sp, percentile=percentile))


def per_class_hd95(pred, ref, num_classes: int | None = None, labels: Sequence[int] | None = None,
                   include_background: bool = False, spacing: Sequence[float] | None = None,
                   percentile: float = 95.0, empty: str = "nan") -> np.ndarray:
    """HD95 for each label (default ``1 .. num_classes-1``), as a float array."""
    p, r = _check(pred, ref, "per_class_hd95")
    return np.array([hd95(p, r, c, spacing, percentile, empty)
                     for c in _labels(num_classes, labels, include_background, p, r)], dtype=float)


def nsd(pred, ref, label: int = 1, spacing: Sequence[float] | None = None, tolerance_mm: float = 1.0,
        empty: str = "nan") -> float:
    """Surface Dice (normalised surface distance) of one label at a tolerance.

    Args:
        pred: predicted label map (H, W) or (D, H, W).
        ref: reference label map, same shape.
        label: class index compared.
        spacing: mm per pixel/voxel in the array's axis order; ``None`` gives pixels (and the
            tolerance is then in pixels).
        tolerance_mm: surface distance (mm) still counted as agreement.
        empty: ``"nan"`` or ``"one"``: the value when the label is absent from both maps.

    Returns:
        NSD in [0, 1]; 0 when exactly one map lacks the label.
    """
    _policy(empty, EMPTY_POLICIES, "nsd", "empty")
    p, r = _check(pred, ref, "nsd")
    from .surface import surface_dice

    return surface_dice(p == label, r == label, spacing, tolerance_mm,
                        empty=float("nan") if empty == "nan" else 1.0)


def per_class_nsd(pred, ref, num_classes: int | None = None, labels: Sequence[int] | None = None,
                  include_background: bool = False, spacing: Sequence[float] | None = None,
                  tolerance_mm: float = 1.0, empty: str = "nan") -> np.ndarray:
    """NSD for each label (default ``1 .. num_classes-1``), as a float array."""
    p, r = _check(pred, ref, "per_class_nsd")
    return np.array([nsd(p, r, c, spacing, tolerance_mm, empty)
                     for c in _labels(num_classes, labels, include_background, p, r)], dtype=float)
