"""Default protocol: per-label Dice, HD95 (mm), surface Dice and volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfoundry.evaluation.protocols import get_protocol


def test_identical_shifted_and_missing_labels():
    ref = np.zeros((16, 16, 16), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[10:14, 10:14, 10:14] = 2
    pred = ref.copy()
    pred[pred == 2] = 0
    pred[9:13, 10:14, 10:14] = 3  # label 3 only predicted
    spacing = (2.0, 1.0, 1.0)
    out = get_protocol("default").evaluate_case(pred, ref, spacing)
    assert set(out) == {"label_1", "label_2", "label_3"}
    assert out["label_1"]["dice"] == 1.0 and out["label_1"]["hd95"] == 0.0 and out["label_1"]["nsd"] == 1.0
    assert out["label_1"]["ref_volume_ml"] == pytest.approx(216 * 2.0 / 1000)
    diagonal = math.sqrt(32**2 + 16**2 + 16**2)
    for missing in ("label_2", "label_3"):
        assert out[missing]["dice"] == 0.0 and out[missing]["nsd"] == 0.0
        assert out[missing]["hd95"] == pytest.approx(diagonal)
    assert out["label_2"]["abs_volume_difference_ml"] == pytest.approx(64 * 2.0 / 1000)


def test_one_voxel_shift_in_mm():
    ref = np.zeros((16, 16, 16), np.uint8)
    ref[4:10, 4:10, 4:10] = 1
    pred = np.roll(ref, 1, axis=0)
    out = get_protocol("default").evaluate_case(pred, ref, (2.0, 1.0, 1.0))["label_1"]
    assert out["hd95"] == pytest.approx(2.0)
    assert out["dice"] == pytest.approx(2 * 5 / 12)
    assert 0.0 < out["nsd"] < 1.0


def test_missing_prediction_scores_every_reference_label_as_empty():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[1:4, 1:4, 1:4] = 5
    out = get_protocol("default").missing_case(ref, (1.0, 1.0, 1.0))
    assert out["label_5"]["dice"] == 0.0 and out["label_5"]["pred_volume_ml"] == 0.0
