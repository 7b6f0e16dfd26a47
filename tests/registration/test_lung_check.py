"""The made lung pairs behind the lung_ct preset: the true field is exact and real-sized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfoundry.registration.lung_check import field_error_mm, landmark_tre_mm, make_lung_pair

LUNG = Path(__file__).resolve().parents[2].parent / "shared" / "learn2reg" / "LungCT_val"
pytestmark = pytest.mark.skipif(not LUNG.is_dir(), reason="shared LungCT_val files not present beside the checkout")


def test_made_lung_pair_follows_the_real_keypoint_motion():
    pair = make_lung_pair(LUNG, "0001", factor=4)
    assert pair["fixed"].shape == pair["mask"].shape == pair["true_disp"].shape[:3] == (48, 48, 52)
    lm = (pair["fixed_landmarks"], pair["moving_landmarks"], pair["spacing"])
    # the interpolated keypoint motion explains most of the real landmark motion
    assert landmark_tre_mm(pair["true_disp"], *lm) < 0.3 * landmark_tre_mm(0 * pair["true_disp"], *lm)
    assert field_error_mm(pair["true_disp"], pair) == 0.0
    lungs = pair["mask"]
    assert pair["fixed"][lungs].mean() < -500 and pair["fixed"][~lungs].mean() > pair["fixed"][lungs].mean()
    again = make_lung_pair(LUNG, "0001", factor=4)
    np.testing.assert_array_equal(again["fixed"], pair["fixed"])  # seeded
