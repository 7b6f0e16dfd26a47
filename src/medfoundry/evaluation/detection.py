"""Object-detection metrics (numpy) by the COCO rules: box IoU, per-class AP, mAP.

Every figure equals pycocotools' ``COCOeval`` (``iouType="bbox"``) on the same boxes (checked
on randomized images with crowded, empty and unmatched cases in
``tests/evaluation/test_detection_coco.py``). Conventions:

* Boxes are ``(x0, y0, x1, y1)`` in pixels, ``x`` along columns, continuous coordinates
  (area = (x1 - x0) * (y1 - y0), no "+1" as in the old VOC devkit); 3D boxes are
  ``(x0, y0, z0, x1, y1, z1)`` and IoU uses volumes.
* Ground truth per image: ``{"boxes", "labels"}`` and optionally ``"iscrowd"`` (G,) bool and
  ``"areas"`` (G,) (the area the COCO size ranges look at; default: the box area). A crowd box
  is an *ignored* ground truth: its IoU with a prediction is intersection / prediction area, it
  may absorb any number of predictions, and those are neither true nor false positives.
* Matching (per image and class, COCO rule): at most ``max_dets`` = 100 predictions of the
  highest scores (stable order for equal scores) are kept; in descending score order each
  prediction takes the unmatched ground-truth box of highest IoU >= the threshold, a tie going
  to the *last* such box; a regular box is preferred to any ignored (crowd or out-of-range)
  one. A prediction matched to an ignored box, or unmatched and outside the area range, is
  ignored. Images are pooled by score (stable, in image order) and precision is
  ``tp / (tp + fp + eps)`` with ``eps = np.spacing(1)``, as pycocotools computes it.
* ``interpolation="101"``: mean of the precision envelope at 101 recall points 0, 0.01, ..., 1
  (COCO). ``interpolation="all"``: area under the precision envelope at every recall step
  (VOC 2010+ "all-point" AP), computed on the same COCO matches.
* :func:`detection_metrics` reports ``map50`` = mean over classes of all-point AP at IoU 0.5
  (a VOC-style figure, *not* COCO's AP50) and ``map`` = COCO mAP@[.5:.95] (``COCOeval.stats[0]``,
  IoU thresholds ``np.linspace(0.5, 0.95, 10)``). :func:`coco_summary` gives all twelve
  ``COCOeval.stats``. Classes without any (non-ignored) ground-truth box are skipped (COCO);
  a class with ground truth but no prediction has AP 0.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "box_iou",
    "average_precision",
    "detection_metrics",
    "coco_summary",
    "image_matches",
    "ImageMatches",
    "map50_bootstrap",
    "COCO_IOUS",
    "COCO_RECALLS",
    "COCO_AREA_RANGES",
    "COCO_MAX_DETS",
    "COCO_STATS",
]

# pycocotools' own grids (unrounded linspace: its 0.9 threshold is 0.8999999999999999).
COCO_IOUS = tuple(np.linspace(0.5, 0.95, 10).tolist())
COCO_RECALLS = np.linspace(0.0, 1.0, 101)
COCO_AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                    "large": (96.0 ** 2, 1e10)}
COCO_MAX_DETS = 100
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _as_boxes(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1)
    if arr.shape[1] not in (4, 6):
        raise ValueError(f"{name}: boxes must have 4 (2D) or 6 (3D) coordinates, got {arr.shape[1]}")
    return arr


def _box_size(boxes: np.ndarray) -> np.ndarray:
    d = boxes.shape[1] // 2
    return np.prod(np.clip(boxes[:, d:] - boxes[:, :d], 0, None), axis=1)


def box_iou(a, b, crowd=None) -> np.ndarray:
    """Pairwise IoU of (N, 2d) and (M, 2d) boxes; returns (N, M).

    2D boxes are ``(x0, y0, x1, y1)``, 3D boxes ``(x0, y0, z0, x1, y1, z1)``. Degenerate
    boxes (zero area/volume) have IoU 0 with everything. ``crowd`` (M,) bool marks boxes of
    ``b`` whose overlap is measured as intersection / area of the ``a`` box (COCO crowd rule).
    """
    a = _as_boxes(a, "box_iou")
    b = _as_boxes(b, "box_iou")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"box_iou: {a.shape[1]}- and {b.shape[1]}-coordinate boxes cannot be compared")
    d = a.shape[1] // 2
    size_a, size_b = _box_size(a), _box_size(b)
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    union = size_a[:, None] + size_b[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, dtype=bool)[None, :], size_a[:, None], union)
    return np.where((union > 0) & (inter > 0), inter / np.where(union > 0, union, 1.0), 0.0)


class ImageMatches(NamedTuple):
    """COCO matches of one image and class, predictions in descending score order.

    ``scores`` (P,); ``tp`` and ``ignored`` (T, P) bool per IoU threshold; ``n_gt`` the number
    of regular (not ignored) ground-truth boxes.
    """

    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    n_gt: int


def _gt_field(gt: Mapping[str, Any], key: str, n: int, default) -> np.ndarray:
    if key not in gt or gt[key] is None:
        return default
    value = np.asarray(gt[key]).reshape(-1)
    if value.size != n:
        raise ValueError(f"detection: ground truth '{key}' has {value.size} entries for {n} boxes")
    return value


def image_matches(pred: Mapping[str, Any], gt: Mapping[str, Any], cls: int, iou_thresholds: Sequence[float],
                  max_dets: int = COCO_MAX_DETS, area_range: tuple[float, float] | None = None) -> ImageMatches:
    """COCO matching inside one image for one class (see the module docstring).

    Matches in different images never interact, so the per-image result can be pooled over
    any selection of images (e.g. bootstrap resamples).

    Args:
        pred: ``{"boxes" (P, 2d), "scores" (P,), "labels" (P,)}``.
        gt: ``{"boxes" (G, 2d), "labels" (G,)}``, optional ``"iscrowd"`` and ``"areas"`` (G,).
        cls: class index evaluated.
        iou_thresholds: IoU needed for a true positive, one row of the result per entry.
        max_dets: predictions kept (highest scores first).
        area_range: ``(min, max)`` area (pixels²) of the boxes evaluated; ``None`` for all.
    """
    pl = np.asarray(pred["labels"]).reshape(-1)
    boxes = _as_boxes(pred["boxes"], "detection")
    scores = np.asarray(pred["scores"], dtype=float).reshape(-1)
    if len(boxes) != len(pl) or len(pl) != len(scores):
        raise ValueError(f"detection: a prediction needs as many boxes, scores and labels, got {len(boxes)}, "
                         f"{len(scores)} and {len(pl)}")
    sel = np.flatnonzero(pl == cls)
    order = sel[np.argsort(-scores[sel], kind="mergesort")][:max_dets]
    pb, ps = boxes[order], scores[order]

    gl = np.asarray(gt["labels"]).reshape(-1)
    all_gt = _as_boxes(gt["boxes"], "detection")
    if len(all_gt) != len(gl):
        raise ValueError(f"detection: ground truth has {len(all_gt)} boxes but {len(gl)} labels")
    crowd_all = _gt_field(gt, "iscrowd", len(gl), np.zeros(len(gl), bool)).astype(bool)
    area_all = _gt_field(gt, "areas", len(gl), None)
    keep = gl == cls
    gb, crowd = all_gt[keep], crowd_all[keep]
    g_area = _box_size(gb) if area_all is None else np.asarray(area_all, dtype=float)[keep]
    g_ignored = crowd.copy()
    if area_range is not None:
        g_ignored |= (g_area < area_range[0]) | (g_area > area_range[1])
    # Regular boxes first (stable), so a prediction settles on one before any ignored box.
    g_order = np.argsort(g_ignored, kind="mergesort")
    gb, crowd, g_ignored = gb[g_order], crowd[g_order], g_ignored[g_order]

    n_t, n_p = len(iou_thresholds), len(ps)
    matched = np.zeros((n_t, n_p), dtype=bool)
    d_ignored = np.zeros((n_t, n_p), dtype=bool)
    if len(gb) and n_p:
        iou = box_iou(pb, gb, crowd)
        last = np.arange(len(gb))
        for t, thr in enumerate(iou_thresholds):
            threshold = min(float(thr), 1 - 1e-10)
            taken = np.zeros(len(gb), dtype=bool)
            for k in range(n_p):
                free = ~taken | crowd
                for group in (~g_ignored, g_ignored):
                    row = np.where(free & group, iou[k], -np.inf)
                    best = row.max()
                    if best >= threshold:
                        j = int(last[row == best][-1])  # a tie goes to the last box
                        matched[t, k] = True
                        d_ignored[t, k] = g_ignored[j]
                        taken[j] = True
                        break
    if area_range is not None and n_p:
        p_area = _box_size(pb)
        outside = (p_area < area_range[0]) | (p_area > area_range[1])
        d_ignored |= ~matched & outside[None, :]
    return ImageMatches(ps, matched & ~d_ignored, d_ignored, int(np.count_nonzero(~g_ignored)))


def _pool(matches: Sequence[ImageMatches], n_thr: int, max_dets: int | None = None
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """Pool per-image matches: TP and ignore flags (T, P) by descending score, and #GT."""
    if not matches:
        return np.zeros((n_thr, 0), bool), np.zeros((n_thr, 0), bool), 0
    cut = slice(None) if max_dets is None else slice(0, max_dets)
    scores = np.concatenate([m.scores[cut] for m in matches])
    tp = np.concatenate([m.tp[:, cut] for m in matches], axis=1)
    ignored = np.concatenate([m.ignored[:, cut] for m in matches], axis=1)
    n_gt = int(sum(m.n_gt for m in matches))
    order = np.argsort(-scores, kind="mergesort")  # stable: equal scores keep image order
    return tp[:, order], ignored[:, order], n_gt


def _coco_precision(tp: np.ndarray, ignored: np.ndarray, n_gt: int) -> tuple[np.ndarray, float]:
    """101-point precision envelope and final recall of one class at one threshold (COCO)."""
    tp_sum = np.cumsum(tp & ~ignored).astype(float)
    fp_sum = np.cumsum(~tp & ~ignored).astype(float)
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    q = np.zeros(COCO_RECALLS.size)
    if precision.size:
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, COCO_RECALLS, side="left")
        ok = idx < recall.size
        q[ok] = envelope[idx[ok]]
    return q, float(recall[-1]) if recall.size else 0.0


def _all_point_ap(tp: np.ndarray, ignored: np.ndarray, n_gt: int) -> float:
    flags = tp[~ignored]
    if flags.size == 0:
        return 0.0
    ctp = np.cumsum(flags)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, flags.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


def _ap(tp: np.ndarray, ignored: np.ndarray, n_gt: int, interpolation: str) -> float:
    if n_gt == 0:
        return float("nan")
    if interpolation == "all":
        return _all_point_ap(tp, ignored, n_gt)
    if interpolation == "101":
        return float(np.mean(_coco_precision(tp, ignored, n_gt)[0]))
    raise ValueError(f"average_precision(): interpolation must be 'all' or '101', got {interpolation!r}")


def _check_lengths(preds, gts, name: str) -> None:
    if len(preds) != len(gts):
        raise ValueError(f"{name}(): {len(preds)} prediction entries for {len(gts)} images")


def average_precision(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], cls: int,
                      iou_threshold: float = 0.5, interpolation: str = "all") -> float:
    """AP of one class over a data set, with COCO matching.

    Args:
        preds: per image ``{"boxes": (P, 4), "scores": (P,), "labels": (P,)}``.
        gts: per image ``{"boxes": (G, 4), "labels": (G,)}`` (optional ``"iscrowd"``, ``"areas"``).
        cls: class index evaluated.
        iou_threshold: IoU needed for a true positive.
        interpolation: ``"all"`` (VOC all-point) or ``"101"`` (COCO).

    Returns:
        AP in [0, 1]; NaN when the class has no regular ground-truth box.
    """
    _check_lengths(preds, gts, "average_precision")
    tp, ignored, n_gt = _pool([image_matches(p, g, cls, [iou_threshold]) for p, g in zip(preds, gts)], 1)
    return _ap(tp[0], ignored[0], n_gt, interpolation)


def _coco_tables(preds, gts, num_classes: int, area_range, max_dets: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``precision`` (T, R, K, M) and ``recall`` (T, K, M); -1 for skipped classes."""
    n_t = len(COCO_IOUS)
    precision = -np.ones((n_t, COCO_RECALLS.size, num_classes, len(max_dets)))
    recall = -np.ones((n_t, num_classes, len(max_dets)))
    for c in range(num_classes):
        matches = [image_matches(p, g, c, COCO_IOUS, max(max_dets), area_range) for p, g in zip(preds, gts)]
        for m, cap in enumerate(max_dets):
            tp, ignored, n_gt = _pool(matches, n_t, cap)
            if n_gt == 0:
                continue
            for t in range(n_t):
                precision[t, :, c, m], recall[t, c, m] = _coco_precision(tp[t], ignored[t], n_gt)
    return precision, recall


def _mean_defined(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(np.mean(values)) if values.size else float("nan")


def coco_summary(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]],
                 num_classes: int) -> dict[str, float]:
    """The twelve ``COCOeval.stats`` of a box data set, keyed by :data:`COCO_STATS`.

    ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs/APm/APl`` (areas < 32², 32²..96², > 96²
    pixels), ``AR1/AR10/AR100`` (recall with at most 1/10/100 predictions per image and class)
    and ``ARs/ARm/ARl``. NaN where pycocotools prints -1 (no class with ground truth in the
    range); the size ranges are NaN for 3D boxes.
    """
    _check_lengths(preds, gts, "coco_summary")
    t50, t75 = COCO_IOUS.index(0.5), COCO_IOUS.index(0.75)
    out: dict[str, float] = {}
    prec, rec = _coco_tables(preds, gts, num_classes, COCO_AREA_RANGES["all"], (1, 10, COCO_MAX_DETS))
    out["AP"] = _mean_defined(prec[..., 2])
    out["AP50"] = _mean_defined(prec[t50, ..., 2])
    out["AP75"] = _mean_defined(prec[t75, ..., 2])
    for m, key in enumerate(("AR1", "AR10", "AR100")):
        out[key] = _mean_defined(rec[..., m])
    is_2d = all(_as_boxes(g["boxes"], "detection").shape[1] in (0, 4) for g in gts)
    for size, ap_key, ar_key in (("small", "APs", "ARs"), ("medium", "APm", "ARm"), ("large", "APl", "ARl")):
        if is_2d:
            prec, rec = _coco_tables(preds, gts, num_classes, COCO_AREA_RANGES[size], (COCO_MAX_DETS,))
            out[ap_key], out[ar_key] = _mean_defined(prec), _mean_defined(rec)
        else:
            out[ap_key] = out[ar_key] = float("nan")
    return {key: out[key] for key in COCO_STATS}


def detection_metrics(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]],
                      num_classes: int, per_class: bool = False) -> dict[str, float]:
    """``{"map50", "map"}`` over a data set (see the module docstring for conventions).

    Args:
        preds: per image ``{"boxes", "scores", "labels"}``.
        gts: per image ``{"boxes", "labels"}`` (optional ``"iscrowd"``, ``"areas"``).
        num_classes: number of box classes (labels ``0 .. num_classes-1``).
        per_class: also return ``ap50/<c>`` entries.

    Returns:
        ``map50``: mean over classes with ground truth of all-point AP at IoU 0.5 (COCO
        matching, VOC-style integration); ``map``: COCO mAP@[.5:.95] (``COCOeval.stats[0]``).
        NaN when no class has ground truth.
    """
    _check_lengths(preds, gts, "detection_metrics")
    n_t = len(COCO_IOUS)
    precision = -np.ones((n_t, COCO_RECALLS.size, num_classes))
    ap50 = []
    out: dict[str, float] = {}
    for c in range(num_classes):
        tp, ignored, n_gt = _pool([image_matches(p, g, c, COCO_IOUS) for p, g in zip(preds, gts)], n_t)
        a50 = _ap(tp[0], ignored[0], n_gt, "all")
        if per_class:
            out[f"ap50/{c}"] = a50
        if n_gt == 0:
            continue
        ap50.append(a50)
        for t in range(n_t):
            precision[t, :, c] = _coco_precision(tp[t], ignored[t], n_gt)[0]
    out["map50"] = float(np.mean(ap50)) if ap50 else float("nan")
    out["map"] = _mean_defined(precision)
    return out


def map50_bootstrap(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], num_classes: int,
                    resamples: np.ndarray) -> np.ndarray:
    """``map50`` on each row of ``resamples`` (B, n) image indices, matching each image once."""
    per_class = [[image_matches(p, g, c, (0.5,)) for p, g in zip(preds, gts)] for c in range(num_classes)]
    out = np.empty(len(resamples))
    for b, rows in enumerate(resamples):
        aps = []
        for c in range(num_classes):
            tp, ignored, n_gt = _pool([per_class[c][i] for i in rows], 1)
            if n_gt:
                aps.append(_all_point_ap(tp[0], ignored[0], n_gt))
        out[b] = float(np.mean(aps)) if aps else np.nan
    return out
