"""Dice, HD95 and label warping against installed reference code on random fields.

HD95 and Dice are compared with DeepMind's surface-distance (the package the official
Learn2Reg evaluation imports; a test dependency) on labels warped by random smooth fields and
by folding (voxel-noise) fields, in voxels (the official mode) and in mm on an anisotropic grid.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.learn2reg import dice_per_label, hd95_per_label, warp_labels
from medfoundry.randomfields import random_displacement

sd = pytest.importorskip("surface_distance")

SHAPE = (30, 26, 22)


def _labels(rng: np.random.Generator) -> np.ndarray:
    """Three blob labels from thresholded smooth noise (touching, with holes and islands)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 2.5)
    edges = np.quantile(noise, [0.55, 0.7, 0.85])
    return np.digitize(noise, edges).astype(np.uint8)


def _field(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "smooth":
        return np.moveaxis(random_displacement(SHAPE, 3.0, 4.0, rng), 0, -1).astype(np.float32)
    return rng.normal(0.0, 1.2, size=(*SHAPE, 3)).astype(np.float32)


@pytest.mark.parametrize("kind", ["smooth", "folding"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_and_hd95_equal_surface_distance(kind, seed):
    rng = np.random.default_rng(seed)
    fixed, moving = _labels(rng), _labels(rng)
    warped = warp_labels(moving, _field(kind, rng))
    labels = [1, 2, 3]
    dice = dice_per_label(fixed, moving, warped, labels)
    hd_vox = hd95_per_label(fixed, moving, warped, labels)
    spacing = (1.75, 1.25, 2.5)
    hd_mm = hd95_per_label(fixed, moving, warped, labels, spacing=spacing)
    for label in labels:
        f, w = fixed == label, warped == label
        assert f.any() and w.any()
        assert dice[label] == pytest.approx(sd.compute_dice_coefficient(f, w), abs=1e-12)
        for ours, space in ((hd_vox[label], (1.0, 1.0, 1.0)), (hd_mm[label], spacing)):
            ref = sd.compute_robust_hausdorff(sd.compute_surface_distances(f, w, space), 95)
            assert ours == pytest.approx(ref, abs=1e-9), (kind, seed, label, space)


def test_warping_uses_float64_coordinates_as_the_official_script():
    # float32(3) + float32(0.49999997) rounds to 3.5 and then to voxel 4; the official script
    # adds an integer grid to the field read in float64 (3.49999997) and samples voxel 3.
    moving = np.arange(8, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    disp = np.zeros((8, 2, 2, 3), np.float32)
    disp[..., 0] = np.float32(0.49999997)
    assert np.float32(3) + disp[3, 0, 0, 0] == np.float32(3.5)
    assert np.array_equal(warp_labels(moving, disp)[:7, 0, 0], np.arange(7))
