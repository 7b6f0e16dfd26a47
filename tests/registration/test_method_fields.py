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
    sample_points,
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


def _box_smooth_by_replicate_padding(tensor: torch.Tensor, radius: int, passes: int) -> torch.Tensor:
    """The box filter written plainly (replicate pad, mean over the window), differentiated by autograd."""
    out = tensor
    for _ in range(passes):
        for dim in range(2, tensor.ndim):
            size = out.shape[dim]
            index = torch.arange(size).view(-1, 1) + torch.arange(-radius, radius + 1).view(1, -1)
            taps = out.index_select(dim, index.clamp(0, size - 1).reshape(-1))
            out = taps.unflatten(dim, (size, 2 * radius + 1)).mean(dim + 1)
    return out


@pytest.mark.parametrize("shape,radius,passes", [((1, 3, 9, 7, 6), 1, 2), ((2, 2, 7, 5), 2, 3),
                                                 ((1, 1, 3, 2, 4), 3, 1)])
def test_box_smooth_gradient_equals_autograd_of_the_plain_filter(shape, radius, passes):
    # radius 3 on axes of 2-4 voxels: windows that replicate a border voxel several times
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = torch.randn(*shape, dtype=torch.float64, generator=generator)
    fast = box_smooth(x, radius, passes)
    plain = _box_smooth_by_replicate_padding(x, radius, passes)
    np.testing.assert_allclose(fast.detach().numpy(), plain.detach().numpy(), atol=1e-12)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), x)
    (grad_plain,) = torch.autograd.grad((plain * weights).sum(), x)
    np.testing.assert_allclose(grad_fast.numpy(), grad_plain.numpy(), atol=1e-12)
    assert grad_fast.abs().max() > 0.1


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_sample_points_split_over_threads_equals_one_grid_sample(layout):
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 21, 19, 17, generator=generator).contiguous(memory_format=layout)
    count = 3 * 4096 + 7  # more than one chunk per thread, and not a multiple of the thread count
    grid = (torch.rand(count, 3, generator=generator) * 2.2 - 1.1).requires_grad_(True)
    target = torch.rand(3, count, generator=generator)
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        split = sample_points(image, grid)
        (grad_split,) = torch.autograd.grad((split - target).pow(2).sum(), grid)
    finally:
        torch.set_num_threads(previous)
    plain = F.grid_sample(image, grid.reshape(1, count, 1, 1, 3), mode="bilinear", padding_mode="border",
                          align_corners=True).reshape(3, count)
    (grad_plain,) = torch.autograd.grad((plain - target).pow(2).sum(), grid)
    assert split.shape == (3, count)
    np.testing.assert_allclose(split.detach().numpy(), plain.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(grad_split.numpy(), grad_plain.numpy(), atol=1e-5)
