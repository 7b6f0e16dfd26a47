"""Axis-aligned boxes in pure torch: IoU, generalised IoU and non-maximum suppression.

Boxes are ``(N, 2 * d)`` tensors of corner coordinates ``(x0, y0, [z0,] x1, y1, [z1])`` in
pixels/voxels, with ``x`` the column (last array axis), ``y`` the row and ``z`` the slice.
Coordinates are continuous: a box ``(0, 0, 2, 2)`` covers the 2x2 top-left pixels, so its
area is 4 (no "+1" convention). ``d`` is 2 for images and 3 for volumes; every function works
for both.
"""

from __future__ import annotations

import torch

__all__ = ["box_area", "box_iou", "generalized_box_iou", "paired_generalized_box_iou", "nms", "batched_nms"]


def _check(boxes: torch.Tensor, name: str) -> int:
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"{name}: expected boxes of shape (N, 4) or (N, 6), got {tuple(boxes.shape)}")
    return boxes.shape[1] // 2


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area (2D) or volume (3D) of each box, ``(N,)``, in pixels/voxels; inverted boxes give 0."""
    d = _check(boxes, "box_area")
    return (boxes[:, d:] - boxes[:, :d]).clamp(min=0).prod(dim=1)


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = _check(a, "box_iou")
    if _check(b, "box_iou") != d:
        raise ValueError(f"box_iou: boxes of different dimensionality {tuple(a.shape)} and {tuple(b.shape)}")
    lo = torch.maximum(a[:, None, :d], b[None, :, :d])
    hi = torch.minimum(a[:, None, d:], b[None, :, d:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter, union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union, ``(N, M)``; 0 where the union is empty."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019), ``(N, M)``, in [-1, 1]:
    IoU minus the fraction of the smallest enclosing box not covered by the union."""
    d = a.shape[1] // 2
    inter, union = _inter_union(a, b)
    eps = torch.finfo(union.dtype).eps
    iou = inter / union.clamp(min=eps)
    lo = torch.minimum(a[:, None, :d], b[None, :, :d])
    hi = torch.maximum(a[:, None, d:], b[None, :, d:])
    hull = (hi - lo).clamp(min=0).prod(dim=2)
    return iou - (hull - union) / hull.clamp(min=eps)


def paired_generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching rows, ``(N,)``: ``diag(generalized_box_iou(a, b))`` in
    O(N) memory (a detection loss compares each prediction with its own target only)."""
    d = _check(a, "paired_generalized_box_iou")
    if a.shape != b.shape:
        raise ValueError(f"paired_generalized_box_iou: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    eps = torch.finfo(a.dtype).eps
    inter = (torch.minimum(a[:, d:], b[:, d:]) - torch.maximum(a[:, :d], b[:, :d])).clamp(min=0).prod(1)
    union = box_area(a) + box_area(b) - inter
    hull = (torch.maximum(a[:, d:], b[:, d:]) - torch.minimum(a[:, :d], b[:, :d])).clamp(min=0).prod(1)
    return inter / union.clamp(min=eps) - (hull - union) / hull.clamp(min=eps)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Visits boxes by decreasing score (ties: lower index first, so the result is deterministic)
    and drops every later box whose IoU with a kept box is strictly above ``iou_threshold``.

    Args:
        boxes: ``(N, 4)`` or ``(N, 6)`` corner boxes.
        scores: ``(N,)``.
        iou_threshold: boxes overlapping a kept box by more than this are removed.

    Returns:
        Indices (int64) of kept boxes, by decreasing score.
    """
    _check(boxes, "nms")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"nms: scores must have shape ({boxes.shape[0]},), got {tuple(scores.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    n = order.numel()
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    keep = []
    # The IoU matrix is computed once; the loop is O(N) over rows of it. Detection decoding
    # caps N with top-k, so N is a few hundred at most.
    over = (iou > iou_threshold).cpu()
    suppressed_cpu = suppressed.cpu()
    for i in range(n):
        if suppressed_cpu[i]:
            continue
        keep.append(i)
        suppressed_cpu |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS applied independently within each group (e.g. class label): boxes of different
    groups never suppress each other. Returns kept indices by decreasing score."""
    _check(boxes, "batched_nms")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # shift each group to its own region of space so boxes of different groups cannot overlap
    span = (boxes.max() - boxes.min()).clamp(min=0) + 1
    offsets = groups.to(boxes.dtype)[:, None] * span
    return nms(boxes + offsets, scores, iou_threshold)
