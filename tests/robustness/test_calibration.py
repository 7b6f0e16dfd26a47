"""Voxel-wise ECE against hand-computed cases; reliability diagrams written as PNG and SVG."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.robustness.calibration import (calibration_bins, ece_from_bins, expected_calibration_error,
                                               merge_bins, reliability_diagram)


def test_ece_hand_computed():
    # 4 foreground-aware voxels: confidences 0.9, 0.9 (one right, one wrong), 0.6, 0.6 (both right)
    p1 = np.array([0.9, 0.9, 0.6, 0.6, 0.99])
    probs = np.stack([1 - p1, p1])
    ref = np.array([1, 0, 1, 1, 0])
    probs[:, 4] = [0.99, 0.01]  # confident, correct background: not counted foreground-aware
    # bins of 0.1: {0.9: acc 0.5}, {0.6: acc 1.0} -> 2/4 * 0.4 + 2/4 * 0.4
    assert expected_calibration_error(probs, ref, bins=10) == pytest.approx(0.4)
    everything = expected_calibration_error(probs, ref, bins=10, foreground_only=False)
    # the 0.99 voxel joins the 0.9 bin: confidence 0.93, accuracy 2/3
    assert everything == pytest.approx((3 * abs(2 / 3 - 0.93) + 2 * 0.4) / 5)


def test_perfectly_confident_and_right_is_zero_and_bins_pool():
    ref = np.array([[0, 1, 2, 1]])
    probs = np.eye(3)[ref].transpose(2, 0, 1).astype(np.float32)
    assert expected_calibration_error(probs, ref) == pytest.approx(0.0, abs=1e-6)
    t = calibration_bins(probs, ref)
    assert merge_bins([t, t])[:, 0].sum() == 2 * t[:, 0].sum() == 6
    empty = calibration_bins(np.stack([np.ones((3,)), np.zeros((3,))]), np.zeros(3, int))
    assert np.isnan(ece_from_bins(empty))


def test_sigmoid_regions_and_diagram(tmp_path):
    p = np.array([[0.8, 0.3, 0.1]])
    ref = np.array([[1, 1, 0]])
    # counted: voxels 0 (conf 0.8, right) and 1 (conf 0.7, wrong)
    assert expected_calibration_error(p, ref, activation="sigmoid", bins=10) == pytest.approx((0.2 + 0.7) / 2)
    files = reliability_diagram({"none": calibration_bins(p, ref, activation="sigmoid")}, tmp_path / "rel.png")
    assert files[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in files[1].read_bytes()[:400]
