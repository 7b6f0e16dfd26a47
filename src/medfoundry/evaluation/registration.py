"""Learn2Reg registration metrics and the evaluator of a folder of displacement fields.

Conventions (as in Learn2Reg): displacement fields are (H, W, D, 3) (or (H, W, 2) in 2D),
channels last, in **voxels**, fixed -> moving: the fixed voxel x corresponds to x + u(x) in the
moving image. Point coordinates are voxel indices in array axis order. Every function states
whether its result is in voxels or mm.

Metrics
    * Dice per label, ``2|A∩B| / (|A|+|B|)`` between the fixed labels and the moving labels warped
      with nearest neighbour at x + u(x) (``map_coordinates(order=0, mode="constant")``); NaN for a
      label absent from the fixed or the moving segmentation; case score = mean over the present
      labels. DSC30 = mean over the 30 % hardest (case, label) entries, hardness fixed by the
      initial (unregistered) Dice, lowest first.
    * HD95 (:mod:`medfoundry.evaluation.surface`): voxels (official, spacing 1) and mm.
    * TRE: u sampled at the fixed points with a cubic spline (``map_coordinates`` order 3),
      ``||(p_fixed + u(p_fixed) - p_moving) * spacing_moving||`` in mm (the official code scales
      by the moving image's voxel size; Learn2Reg's landmark tasks have equal spacings). TRE30 =
      mean over the 30 % hardest points, hardness by initial TRE, highest first.
    * Jacobian determinant from central differences (kernel [-0.5, 0, 0.5], zero padding) plus
      identity, cropped by 2 voxels at every border, inside the fixed mask when one is given:
      ``sdlogj_official`` = std(log(clip(J + 3, 1e-9, 1e9))), exactly the challenge's figure;
      ``sdlogj`` = std(log J) over voxels with J > 0; ``folding_percent`` = 100 * share of
      voxels with J <= 0; ``ndv_percent``, the non-diffeomorphic volume (see
      :func:`non_diffeomorphic_volume`).

"30 %" sets hold ``ceil(0.3 * n)`` entries (at least one).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..errors import RegistrationError
from ..registration.learn2reg import (
    read_json,
    EvaluationConfig,
    EvaluationMethod,
    Learn2RegDataset,
    Pair,
    find_field,
    load_displacement,
    load_evaluation_config,
    load_spacing,
    load_volume,
    read_points_csv,
    related_path,
)
from ..utils import atomic_write_json
from .surface import hd95 as _hd95

__all__ = [
    "warp_labels",
    "dice_per_label",
    "hd95_per_label",
    "target_registration_error",
    "displacement_at",
    "hardest_fraction_mean",
    "jacobian_determinant",
    "sdlogj_official",
    "non_diffeomorphic_volume",
    "jacobian_statistics",
    "config_from_dataset",
    "evaluate_pair_arrays",
    "evaluate_fields",
    "load_runtimes",
    "RESULTS_FORMAT",
    "HARD_FRACTION",
]

RESULTS_FORMAT = "medfoundry.l2r.results/1"
HARD_FRACTION = 0.3
_CROP = 2


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _check_field(disp: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    disp = np.asarray(disp)
    if disp.shape != tuple(shape) + (len(shape),):
        raise ValueError(f"{where}: field shape {disp.shape}, expected {tuple(shape) + (len(shape),)} "
                         "(spatial shape + channels last, voxels)")
    return disp


def warp_labels(moving_labels: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Moving labels sampled at x + u(x) with nearest neighbour (``order=0``); outside -> 0.

    Args:
        moving_labels: integer label map (H, W[, D]).
        disp: (H, W[, D], ndim) voxels, fixed -> moving; its grid is the fixed grid.

    Returns:
        Label map on the fixed grid, dtype of ``moving_labels``.
    """
    disp = np.asarray(disp)
    shape = disp.shape[:-1]
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    coords = np.stack([g + disp[..., a] for a, g in enumerate(grid)])
    return ndimage.map_coordinates(moving_labels, coords, order=0, mode="constant", cval=0)


def _present(labels_map: np.ndarray, labels: Sequence[int]) -> dict[int, bool]:
    values = set(np.unique(labels_map).tolist())
    return {int(label): int(label) in values for label in labels}


def dice_per_label(fixed_labels: np.ndarray, moving_labels: np.ndarray, warped_labels: np.ndarray,
                   labels: Sequence[int]) -> dict[int, float]:
    """Dice of every label between the fixed and the warped moving segmentation.

    NaN when the label is absent from the fixed or the (unwarped) moving segmentation, as the
    challenge does; a label that the warp loses entirely scores 0.
    """
    fixed_labels = np.asarray(fixed_labels)
    warped_labels = np.asarray(warped_labels)
    in_fixed = _present(fixed_labels, labels)
    in_moving = _present(moving_labels, labels)
    out = {}
    for label in labels:
        label = int(label)
        if not (in_fixed[label] and in_moving[label]):
            out[label] = float("nan")
            continue
        f = fixed_labels == label
        w = warped_labels == label
        out[label] = float(2.0 * np.count_nonzero(f & w) / (np.count_nonzero(f) + np.count_nonzero(w)))
    return out


def _boxes(labels_map: np.ndarray) -> list[tuple[slice, ...] | None]:
    arr = np.asarray(labels_map)
    if arr.size == 0 or arr.max() <= 0:
        return []
    return ndimage.find_objects(np.where(arr > 0, arr, 0).astype(np.int64, copy=False))


def hd95_per_label(fixed_labels: np.ndarray, moving_labels: np.ndarray, warped_labels: np.ndarray,
                   labels: Sequence[int], spacing: Sequence[float] | None = None,
                   penalty: float | None = None) -> dict[int, float]:
    """HD95 of every label (units of ``spacing``; voxels for ``None``, the official mode).

    NaN for a label absent from the fixed or moving segmentation. A label present in both but
    lost by the warp has no surface to measure; the challenge's code then yields ``inf``, here
    ``penalty`` (default ``inf``).
    """
    empty = float("inf") if penalty is None else float(penalty)
    fixed_labels = np.asarray(fixed_labels)
    warped_labels = np.asarray(warped_labels)
    in_fixed = _present(fixed_labels, labels)
    in_moving = _present(moving_labels, labels)
    # Each label is measured inside the union of its boxes in both maps: same result, far less work.
    boxes_f, boxes_w = _boxes(fixed_labels), _boxes(warped_labels)
    out = {}
    for label in labels:
        label = int(label)
        if not (in_fixed[label] and in_moving[label]):
            out[label] = float("nan")
            continue
        bf = boxes_f[label - 1] if 0 < label <= len(boxes_f) else None
        bw = boxes_w[label - 1] if 0 < label <= len(boxes_w) else None
        if bf is None or bw is None or label <= 0:
            box = tuple(slice(None) for _ in fixed_labels.shape)
        else:
            box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(bf, bw))
        out[label] = _hd95(fixed_labels[box] == label, warped_labels[box] == label, spacing=spacing, empty=empty)
    return out


# --------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------


def target_registration_error(fixed_points: np.ndarray, moving_points: np.ndarray, disp: np.ndarray | None,
                              spacing: Sequence[float]) -> np.ndarray:
    """TRE of every point pair in mm.

    Args:
        fixed_points: (N, ndim) voxel coordinates in the fixed image.
        moving_points: (N, ndim) corresponding voxel coordinates in the moving image.
        disp: (..., ndim) field in voxels, fixed -> moving; ``None`` gives the initial TRE.
        spacing: voxel size (mm) used to scale the residual (the moving image's, officially).

    Returns:
        (N,) float64, ``||(p_f + u(p_f) - p_m) * spacing||``; u sampled with a cubic spline.
    """
    fixed_points = np.asarray(fixed_points, dtype=np.float64)
    moving_points = np.asarray(moving_points, dtype=np.float64)
    if fixed_points.shape != moving_points.shape:
        raise ValueError(f"target_registration_error: {fixed_points.shape[0]} fixed points vs "
                         f"{moving_points.shape[0]} moving points (shapes {fixed_points.shape}, {moving_points.shape})")
    ndim = fixed_points.shape[1] if fixed_points.ndim == 2 else 0
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (ndim,):
        raise ValueError(f"target_registration_error: spacing {tuple(spacing)} does not match {ndim}D points")
    warped = fixed_points.copy()
    if disp is not None and len(fixed_points):
        warped += displacement_at(disp, [fixed_points])[0]
    return np.linalg.norm((warped - moving_points) * spacing, axis=1)


def displacement_at(disp: np.ndarray, point_sets: Sequence[np.ndarray]) -> list[np.ndarray]:
    """u sampled at every set of points with a cubic spline, as ``map_coordinates(order=3)``
    with its default ``mode="constant"`` (the challenge's call), prefiltering each channel once.

    Args:
        disp: (..., ndim) voxels.
        point_sets: arrays (N_i, ndim) of voxel coordinates.

    Returns:
        One (N_i, ndim) float64 array of displacements (voxels) per point set.
    """
    disp = np.asarray(disp)
    ndim = disp.shape[-1]
    out = [np.zeros((len(p), ndim), dtype=np.float64) for p in point_sets]
    if not any(len(p) for p in point_sets):
        return out
    for a in range(ndim):
        coeffs = ndimage.spline_filter(disp[..., a], order=3, output=np.float64, mode="constant")
        for dst, pts in zip(out, point_sets):
            if len(pts):
                dst[:, a] = ndimage.map_coordinates(coeffs, np.asarray(pts, dtype=np.float64).T, order=3,
                                                    mode="constant", prefilter=False)
    return out


def hardest_fraction_mean(values: Sequence[float], hardness: Sequence[float], fraction: float = HARD_FRACTION,
                          hardest: str = "low") -> float:
    """Mean of ``values`` over the ``ceil(fraction * n)`` entries that are hardest by ``hardness``.

    Args:
        values: the figure to average (e.g. Dice after registration).
        hardness: the figure that orders the entries (e.g. the initial Dice).
        fraction: share of entries kept (0.3 for DSC30/TRE30).
        hardest: ``"low"`` when low hardness is hard (Dice), ``"high"`` when high is hard (TRE).

    Entries with NaN in either array are dropped; NaN when nothing remains. Ties in hardness
    keep the input order (stable sort).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    h = np.asarray(hardness, dtype=np.float64).ravel()
    if v.shape != h.shape:
        raise ValueError(f"hardest_fraction_mean: {v.size} values vs {h.size} hardness entries")
    if hardest not in ("low", "high"):
        raise ValueError(f"hardest_fraction_mean: 'hardest' must be 'low' or 'high', got {hardest!r}")
    keep = np.isfinite(h) & ~np.isnan(v)
    v, h = v[keep], h[keep]
    if v.size == 0:
        return float("nan")
    k = max(1, math.ceil(fraction * v.size - 1e-9))
    order = np.argsort(h if hardest == "low" else -h, kind="stable")
    return float(np.mean(v[order[:k]]))


# --------------------------------------------------------------------------------------------
# Jacobian
# --------------------------------------------------------------------------------------------


def _crop_slices(shape: Sequence[int], crop: int, where: str) -> tuple[slice, ...]:
    if any(s <= 2 * crop for s in shape):
        raise ValueError(f"{where}: field of spatial shape {tuple(shape)} is too small to crop {crop} voxels per border")
    return tuple(slice(crop, s - crop) for s in shape)


def jacobian_determinant(disp: np.ndarray, crop: int = _CROP, chunk: int = 16) -> np.ndarray:
    """Jacobian determinant of x -> x + u(x) from central differences, cropped by ``crop``.

    Derivatives use the kernel [-0.5, 0, 0.5] with zero padding (as the challenge); with
    ``crop >= 1`` the padding never reaches the returned voxels.

    Args:
        disp: (H, W[, D], ndim) voxels.
        crop: voxels removed at every border (2 in Learn2Reg).
        chunk: slab thickness (voxels along the first axis) computed at a time.

    Returns:
        float64 array of the cropped spatial shape.
    """
    disp = np.asarray(disp)
    ndim = disp.ndim - 1
    if disp.shape[-1] != ndim or ndim not in (2, 3):
        raise ValueError(f"jacobian_determinant: field shape {disp.shape}; expected (H, W, 2) or (H, W, D, 3)")
    if crop < 0:
        raise ValueError(f"jacobian_determinant: 'crop' must be >= 0, got {crop}")
    if crop == 0:
        # Only without a crop does the zero padding reach the result: pad explicitly.
        disp = np.pad(disp, [(1, 1)] * ndim + [(0, 0)])
        region = tuple(slice(1, s - 1) for s in disp.shape[:-1])
    else:
        region = _crop_slices(disp.shape[:-1], crop, "jacobian_determinant")
    out = np.empty(tuple(r.stop - r.start for r in region), dtype=np.float64)
    # Slabs along the first axis keep the nine derivative arrays small (cache, memory).
    for lo in range(region[0].start, region[0].stop, chunk):
        hi = min(lo + chunk, region[0].stop)
        block = disp[lo - 1:hi + 1].astype(np.float64)
        sub = (slice(1, 1 + hi - lo),) + region[1:]
        out[lo - region[0].start:hi - region[0].start] = _jacobian_block(block, sub, ndim)
    return out


def _jacobian_block(disp: np.ndarray, region: tuple[slice, ...], ndim: int) -> np.ndarray:
    # jac[c][a] = d(x_c + u_c) / d x_a
    jac = [[None] * ndim for _ in range(ndim)]
    for a in range(ndim):
        plus = tuple(slice(r.start + (1 if i == a else 0), r.stop + (1 if i == a else 0)) for i, r in enumerate(region))
        minus = tuple(slice(r.start - (1 if i == a else 0), r.stop - (1 if i == a else 0)) for i, r in enumerate(region))
        for c in range(ndim):
            jac[c][a] = 0.5 * (disp[plus + (c,)] - disp[minus + (c,)]) + (1.0 if a == c else 0.0)
    if ndim == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    return (jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
            - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
            + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]))


def _check_mask(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from the field's spatial shape {tuple(shape)}")
    return mask > 0


def _cropped_mask(mask: np.ndarray | None, shape: Sequence[int], crop: int) -> np.ndarray | None:
    if mask is None:
        return None
    return _check_mask(mask, shape)[_crop_slices(shape, crop, "mask")]


def sdlogj_official(disp: np.ndarray, mask: np.ndarray | None = None, crop: int = _CROP) -> float:
    """The challenge's SDlogJ: std(log(clip(J + 3, 1e-9, 1e9))) over the cropped (masked) voxels.

    The ``+ 3`` shifts every determinant before the logarithm, so folded voxels (J <= 0) enter
    as log of a value in (0, 3] rather than being excluded or flagged: see docs/learn2reg.md.
    """
    disp = np.asarray(disp)
    jac = jacobian_determinant(disp, crop)
    logj = np.log(np.clip(jac + 3.0, 1e-9, 1e9))
    m = _cropped_mask(mask, disp.shape[:-1], crop)
    values = logj if m is None else logj[m]
    return float(np.std(values)) if values.size else float("nan")


def _tetrahedra(ndim: int) -> list[tuple[tuple[int, ...], ...]]:
    """Simplices of the two decompositions of the unit cell, vertices as corner offsets.

    2D: each diagonal splits the square into 2 triangles (4 in all). 3D: a cube splits into 4
    corner tetrahedra and one central one in two ways, by the parity of the corners (10 in all).
    """
    if ndim == 2:
        return [((0, 0), (1, 0), (0, 1)), ((1, 1), (0, 1), (1, 0)),
                ((1, 0), (1, 1), (0, 0)), ((0, 1), (0, 0), (1, 1))]
    simplices = []
    for parity in (0, 1):
        corners = [c for c in itertools.product((0, 1), repeat=3) if sum(c) % 2 == parity]
        for c in corners:
            neighbours = tuple(tuple(v ^ (1 if i == a else 0) for i, v in enumerate(c)) for a in range(3))
            simplices.append((c,) + neighbours)
        simplices.append(tuple(c for c in itertools.product((0, 1), repeat=3) if sum(c) % 2 != parity))
    return simplices


def non_diffeomorphic_volume(disp: np.ndarray, mask: np.ndarray | None = None, crop: int = _CROP,
                             chunk: int = 16) -> tuple[float, float]:
    """Non-diffeomorphic volume (NDV) from the signed volumes of each cell's simplices.

    Definition used here (after Liu et al., "On finite difference Jacobian computation in
    deformable image registration", IJCV 2024, the measure of the 2024 LUMIR evaluation): every
    cell of the fixed grid, the cube spanned by voxel x and x + {0, 1}^3, is cut into simplices
    in both possible ways (3D: 5 tetrahedra each way, 4 corner ones of volume 1/6 and a central
    one of 1/3; 2D: 2 triangles of area 1/2 each way). Each simplex T is mapped by x -> x + u(x)
    through its vertices; ``J_T`` is the ratio of its mapped to its reference signed volume.

    ``NDV = 1/2 * sum over cells and simplices of |T| * max(0, -J_T)``: the mapped volume of the
    inverted simplices, averaged over the two decompositions, in voxel volumes. A cell counts
    when its origin voxel x lies in the cropped region (``crop`` voxels off every border) and
    inside ``mask`` (``crop=0``: every cell of the grid).

    Returns:
        ``(ndv_voxels, ndv_percent)``: NDV in voxel volumes and as a percentage of the number of
        cells counted.
    """
    # float32 halves the memory traffic; the sign of a simplex volume is all that matters.
    disp = np.asarray(disp, dtype=np.float32)
    ndim = disp.ndim - 1
    shape = disp.shape[:-1]
    _crop_slices(shape, crop, "non_diffeomorphic_volume")
    # Cells are indexed by their origin voxel; the last voxel of an axis starts no cell.
    region = tuple(slice(crop, s - max(crop, 1)) for s in shape)
    m = None if mask is None else _check_mask(mask, shape)[region]
    simplices = _tetrahedra(ndim)
    # Reference signed volume (x ndim!) of each simplex, and its unsigned share of the cell.
    ref_det = []
    for s in simplices:
        edges = np.array([np.subtract(v, s[0]) for v in s[1:]], dtype=np.float64)
        ref_det.append(float(np.linalg.det(edges)))
    share = [abs(d) / math.factorial(ndim) for d in ref_det]
    total = 0.0
    n_cells = 0
    start0, stop0 = region[0].start, region[0].stop
    for lo in range(start0, stop0, chunk):
        hi = min(lo + chunk, stop0)
        sub = (slice(lo, hi),) + region[1:]
        sub_mask = None if m is None else m[lo - start0:hi - start0]
        # Mapped position of every corner of every cell of the chunk, relative to the origin voxel.
        corner = {}
        for off in itertools.product((0, 1), repeat=ndim):
            sl = tuple(slice(r.start + o, r.stop + o) for r, o in zip(sub, off))
            corner[off] = disp[sl] + np.asarray(off, dtype=np.float32)
        for s, d_ref, w in zip(simplices, ref_det, share):
            base = corner[s[0]]
            edges = [corner[v] - base for v in s[1:]]
            if ndim == 2:
                det = edges[0][..., 0] * edges[1][..., 1] - edges[0][..., 1] * edges[1][..., 0]
            else:
                e0, e1, e2 = edges
                det = (e0[..., 0] * (e1[..., 1] * e2[..., 2] - e1[..., 2] * e2[..., 1])
                       - e0[..., 1] * (e1[..., 0] * e2[..., 2] - e1[..., 2] * e2[..., 0])
                       + e0[..., 2] * (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]))
            neg = np.maximum(0.0, -det / d_ref)
            total += w * float(neg.sum(dtype=np.float64) if sub_mask is None else neg[sub_mask].sum(dtype=np.float64))
        n_cells += int(np.prod([sl.stop - sl.start for sl in sub])) if sub_mask is None else int(sub_mask.sum())
    ndv = 0.5 * total
    return ndv, (100.0 * ndv / n_cells if n_cells else float("nan"))


def jacobian_statistics(disp: np.ndarray, mask: np.ndarray | None = None, crop: int = _CROP,
                        with_ndv: bool = True) -> dict[str, float]:
    """All Jacobian figures of a field on the cropped (masked) fixed grid.

    Returns:
        ``sdlogj_official`` (std of log(clip(J + 3))), ``sdlogj`` (std of log J over J > 0),
        ``folding_percent`` (100 * share of J <= 0), ``jacobian_min``, ``ndv_percent`` and
        ``ndv_voxels`` (see :func:`non_diffeomorphic_volume`; skipped without ``with_ndv``).
    """
    disp = np.asarray(disp)
    jac = jacobian_determinant(disp, crop)
    m = _cropped_mask(mask, disp.shape[:-1], crop)
    values = jac if m is None else jac[m]
    if values.size == 0:
        raise ValueError("jacobian_statistics: no voxel left after cropping and masking")
    positive = values[values > 0]
    out = {
        "sdlogj_official": float(np.std(np.log(np.clip(values + 3.0, 1e-9, 1e9)))),
        "sdlogj": float(np.std(np.log(positive))) if positive.size else float("nan"),
        "folding_percent": float(100.0 * np.count_nonzero(values <= 0) / values.size),
        "jacobian_min": float(values.min()),
    }
    if with_ndv:
        ndv, ndv_percent = non_diffeomorphic_volume(disp, mask, crop)
        out["ndv_percent"] = ndv_percent
        out["ndv_voxels"] = ndv
    return out


# --------------------------------------------------------------------------------------------
# Evaluation of one pair (arrays) and of a folder of fields
# --------------------------------------------------------------------------------------------


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _mean_present(values: Mapping[int, float]) -> float:
    arr = np.array([v for v in values.values() if not math.isnan(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def evaluate_pair_arrays(disp: np.ndarray, *, fixed_labels: np.ndarray | None = None,
                         moving_labels: np.ndarray | None = None, labels: Sequence[int] | None = None,
                         fixed_points: np.ndarray | None = None, moving_points: np.ndarray | None = None,
                         spacing: Sequence[float] | None = None, moving_spacing: Sequence[float] | None = None,
                         mask: np.ndarray | None = None, official_only: bool = False,
                         hd95: bool = True, hd95_penalty: float | None = None,
                         points_key: str = "tre_lm", jacobian: bool = True) -> dict[str, Any]:
    """All metrics of one pair held in memory (what :func:`evaluate_fields` computes per file).

    Args:
        disp: (H, W[, D], ndim) voxels, fixed -> moving.
        fixed_labels, moving_labels: label maps (fixed grid / moving grid) for Dice and HD95.
        labels: labels to score; default all nonzero labels of the fixed map.
        fixed_points, moving_points: (N, ndim) voxel coordinates for TRE.
        spacing: fixed voxel size in mm (HD95 in mm); default 1.
        moving_spacing: voxel size scaling TRE (officially the moving image's); default ``spacing``.
        mask: fixed mask for the Jacobian figures.
        official_only: only the challenge's figures (Dice, HD95 in voxels, TRE, sdlogj_official).
        hd95: compute HD95 (the slowest metric).
        hd95_penalty: HD95 (voxels) of a label the warp loses; mm mode scales it by the largest
            spacing. Default: the image diagonal.
        points_key: results key of the TRE (``tre_lm`` or ``tre_kp``).
        jacobian: compute the Jacobian figures.

    Returns:
        A case record: ``dice``, ``dice_per_label``, ``dice_initial_per_label``, ``hd95`` ...,
        ``{points_key}``, ``{points_key}_per_point`` ..., Jacobian figures. NaN -> ``None``.
    """
    disp = np.asarray(disp, dtype=np.float32)
    shape = disp.shape[:-1]
    ndim = len(shape)
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * ndim))
    record: dict[str, Any] = {}
    if fixed_labels is not None and moving_labels is not None:
        fixed_labels = np.asarray(fixed_labels)
        moving_labels = np.asarray(moving_labels)
        _check_field(disp, fixed_labels.shape, "evaluate_pair_arrays")
        if labels is None:
            labels = [int(v) for v in np.unique(fixed_labels) if v != 0]
        warped = warp_labels(moving_labels, disp)
        dice = dice_per_label(fixed_labels, moving_labels, warped, labels)
        initial = dice_per_label(fixed_labels, moving_labels, moving_labels if moving_labels.shape == fixed_labels.shape
                                 else warp_labels(moving_labels, np.zeros_like(disp)), labels)
        record["dice"] = _nan_to_none(_mean_present(dice))
        record["dice_per_label"] = {str(k): _nan_to_none(v) for k, v in dice.items()}
        record["dice_initial"] = _nan_to_none(_mean_present(initial))
        record["dice_initial_per_label"] = {str(k): _nan_to_none(v) for k, v in initial.items()}
        if hd95:
            penalty = hd95_penalty if hd95_penalty is not None else float(np.linalg.norm(shape))
            hd = hd95_per_label(fixed_labels, moving_labels, warped, labels, None, penalty)
            record["hd95"] = _nan_to_none(_mean_present(hd))
            record["hd95_per_label"] = {str(k): _nan_to_none(v) for k, v in hd.items()}
            if not official_only:
                hd_mm = hd95_per_label(fixed_labels, moving_labels, warped, labels, spacing, penalty * max(spacing))
                record["hd95_mm"] = _nan_to_none(_mean_present(hd_mm))
                record["hd95_mm_per_label"] = {str(k): _nan_to_none(v) for k, v in hd_mm.items()}
    if fixed_points is not None and moving_points is not None:
        scale = moving_spacing if moving_spacing is not None else spacing
        tre = target_registration_error(fixed_points, moving_points, disp, scale)
        tre0 = target_registration_error(fixed_points, moving_points, None, scale)
        record[points_key] = float(tre.mean()) if tre.size else None
        record[f"{points_key}_per_point"] = [float(v) for v in tre]
        record[f"{points_key}_initial"] = float(tre0.mean()) if tre0.size else None
        record[f"{points_key}_initial_per_point"] = [float(v) for v in tre0]
    if not jacobian:
        return record
    if official_only:
        record["sdlogj_official"] = _nan_to_none(sdlogj_official(disp, mask))
    else:
        stats = jacobian_statistics(disp, mask)
        record.update({k: _nan_to_none(v) for k, v in stats.items()})
    return record


def config_from_dataset(dataset: Learn2RegDataset, split: str) -> EvaluationConfig:
    """An evaluation config for a dataset without an official one.

    Metrics follow the files that exist for the first pair: Dice and HD95 over the labels of the
    dataset JSON's ``labels`` entry (else 1..max found later) when ``labelsTr`` holds the fixed
    label, TRE when ``landmarksTr``/``keypointsTr`` hold the fixed points; SDlogJ always.
    ``masked_evaluation`` is read from the dataset JSON (default false).
    """
    pairs = dataset.pairs(split)
    if not pairs:
        raise RegistrationError(f"{dataset.json_path}: [registration_{split}] holds no pairs")
    first = pairs[0]
    methods = [EvaluationMethod("LogJacDetStd", "sdlogj")]
    if dataset.label_path(first.fixed).is_file():
        label_names = dataset.meta.get("labels", {})
        if isinstance(label_names, dict) and "0" in label_names and isinstance(label_names["0"], dict):
            label_names = label_names["0"]
        labels = tuple(sorted(int(k) for k in label_names if str(k).isdigit() and int(k) != 0)) if isinstance(
            label_names, dict) else ()
        methods.append(EvaluationMethod("DSC", "dice", labels))
        methods.append(EvaluationMethod("HD95", "hd95", labels))
    for dest, name in (("landmarks", "TRE_lm"), ("keypoints", "TRE_kp")):
        if dataset.points_path(first.fixed, dest).is_file():
            methods.append(EvaluationMethod(name, "tre", (), dest))
    shape = dataset.image_shape
    return EvaluationConfig(
        task_name=dataset.name,
        methods=methods,
        expected_shape=None if shape is None else tuple(shape) + (len(shape),),
        pairs=pairs,
        masked=bool(dataset.meta.get("masked_evaluation", False)),
        version=None,
        source=str(dataset.json_path),
    )


def load_runtimes(runtimes: str | Path | Mapping[str, float] | None) -> dict[str, float]:
    """Per-pair runtimes (seconds) from a dict or a JSON file ``{pair_id or field stem: seconds}``.

    Keys may be ``FFFF_MMMM`` or ``disp_FFFF_MMMM`` (long names alike); they are normalised to
    the pair id without ``disp_``.
    """
    if runtimes is None:
        return {}
    if not isinstance(runtimes, Mapping):
        path = Path(runtimes)
        runtimes = read_json(path, "runtime file")
        if not isinstance(runtimes, Mapping):
            raise RegistrationError(f"{path}: expected an object {{pair id: seconds}}")
    out = {}
    for key, value in runtimes.items():
        key = str(key)
        for suffix in (".nii.gz", ".npz", ".nii"):
            key = key[: -len(suffix)] if key.endswith(suffix) else key
        key = key[len("disp_"):] if key.startswith("disp_") else key
        try:
            out[key] = float(value)
        except (TypeError, ValueError) as err:
            raise RegistrationError(f"runtimes: [{key}] expected seconds as a number, got {value!r}") from err
    return out


def _label_map(path: Path, what: str) -> tuple[np.ndarray, tuple[float, ...]]:
    data, spacing = load_volume(path, what)
    return np.rint(np.asarray(data, dtype=np.float64)).astype(np.int32), spacing


def _spacing_for(dataset_root: Path, image_rel: str, candidates: Sequence[Path]) -> tuple[tuple[float, ...], str]:
    """Voxel size from the image, else from its mask or label (images may be absent)."""
    for path in [dataset_root / image_rel, *candidates]:
        if path.is_file():
            return load_spacing(path), str(path)
    raise RegistrationError(f"{dataset_root / image_rel}: cannot find the voxel size (no image, mask or label file)")


def _header_shape(root: Path, pair: Pair) -> tuple[int, ...] | None:
    """Spatial shape of the fixed image (or its mask) from the NIfTI header, if either exists."""
    import nibabel as nib

    for path in (root / pair.fixed, related_path(root, pair.fixed, "masks")):
        if path.is_file():
            return tuple(int(s) for s in nib.load(str(path)).shape[:3])
    return None


@dataclass
class _PairInputs:
    fixed_labels: np.ndarray | None = None
    moving_labels: np.ndarray | None = None
    points: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    mask: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    moving_spacing: tuple[float, ...] | None = None
    notes: list[str] | None = None


def _load_pair_inputs(root: Path, pair: Pair, config: EvaluationConfig) -> _PairInputs:
    inputs = _PairInputs(points={}, notes=[])
    keys = set(config.metrics)
    fixed_label_path = related_path(root, pair.fixed, "labels")
    moving_label_path = related_path(root, pair.moving, "labels")
    fixed_mask_path = related_path(root, pair.fixed, "masks")
    if keys & {"dice", "hd95"}:
        inputs.fixed_labels, inputs.spacing = _label_map(fixed_label_path, f"fixed label map of pair {pair.pair_id}")
        inputs.moving_labels, _ = _label_map(moving_label_path, f"moving label map of pair {pair.pair_id}")
    if inputs.spacing is None:
        inputs.spacing, _ = _spacing_for(root, pair.fixed, [fixed_mask_path, fixed_label_path])
    for method in config.methods:
        if method.metric != "tre":
            continue
        fixed_pts = read_points_csv(related_path(root, pair.fixed, method.dest, ".csv"))
        moving_pts = read_points_csv(related_path(root, pair.moving, method.dest, ".csv"))
        if fixed_pts.shape != moving_pts.shape:
            raise RegistrationError(f"pair {pair.pair_id}: {method.dest} files hold {fixed_pts.shape[0]} fixed and "
                                    f"{moving_pts.shape[0]} moving points")
        inputs.points[method.key] = (fixed_pts, moving_pts)
    if inputs.points:
        moving_mask = related_path(root, pair.moving, "masks")
        moving_label = related_path(root, pair.moving, "labels")
        if any(p.is_file() for p in (root / pair.moving, moving_mask, moving_label)):
            inputs.moving_spacing, _ = _spacing_for(root, pair.moving, [moving_mask, moving_label])
        else:
            inputs.moving_spacing = inputs.spacing
            inputs.notes.append("moving voxel size unknown (no moving image, mask or label): used the fixed one")
    if config.masked:
        if fixed_mask_path.is_file():
            inputs.mask = np.asarray(load_volume(fixed_mask_path, "fixed mask")[0]) > 0
        else:
            inputs.notes.append(f"masked evaluation but {fixed_mask_path} is missing: Jacobian over the whole field")
    return inputs


def _initial_record(inputs: _PairInputs, config: EvaluationConfig) -> dict[str, Any]:
    """Figures of the unregistered pair (used for DSC30/TRE30 and to fill failed pairs)."""
    rec: dict[str, Any] = {}
    labels = config.labels_for("dice") or config.labels_for("hd95")
    if inputs.fixed_labels is not None and inputs.fixed_labels.shape == inputs.moving_labels.shape:
        labels = labels or tuple(int(v) for v in np.unique(inputs.fixed_labels) if v != 0)
        initial = dice_per_label(inputs.fixed_labels, inputs.moving_labels, inputs.moving_labels, labels)
        rec["dice_initial"] = _nan_to_none(_mean_present(initial))
        rec["dice_initial_per_label"] = {str(k): _nan_to_none(v) for k, v in initial.items()}
    for key, (fp, mp) in (inputs.points or {}).items():
        tre0 = target_registration_error(fp, mp, None, inputs.moving_spacing or inputs.spacing)
        rec[f"{key}_initial"] = float(tre0.mean()) if tre0.size else None
        rec[f"{key}_initial_per_point"] = [float(v) for v in tre0]
    return rec


def _aggregate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [c for c in cases if c.get("status") == "ok"]
    agg: dict[str, Any] = {}
    scalar_keys = ["dice", "dice_initial", "hd95", "hd95_mm", "tre_lm", "tre_lm_initial", "tre_kp", "tre_kp_initial",
                   "sdlogj_official", "sdlogj", "folding_percent", "ndv_percent", "jacobian_min", "runtime_s"]
    for key in scalar_keys:
        vals = np.array([c[key] for c in ok if c.get(key) is not None], dtype=np.float64)
        if vals.size:
            agg[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size)}
    dice, dice0 = [], []
    for c in ok:
        for label, value in (c.get("dice_per_label") or {}).items():
            dice.append(np.nan if value is None else value)
            init = (c.get("dice_initial_per_label") or {}).get(label)
            dice0.append(np.nan if init is None else init)
    if dice:
        agg["dsc30"] = _nan_to_none(hardest_fraction_mean(dice, dice0, HARD_FRACTION, "low"))
    for key in ("tre_lm", "tre_kp"):
        tre, tre0 = [], []
        for c in ok:
            tre.extend(c.get(f"{key}_per_point") or [])
            tre0.extend(c.get(f"{key}_initial_per_point") or [])
        if tre:
            agg[f"{key}30"] = _nan_to_none(hardest_fraction_mean(tre, tre0, HARD_FRACTION, "high"))
    return agg


def evaluate_fields(dataset_dir: str | Path, fields_dir: str | Path, split: str = "val", *,
                    config: str | Path | EvaluationConfig | None = None, method_name: str | None = None,
                    official_only: bool = False, runtimes: str | Path | Mapping[str, float] | None = None,
                    out: str | Path | None = None, progress: bool = False,
                    on_pair: Callable[[Pair, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate a folder of displacement fields against a Learn2Reg-layout dataset.

    Args:
        dataset_dir: dataset root (dataset JSON, imagesTr, labelsTr, masksTr, landmarksTr ...).
            With an official ``config`` the dataset JSON is optional.
        fields_dir: folder of ``disp_*.nii.gz`` / ``.npz`` fields.
        split: ``val`` or ``test`` (ignored when ``config`` lists the pairs).
        config: an official evaluation config (path or object): its pairs, metrics, labels,
            expected shape and masking are used exactly. Default: derived from the dataset.
        method_name: name of the method in the results (default: the fields folder's name).
        official_only: compute only the challenge's figures.
        runtimes: per-pair runtimes in seconds (dict or JSON file, see :func:`load_runtimes`).
        out: write the results JSON here (atomically).
        progress: show a rich progress bar.
        on_pair: called after every pair with the pair and its record.

    Returns:
        The results dict (``format`` = ``medfoundry.l2r.results/1``): ``method``, ``task``,
        ``split``, ``metrics``, ``cases`` (one record per pair, ``status`` ok or failed),
        ``failed`` (pair, file, error), ``aggregates`` (mean/std/n per figure, ``dsc30``,
        ``tre_lm30``/``tre_kp30``) and ``hd95_penalty``. A pair whose field is missing or bad
        fails on its own; the others are still evaluated.

    Raises:
        RegistrationError: the dataset, config or split cannot be used at all.
    """
    root = Path(dataset_dir)
    fields_dir = Path(fields_dir)
    if not root.is_dir():
        raise RegistrationError(f"{root}: dataset folder not found")
    if not fields_dir.is_dir():
        raise RegistrationError(f"{fields_dir}: fields folder not found")
    if config is None:
        cfg = config_from_dataset(Learn2RegDataset(root), split)
    elif isinstance(config, EvaluationConfig):
        cfg = config
    else:
        cfg = load_evaluation_config(config)
    times = load_runtimes(runtimes)
    label_list = cfg.labels_for("dice") or cfg.labels_for("hd95") or None
    want_hd95 = "hd95" in cfg.metrics
    want_labels = bool({"dice", "hd95"} & set(cfg.metrics))
    hd95_penalty = None
    if cfg.expected_shape is not None:
        hd95_penalty = float(np.linalg.norm(cfg.expected_shape[:-1]))
    cases: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []

    iterator: Any = cfg.pairs
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task(f"evaluating {cfg.task_name}", total=len(cfg.pairs))
    try:
        for pair in iterator:
            record: dict[str, Any] = {"pair_id": pair.pair_id, "fixed": pair.fixed, "moving": pair.moving,
                                      "field": None, "status": "failed"}
            t0 = time.perf_counter()
            inputs = None
            try:
                inputs = _load_pair_inputs(root, pair, cfg)
                record.update(_initial_record(inputs, cfg))
                path = find_field(fields_dir, pair)
                record["field"] = str(path)
                shape = cfg.expected_shape
                if shape is None and inputs.fixed_labels is not None:
                    shape = inputs.fixed_labels.shape
                if shape is None:
                    shape = _header_shape(root, pair)
                disp = load_displacement(path, shape, pair)
                if hd95_penalty is None:
                    hd95_penalty = float(np.linalg.norm(disp.shape[:-1]))
                record.update(evaluate_pair_arrays(
                    disp,
                    fixed_labels=inputs.fixed_labels if want_labels else None,
                    moving_labels=inputs.moving_labels if want_labels else None,
                    labels=label_list, spacing=inputs.spacing, mask=inputs.mask,
                    official_only=official_only, hd95=want_hd95, hd95_penalty=hd95_penalty,
                ))
                if "dice" not in cfg.metrics:
                    for k in ("dice", "dice_per_label", "dice_initial", "dice_initial_per_label"):
                        record.pop(k, None)
                if inputs.points:
                    keys = list(inputs.points)
                    sampled = displacement_at(disp, [inputs.points[k][0] for k in keys])
                    scale = inputs.moving_spacing or inputs.spacing
                    for key, u_at in zip(keys, sampled):
                        fixed_points, moving_points = inputs.points[key]
                        tre = np.linalg.norm((fixed_points + u_at - moving_points) * np.asarray(scale), axis=1)
                        record[key] = float(tre.mean()) if tre.size else None
                        record[f"{key}_per_point"] = [float(v) for v in tre]
                if pair.pair_id in times:
                    record["runtime_s"] = times[pair.pair_id]
                if inputs.notes:
                    record["notes"] = inputs.notes
                record["status"] = "ok"
            except (RegistrationError, ValueError, OSError) as err:
                record["error"] = str(err)
                failed.append({"pair_id": pair.pair_id, "fixed": pair.fixed, "moving": pair.moving,
                               "field": record.get("field"), "error": str(err)})
            record["eval_seconds"] = round(time.perf_counter() - t0, 3)
            cases.append(record)
            if on_pair is not None:
                on_pair(pair, record)
            if bar is not None:
                bar.advance(task_id)
    finally:
        if bar is not None:
            bar.stop()

    metrics = list(cfg.metrics)
    if not official_only:
        extra = ["sdlogj", "folding_percent", "ndv_percent"]
        if want_hd95:
            extra.insert(0, "hd95_mm")
        metrics += [m for m in extra if m not in metrics]
    if times:
        metrics.append("runtime_s")
    results = {
        "format": RESULTS_FORMAT,
        "method": method_name or fields_dir.resolve().name,
        "task": cfg.task_name,
        "split": split,
        "dataset": str(root),
        "fields": str(fields_dir),
        "config": cfg.source,
        "official_only": official_only,
        "masked_evaluation": cfg.masked,
        "metrics": metrics,
        "official_names": {m.name: m.key for m in cfg.methods},
        "labels": None if label_list is None else list(label_list),
        "hd95_penalty": hd95_penalty,
        "n_pairs": len(cfg.pairs),
        "n_failed": len(failed),
        "cases": cases,
        "failed": failed,
        "aggregates": _aggregate(cases),
    }
    if out is not None:
        atomic_write_json(out, results)
    return results
