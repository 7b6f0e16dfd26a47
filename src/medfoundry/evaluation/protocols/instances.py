"""Lesion instances: connected components, one-to-one matching and border-voxel surface distances.

These follow the definitions of panoptica (the library the BraTS organisers evaluate with) so
that the BraTS figures equal the official package's; they are written here from those
definitions rather than imported, because panoptica pins numpy < 2.3, rich < 14 and pandas < 3
(see docs/evaluation_protocols.md).

* **Instances** are connected components: 26-connectivity in 3D (every neighbour sharing a
  face, edge or corner), 4-connectivity in 2D, numbered in C (raster) order.
* **Matching** pairs reference and predicted instances one to one so that the summed Dice of
  the pairs is largest (Hungarian assignment on ``1 - Dice``); a pair counts only if its Dice
  reaches ``threshold``.
* **Surface distances** are between *border voxels* (voxels of the mask with a background
  face-neighbour): for each border voxel of one mask, the Euclidean distance (in the units of
  ``spacing``, mm) to the nearest border voxel of the other. This is not DeepMind's surfel
  definition (:mod:`medfoundry.evaluation.surface`); BraTS uses this one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "connected_components",
    "overlap_counts",
    "match_instances",
    "crop_box",
    "border_distances",
    "border_hd95",
    "border_nsd",
]


def connected_components(mask: np.ndarray, connectivity: int | None = None) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask.

    Args:
        mask: binary mask, any number of dimensions (nonzero is inside).
        connectivity: neighbours that join voxels, as the number of axes a step may change
            (1 = faces only, ``ndim`` = faces, edges and corners). Default: ``ndim`` in 3D
            (26-connectivity) and 1 in 2D (4-connectivity), as panoptica and ISLES'22 do.

    Returns:
        ``(labels, n)``: int32 labels 1..n in raster order, 0 outside.
    """
    mask = np.asarray(mask) != 0
    if connectivity is None:
        connectivity = mask.ndim if mask.ndim >= 3 else 1
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    return labels.astype(np.int32, copy=False), int(n)


def overlap_counts(ref_labels: np.ndarray, n_ref: int, pred_labels: np.ndarray, n_pred: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts of every instance and of every pairwise intersection.

    Returns:
        ``(ref_sizes (n_ref,), pred_sizes (n_pred,), intersections (n_ref, n_pred))``, int64.
    """
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:].astype(np.int64)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:].astype(np.int64)
    both = (ref_labels > 0) & (pred_labels > 0)
    pairs = (ref_labels[both].astype(np.int64) - 1) * max(n_pred, 1) + (pred_labels[both].astype(np.int64) - 1)
    inter = np.bincount(pairs, minlength=n_ref * n_pred).reshape(n_ref, n_pred)
    return ref_sizes, pred_sizes, inter


def match_instances(ref_sizes: np.ndarray, pred_sizes: np.ndarray, inter: np.ndarray,
                    threshold: float = 1e-6) -> list[tuple[int, int, float]]:
    """One-to-one matching that maximises the summed Dice of the matched pairs.

    Args:
        ref_sizes: voxels per reference instance.
        pred_sizes: voxels per predicted instance.
        inter: intersection counts (n_ref, n_pred).
        threshold: smallest Dice of a pair that may match (pairs that do not touch never match).

    Returns:
        ``[(ref_index, pred_index, dice), ...]`` with 0-based indices, in reference order.
    """
    from scipy.optimize import linear_sum_assignment

    n_ref, n_pred = inter.shape
    if n_ref == 0 or n_pred == 0:
        return []
    dice = 2 * inter / (ref_sizes[:, None] + pred_sizes[None, :])
    # Pairs that cannot match cost a little more than the worst admissible pair (1 - Dice <= 1),
    # so the assignment never prefers them and they are dropped below.
    cost = np.full((n_ref, n_pred), 1.0 + 1e-6)
    allowed = (inter > 0) & (dice >= threshold)
    cost[allowed] = 1.0 - dice[allowed]
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c), float(dice[r, c])) for r, c in zip(rows, cols) if cost[r, c] < 1.0]


def crop_box(*masks: np.ndarray, pad: int = 1) -> tuple[slice, ...]:
    """The bounding box of the union of ``masks``, widened by ``pad`` voxels (clipped).

    Surface distances inside this box equal those over the whole array, as long as ``pad >= 1``
    (a border voxel at the box edge is then also one at the array edge).
    """
    union = np.zeros(masks[0].shape, dtype=bool)
    for mask in masks:
        union |= mask
    if not union.any():
        return tuple(slice(0, n) for n in union.shape)
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, union.shape[axis])))
    return tuple(box)


def _border(mask: np.ndarray) -> np.ndarray:
    # Voxels outside the array count as background, so a mask touching the edge has a border there.
    footprint = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def border_distances(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Distances between the border voxels of two non-empty binary masks.

    Args:
        ref: reference mask.
        pred: predicted mask, same shape.
        spacing: voxel size per axis (mm); ``None`` measures in voxels.

    Returns:
        ``(ref_to_pred, pred_to_ref)``: for every border voxel of ``ref`` its distance to the
        nearest border voxel of ``pred``, and the reverse, float64 (mm, or voxels).
    """
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    box = crop_box(ref, pred, pad=1)
    ref, pred = ref[box], pred[box]
    sampling = None if spacing is None else [float(s) for s in spacing]
    ref_border, pred_border = _border(ref), _border(pred)
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=sampling)[ref_border]
    to_ref = ndimage.distance_transform_edt(~ref_border, sampling=sampling)[pred_border]
    return to_pred, to_ref


def border_hd95(ref_to_pred: np.ndarray, pred_to_ref: np.ndarray) -> float:
    """95th percentile (linear interpolation) of the pooled border distances of both masks."""
    return float(np.percentile(np.concatenate([ref_to_pred, pred_to_ref]), 95))


def border_nsd(ref_to_pred: np.ndarray, pred_to_ref: np.ndarray, tolerance: float) -> float:
    """Normalised surface Dice on border voxels: the mean over both masks of the fraction of
    border voxels within ``tolerance`` (same units as the distances) of the other border."""
    return float((np.mean(ref_to_pred <= tolerance) + np.mean(pred_to_ref <= tolerance)) / 2.0)
