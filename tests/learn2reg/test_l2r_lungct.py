"""Real Learn2Reg LungCT validation ground truth (landmarks, keypoints, lung masks, config).

The files live beside the checkout in ``shared/learn2reg`` (never copied into the project);
the tests skip when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.learn2reg import (
    evaluate_fields,
    jacobian_statistics,
    non_diffeomorphic_volume,
    target_registration_error,
)
from medfoundry.learn2reg import load_evaluation_config, load_volume, read_points_csv, save_displacement

LUNG = Path(__file__).resolve().parents[2].parent / "shared" / "learn2reg" / "LungCT_val"
pytestmark = pytest.mark.skipif(not LUNG.is_dir(), reason="shared LungCT_val files not present beside the checkout")
SPACING = np.array([1.75, 1.25, 1.75])
SHAPE = (192, 192, 208)


def _points(kind: str, case: str):
    return (read_points_csv(LUNG / kind / f"LungCT_{case}_0000.csv"),
            read_points_csv(LUNG / kind / f"LungCT_{case}_0001.csv"))


def test_mask_header_gives_the_documented_spacing():
    mask, spacing = load_volume(LUNG / "masksTr" / "LungCT_0001_0000.nii.gz", "mask")
    assert mask.shape == SHAPE
    assert np.allclose(spacing, SPACING)


@pytest.fixture(scope="module")
def zero_results(tmp_path_factory):
    fields = tmp_path_factory.mktemp("lung_fields")
    cfg = load_evaluation_config(LUNG / "LungCT_VAL_evaluation_config.json")
    # Full-size fields are slow on a shared CPU: write the first pair's field only; the others
    # must fail on their own (missing field) while keeping their initial figures.
    for pair in cfg.pairs[:1]:
        save_displacement(fields / f"{pair.field_stem}.npz", np.zeros(SHAPE + (3,), np.float16), dtype="float16")
    return evaluate_fields(LUNG, fields, "val", config=cfg, official_only=True, method_name="zero")


def test_zero_field_gives_initial_tre_on_real_landmarks(zero_results):
    assert zero_results["task"] == "LungCT" and zero_results["n_failed"] == 2
    assert [f["pair_id"] for f in zero_results["failed"]] == ["0002_0002", "0003_0003"]
    assert "LungCT_0002_0000" in zero_results["failed"][0]["error"]
    for case in zero_results["cases"][1:]:
        fixed, moving = _points("landmarksTr", case["pair_id"][:4])
        assert case["tre_lm_initial"] == pytest.approx(np.linalg.norm((moving - fixed) * SPACING, axis=1).mean())
    for case in zero_results["cases"][:1]:
        cid = case["pair_id"].split("_")[0]
        for key, folder in (("tre_lm", "landmarksTr"), ("tre_kp", "keypointsTr")):
            fixed, moving = _points(folder, cid)
            expected = np.linalg.norm((moving - fixed) * SPACING, axis=1)
            assert np.allclose(case[f"{key}_per_point"], expected)
            assert case[key] == pytest.approx(expected.mean())
            assert case[f"{key}_initial"] == pytest.approx(expected.mean())
        assert len(case["tre_lm_per_point"]) == (81 if cid == "0001" else 100)
        # Masked official SDlogJ of the identity is 0; the moving spacing came from the fixed one.
        assert case["sdlogj_official"] == pytest.approx(0.0, abs=1e-12)
        assert any("moving voxel size" in n for n in case["notes"])
    agg = zero_results["aggregates"]
    fixed, moving = _points("landmarksTr", "0001")
    initial = np.linalg.norm((moving - fixed) * SPACING, axis=1)
    k = int(np.ceil(0.3 * initial.size))  # 25 of 81 landmarks, hardest = largest initial TRE
    assert agg["tre_lm30"] == pytest.approx(np.sort(initial)[::-1][:k].mean())


def test_constant_shift_field_tre_by_hand():
    fixed, moving = _points("landmarksTr", "0002")
    shift = np.array([1.0, -2.0, 0.5])
    disp = np.broadcast_to(shift.astype(np.float32), SHAPE + (3,))
    tre = target_registration_error(fixed, moving, disp, SPACING)
    assert np.allclose(tre, np.linalg.norm((fixed + shift - moving) * SPACING, axis=1), atol=1e-4)


def test_jacobian_inside_the_real_lung_mask():
    mask = load_volume(LUNG / "masksTr" / "LungCT_0001_0000.nii.gz", "mask")[0] > 0
    # Fold everything farther than 3 voxels from the lungs (u0 = -2 x0, J = -1 there); inside
    # the lungs and one voxel around them the field is zero.
    outside = ~ndimage.binary_dilation(mask, iterations=3)
    disp = np.zeros(SHAPE + (3,), np.float32)
    disp[..., 0] = np.where(outside, -2.0 * np.arange(SHAPE[0], dtype=np.float32)[:, None, None], 0.0)
    inside = jacobian_statistics(disp, mask, with_ndv=False)
    assert inside["folding_percent"] == 0.0 and inside["sdlogj_official"] == pytest.approx(0.0)
    assert inside["jacobian_min"] == pytest.approx(1.0)
    # A block holding lung and folded surroundings: folding and NDV appear without the mask.
    block = (slice(0, 60), slice(40, 150), slice(60, 150))
    everywhere = jacobian_statistics(disp[block], None)
    cropped_outside = outside[block][2:-2, 2:-2, 2:-2]
    assert everywhere["folding_percent"] > 0.5 * 100 * cropped_outside.mean() > 0
    assert everywhere["ndv_percent"] > 0
    assert non_diffeomorphic_volume(disp[block], mask[block])[0] == 0.0
