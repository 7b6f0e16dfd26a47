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
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..evaluation.surface import hd95 as _hd95

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
    # float64 as the official script (integer grid + get_fdata() field): in float32 a voxel
    # index plus a displacement near .5 can round to the other neighbour.
    disp = np.asarray(disp, dtype=np.float64)
    shape = disp.shape[:-1]
    grid = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
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


