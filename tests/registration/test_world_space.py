"""Registration across grids: oblique affines, RAS/LPS, world-space fields applied by SimpleITK."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from reg_world_helpers import grid_affine, mni_2mm, rigid_world_map, sample_world

from medfoundry.errors import RegistrationError
from medfoundry.randomfields import random_displacement
from medfoundry.registration import register, warp_volume
from medfoundry.registration.convex_adam import StageTimes, convex_adam, feature_levels
from medfoundry.registration.features import mind_ssc
from medfoundry.registration.presets import get_preset
from medfoundry.registration.world import as_volume, resample, save_itk_displacement, voxel_map, world_displacement

CENTRE = (0.0, -18.0, 10.0)  # mm, the middle of the MNI152 head
# Both grids hold the whole head (3.3-3.9 mm voxels keep the tests fast), oblique and anisotropic.
FIXED_SHAPE = (50, 58, 50)
MOVING_SHAPE = (52, 50, 54)


def _fixed_grid():
    return grid_affine(FIXED_SHAPE, (3.5, 3.4, 3.6), (10.0, -5.0, 15.0), CENTRE)


def _moving_grid():
    return grid_affine(MOVING_SHAPE, (3.4, 3.9, 3.3), (-12.0, 8.0, 25.0), (3.0, -15.0, 12.0))


def _brain(shape, affine, world_map=None):
    t = mni_2mm()
    image = sample_world(t["image"], t["affine"], shape, affine, 1, world_map)
    labels = sample_world(t["labels"], t["affine"], shape, affine, 0, world_map)
    return image, labels


def _dice(a, b):
    scores = [2 * np.logical_and(a == k, b == k).sum() / max((a == k).sum() + (b == k).sum(), 1) for k in (1, 2)]
    return float(np.mean(scores))


def test_voxel_map_and_resample_follow_the_affines():
    fixed_affine, moving_affine = _fixed_grid(), _moving_grid()
    t = mni_2mm()
    moving, _ = _brain(MOVING_SHAPE, moving_affine)
    matrix = voxel_map(fixed_affine, moving_affine)
    ours = resample(moving, FIXED_SHAPE, matrix, order=1, fill=-1.0)
    truth = sample_world(moving, moving_affine, FIXED_SHAPE, fixed_affine, 1)
    points = np.stack(np.meshgrid(*[np.arange(s) for s in FIXED_SHAPE], indexing="ij"), -1) @ matrix[:3, :3].T \
        + matrix[:3, 3]
    inside = np.all((points >= 0) & (points <= np.array(MOVING_SHAPE) - 1), axis=-1)
    far = np.any((points < -0.5) | (points > np.array(MOVING_SHAPE) - 0.5), axis=-1)
    assert inside.mean() > 0.3 and far.mean() > 0.05
    assert np.abs(ours - truth)[inside].max() < 1e-4
    assert np.all(ours[far] == -1.0)  # outside the moving grid: the fill value
    # and the fixed grid really sees the brain (the test is not about empty volumes)
    direct = sample_world(t["image"], t["affine"], FIXED_SHAPE, fixed_affine, 1)
    assert np.corrcoef(ours[inside], direct[inside])[0, 1] > 0.8


def test_world_field_applied_by_simpleitk_matches_our_warp(tmp_path):
    """Write the field for ITK (LPS), let SimpleITK resample the moving labels and image with it,
    and compare with our own warp of the same volumes: oblique, anisotropic, different grids."""
    fixed_affine, moving_affine = _fixed_grid(), _moving_grid()
    moving, moving_labels = _brain(MOVING_SHAPE, moving_affine)
    rng = np.random.default_rng(0)
    disp = np.moveaxis(random_displacement(FIXED_SHAPE, 2.5, 4.0, rng), 0, -1).astype(np.float32)
    ours_labels = warp_volume(moving_labels, disp, order=0, fixed_affine=fixed_affine, moving_affine=moving_affine)
    ours_image = warp_volume(moving, disp, order=1, fixed_affine=fixed_affine, moving_affine=moving_affine)

    nib.save(nib.Nifti1Image(np.zeros(FIXED_SHAPE, np.float32), fixed_affine), str(tmp_path / "fixed.nii.gz"))
    nib.save(nib.Nifti1Image(moving_labels.astype(np.int16), moving_affine), str(tmp_path / "labels.nii.gz"))
    nib.save(nib.Nifti1Image(moving, moving_affine), str(tmp_path / "moving.nii.gz"))
    save_itk_displacement(tmp_path / "field_lps.nii.gz", disp, fixed_affine)
    reference = sitk.ReadImage(str(tmp_path / "fixed.nii.gz"))
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(tmp_path / "field_lps.nii.gz"),
                                                               sitk.sitkVectorFloat64))
    theirs = {}
    for key, interp in (("labels", sitk.sitkNearestNeighbor), ("moving", sitk.sitkLinear)):
        out = sitk.Resample(sitk.ReadImage(str(tmp_path / f"{key}.nii.gz")), reference, transform, interp, 0.0)
        theirs[key] = np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))
    assert (ours_labels > 0).mean() > 0.2  # the warped labels are not empty
    assert (ours_labels == theirs["labels"]).mean() > 0.999
    inside = theirs["moving"] > 0  # ITK leaves 0 outside the moving grid; we fill the minimum (0 here)
    assert np.abs(ours_image - theirs["moving"])[inside].max() < 1e-3
    # the same field without the RAS -> LPS flip goes wrong: the test can fail
    wrong = world_displacement(disp, fixed_affine, lps=False)
    wrong_image = sitk.GetImageFromArray(np.transpose(wrong, (2, 1, 0, 3)).astype(np.float64), isVector=True)
    wrong_image.CopyInformation(reference)
    bad = sitk.Resample(sitk.ReadImage(str(tmp_path / "labels.nii.gz")), reference,
                        sitk.DisplacementFieldTransform(wrong_image), sitk.sitkNearestNeighbor, 0.0)
    assert (ours_labels == np.transpose(sitk.GetArrayFromImage(bad), (2, 1, 0))).mean() < 0.97


def _oblique_pair(world_angles=(4.0, -3.0, 6.0), translation=(3.0, -2.0, 4.0)):
    """Fixed = template on the fixed grid; moving = template moved by a rigid world map on
    another oblique grid. Returns the pair, the true map fixed point -> moving point, labels."""
    fixed_affine, moving_affine = _fixed_grid(), _moving_grid()
    forward, matrix = rigid_world_map(world_angles, translation, CENTRE)
    inverse = np.linalg.inv(matrix)
    fixed, fixed_labels = _brain(FIXED_SHAPE, fixed_affine)
    moving, moving_labels = _brain(MOVING_SHAPE, moving_affine,
                                   world_map=lambda q: q @ inverse[:3, :3].T + inverse[:3, 3])
    return {"fixed": (fixed, fixed_affine), "moving": (moving, moving_affine), "forward": forward,
            "fixed_labels": fixed_labels, "moving_labels": (moving_labels, moving_affine)}


def _world_error_mm(result, pair):
    """Mean distance (mm) inside the fixed brain between the mapped and the true moving points."""
    fixed_affine = pair["fixed"][1]
    idx = np.argwhere(pair["fixed_labels"] > 0)
    truth = pair["forward"](idx @ fixed_affine[:3, :3].T + fixed_affine[:3, 3])
    moved = (idx + result.disp[tuple(idx.T)]) @ fixed_affine[:3, :3].T + fixed_affine[:3, 3]
    return float(np.linalg.norm(moved - truth, axis=1).mean())


@pytest.fixture(scope="module")
def oblique():
    return _oblique_pair()


def test_rigid_registration_across_oblique_grids(oblique):
    result = register(oblique["fixed"], oblique["moving"], method="rigid", labels=(None, oblique["moving_labels"]),
                      device="cpu")
    assert result.disp.shape == FIXED_SHAPE + (3,) and result.method == "rigid"
    assert "resample" in result.stage_times
    before = _world_error_mm(type(result)(np.zeros_like(result.disp), 0.0), oblique)
    after = _world_error_mm(result, oblique)
    assert before > 4.0 and after < 1.0, (before, after)  # mm, on 3.4-3.9 mm voxels
    # labels come along: the moving labels warped onto the fixed grid overlap the fixed ones
    assert result.warped_labels.shape == FIXED_SHAPE
    assert _dice(result.warped_labels, oblique["fixed_labels"]) > 0.8
    assert result.warped_image.shape == FIXED_SHAPE


def test_hybrid_with_rigid_prealignment_across_grids(oblique):
    result = register(oblique["fixed"], oblique["moving"], labels=(None, oblique["moving_labels"]), device="cpu",
                      affine=True, affine_model="rigid", adam_iterations=10, inverse_consistency=False)
    assert result.affine is not None
    header_only = register(oblique["fixed"], oblique["moving"], method="affine", iterations=0,
                           center_of_mass=False, labels=(None, oblique["moving_labels"]), device="cpu")
    errors = _world_error_mm(header_only, oblique), _world_error_mm(result, oblique)
    assert errors[1] < 0.4 * errors[0], errors
    dice = _dice(header_only.warped_labels, oblique["fixed_labels"]), _dice(result.warped_labels,
                                                                            oblique["fixed_labels"])
    assert dice[1] > dice[0] + 0.1, dice


def test_same_grid_field_equals_the_direct_method_path():
    """register() on one grid adds nothing to the method: the same seed gives the same bytes as
    running MIND -> convex + Adam directly (the code path register_images had before)."""
    t = mni_2mm()
    fixed = t["image"][20:60, 30:70, 25:61].copy()
    rng = np.random.default_rng(1)
    from medfoundry.randomfields import warp_array

    moving = warp_array(fixed, random_displacement(fixed.shape, 3.0, 6.0, rng)).astype(np.float32)
    cfg = get_preset("brain_mr").replace(adam_iterations=8, inverse_consistency=False)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        f = torch.from_numpy(fixed)[None, None]
        m = torch.from_numpy(moving)[None, None]
        levels = [feature_levels(mind_ssc(x, cfg.mind_radius, cfg.mind_dilation), cfg) for x in (f, m)]
        direct = convex_adam(levels[0], levels[1], cfg, None, StageTimes(), shape=fixed.shape)
    direct = np.moveaxis(direct[0].numpy(), 0, -1)
    arrays = register(fixed, moving, config=cfg, device="cpu")
    np.testing.assert_array_equal(arrays.disp, direct)
    # the same oblique affine on both images keeps them on one grid: nothing is resampled
    affine = _fixed_grid()
    worlds = register((fixed, affine), (moving, affine), config=cfg, device="cpu")
    np.testing.assert_array_equal(worlds.disp, direct)
    assert "resample" not in worlds.stage_times


def test_inputs_as_paths_images_tuples_agree(tmp_path, oblique):
    fixed, fixed_affine = oblique["fixed"]
    moving, moving_affine = oblique["moving"]
    nib.save(nib.Nifti1Image(fixed, fixed_affine), str(tmp_path / "f.nii.gz"))
    nib.save(nib.Nifti1Image(moving, moving_affine), str(tmp_path / "m.nii.gz"))
    kwargs = dict(method="affine", iterations=5, device="cpu")
    from_tuples = register(oblique["fixed"], oblique["moving"], **kwargs)
    from_paths = register(tmp_path / "f.nii.gz", str(tmp_path / "m.nii.gz"), **kwargs)
    from_images = register(nib.load(str(tmp_path / "f.nii.gz")), nib.load(str(tmp_path / "m.nii.gz")), **kwargs)
    # NIfTI stores the affine in float32: the read-back grids differ from ours by ~1e-6 mm
    np.testing.assert_allclose(from_paths.disp, from_tuples.disp, atol=1e-3)
    np.testing.assert_allclose(from_images.disp, from_tuples.disp, atol=1e-3)
    np.testing.assert_allclose(from_paths.fixed_affine, fixed_affine, atol=1e-5)
    saved = from_paths.save(tmp_path / "out", world=True)
    assert set(saved) == {"field", "meta", "warped_image", "world_field"}
    assert nib.load(str(saved["field"])).shape == FIXED_SHAPE + (3,)
    np.testing.assert_allclose(nib.load(str(saved["warped_image"])).affine, fixed_affine, atol=1e-5)


def test_bad_inputs_name_what_is_wrong(tmp_path):
    image = np.zeros((8, 9, 10), np.float32)
    with pytest.raises(RegistrationError, match="moving image not found"):
        register(image, tmp_path / "nope.nii.gz")
    with pytest.raises(RegistrationError, match="for both images or for neither"):
        register(image, (image, np.eye(4)))
    with pytest.raises(RegistrationError, match="expected the fixed image's shape"):
        register(image, image[:-1])
    with pytest.raises(RegistrationError, match="must be 4x4"):
        as_volume((image, np.eye(3)), "fixed image")
    with pytest.raises(RegistrationError, match="singular"):
        as_volume((image, np.zeros((4, 4))), "fixed image")
