"""Surface distances and HD95 against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from medfoundry.evaluation.surface import (
    average_surface_distance,
    cell_area_table,
    directed_percentile,
    hausdorff_percentile,
    hd95,
    surface_dice,
    surface_distances,
)


def _code(corners_inside, ndim):
    # Corner k (C order) is bit 2**ndim - 1 - k, the reference's order.
    offsets = list(itertools.product((0, 1), repeat=ndim))
    return sum(1 << (len(offsets) - 1 - offsets.index(c)) for c in corners_inside)


def test_2d_cell_lengths_by_hand():
    table = cell_area_table((2.0, 3.0))
    # One corner inside: segment between the midpoints of its two edges.
    assert table[_code([(0, 0)], 2)] == pytest.approx(math.hypot(1.0, 1.5))
    # Corners (0,0),(0,1) inside: straight line across axis 1 -> length = spacing[1].
    assert table[_code([(0, 0), (0, 1)], 2)] == pytest.approx(3.0)
    assert table[_code([(0, 0), (1, 0)], 2)] == pytest.approx(2.0)
    # Saddle: two corner segments.
    assert table[_code([(0, 0), (1, 1)], 2)] == pytest.approx(2 * math.hypot(1.0, 1.5))
    assert table[0] == 0 and table[15] == 0


def test_3d_cell_areas_by_hand():
    table = cell_area_table((1.0, 1.0, 1.0))
    # One corner: equilateral triangle of side sqrt(2)/2.
    assert table[_code([(0, 0, 0)], 3)] == pytest.approx(math.sqrt(3) / 4 * 0.5)
    # Half the cell inside (axis 0 = 0): a unit square across the cell.
    half = [c for c in itertools.product((0, 1), repeat=3) if c[0] == 0]
    assert table[_code(half, 3)] == pytest.approx(1.0)
    scaled = cell_area_table((2.0, 3.0, 5.0))
    assert scaled[_code(half, 3)] == pytest.approx(15.0)  # spans axes 1 and 2
    # Two corners on a face diagonal: two separate corner triangles, and so is the complement
    # (the issue's cell code 111: 0.433, where the asymmetric classic table gave 1.299).
    diagonal = _code([(0, 0, 0), (0, 1, 1)], 3)
    assert table[diagonal] == pytest.approx(2 * math.sqrt(3) / 8)
    # Three corners of a face: a pentagon split into triangles of area 1/2, sqrt(3)/4, sqrt(3)/8.
    three = _code([(0, 0, 0), (0, 0, 1), (0, 1, 0)], 3)
    assert table[three] == pytest.approx(0.5 + 3 * math.sqrt(3) / 8)
    # Every configuration and its complement bound the same surface, at any spacing.
    for t in (table, scaled):
        assert all(t[code] == t[255 - code] for code in range(256))


def test_2d_rectangle_perimeter_by_hand():
    mask = np.zeros((12, 15), bool)
    mask[2:8, 3:12] = True  # 6 x 9 voxels
    _, area, _, _ = surface_distances(mask, mask)
    # Straight runs: 2*(6-1) + 2*(9-1) unit cells, four corner cells of length sqrt(2)/2.
    assert area.sum() == pytest.approx(2 * 5 + 2 * 8 + 4 * math.sqrt(2) / 2)


def test_3d_box_area_matches_marching_cubes():
    from skimage.measure import marching_cubes, mesh_surface_area

    # A box has no ambiguous cell, so every table agrees with the mesh marching cubes draws.
    mask = np.zeros((9, 10, 8), bool)
    mask[2:7, 3:8, 1:6] = True
    spacing = (1.5, 0.8, 2.0)
    _, area, _, _ = surface_distances(mask, mask, spacing)
    verts, faces, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5, spacing=spacing,
                                        method="lorensen")
    assert area.sum() == pytest.approx(mesh_surface_area(verts, faces), rel=1e-5)


def test_issue_example_two_voxels_removed_from_a_cube():
    # Issue 14: the asymmetric table gave HD95 1.0 and total area 14.17; the reference 0.0.
    a = np.zeros((4, 4, 4), bool)
    a[1:3, 1:3, 1:3] = True
    b = a.copy()
    a[2, 1, 1] = a[2, 2, 2] = False
    assert hd95(a, b) == 0.0
    assert hd95(b, a, spacing=(1.0, 2.0, 0.5)) == 0.0


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_cubes_offset_by_k(k, axis):
    a = np.zeros((24, 24, 24), bool)
    a[4:16, 4:16, 4:16] = True
    b = np.roll(a, k, axis=axis)
    assert hd95(a, b) == pytest.approx(k)
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 2.5
    assert hd95(a, b, spacing=spacing) == pytest.approx(2.5 * k)
    assert hd95(b, a, spacing=spacing) == pytest.approx(2.5 * k)


def test_hd95_squares_2d_and_identity():
    a = np.zeros((30, 30), bool)
    a[5:20, 5:20] = True
    assert hd95(a, a) == 0.0
    assert hd95(a, np.roll(a, 4, axis=1), spacing=(1.0, 0.5)) == pytest.approx(2.0)


def test_hausdorff_max_single_voxels():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[5, 6, 2] = True
    # Surfels of one voxel are its 8 corner cells; the farthest pair of nearest cells is the
    # distance of the voxels themselves.
    assert hausdorff_percentile(a, b, percentile=100) == pytest.approx(5.0)


def test_directed_percentile_is_area_weighted():
    dist = np.array([2.0, 0.0, 1.0])
    area = np.array([8.0, 1.0, 1.0])
    assert directed_percentile(dist, area, 50) == 2.0  # unweighted median would be 1
    assert directed_percentile(dist, area, 10) == 0.0
    assert directed_percentile(dist, area, 20) == 1.0
    assert math.isnan(directed_percentile(np.zeros(0), np.zeros(0), 95))
    with pytest.raises(ValueError):
        directed_percentile(dist, area, 120)


def test_empty_policies():
    a = np.zeros((8, 8), bool)
    b = np.zeros_like(a)
    b[2:4, 2:4] = True
    assert math.isnan(hd95(a, a))
    assert hd95(a, a, empty="inf") == 0.0
    assert hd95(a, a, empty=99.0) == 0.0
    assert math.isnan(hd95(a, b))
    assert hd95(a, b, empty="inf") == math.inf
    assert hd95(b, a, empty=42.0) == 42.0
    with pytest.raises(ValueError):
        hd95(a, b, empty="zero")
    d_ab, area_a, d_ba, area_b = surface_distances(a, b)
    assert d_ab.size == 0 and area_a.size == 0 and np.all(np.isinf(d_ba)) and area_b.size > 0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shapes differ"):
        surface_distances(np.ones((3, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((3, 3)), np.ones((3, 3)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="2D or 3D"):
        surface_distances(np.ones(4), np.ones(4))


def _brute_force(a, b, spacing):
    """Independent slow reference: loop over cells, nearest border cell by exhaustive search."""
    table = cell_area_table(spacing)
    offsets = list(itertools.product((0, 1), repeat=a.ndim))

    def cells(mask):
        padded = np.pad(mask, 1)
        out = {}
        for idx in itertools.product(*[range(s + 1) for s in mask.shape]):
            code = sum(int(padded[tuple(i + o for i, o in zip(idx, off))]) << (len(offsets) - 1 - k)
                       for k, off in enumerate(offsets))
            if 0 < code < (1 << len(offsets)) - 1:
                out[idx] = table[code]
        return out

    ca, cb = cells(a), cells(b)
    pb = np.array(list(cb), float) * spacing
    pa = np.array(list(ca), float) * spacing
    d_ab = np.array([np.min(np.linalg.norm(pb - p, axis=1)) for p in pa])
    d_ba = np.array([np.min(np.linalg.norm(pa - p, axis=1)) for p in pb])
    return d_ab, np.array(list(ca.values())), d_ba, np.array(list(cb.values()))


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    a = np.zeros((14, 12), bool)
    b = np.zeros_like(a)
    a[3:9, 2:7] = rng.random((6, 5)) > 0.3
    b[5:12, 4:10] = rng.random((7, 6)) > 0.4
    spacing = (1.3, 0.7)
    got = surface_distances(a, b, spacing)
    want = _brute_force(a, b, spacing)
    for g, w in zip(got, want):
        assert np.allclose(np.sort(g), np.sort(w))
    # Area-weighted mean consistent with the returned arrays.
    d_ab, area_a, d_ba, area_b = got
    expected = (np.sum(d_ab * area_a) + np.sum(d_ba * area_b)) / (area_a.sum() + area_b.sum())
    assert average_surface_distance(a, b, spacing) == pytest.approx(expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_surface_dice_of_a_shifted_box(ndim):
    a = np.zeros((16,) * ndim, bool)
    a[(slice(4, 11),) * ndim] = True
    b = np.roll(a, 2, axis=ndim - 1)
    spacing = (1.0,) * (ndim - 1) + (0.5,)  # the shift is 2 voxels = 1 mm
    assert surface_dice(a, a, spacing, 0.0) == 1.0
    # Every surfel lies within 1 mm of the other surface, the faces across the shift do not
    # lie within 0.99 mm.
    assert surface_dice(a, b, spacing, 1.0) == 1.0
    partial = surface_dice(a, b, spacing, 0.99)
    assert 0.0 < partial < 1.0
    assert surface_dice(a, b, spacing, 0.99) == surface_dice(b, a, spacing, 0.99)
    # In voxels (spacing None) the same shift is 2.
    assert surface_dice(a, b, None, 2.0) == 1.0
    assert surface_dice(a, b, None, 1.99) < 1.0


def test_surface_dice_empty_and_bad_arguments():
    a = np.zeros((8, 8), bool)
    b = a.copy()
    b[2:5, 3:6] = True
    assert surface_dice(a, b, (1.0, 1.0), 2.0) == 0.0
    assert math.isnan(surface_dice(a, a, (1.0, 1.0), 2.0))
    assert surface_dice(a, a, (1.0, 1.0), 2.0, empty=1.0) == 1.0
    with pytest.raises(ValueError, match="tolerance_mm"):
        surface_dice(b, b, (1.0, 1.0), -1.0)
    with pytest.raises(ValueError, match="empty"):
        surface_dice(b, b, (1.0, 1.0), 1.0, empty="one")


def test_average_surface_distance_reductions():
    a = np.zeros((12, 12), bool)
    a[2:6, 2:6] = True
    b = np.zeros_like(a)
    b[2:10, 2:6] = True  # longer: its far half lies 4 voxels away at most
    d_ab, area_a, d_ba, area_b = surface_distances(a, b)
    mean_ab = np.sum(d_ab * area_a) / area_a.sum()
    mean_ba = np.sum(d_ba * area_b) / area_b.sum()
    assert average_surface_distance(a, b, reduction="mean") == pytest.approx((mean_ab + mean_ba) / 2)
    pooled = average_surface_distance(a, b)
    assert min(mean_ab, mean_ba) < pooled < max(mean_ab, mean_ba)
    with pytest.raises(ValueError, match="reduction"):
        average_surface_distance(a, b, reduction="max")
