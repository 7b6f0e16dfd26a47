"""Golden cases for medfoundry.evaluation.detection (values computed by hand in comments)."""

import math

import numpy as np
import pytest

from medfoundry.evaluation.detection import average_precision, box_iou, detection_metrics

A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
FAR = [50, 50, 60, 60]


def _pred(boxes, scores, labels):
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "scores": np.array(scores, float),
            "labels": np.array(labels, int)}


def _gt(boxes, labels):
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.array(labels, int)}


def test_box_iou():
    # overlap 1x1, union 4 + 4 - 1 = 7; touching corners overlap 0
    iou = box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2]])
    assert iou.shape == (1, 3)
    assert np.allclose(iou, [[1 / 7, 0.0, 1.0]])
    assert box_iou(np.zeros((0, 4)), [A]).shape == (0, 1)


def test_ap_all_point_and_101():
    preds = [_pred([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    gts = [_gt([A, B], [0, 0])]
    # TP, FP, TP: (P, R) = (1, .5), (.5, .5), (2/3, 1); envelope 1, 2/3, 2/3
    # all-point: 0.5 * 1 + 0 + 0.5 * 2/3 = 5/6
    assert average_precision(preds, gts, 0) == pytest.approx(5 / 6)
    # 101-point: recalls 0..0.50 (51 points) -> 1, 0.51..1 (50 points) -> 2/3
    assert average_precision(preds, gts, 0, interpolation="101") == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_duplicates_are_false_positives_and_greedy_by_score():
    # two boxes on A: higher score matches, the other is FP -> P/R (1, 1), (.5, 1) -> AP 1
    gts = [_gt([A], [0])]
    assert average_precision([_pred([A, A], [0.9, 0.8], [0, 0])], gts, 0) == pytest.approx(1.0)
    # FP ranked first: (0, 0), (.5, 1) -> envelope .5 everywhere -> AP 0.5
    assert average_precision([_pred([FAR, A], [0.9, 0.8], [0, 0])], gts, 0) == pytest.approx(0.5)


def test_matching_is_per_image():
    # a box in image 1 cannot match a ground truth of image 0
    preds = [_pred([], [], []), _pred([A], [0.9], [0])]
    gts = [_gt([A], [0]), _gt([], [])]
    assert average_precision(preds, gts, 0) == pytest.approx(0.0)


def test_iou_threshold_inclusive_and_coco_map():
    # pred [0,0,10,5] vs gt A: IoU 50/100 = 0.5 -> TP at 0.50 only; map = (1 + 9 * 0) / 10
    preds = [_pred([[0, 0, 10, 5]], [0.9], [0])]
    gts = [_gt([A], [0])]
    m = detection_metrics(preds, gts, num_classes=1)
    assert m["map50"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx(0.1)


def test_classes_without_gt_skipped_missing_predictions_zero():
    preds = [_pred([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    # class 1 has a gt but no prediction -> AP 0; class 2 has neither -> skipped
    gts = [_gt([A, B, FAR], [0, 0, 1])]
    m = detection_metrics(preds, gts, num_classes=3, per_class=True)
    assert m["map50"] == pytest.approx((5 / 6 + 0.0) / 2)
    assert math.isnan(m["ap50/2"])
    assert math.isnan(detection_metrics([_pred([], [], [])], [_gt([], [])], 1)["map50"])


def test_box_iou_3d_and_shape_errors():
    # unit cube vs cube shifted by 0.5 in x: overlap 0.5, union 1.5 -> 1/3
    iou = box_iou([[0, 0, 0, 1, 1, 1]], [[0.5, 0, 0, 1.5, 1, 1]])
    assert iou[0, 0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="coordinates"):
        box_iou([[0, 0, 1]], [[0, 0, 1]])
    # empty predictions of a 3D task
    pred = {"boxes": np.zeros((0, 6)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    m = detection_metrics([pred], [{"boxes": np.array([[0, 0, 0, 2, 2, 2.0]]), "labels": np.array([0])}], 1)
    assert m["map50"] == 0.0


def test_coco_summary_3d_has_no_size_ranges():
    from medfoundry.evaluation.detection import COCO_STATS, coco_summary

    pred = {"boxes": np.array([[0, 0, 0, 2, 2, 2.0]]), "scores": np.array([0.9]), "labels": np.array([0])}
    gt = {"boxes": np.array([[0, 0, 0, 2, 2, 2.0]]), "labels": np.array([0])}
    out = coco_summary([pred], [gt], 1)
    assert list(out) == list(COCO_STATS)
    assert out["AR100"] == 1.0
    assert out["AP"] == pytest.approx(1.0)  # COCO divides by tp + fp + eps
    assert all(math.isnan(out[k]) for k in ("APs", "APm", "APl", "ARs", "ARm", "ARl"))
