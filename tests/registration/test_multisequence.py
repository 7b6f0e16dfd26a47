"""Sequences of one patient on different grids (T1 vs a FLAIR-like image): rigid / affine-only with
MIND similarity, optionally followed by the deformable step; errors measured in millimetres."""

from __future__ import annotations

import numpy as np
import pytest
from reg_world_helpers import grid_affine, mni_2mm, rigid_world_map, sample_world

from medfoundry.registration import register

CENTRE = (0.0, -18.0, 10.0)
T1_SHAPE, FLAIR_SHAPE = (56, 64, 56), (60, 52, 48)


def _flair_like(t1: np.ndarray) -> np.ndarray:
    """A non-monotonic contrast: grey matter brightest, white matter darker, CSF and air dark."""
    return np.exp(-(((t1 - 0.5) / 0.2) ** 2)).astype(np.float32)


@pytest.fixture(scope="module")
def sequences():
    """T1 on a 3 mm grid; FLAIR-like of the same head, moved by a rigid world map (7-10 degrees,
    ~7 mm) and stored on a rotated, anisotropic 3.2 x 3.8 x 3.9 mm grid."""
    t = mni_2mm()
    t1_affine = grid_affine(T1_SHAPE, (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), CENTRE)
    flair_affine = grid_affine(FLAIR_SHAPE, (3.2, 3.8, 3.9), (15.0, -10.0, 20.0), (4.0, -12.0, 14.0))
    forward, matrix = rigid_world_map((8.0, 5.0, -10.0), (6.0, 2.0, -4.0), CENTRE)
    inverse = np.linalg.inv(matrix)
    back = lambda q: q @ inverse[:3, :3].T + inverse[:3, 3]  # noqa: E731
    t1 = sample_world(t["image"], t["affine"], T1_SHAPE, t1_affine, 1)
    flair = _flair_like(sample_world(t["image"], t["affine"], FLAIR_SHAPE, flair_affine, 1, back))
    return {"t1": (t1, t1_affine), "flair": (flair, flair_affine), "forward": forward,
            "t1_labels": sample_world(t["labels"], t["affine"], T1_SHAPE, t1_affine, 0),
            "flair_labels": (sample_world(t["labels"], t["affine"], FLAIR_SHAPE, flair_affine, 0, back),
                             flair_affine)}


def _error_mm(result, seq) -> float:
    """Mean distance (mm) over the T1 brain between the mapped point and the true partner."""
    affine = seq["t1"][1]
    idx = np.argwhere(seq["t1_labels"] > 0)
    truth = seq["forward"](idx @ affine[:3, :3].T + affine[:3, 3])
    moved = (idx + result.disp[tuple(idx.T)]) @ affine[:3, :3].T + affine[:3, 3]
    return float(np.linalg.norm(moved - truth, axis=1).mean())


def _dice(a, b) -> float:
    return float(np.mean([2 * np.logical_and(a == k, b == k).sum() / ((a == k).sum() + (b == k).sum())
                          for k in (1, 2)]))


def test_contrasts_really_differ(sequences):
    t1 = sequences["t1"][0]
    flair_on_t1 = _flair_like(t1)
    brain = sequences["t1_labels"] > 0
    # grey matter is bright in one and mid-grey in the other; white matter the reverse
    assert np.corrcoef(t1[brain], flair_on_t1[brain])[0, 1] < 0.0


@pytest.mark.parametrize("method, tolerance_mm", [("rigid", 1.5), ("affine", 1.8)])
def test_linear_alignment_recovers_the_transform_in_mm(sequences, method, tolerance_mm):
    """Tolerances are under half a voxel (3-3.9 mm voxels)."""
    header_only = register(sequences["t1"], sequences["flair"], method="affine", iterations=0,
                           center_of_mass=False, device="cpu")
    result = register(sequences["t1"], sequences["flair"], method=method, device="cpu",
                      labels=(None, sequences["flair_labels"]))
    before, after = _error_mm(header_only, sequences), _error_mm(result, sequences)
    assert before > 8.0 and after < tolerance_mm, (before, after)
    assert _dice(result.warped_labels, sequences["t1_labels"]) > 0.75


def test_rigid_then_deformable(sequences):
    result = register(sequences["t1"], sequences["flair"], method="hybrid", affine=True, affine_model="rigid",
                      adam_iterations=15, inverse_consistency=False, device="cpu",
                      labels=(None, sequences["flair_labels"]))
    assert result.affine is not None and "affine" in result.stage_times and "adam" in result.stage_times
    assert _error_mm(result, sequences) < 2.0
    assert _dice(result.warped_labels, sequences["t1_labels"]) > 0.75
