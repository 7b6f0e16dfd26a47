"""KiTS21 protocol: hierarchical classes, empty-case rules, and DeepMind's surface Dice."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfoundry.evaluation.protocols import get_protocol
from medfoundry.evaluation.protocols.kits21 import HECS


def test_classes_and_empty_rules():
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[3:5, 3:5, 3:5] = 3  # cyst: a mass, not a tumour
    pred = ref.copy()
    out = get_protocol("kits21").evaluate_case(pred, ref, (1.0, 1.0, 1.0))
    assert set(out) == {"kidney_and_mass", "mass", "tumor"}
    assert out["kidney_and_mass"] == {"dice": 1.0, "surface_dice": 1.0}
    assert out["tumor"] == {"dice": 1.0, "surface_dice": 1.0}  # empty in both
    pred[3:5, 3:5, 3:5] = 1
    out = get_protocol("kits21").evaluate_case(pred, ref, (1.0, 1.0, 1.0))
    assert out["mass"] == {"dice": 0.0, "surface_dice": 0.0}  # reference only
    assert out["kidney_and_mass"]["dice"] == 1.0
    assert get_protocol("kits21").missing_case(ref, (1.0, 1.0, 1.0))["tumor"] == {"dice": 0.0, "surface_dice": 0.0}


def test_tolerances_are_the_official_ones():
    assert {k: t for k, (_, t) in HECS.items()} == {
        "kidney_and_mass": 1.0330772532390826, "mass": 1.1328796488598762, "tumor": 1.1498198361434828}


def test_equal_to_deepmind_surface_distance():
    sd = pytest.importorskip("surface_distance")
    rng = np.random.default_rng(0)
    protocol = get_protocol("kits21")
    for _ in range(12):
        shape = (18, 20, 16)
        ref = np.zeros(shape, np.uint8)
        kidney = ndimage.binary_dilation(rng.random(shape) < 0.01, iterations=2)
        ref[kidney] = 1
        ref[ndimage.binary_dilation(rng.random(shape) < 0.004, iterations=1) & kidney] = rng.choice([2, 3])
        pred = ref.copy()
        pred[rng.random(shape) < 0.05] = rng.choice([0, 1, 2, 3])
        spacing = tuple(float(s) for s in rng.choice([0.7, 1.0, 2.5], 3))
        ours = protocol.evaluate_case(pred, ref, spacing)
        for hec, (labels, tolerance) in HECS.items():
            p, r = np.isin(pred, labels), np.isin(ref, labels)
            if p.any() and r.any():
                distances = sd.compute_surface_distances(r, p, spacing)
                assert ours[hec]["surface_dice"] == pytest.approx(
                    sd.compute_surface_dice_at_tolerance(distances, tolerance), abs=1e-12)
                assert ours[hec]["dice"] == pytest.approx(sd.compute_dice_coefficient(r, p), abs=1e-12)
