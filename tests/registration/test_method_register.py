"""The hybrid convex + Adam registration on small synthetic 3D pairs with a known deformation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medfoundry.errors import ConfigError, RegistrationError
from medfoundry.registration.affine import affine_align, theta_to_voxel_matrix
from medfoundry.registration.api import register_images, warp_volume
from medfoundry.registration.fields import field_to_torch, jacobian_determinant
from medfoundry.registration.presets import RegistrationConfig, get_preset, list_presets, parse_overrides
from medfoundry.randomfields import random_bias_field, random_displacement, random_gamma, warp_array


def _mni_2mm_crop(size: int = 48) -> dict[str, np.ndarray]:
    """Central ``size``^3 crop of the MNI152 template at 2 mm (nilearn's bundled 1 mm files, every
    other voxel), with GM (1) / WM (2) labels; read without importing nilearn (slow to import)."""
    import importlib.util
    from pathlib import Path

    import nibabel as nib

    root = Path(importlib.util.find_spec("nilearn").submodule_search_locations[0]) / "datasets" / "data"
    out = {}
    for key in ("t1", "gm", "wm"):
        data = np.asarray(nib.load(root / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz").dataobj)
        data = data[::2, ::2, ::2].astype(np.float32)
        centre = [s // 2 for s in data.shape]
        out[key] = data[tuple(slice(c - size // 2, c + size // 2) for c in centre)]
    labels = np.where(out["gm"] + out["wm"] > 0.3 * 255, np.where(out["gm"] >= out["wm"], 1, 2), 0)
    return {"image": out["t1"] / out["t1"].max(), "labels": labels.astype(np.uint8)}


@pytest.fixture(scope="module")
def pair():
    """48^3 pair at 2 mm: fixed = template warped by a known smooth field (up to 4 voxels), both
    with their own bias field, contrast change and noise; the true field fixed -> moving is u."""
    base = _mni_2mm_crop()
    rng = np.random.default_rng(3)
    shape = base["image"].shape
    u = random_displacement(shape, 4.0, 8.0, rng)
    fixed_labels = warp_array(base["labels"], u, order=0)
    fixed = warp_array(base["image"], u) * random_bias_field(shape, 0.2, rng)
    moving = random_gamma(base["image"], rng) * random_bias_field(shape, 0.2, rng)
    fixed = fixed + 0.01 * rng.standard_normal(shape)
    moving = moving + 0.01 * rng.standard_normal(shape)
    return {"fixed": fixed.astype(np.float32), "moving": moving.astype(np.float32),
            "fixed_labels": fixed_labels, "moving_labels": base["labels"],
            "true_disp": np.moveaxis(u, 0, -1), "mask": fixed_labels > 0, "moving_mask": base["labels"] > 0}


def _field_error(disp, p):
    return float(np.linalg.norm(disp - p["true_disp"], axis=-1)[p["mask"]].mean())


def _dice(disp, p):
    # Interior only: the crop cuts through the brain, and border voxels that map outside it get
    # label 0 (as in ITK and the Learn2Reg evaluation), which is no fault of the field.
    inner = (slice(4, -4),) * 3
    warped = warp_volume(p["moving_labels"], disp, order=0)[inner]
    scores = []
    for label in (1, 2):
        a, b = warped == label, p["fixed_labels"][inner] == label
        scores.append(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    return float(np.mean(scores))


def test_register_recovers_known_deformation(pair):
    result = register_images(pair["fixed"], pair["moving"], device="cpu", adam_iterations=40)
    disp = result.disp
    assert disp.shape == pair["fixed"].shape + (3,) and disp.dtype == np.float32
    before, after = _field_error(np.zeros_like(disp), pair), _field_error(disp, pair)
    assert after < 0.5 * before, (before, after)
    dice0, dice1 = _dice(np.zeros_like(disp), pair), _dice(disp, pair)
    assert 1 - dice1 < 0.5 * (1 - dice0), (dice0, dice1)  # the overlap error at least halves
    jac = jacobian_determinant(field_to_torch(disp))
    assert float((jac <= 0).float().mean()) < 1e-3
    assert result.runtime_s > 0 and set(result.stage_times) >= {"features", "coarse", "adam"}
    assert result.config["adam_iterations"] == 40


def test_register_is_deterministic(pair):
    a = register_images(pair["fixed"], pair["moving"], device="cpu", adam_iterations=5, inverse_consistency=False)
    b = register_images(pair["fixed"], pair["moving"], device="cpu", adam_iterations=5, inverse_consistency=False)
    np.testing.assert_array_equal(a.disp, b.disp)


def test_label_driven_mode(pair):
    with pytest.raises(RegistrationError, match="fixed_labels and moving_labels"):
        register_images(pair["fixed"], pair["moving"], device="cpu", features="labels")
    result = register_images(pair["fixed"], pair["moving"], device="cpu", features="labels",
                             fixed_labels=pair["fixed_labels"], moving_labels=pair["moving_labels"],
                             adam_iterations=30)
    assert _dice(result.disp, pair) > _dice(np.zeros_like(result.disp), pair) + 0.05


def test_masks_restrict_the_features(pair):
    result = register_images(pair["fixed"], pair["moving"], pair["mask"], pair["moving_mask"], device="cpu",
                             adam_iterations=20)
    assert _field_error(result.disp, pair) < 0.6 * _field_error(np.zeros_like(result.disp), pair)


def test_shapes_must_match(pair):
    with pytest.raises(RegistrationError, match="fixed image's shape"):
        register_images(pair["fixed"], pair["moving"][:-1], device="cpu")


def test_affine_prealignment_recovers_a_known_affine(pair):
    fixed = torch.from_numpy(pair["moving"])[None, None]
    # moving = fixed seen through a known affine (rotation ~4 degrees, scaling, shift)
    angle = np.deg2rad(4.0)
    theta = torch.tensor([[np.cos(angle), -np.sin(angle), 0.0, 0.08],
                          [np.sin(angle), np.cos(angle), 0.0, -0.03],
                          [0.0, 0.0, 1.05, 0.06]], dtype=torch.float32)
    grid = torch.nn.functional.affine_grid(theta[None], list(fixed.shape), align_corners=True)
    moving = torch.nn.functional.grid_sample(fixed, grid, align_corners=True, padding_mode="border")
    truth = theta_to_voxel_matrix(theta, tuple(fixed.shape[2:]))  # moving voxel -> template voxel
    # Register the warped image (as fixed) to the template (as moving): the estimate maps the
    # fixed voxels to template voxels, i.e. it should equal ``truth``.
    estimate = affine_align(moving, fixed, iterations=60)
    points = torch.tensor([[24.0, 24.0, 24.0, 1.0], [12.0, 12.0, 12.0, 1.0], [36.0, 30.0, 14.0, 1.0]]).t()
    error = torch.linalg.norm((estimate - truth) @ points, dim=0)
    assert error.max() < 1.0, error
    # and the identity start is really off: the known affine moves these points by > 1.5 voxels
    eye = torch.eye(3, 4)
    assert torch.linalg.norm((eye - truth) @ points, dim=0).min() > 1.5


def test_affine_path_runs_inside_register(pair):
    result = register_images(pair["fixed"], pair["moving"], device="cpu", affine=True, affine_iterations=10,
                             adam_iterations=10)
    assert result.affine is not None and result.affine.shape == (3, 4)
    assert _field_error(result.disp, pair) < 0.7 * _field_error(np.zeros_like(result.disp), pair)


def test_presets_and_overrides(tmp_path):
    assert set(list_presets()) == {"brain_mr", "brain_mr_fast", "abdomen_ct", "lung_ct", "multiseq_rigid"}
    cfg = get_preset("lung_ct").replace(**parse_overrides(["regularisation=2.5", "inverse_consistency=false",
                                                           "coupling_weights=0.1,0.5"]))
    assert cfg.regularisation == 2.5 and cfg.inverse_consistency is False
    assert cfg.coupling_weights == (0.1, 0.5)
    assert get_preset("lung_ct").regularisation != 2.5  # presets are not mutated
    with pytest.raises(ConfigError, match="did you mean regularisation"):
        get_preset("brain_mr").replace(regularisaton=1.0)
    with pytest.raises(ConfigError, match="must divide"):
        RegistrationConfig(grid_spacing=5, search_step=2)
    with pytest.raises(ConfigError, match="cannot read"):
        get_preset("brain_mr").replace(adam_iterations="many")
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({"preset": "abdomen_ct", "adam_iterations": 7}))
    loaded = RegistrationConfig.from_yaml(path)
    assert loaded.adam_iterations == 7 and loaded.grid_spacing == get_preset("abdomen_ct").grid_spacing


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(pair):
    cpu = register_images(pair["fixed"], pair["moving"], device="cpu", adam_iterations=0)
    gpu = register_images(pair["fixed"], pair["moving"], device="cuda", adam_iterations=0)
    assert gpu.device.startswith("cuda")
    assert np.abs(cpu.disp - gpu.disp).mean() < 0.05
    full = register_images(pair["fixed"], pair["moving"], device="cuda", adam_iterations=40)
    assert _field_error(full.disp, pair) < 0.5 * _field_error(np.zeros_like(full.disp), pair)


@pytest.mark.parametrize("preset", ["abdomen_ct", "lung_ct"])
def test_other_presets_run_and_improve(pair, preset):
    result = register_images(pair["fixed"], pair["moving"], preset=preset, device="cpu", adam_iterations=10,
                             affine_iterations=10)
    assert result.config["grid_spacing"] == get_preset(preset).grid_spacing
    assert _field_error(result.disp, pair) < 0.7 * _field_error(np.zeros_like(result.disp), pair)
