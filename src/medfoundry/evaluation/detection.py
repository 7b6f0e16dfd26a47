"""Object-detection metrics (numpy): box IoU, per-class average precision, mAP.

Conventions:

* Boxes are ``(x0, y0, x1, y1)`` in pixels, ``x`` along columns, continuous coordinates
  (area = (x1 - x0) * (y1 - y0), no "+1" as in the old VOC devkit); 3D boxes are
  ``(x0, y0, z0, x1, y1, z1)`` and IoU uses volumes.
* Matching is greedy by descending score over the whole data set, per class and image: a
  prediction is a true positive when its best-overlapping *still unmatched* ground-truth box
  of the same class has IoU >= the threshold (COCO rule); otherwise a false positive. There
  are no crowd or "difficult" boxes.
* ``interpolation="all"``: area under the precision envelope at every recall step
  (VOC 2010+ "all-point" AP). ``interpolation="101"``: mean of the envelope at 101 recall
  points 0, 0.01, ..., 1 (COCO).
* :func:`detection_metrics` reports ``map50`` = mean all-point AP at IoU 0.5 and ``map`` =
  COCO mAP@[.5:.95] (101-point, IoU 0.50, 0.55, ..., 0.95). Classes without any ground-truth
  box are skipped (COCO); a class with ground truth but no prediction has AP 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["box_iou", "average_precision", "detection_metrics", "image_matches", "map50_bootstrap", "COCO_IOUS"]

COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())


def _as_boxes(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1)
    if arr.shape[1] not in (4, 6):
        raise ValueError(f"{name}: boxes must have 4 (2D) or 6 (3D) coordinates, got {arr.shape[1]}")
    return arr


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU of (N, 2d) and (M, 2d) boxes; returns (N, M).

    2D boxes are ``(x0, y0, x1, y1)``, 3D boxes ``(x0, y0, z0, x1, y1, z1)``. Degenerate
    boxes (zero area/volume) have IoU 0 with everything.
    """
    a = _as_boxes(a, "box_iou")
    b = _as_boxes(b, "box_iou")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"box_iou: {a.shape[1]}- and {b.shape[1]}-coordinate boxes cannot be compared")
    d = a.shape[1] // 2
    size_a = np.prod(np.clip(a[:, d:] - a[:, :d], 0, None), axis=1)
    size_b = np.prod(np.clip(b[:, d:] - b[:, :d], 0, None), axis=1)
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    union = size_a[:, None] + size_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _envelope_ap(recall: np.ndarray, precision: np.ndarray, interpolation: str) -> float:
    # the envelope makes precision non-increasing in recall: p_interp(r) = max_{r' >= r} p(r')
    env = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    if interpolation == "all":
        r = np.r_[0.0, recall]
        return float(np.sum((r[1:] - r[:-1]) * env))
    if interpolation == "101":
        points = np.linspace(0.0, 1.0, 101)
        vals = np.zeros(points.size)
        if recall.size:
            idx = np.searchsorted(recall, points, side="left")  # first recall >= point
            ok = idx < recall.size
            vals[ok] = env[idx[ok]]
        return float(np.mean(vals))
    raise ValueError(f"average_precision(): interpolation must be 'all' or '101', got {interpolation!r}")


def image_matches(pred: Mapping[str, Any], gt: Mapping[str, Any], cls: int,
                  iou_thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy matching inside one image for one class.

    Matches in different images never interact, so matching image by image in descending
    score order gives the same flags as one global pass; the per-image result can then be
    reused by bootstrap resamples of images.

    Returns:
        ``(scores (P,), tp (T, P) bool, n_gt)`` for the image's predictions of class ``cls``.
    """
    pl = np.asarray(pred["labels"]).reshape(-1)
    sel = np.flatnonzero(pl == cls)
    boxes = _as_boxes(pred["boxes"], "detection")
    scores = np.asarray(pred["scores"], dtype=float).reshape(-1)
    if len(boxes) != len(pl) or len(pl) != len(scores):
        raise ValueError(f"detection: a prediction needs as many boxes, scores and labels, got {len(boxes)}, "
                         f"{len(scores)} and {len(pl)}")
    pb, ps = boxes[sel], scores[sel]
    gl = np.asarray(gt["labels"]).reshape(-1)
    gb = _as_boxes(gt["boxes"], "detection")[gl == cls]
    order = np.argsort(-ps, kind="mergesort")
    ps, pb = ps[order], pb[order]
    tp = np.zeros((len(iou_thresholds), len(ps)), dtype=bool)
    if len(gb) and len(pb):
        iou = box_iou(pb, gb)
        for t, thr in enumerate(iou_thresholds):
            matched = np.zeros(len(gb), dtype=bool)
            for k in range(len(pb)):
                row = np.where(matched, -1.0, iou[k])
                j = int(np.argmax(row))
                if row[j] >= thr:
                    matched[j] = True
                    tp[t, k] = True
    return ps, tp, len(gb)


def _pool(matches: Sequence[tuple[np.ndarray, np.ndarray, int]], n_thr: int) -> tuple[np.ndarray, int]:
    """Pool per-image matches: TP flags (T, P) sorted by descending score, and #GT."""
    if not matches:
        return np.zeros((n_thr, 0), dtype=bool), 0
    scores = np.concatenate([m[0] for m in matches])
    tp = np.concatenate([m[1] for m in matches], axis=1)
    n_gt = int(sum(m[2] for m in matches))
    order = np.argsort(-scores, kind="mergesort")  # stable: equal scores keep image order
    return tp[:, order], n_gt


def _match(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], cls: int,
           iou_thresholds: Sequence[float]) -> tuple[np.ndarray, int]:
    matches = [image_matches(p, g, cls, iou_thresholds) for p, g in zip(preds, gts)]
    return _pool(matches, len(iou_thresholds))


def average_precision(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], cls: int,
                      iou_threshold: float = 0.5, interpolation: str = "all") -> float:
    """AP of one class over a data set.

    Args:
        preds: per image ``{"boxes": (P, 4), "scores": (P,), "labels": (P,)}``.
        gts: per image ``{"boxes": (G, 4), "labels": (G,)}``.
        cls: class index evaluated.
        iou_threshold: IoU needed for a true positive.
        interpolation: ``"all"`` (VOC all-point) or ``"101"`` (COCO).

    Returns:
        AP in [0, 1]; NaN when the class has no ground-truth box.
    """
    if len(preds) != len(gts):
        raise ValueError(f"average_precision(): {len(preds)} prediction entries for {len(gts)} images")
    tp, n_gt = _match(preds, gts, cls, [iou_threshold])
    return _ap_from_tp(tp[0], n_gt, interpolation)


def _ap_from_tp(tp: np.ndarray, n_gt: int, interpolation: str) -> float:
    if n_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, tp.size + 1)
    return _envelope_ap(recall, precision, interpolation)


def detection_metrics(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]],
                      num_classes: int, per_class: bool = False) -> dict[str, float]:
    """``{"map50", "map"}`` over a data set (see the module docstring for conventions).

    Args:
        preds: per image ``{"boxes", "scores", "labels"}``.
        gts: per image ``{"boxes", "labels"}``.
        num_classes: number of box classes (labels ``0 .. num_classes-1``).
        per_class: also return ``ap50/<c>`` entries.

    Returns:
        ``map50``: mean over classes with ground truth of all-point AP at IoU 0.5;
        ``map``: COCO-style mean over classes and IoU 0.50:0.05:0.95 of 101-point AP.
        NaN when no class has ground truth.
    """
    if len(preds) != len(gts):
        raise ValueError(f"detection_metrics(): {len(preds)} prediction entries for {len(gts)} images")
    ap50, ap_coco = [], []
    out: dict[str, float] = {}
    for c in range(num_classes):
        tp, n_gt = _match(preds, gts, c, COCO_IOUS)
        a50 = _ap_from_tp(tp[0], n_gt, "all")
        coco = [_ap_from_tp(tp[t], n_gt, "101") for t in range(len(COCO_IOUS))]
        if per_class:
            out[f"ap50/{c}"] = a50
        if n_gt == 0:
            continue
        ap50.append(a50)
        ap_coco.append(float(np.mean(coco)))
    out["map50"] = float(np.mean(ap50)) if ap50 else float("nan")
    out["map"] = float(np.mean(ap_coco)) if ap_coco else float("nan")
    return out


def map50_bootstrap(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], num_classes: int,
                    resamples: np.ndarray) -> np.ndarray:
    """``map50`` on each row of ``resamples`` (B, n) image indices, matching each image once."""
    per_class = [[image_matches(p, g, c, (0.5,)) for p, g in zip(preds, gts)] for c in range(num_classes)]
    out = np.empty(len(resamples))
    for b, rows in enumerate(resamples):
        aps = []
        for c in range(num_classes):
            tp, n_gt = _pool([per_class[c][i] for i in rows], 1)
            if n_gt:
                aps.append(_ap_from_tp(tp[0], n_gt, "all"))
        out[b] = float(np.mean(aps)) if aps else np.nan
    return out
