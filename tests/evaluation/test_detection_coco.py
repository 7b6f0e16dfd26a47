"""Detection metrics against pycocotools' COCOeval (the reference), a test-only dependency."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from medfoundry.evaluation.detection import COCO_STATS, coco_summary, detection_metrics

coco_module = pytest.importorskip("pycocotools.coco")
cocoeval_module = pytest.importorskip("pycocotools.cocoeval")


def _coco_stats(preds, gts, num_classes):
    """COCOeval.stats of our per-image dicts (classes c -> category c + 1, image i -> id i + 1)."""
    images = [{"id": i + 1} for i in range(len(gts))]
    categories = [{"id": c + 1} for c in range(num_classes)]
    anns = []
    for i, g in enumerate(gts):
        crowd = g.get("iscrowd", np.zeros(len(g["labels"]), bool))
        for box, label, is_crowd in zip(g["boxes"], g["labels"], crowd):
            x0, y0, x1, y1 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                         "iscrowd": int(is_crowd)})
    dets = []
    for i, p in enumerate(preds):
        for box, score, label in zip(p["boxes"], p["scores"], p["labels"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            dets.append({"image_id": i + 1, "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_module.COCO()
        gt.dataset = {"images": images, "categories": categories, "annotations": anns}
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = coco_module.COCO()
            dt.dataset = {"images": images, "categories": categories, "annotations": []}
            dt.createIndex()
        ev = cocoeval_module.COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float("nan") if s == -1 else float(s) for s in ev.stats]


def _pred(boxes, scores, labels):
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "scores": np.array(scores, float),
            "labels": np.array(labels, int)}


def _gt(boxes, labels, iscrowd=None):
    out = {"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.array(labels, int)}
    if iscrowd is not None:
        out["iscrowd"] = np.array(iscrowd, bool)
    return out


def _random_boxes(rng, n, scale):
    xy = rng.integers(0, scale, (n, 2))
    wh = rng.integers(1, scale, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(float)


def _random_image(rng, num_classes, scale, many=False):
    n_gt = int(rng.integers(0, 7))
    gt_boxes = _random_boxes(rng, n_gt, scale)
    gt_labels = rng.integers(0, num_classes, n_gt)
    crowd = rng.random(n_gt) < 0.15
    # Predictions: jittered copies of ground truth (duplicates, near misses, exact ties) plus
    # unmatched random boxes; scores on a coarse grid so equal scores are common.
    n_copy = int(rng.integers(0, 2 * n_gt + 1)) if n_gt else 0
    src = rng.integers(0, max(n_gt, 1), n_copy)
    copies = gt_boxes[src] + rng.integers(-3, 4, (n_copy, 4)) if n_gt else np.zeros((0, 4))
    copies[:, 2:] = np.maximum(copies[:, 2:], copies[:, :2] + 1)
    n_rand = int(rng.integers(110, 140)) if many else int(rng.integers(0, 6))
    boxes = np.concatenate([copies, _random_boxes(rng, n_rand, scale)])
    labels = np.concatenate([gt_labels[src] if n_gt else np.zeros(0, int), rng.integers(0, num_classes, n_rand)])
    scores = np.round(rng.random(len(boxes)), 1)
    return _pred(boxes, scores, labels), _gt(gt_boxes, gt_labels, crowd)


def _check_equal(preds, gts, num_classes):
    want = _coco_stats(preds, gts, num_classes)
    got = coco_summary(preds, gts, num_classes)
    assert list(got) == list(COCO_STATS)
    for key, w in zip(COCO_STATS, want):
        g = got[key]
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-12, abs=1e-15), key
    m = detection_metrics(preds, gts, num_classes)
    assert (math.isnan(m["map"]) and math.isnan(want[0])) or m["map"] == pytest.approx(want[0], rel=1e-12)


@pytest.mark.parametrize("chunk", range(4))
def test_random_data_sets_equal_cocoeval(chunk):
    rng = np.random.default_rng(chunk)
    scored = 0
    for k in range(10):
        num_classes = int(rng.integers(1, 4))
        # Scale 200: boxes fall in all three COCO size ranges; every fourth data set has an
        # image with more than 100 predictions.
        images = [_random_image(rng, num_classes, 200, many=(k % 4 == 3 and i == 0))
                  for i in range(int(rng.integers(1, 7)))]
        preds, gts = [p for p, _ in images], [g for _, g in images]
        _check_equal(preds, gts, num_classes)
        scored += math.isfinite(coco_summary(preds, gts, num_classes)["AP"])
    assert scored >= 5  # the comparison is not all about empty data sets


def test_empty_images_and_classes_equal_cocoeval():
    preds = [_pred([], [], []), _pred([[0, 0, 10, 10]], [0.5], [1]), _pred([[5, 5, 50, 50]], [0.7], [0])]
    gts = [_gt([], []), _gt([], []), _gt([[5, 5, 50, 50], [0, 0, 40, 40]], [0, 0], [False, True])]
    _check_equal(preds, gts, 3)
    # No detection at all.
    _check_equal([_pred([], [], [])], [_gt([[0, 0, 10, 10]], [0])], 1)


def test_tied_iou_goes_to_the_last_box():
    # Issue 14: the first prediction overlaps both boxes equally (IoU 9/11); COCO gives it to
    # the second box, so the second prediction can take the first (IoU 7/13): both are hits.
    gts = [_gt([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])]
    preds = [_pred([[1, 0, 11, 10], [-3, 0, 7, 10]], [0.9, 0.8], [0, 0])]
    assert detection_metrics(preds, gts, 1)["map50"] == 1.0
    assert _coco_stats(preds, gts, 1)[1] == 1.0
    _check_equal(preds, gts, 1)


def test_at_most_100_detections_per_image():
    # Issue 14: 120 confident false positives push the true positive (score 0.1) past the cap.
    far = [[100 + 3 * k, 100, 102 + 3 * k, 102] for k in range(120)]
    preds = [_pred(far + [[0, 0, 10, 10]], [0.9] * 120 + [0.1], [0] * 121)]
    gts = [_gt([[0, 0, 10, 10]], [0])]
    assert detection_metrics(preds, gts, 1)["map50"] == 0.0
    _check_equal(preds, gts, 1)


def test_crowd_absorbs_predictions():
    # Two predictions inside a crowd box are ignored, not false positives.
    gts = [_gt([[0, 0, 10, 10], [50, 50, 100, 100]], [0, 0], [False, True])]
    preds = [_pred([[60, 60, 70, 70], [0, 0, 10, 10], [80, 80, 90, 90]], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert detection_metrics(preds, gts, 1)["map50"] == 1.0
    _check_equal(preds, gts, 1)
