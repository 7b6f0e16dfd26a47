"""Learn2Reg metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfoundry.learn2reg import (
    dice_per_label,
    evaluate_pair_arrays,
    hardest_fraction_mean,
    hd95_per_label,
    jacobian_determinant,
    jacobian_statistics,
    load_runtimes,
    non_diffeomorphic_volume,
    sdlogj_official,
    target_registration_error,
    warp_labels,
)


def _linear_field(shape, matrix):
    grid = np.stack(np.indices(shape), -1).astype(np.float64)
    return grid @ np.asarray(matrix, dtype=np.float64).T


# ---------------------------------------------------------------------- Dice / warping / HD95


def test_warp_labels_integer_shift_and_zero_outside():
    moving = np.zeros((6, 5, 4), np.int32)
    moving[2:4, 1:3, 1:3] = 7
    disp = np.zeros((6, 5, 4, 3), np.float32)
    disp[..., 0] = 1.0  # fixed x samples moving x + 1
    warped = warp_labels(moving, disp)
    expected = np.zeros_like(moving)
    expected[1:3, 1:3, 1:3] = 7
    assert np.array_equal(warped, expected)
    disp[..., 1] = 10.0  # everything sampled outside -> background
    assert not warp_labels(moving, disp).any()


def test_dice_per_label_by_hand():
    fixed = np.zeros((4, 4), np.int32)
    fixed[0, :] = 1          # 4 voxels
    fixed[1, :2] = 2         # 2 voxels
    moving = fixed.copy()
    moving[3, 3] = 3         # label 3 only in moving
    warped = np.zeros_like(fixed)
    warped[0, :2] = 1        # 2 voxels overlap label 1
    warped[2, :3] = 1        # 3 more voxels of label 1
    dice = dice_per_label(fixed, moving, warped, [1, 2, 3, 4])
    assert dice[1] == pytest.approx(2 * 2 / (4 + 5))
    assert dice[2] == 0.0                     # present in both, lost by the warp
    assert math.isnan(dice[3])                # absent from fixed
    assert math.isnan(dice[4])                # absent from both


def test_hd95_per_label_voxels_mm_and_penalty():
    fixed = np.zeros((20, 20, 20), np.int32)
    fixed[5:12, 5:12, 5:12] = 1
    fixed[14:17, 14:17, 14:17] = 2
    warped = np.roll(fixed, 2, axis=0) * (np.roll(fixed, 2, axis=0) == 1)
    hd = hd95_per_label(fixed, fixed, warped, [1, 2, 3], penalty=99.0)
    assert hd[1] == pytest.approx(2.0)
    assert hd[2] == 99.0            # lost by the warp -> penalty
    assert math.isnan(hd[3])
    hd_mm = hd95_per_label(fixed, fixed, warped, [1], spacing=(1.5, 1.0, 1.0))
    assert hd_mm[1] == pytest.approx(3.0)


# ---------------------------------------------------------------------- TRE


def test_tre_constant_shift_by_hand():
    fixed = np.array([[2.0, 3.0, 4.0], [5.5, 2.25, 3.0]])
    moving = np.array([[3.0, 3.0, 4.0], [5.5, 4.25, 3.0]])
    disp = np.zeros((10, 10, 10, 3), np.float32)
    disp[..., 0] = 1.0
    spacing = (2.0, 0.5, 1.0)
    tre = target_registration_error(fixed, moving, disp, spacing)
    # Point 0 lands exactly; point 1 lands at (6.5, 2.25, 3) vs (5.5, 4.25, 3): (1*2, -2*0.5, 0).
    assert tre == pytest.approx([0.0, math.sqrt(4.0 + 1.0)], abs=1e-9)
    initial = target_registration_error(fixed, moving, None, spacing)
    assert initial == pytest.approx([2.0, 1.0])


def test_tre_samples_field_with_cubic_spline_between_voxels():
    # A linear field is reproduced exactly by spline interpolation away from the border.
    disp = _linear_field((16, 16, 16), [[0.1, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).astype(np.float32)
    p = np.array([[7.5, 8.25, 6.0]])
    tre = target_registration_error(p, p + [[0.75, 0.0, 0.0]], disp, (1.0, 1.0, 1.0))
    assert tre[0] == pytest.approx(0.0, abs=1e-4)


def test_tre_rejects_mismatched_points():
    with pytest.raises(ValueError, match="fixed points"):
        target_registration_error(np.zeros((3, 3)), np.zeros((2, 3)), None, (1, 1, 1))


def test_hardest_fraction_mean_by_hand():
    values = np.arange(10, dtype=float)           # 0..9
    hardness = np.array([5, 1, 9, 0, 7, 3, 8, 2, 6, 4], float)
    # ceil(0.3 * 10) = 3 lowest hardness: indices 3, 1, 7 -> values 3, 1, 7.
    assert hardest_fraction_mean(values, hardness, 0.3, "low") == pytest.approx((3 + 1 + 7) / 3)
    # 3 highest: indices 2, 6, 4.
    assert hardest_fraction_mean(values, hardness, 0.3, "high") == pytest.approx((2 + 6 + 4) / 3)
    # NaN entries are dropped: 7 left, ceil(2.1) = 3.
    v = values.copy()
    v[[3, 1, 0]] = np.nan
    assert hardest_fraction_mean(v, hardness, 0.3, "low") == pytest.approx((7 + 5 + 9) / 3)


# ---------------------------------------------------------------------- Jacobian


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_of_linear_field_is_its_determinant(ndim):
    rng = np.random.default_rng(ndim)
    matrix = rng.uniform(-0.3, 0.3, (ndim, ndim))
    shape = (9, 10, 11)[:ndim]
    jac = jacobian_determinant(_linear_field(shape, matrix))
    assert jac.shape == tuple(s - 4 for s in shape)  # 2 voxels cropped per border
    assert np.allclose(jac, np.linalg.det(np.eye(ndim) + matrix))


def test_jacobian_matches_independent_central_differences():
    rng = np.random.default_rng(3)
    disp = rng.normal(0, 0.4, (12, 11, 10, 3))
    grads = np.stack([np.stack(np.gradient(disp[..., c]), -1) for c in range(3)], -2)  # [..., c, a]
    expected = np.linalg.det(grads + np.eye(3))[2:-2, 2:-2, 2:-2]
    assert np.allclose(jacobian_determinant(disp), expected)
    # Official SDlogJ: std(log(clip(J + 3, 1e-9, 1e9))), inside the cropped mask.
    mask = np.zeros((12, 11, 10), bool)
    mask[3:9, 2:8, 4:9] = True
    inner = mask[2:-2, 2:-2, 2:-2]
    assert sdlogj_official(disp) == pytest.approx(np.std(np.log(np.clip(expected + 3, 1e-9, 1e9))))
    assert sdlogj_official(disp, mask) == pytest.approx(np.std(np.log(np.clip(expected[inner] + 3, 1e-9, 1e9))))
    stats = jacobian_statistics(disp, mask)
    j = expected[inner]
    assert stats["folding_percent"] == pytest.approx(100 * np.mean(j <= 0))
    assert stats["sdlogj"] == pytest.approx(np.std(np.log(j[j > 0])))


def test_zero_padding_only_matters_without_crop():
    disp = np.ones((6, 6, 2))  # constant field: J = 1 inside, border voxels see the zero padding
    assert np.allclose(jacobian_determinant(disp, crop=1), 1.0)
    full = jacobian_determinant(disp, crop=0)
    assert full.shape == (6, 6)
    assert full[0, 3] == pytest.approx(1.5)  # d u0/dx0 = 0.5 * (1 - 0) at the first row


def test_uniform_fold_ndv_by_hand():
    # u0 = -(1 + s) x0: every simplex has J = -s, so the inverted mapped volume is s per cell.
    s = 0.5
    disp = np.zeros((8, 8, 2))
    disp[..., 0] = -(1 + s) * np.indices((8, 8))[0]
    ndv, percent = non_diffeomorphic_volume(disp, crop=0)
    assert percent == pytest.approx(100 * s)
    assert ndv == pytest.approx(s * 7 * 7)
    stats = jacobian_statistics(disp)
    assert stats["folding_percent"] == 100.0
    assert stats["jacobian_min"] == pytest.approx(-s)
    assert math.isnan(stats["sdlogj"])  # no voxel with J > 0


def test_ndv_respects_mask():
    disp = np.zeros((10, 10, 10, 3))
    disp[..., 0] = -2.0 * np.indices((10, 10, 10))[0]  # J = -1 everywhere
    mask = np.zeros((10, 10, 10), bool)
    mask[:5] = True
    ndv_all, pct_all = non_diffeomorphic_volume(disp)
    ndv_half, pct_half = non_diffeomorphic_volume(disp, mask)
    assert pct_all == pytest.approx(100.0) and pct_half == pytest.approx(100.0)
    # Cells with origin 2..7 per axis; the mask keeps origins 2..4 along axis 0.
    assert ndv_all == pytest.approx(6 * 6 * 6)
    assert ndv_half == pytest.approx(3 * 6 * 6)


def test_checkerboard_fold_is_caught_by_ndv_not_by_central_differences():
    # u0 alternates +-0.75 along x0: central differences see J = 1 everywhere, but every other
    # cell is mapped with slope 1 - 1.5 = -0.5 (inverted, mapped volume 0.5 per cell).
    n = 12
    disp = np.zeros((n, n, n, 3))
    disp[..., 0] = 0.75 * (-1.0) ** np.indices((n, n, n))[0]
    stats = jacobian_statistics(disp)
    assert stats["folding_percent"] == 0.0
    assert stats["sdlogj_official"] == pytest.approx(0.0)
    assert stats["ndv_percent"] == pytest.approx(25.0)


def test_local_fold_caught_by_folding_percent_while_official_stays_small():
    n = 40
    grid = np.indices((n, n, n)).astype(float)
    r2 = ((grid - n / 2) ** 2).sum(0)
    disp = np.zeros((n, n, n, 3))
    disp[..., 0] = 6.0 * np.exp(-r2 / (2 * 2.0 ** 2))  # d u0 / d x0 reaches -1.8: folds at the centre
    stats = jacobian_statistics(disp)
    jac = jacobian_determinant(disp)
    assert jac.min() < -0.5
    assert stats["folding_percent"] == pytest.approx(100 * np.mean(jac <= 0))
    assert stats["folding_percent"] > 0.02  # 27 voxels of 36**3
    assert stats["ndv_percent"] > 0
    # The official figure compresses log(J + 3): it stays below the usual "smooth" range even
    # though the field folds, while the log J spread over J > 0 is several times larger.
    assert stats["sdlogj_official"] < 0.05
    assert stats["sdlogj"] > 3 * stats["sdlogj_official"]


def test_identity_field_has_perfect_plausibility():
    stats = jacobian_statistics(np.zeros((8, 9, 10, 3)))
    assert stats == pytest.approx({"sdlogj_official": 0.0, "sdlogj": 0.0, "folding_percent": 0.0,
                                   "jacobian_min": 1.0, "ndv_percent": 0.0, "ndv_voxels": 0.0})


# ---------------------------------------------------------------------- case record and runtimes


def test_evaluate_pair_arrays_zero_field_gives_initial_figures():
    rng = np.random.default_rng(0)
    fixed = np.zeros((16, 16, 16), np.int32)
    fixed[3:10, 3:10, 3:10] = 1
    fixed[10:14, 4:12, 5:11] = 2
    moving = np.roll(fixed, 1, axis=1)
    pts = rng.uniform(4, 11, (5, 3))
    rec = evaluate_pair_arrays(np.zeros((16, 16, 16, 3)), fixed_labels=fixed, moving_labels=moving,
                               fixed_points=pts, moving_points=pts + [0, 1, 0], spacing=(1.0, 2.0, 1.0))
    assert rec["dice"] == pytest.approx(rec["dice_initial"])
    assert rec["tre_lm"] == pytest.approx(2.0) and rec["tre_lm_initial"] == pytest.approx(2.0)
    assert rec["hd95"] == pytest.approx(1.0) and rec["hd95_mm"] == pytest.approx(2.0)
    shift = np.zeros((16, 16, 16, 3))
    shift[..., 1] = 1.0
    rec = evaluate_pair_arrays(shift, fixed_labels=fixed, moving_labels=moving, fixed_points=pts,
                               moving_points=pts + [0, 1, 0], spacing=(1.0, 2.0, 1.0))
    assert rec["dice"] == pytest.approx(1.0)
    assert rec["tre_lm"] == pytest.approx(0.0, abs=1e-6)
    assert rec["hd95"] == 0.0


def test_load_runtimes_normalises_keys(tmp_path):
    path = tmp_path / "rt.json"
    path.write_text('{"disp_0001_0002.nii.gz": 1.5, "0003_0004": 2}')
    assert load_runtimes(path) == {"0001_0002": 1.5, "0003_0004": 2.0}
    assert load_runtimes({"disp_0001_0000_0002_0001": "3"}) == {"0001_0000_0002_0001": 3.0}
