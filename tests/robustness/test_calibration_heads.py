"""Calibration of classification heads: top-label ECE over samples, multilabel entries."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.robustness.calibration import classification_bins, ece_from_bins


def test_top_label_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    table = classification_bins(probs, labels)
    # confidences 0.9 (right), 0.6 (wrong), 0.7 (right), each alone in its bin of 15
    assert table[:, 0].sum() == 3 and (table[:, 0] > 0).sum() == 3
    assert ece_from_bins(table) == pytest.approx((0.1 + 0.6 + 0.3) / 3)


def test_multilabel_entries_skip_missing_labels():
    probs = np.array([[0.8, 0.2], [0.4, 0.9]])
    labels = np.array([[1.0, np.nan], [0.0, 0.0]])
    table = classification_bins(probs, labels, activation="sigmoid")
    # entries: 0.8 right, 0.4 -> conf 0.6 right, 0.9 -> conf 0.9 wrong; the NaN label is left out
    assert table[:, 0].sum() == 3
    assert ece_from_bins(table) == pytest.approx((0.2 + 0.4 + 0.9) / 3)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="classification_bins"):
        classification_bins(np.ones((3, 2)) / 2, np.zeros(4, dtype=int))
