"""Surface metrics against DeepMind's surface-distance package (the reference implementation).

The reference is a test-only dependency (the ``dev`` extra); these tests skip without it. It
was checked to be DeepMind's code: the PyPI release 0.1 equals github:google-deepmind/
surface-distance except for ``np.Inf``/``np.NaN`` spellings that NumPy 2 removed, which the
fixture below restores for the duration of a test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.evaluation import segmentation
from medfoundry.evaluation.surface import (
    average_surface_distance,
    cell_area_table,
    directed_percentile,
    hausdorff_percentile,
    surface_dice,
    surface_distances,
)

sd = pytest.importorskip("surface_distance")
lookup_tables = pytest.importorskip("surface_distance.lookup_tables")

# The reference sums each cell's triangle areas in its own table order; ours sums the same
# triangles in marching-cubes order, so anisotropic 3D areas may differ in the last bits.
AREA_RTOL = 1e-14


@pytest.fixture(autouse=True)
def _numpy2_names(monkeypatch):
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)


def _reference(a, b, spacing):
    return sd.compute_surface_distances(a.astype(bool), b.astype(bool), spacing)


def _random_pair(rng, ndim, anisotropic):
    shape = tuple(int(s) for s in rng.integers(3, 18, ndim))
    spacing = tuple(rng.uniform(0.3, 3.0, ndim)) if anisotropic else (1.0,) * ndim
    style = rng.integers(3)
    if style == 0:  # noise: every cell configuration, masks touching the array border
        a = rng.random(shape) > rng.uniform(0.2, 0.8)
    elif style == 1:  # blobs
        a = ndimage.binary_dilation(rng.random(shape) > 0.9, iterations=int(rng.integers(1, 3)))
    else:  # a box
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        a = np.zeros(shape, bool)
        a[tuple(slice(x, int(rng.integers(x + 1, s + 1))) for x, s in zip(lo, shape))] = True
    # b: a shifted, with a few voxels flipped
    b = np.roll(a, int(rng.integers(-2, 3)), axis=int(rng.integers(ndim))) ^ (rng.random(shape) > 0.93)
    return a, b, spacing


def _compare(a, b, spacing, exact_areas):
    ref = _reference(a, b, spacing)
    d_ab, area_a, d_ba, area_b = surface_distances(a, b, spacing)
    np.testing.assert_array_equal(d_ab, ref["distances_gt_to_pred"])
    np.testing.assert_array_equal(d_ba, ref["distances_pred_to_gt"])
    if exact_areas:
        np.testing.assert_array_equal(area_a, ref["surfel_areas_gt"])
        np.testing.assert_array_equal(area_b, ref["surfel_areas_pred"])
    else:
        np.testing.assert_allclose(area_a, ref["surfel_areas_gt"], rtol=AREA_RTOL, atol=0)
        np.testing.assert_allclose(area_b, ref["surfel_areas_pred"], rtol=AREA_RTOL, atol=0)
    for percent in (0, 50, 90, 95, 99, 100):
        assert hausdorff_percentile(a, b, spacing, percent) == sd.compute_robust_hausdorff(ref, percent)
    for tol in (0.0, 1.0, 2.5):
        assert surface_dice(a, b, spacing, tol) == pytest.approx(
            sd.compute_surface_dice_at_tolerance(ref, tol), rel=AREA_RTOL, abs=0)
    pair = sd.compute_average_surface_distance(ref)
    assert average_surface_distance(a, b, spacing, reduction="mean") == pytest.approx(
        np.mean(pair), rel=AREA_RTOL, abs=0)


def test_2d_table_is_bit_identical():
    rng = np.random.default_rng(0)
    for spacing in [(1.0, 1.0)] + [tuple(rng.uniform(0.1, 4.0, 2)) for _ in range(20)]:
        want = lookup_tables.create_table_neighbour_code_to_contour_length(spacing)
        np.testing.assert_array_equal(cell_area_table(spacing), want)


def test_3d_table_equals_reference():
    unit = lookup_tables.create_table_neighbour_code_to_surface_area((1.0, 1.0, 1.0))
    np.testing.assert_array_equal(cell_area_table((1.0, 1.0, 1.0)), unit)
    rng = np.random.default_rng(1)
    for _ in range(20):
        spacing = tuple(rng.uniform(0.1, 4.0, 3))
        want = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
        np.testing.assert_allclose(cell_area_table(spacing), want, rtol=AREA_RTOL, atol=0)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_random_3d_pairs(anisotropic):
    rng = np.random.default_rng(100 + anisotropic)
    for _ in range(110):  # 220 random 3D pairs in all
        a, b, spacing = _random_pair(rng, 3, anisotropic)
        if a.any() and b.any():
            _compare(a, b, spacing, exact_areas=not anisotropic)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_random_2d_pairs(anisotropic):
    rng = np.random.default_rng(200 + anisotropic)
    for _ in range(60):
        a, b, spacing = _random_pair(rng, 2, anisotropic)
        if a.any() and b.any():
            _compare(a, b, spacing, exact_areas=True)


def test_issue_example():
    a = np.zeros((4, 4, 4), bool)
    a[1:3, 1:3, 1:3] = True
    b = a.copy()
    a[2, 1, 1] = a[2, 2, 2] = False
    _compare(a, b, (1.0, 1.0, 1.0), exact_areas=True)
    assert hausdorff_percentile(a, b) == 0.0


@pytest.mark.parametrize("ndim", [2, 3])
def test_edge_cases(ndim):
    spacing = (0.7, 1.9, 1.2)[:ndim]
    shape = (6,) * ndim
    full = np.ones(shape, bool)
    voxel = np.zeros(shape, bool)
    voxel[(2,) * ndim] = True
    other = np.zeros(shape, bool)
    other[(5,) + (0,) * (ndim - 1)] = True
    for a, b in [(full, voxel), (voxel, other), (voxel, voxel), (full, full)]:
        _compare(a, b, spacing, exact_areas=ndim == 2)
    empty = np.zeros(shape, bool)
    # Exactly one empty mask: the reference's inf distance and zero surface Dice.
    ref = _reference(voxel, empty, spacing)
    assert hausdorff_percentile(voxel, empty, spacing, empty="inf") == sd.compute_robust_hausdorff(ref, 95)
    assert surface_dice(voxel, empty, spacing, 1.0) == sd.compute_surface_dice_at_tolerance(ref, 1.0) == 0.0
    assert math.isnan(hausdorff_percentile(voxel, empty, spacing))  # default policy
    # Both empty: the reference's 0/0; ours follows the ``empty`` argument.
    with np.errstate(invalid="ignore"):
        assert math.isnan(sd.compute_surface_dice_at_tolerance(_reference(empty, empty, spacing), 1.0))
    assert math.isnan(surface_dice(empty, empty, spacing, 1.0))
    assert surface_dice(empty, empty, spacing, 1.0, empty=1.0) == 1.0


def test_directed_percentile_search_has_no_tolerance():
    # Areas 1..20 in order: the cumulative fraction passes 0.95 between entries; an exact
    # hit at the boundary takes that entry (searchsorted left on percent / 100).
    dist = np.arange(20, dtype=float)
    area = np.ones(20)
    ref = {"distances_gt_to_pred": dist, "surfel_areas_gt": area,
           "distances_pred_to_gt": dist, "surfel_areas_pred": area}
    for percent in (5, 50, 94.9, 95, 95.1, 100):
        assert directed_percentile(dist, area, percent) == sd.compute_robust_hausdorff(ref, percent)
    # A fraction a hair below 0.95 does not reach it (a search at 0.95 - 1e-12 would stop here).
    dist, area = np.array([0.0, 7.0]), np.array([0.95 - 1e-13, 0.05 + 1e-13])
    ref = {"distances_gt_to_pred": dist, "surfel_areas_gt": area,
           "distances_pred_to_gt": dist, "surfel_areas_pred": area}
    assert directed_percentile(dist, area, 95) == sd.compute_robust_hausdorff(ref, 95) == 7.0


def test_segmentation_wrappers_follow_the_reference():
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 3, (10, 12, 9))
    ref_map = np.where(rng.random(pred.shape) > 0.8, rng.integers(0, 3, pred.shape), pred)
    spacing = (1.2, 0.9, 2.0)
    for label in (1, 2):
        ref = _reference(pred == label, ref_map == label, spacing)
        assert segmentation.hd95(pred, ref_map, label, spacing) == sd.compute_robust_hausdorff(ref, 95)
        assert segmentation.nsd(pred, ref_map, label, spacing, 1.5) == pytest.approx(
            sd.compute_surface_dice_at_tolerance(ref, 1.5), rel=AREA_RTOL, abs=0)
