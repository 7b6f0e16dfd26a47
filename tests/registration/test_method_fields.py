"""Displacement-field conventions of medfoundry.registration.fields (voxels, fixed -> moving)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medfoundry.errors import RegistrationError
from medfoundry.registration.fields import (
    affine_to_field,
    box_smooth,
    compose,
    diffusion_penalty,
    field_to_numpy,
    field_to_torch,
    gaussian_smooth,
    identity_grid,
    invert,
    jacobian_determinant,
    resize_field,
    warp,
)


def test_constant_shift_moves_a_point_the_learn2reg_way():
    moving = torch.zeros(1, 1, 12, 10, 9)
    moving[0, 0, 6, 4, 5] = 1.0
    shift = torch.tensor([2.0, -1.0, 3.0]).view(1, 3, 1, 1, 1).expand(1, 3, 12, 10, 9)
    out = warp(moving, shift)
    # out(x) = moving(x + u): the bright voxel (6, 4, 5) shows up at (6, 4, 5) - u = (4, 5, 2).
    assert out[0, 0, 4, 5, 2].item() == pytest.approx(1.0)
    assert out.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_warp_agrees_with_scipy_map_coordinates(spatial_dims):
    rng = np.random.default_rng(0)
    shape = (14, 11, 9)[:spatial_dims]
    image = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0).astype(np.float32)
    disp = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * 4 for _ in shape]).astype(np.float32)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    expected = ndimage.map_coordinates(image, [g + d for g, d in zip(grid, disp)], order=1, mode="nearest")
    out = warp(torch.from_numpy(image)[None, None], torch.from_numpy(disp)[None])[0, 0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_field_layout_round_trip_and_errors():
    disp = np.random.default_rng(1).standard_normal((5, 6, 7, 3)).astype(np.float32)
    t = field_to_torch(disp)
    assert t.shape == (1, 3, 5, 6, 7)
    assert t[0, 1, 2, 3, 4].item() == pytest.approx(float(disp[2, 3, 4, 1]))
    np.testing.assert_array_equal(field_to_numpy(t), disp)
    with pytest.raises(RegistrationError, match="one component per"):
        field_to_torch(np.zeros((5, 6, 7, 2), np.float32))


def test_compose_of_shifts_adds_and_affine_field_is_exact():
    shape = (8, 9, 10)
    a = torch.tensor([1.0, 0.0, -2.0]).view(1, 3, 1, 1, 1).expand(1, 3, *shape)
    b = torch.tensor([0.5, 2.0, 1.0]).view(1, 3, 1, 1, 1).expand(1, 3, *shape)
    np.testing.assert_allclose(compose(a, b).numpy(), (a + b).numpy(), atol=1e-5)
    matrix = torch.tensor([[1.1, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    field = affine_to_field(matrix, shape)
    # voxel (3, 4, 5) -> (1.1 * 3 + 2, 4, 5 - 1): displacement (2.3, 0, -1)
    np.testing.assert_allclose(field[0, :, 3, 4, 5].numpy(), [2.3, 0.0, -1.0], atol=1e-6)
    # Jacobian determinant of that affine is 1.1 everywhere.
    np.testing.assert_allclose(jacobian_determinant(field).numpy(), 1.1, atol=1e-5)


def test_jacobian_flags_folding():
    shape = (10, 10, 10)
    x = identity_grid(shape)[0, 0]
    disp = torch.zeros(1, 3, *shape)
    disp[0, 0] = -2.0 * x  # x -> -x along axis 0: det = -1
    assert (jacobian_determinant(disp) < 0).all()
    assert jacobian_determinant(torch.zeros(1, 2, 6, 7)).allclose(torch.ones(1, 6, 7))


def test_resize_field_rescales_voxel_units():
    shape = (9, 9, 9)
    matrix = torch.tensor([[1.0, 0, 0, 4.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    small = affine_to_field(matrix, shape)
    big = resize_field(small, (17, 17, 17))
    # a 4-voxel shift on the 9-grid is an 8-voxel shift on the 17-grid (same corners)
    np.testing.assert_allclose(big[0, 0].numpy(), 8.0, atol=1e-5)


def test_smoothing_preserves_constants_and_reduces_roughness():
    const = torch.full((1, 3, 7, 8, 9), 2.5)
    assert gaussian_smooth(const, 1.5).allclose(const)
    assert box_smooth(const, 1, 3).allclose(const)
    noise = torch.randn(1, 3, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    assert diffusion_penalty(box_smooth(noise, 1, 2)) < 0.2 * diffusion_penalty(noise)
    # box filter = mean of the 3 neighbours (replicate border) along each axis
    line = torch.tensor([0.0, 3.0, 6.0, 0.0]).view(1, 1, 4)
    np.testing.assert_allclose(box_smooth(line, 1).numpy()[0, 0], [1.0, 3.0, 3.0, 2.0], atol=1e-6)


def test_invert_recovers_a_smooth_inverse():
    rng = np.random.default_rng(2)
    shape = (16, 16, 16)
    disp = torch.from_numpy(np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) for _ in shape])
                            .astype(np.float32))[None]
    disp = disp / disp.abs().max() * 1.5
    inverse = invert(disp, iterations=30)
    roundtrip = compose(disp, inverse)
    inner = (slice(None), slice(None)) + (slice(3, -3),) * 3
    assert roundtrip[inner].abs().max().item() < 0.05
