"""Discrete search and coupled convex optimisation on hand-made shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medfoundry.registration.convex_adam import coupled_convex, discrete_cost, resample_grid_field, symmetrise
from medfoundry.registration.features import mind_ssc
from medfoundry.registration.fields import compose


def _shifted_features(shift, shape=(48, 48, 48)):
    rng = np.random.default_rng(0)
    big = ndimage.gaussian_filter(rng.standard_normal(tuple(s + 20 for s in shape)), 1.5).astype(np.float32)
    fixed = big[10:10 + shape[0], 10:10 + shape[1], 10:10 + shape[2]]
    # moving(y) = fixed(y - shift), so the fixed voxel x is found at x + shift in the moving image
    moving = big[tuple(slice(10 - s, 10 - s + n) for s, n in zip(shift, shape))]
    to_t = lambda a: mind_ssc(torch.from_numpy(np.ascontiguousarray(a))[None, None])  # noqa: E731
    return to_t(fixed), to_t(moving)


def test_discrete_argmin_finds_a_pure_shift():
    shift = (3, 0, -6)
    fixed, moving = _shifted_features(shift)
    cost, candidates = discrete_cost(fixed, moving, grid_spacing=6, step=3, radius=3)
    assert cost.shape == (7 ** 3, 8, 8, 8) and candidates.shape == (343, 3)
    best = candidates[cost.reshape(343, -1).argmin(0)].reshape(8, 8, 8, 3)
    # blocks whose match lies within 3 voxels of the moving crop's border see padded descriptors
    inner = best[2:-2, 2:-2, 2:-2].reshape(-1, 3)
    hits = (inner == torch.tensor(shift, dtype=torch.float32)).all(1).float().mean()
    assert hits > 0.95
    field = coupled_convex(cost, candidates, (0.1, 0.5, 1.0), sigma=1.0, step=3)
    assert field.shape == (1, 3, 8, 8, 8)
    np.testing.assert_allclose(field[0, :, 2:-2, 2:-2, 2:-2].mean((1, 2, 3)).numpy(), shift, atol=0.3)


def test_symmetrise_makes_fields_inverse_consistent():
    shape = (10, 10, 10)
    rng = np.random.default_rng(1)
    fwd = torch.from_numpy(np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) for _ in range(3)])
                           .astype(np.float32))[None] * 3
    bwd = torch.zeros_like(fwd)  # maximally inconsistent start
    before = compose(fwd, bwd).abs().mean()
    f2, b2 = symmetrise(fwd, bwd, grid_spacing=1.0, iterations=20)
    assert compose(f2, b2).abs().mean() < 0.2 * before


def test_resample_grid_field_keeps_block_centres():
    # a field equal to the voxel coordinate of each block centre must stay the coordinate
    centres = torch.arange(5, dtype=torch.float32) * 4 + 1.5  # spacing 4: centres at 4 i + 1.5
    field = torch.stack(torch.meshgrid(centres, centres, indexing="ij"))[None]
    dense = resample_grid_field(field, 4, 1, (20, 20))
    expected = torch.arange(20, dtype=torch.float32)
    np.testing.assert_allclose(dense[0, 0, 2:-2, 5].numpy(), expected[2:-2].numpy(), atol=1e-5)
    np.testing.assert_allclose(dense[0, 1, 7, 2:-2].numpy(), expected[2:-2].numpy(), atol=1e-5)


def _instance_reference(fixed, moving, init, config):
    """The fine stage written plainly: grid_sample on the whole grid, channel-summed SSD mean."""
    from medfoundry.registration.fields import box_smooth, diffusion_penalty, warp

    factor = float(config.adam_factor)
    param = (init / factor).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=config.adam_lr / factor)
    for _ in range(config.adam_iterations):
        optimiser.zero_grad()
        disp = box_smooth(param, config.adam_smooth_radius, config.adam_smooth_passes)
        similarity = (warp(moving, disp) - fixed).pow(2).sum(1).mean()
        loss = similarity + config.regularisation * diffusion_penalty(disp * factor)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return box_smooth(param, config.adam_smooth_radius, config.adam_smooth_passes) * factor


def test_instance_optimise_equals_the_plain_reference():
    from medfoundry.registration.configs import HybridConfig
    from medfoundry.registration.convex_adam import instance_optimise

    generator = torch.Generator().manual_seed(0)
    fixed = torch.rand(1, 4, 12, 10, 9, generator=generator)
    moving = torch.rand(1, 4, 12, 10, 9, generator=generator)
    init = torch.randn(1, 3, 12, 10, 9, generator=generator)
    config = HybridConfig(adam_iterations=5, adam_factor=2)
    fast = instance_optimise(fixed, moving, init, config)
    reference = _instance_reference(fixed, moving, init, config)
    assert (fast - init).abs().max() > 0.1  # the optimiser moved the field
    assert torch.allclose(fast, reference, atol=1e-4)


def test_simple_adam_follows_torch_optim_adam():
    from medfoundry.registration.convex_adam import SimpleAdam

    generator = torch.Generator().manual_seed(4)
    start = torch.randn(2, 3, 5, generator=generator)
    grads = [torch.randn(2, 3, 5, generator=generator) * (k + 1) for k in range(6)]
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    simple = SimpleAdam(ours, lr=0.3)
    reference = torch.optim.Adam([theirs], lr=0.3)
    for grad in grads:
        simple.step(grad)
        theirs.grad = grad.clone()
        reference.step()
    assert (ours - start).abs().max() > 0.5
    assert torch.allclose(ours, theirs.detach(), atol=1e-6)


def _discrete_cost_reference(fixed, moving, grid_spacing, step, radius):
    """One candidate at a time, by slicing: the plain form of the dense SSD cost."""
    import itertools

    import torch.nn.functional as F

    from medfoundry.registration.features import pooled_features

    spatial = fixed.ndim - 2
    fixed_p, moving_p = pooled_features(fixed, step), pooled_features(moving, step)
    stride = grid_spacing // step
    fixed_grid = pooled_features(fixed_p, stride)[0]
    grid = fixed_grid.shape[1:]
    pad_hi = [max(0, g * stride - s) for g, s in zip(grid, moving_p.shape[2:])]
    pads = [v for p in reversed(pad_hi) for v in (0, p)]
    moving_p = F.pad(moving_p, pads, mode="replicate")
    pool = (F.avg_pool2d, F.avg_pool3d)[spatial - 2]
    blocks = pool(moving_p, stride, stride=1) if stride > 1 else moving_p
    blocks = F.pad(blocks, [radius] * (2 * spatial), mode="replicate")[0]
    costs = []
    for offset in itertools.product(range(-radius, radius + 1), repeat=spatial):
        view = (slice(None),) + tuple(slice(radius + o, radius + o + stride * (n - 1) + 1, stride)
                                      for o, n in zip(offset, grid))
        costs.append((fixed_grid - blocks[view]).pow(2).mean(0))
    return torch.stack(costs)



@pytest.mark.parametrize("shape,grid_spacing,step,radius", [((23, 19, 17), 6, 3, 2), ((20, 18, 16), 4, 2, 3),
                                                            ((26, 21), 6, 3, 2), ((15, 13, 11), 3, 3, 1)])
def test_discrete_cost_equals_the_one_candidate_at_a_time_reference(shape, grid_spacing, step, radius):
    generator = torch.Generator().manual_seed(5)
    fixed = torch.rand(1, 3, *shape, generator=generator)
    moving = torch.rand(1, 3, *shape, generator=generator)
    cost, candidates = discrete_cost(fixed, moving, grid_spacing, step, radius)
    reference = _discrete_cost_reference(fixed, moving, grid_spacing, step, radius)
    assert cost.shape == reference.shape
    assert torch.allclose(cost, reference, atol=1e-6)
    assert candidates.shape == ((2 * radius + 1) ** len(shape), len(shape))
