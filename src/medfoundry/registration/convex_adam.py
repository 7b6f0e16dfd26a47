"""Hybrid deformable registration: discrete search + coupled convex optimisation, then Adam.

Stages (all on descriptor volumes ``(1, C, H, W, D)``, displacements in fixed voxels):

1. **Coarse, discrete.** Features are averaged over the blocks of a control grid with spacing
   ``g`` (fixed) and over blocks sampled every ``q`` voxels (moving). For each control point
   and each candidate displacement ``q * k``, ``k`` in ``{-r..r}^3``, the cost is the mean
   squared descriptor difference, a ``(2r+1)^3 x grid`` volume.
2. **Coupled convex optimisation** (Heinrich et al., 2014/2019): alternately take the
   per-point argmin of ``cost + lambda * |d - smooth(u)|^2`` and smooth the field, with
   increasing ``lambda``; both directions, then symmetrised for inverse consistency.
3. **Fine, continuous.** Adam optimises a displacement on a grid of spacing ``adam_factor``,
   smoothed by repeated box filters (B-spline-like), to minimise the descriptor MSE after
   warping plus a diffusion penalty.

Grid geometry: a grid of spacing ``a`` (block averages) has its point ``i`` at the voxel
coordinate ``a * i + (a - 1) / 2``; fields move between grids by linear interpolation at these
positions (:func:`resample_grid_field`).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .features import pooled_features
from .fields import _sample, box_smooth, diffusion_penalty, gaussian_smooth, identity_grid, sample_points, warp
from .presets import RegistrationConfig

__all__ = [
    "StageTimes",
    "resample_grid_field",
    "discrete_cost",
    "feature_levels",
    "coupled_convex",
    "symmetrise",
    "SimpleAdam",
    "instance_optimise",
    "convex_adam",
]


@dataclass
class StageTimes:
    """Wall time per stage, seconds."""

    times: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, start: float, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - start
        return now


def resample_grid_field(disp: torch.Tensor, from_spacing: float, to_spacing: float,
                        out_shape: tuple[int, ...]) -> torch.Tensor:
    """Linearly resample a field between block grids of different spacing (values unchanged).

    Args:
        disp: ``(N, S, *grid)`` on the grid of spacing ``from_spacing`` voxels.
        from_spacing, to_spacing: grid spacings, voxels.
        out_shape: size of the target grid.

    Returns:
        ``(N, S, *out_shape)``; the values (voxels) are not rescaled.
    """
    spatial = len(out_shape)
    if spatial != disp.ndim - 2:
        raise ValueError("resample_grid_field(): out_shape does not match the field's spatial axes")
    a, b = float(from_spacing), float(to_spacing)
    # Target point j sits at b*j + (b-1)/2, so its source index is (j + 1/2) * b/a - 1/2: exactly
    # the half-pixel mapping of F.interpolate with scale_factor a/b (clamped at the borders like
    # grid_sample's "border"), which costs a fraction of a grid_sample over every target voxel.
    scale = a / b
    reach = [math.floor(s * scale) for s in disp.shape[2:]]
    if all(r >= o for r, o in zip(reach, out_shape)):
        mode = ("linear", "bilinear", "trilinear")[spatial - 1]
        out = F.interpolate(disp, scale_factor=scale, mode=mode, align_corners=False, recompute_scale_factor=False)
        return out[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_shape)].contiguous()
    coords = identity_grid(tuple(out_shape), disp.device, disp.dtype)
    coords = (b * coords + (b - 1) / 2 - (a - 1) / 2) / a
    return _sample(disp, coords, "bilinear", "border")


def discrete_cost(fixed: torch.Tensor, moving: torch.Tensor, grid_spacing: int, step: int,
                  radius: int, pooled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense SSD cost of descriptor blocks over a cube of candidate displacements.

    Args:
        fixed, moving: ``(1, C, *spatial)`` descriptors on the same voxel grid, or, with
            ``pooled``, those descriptors already averaged over ``step``-blocks
            (:func:`~medfoundry.registration.features.pooled_features`).
        grid_spacing: control-grid spacing ``g``, voxels.
        step: candidate quantisation ``q`` (divides ``g``), voxels.
        radius: candidates per side ``r``.
        pooled: the inputs are the ``step``-pooled descriptors.

    Returns:
        ``cost`` ``(K, *grid)`` (mean squared difference over channels, float32) and the
        candidate displacements ``(K, S)`` in voxels, ``K = (2r+1)^S``.
    """
    spatial = fixed.ndim - 2
    if not pooled:
        fixed = pooled_features(fixed, step)
        moving = pooled_features(moving, step)
    # On the step-pooled grid a control block is (g/q)^S cells; a moving block of the same size
    # starting at every cell gives the candidates: cell m*s + k is the block displaced by q*k.
    stride = grid_spacing // step
    fixed_grid = pooled_features(fixed, stride)[0]  # (C, *grid)
    grid = tuple(fixed_grid.shape[1:])
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
    pad_hi = [max(0, g_ * stride - s_) for g_, s_ in zip(grid, moving.shape[2:])]
    pads = []
    for p in reversed(pad_hi):
        pads += [0, p]
    moving_padded = F.pad(moving, pads, mode="replicate") if any(pad_hi) else moving
    moving_blocks = pool(moving_padded, stride, stride=1)[0] if stride > 1 else moving_padded[0]
    moving_blocks = F.pad(moving_blocks.unsqueeze(0), [radius] * (2 * spatial), mode="replicate")[0]
    offsets = torch.stack(torch.meshgrid(*[torch.arange(-radius, radius + 1)] * spatial, indexing="ij"), -1)
    offsets = offsets.reshape(-1, spatial)
    side = 2 * radius + 1
    cost = torch.empty((offsets.shape[0],) + grid, device=fixed.device, dtype=torch.float32)
    # All candidates along the last axis at once, as a strided view (side, then the grid's last
    # axis): a Python loop over (2r+1)^(S-1) instead of (2r+1)^S candidates.
    blocks_strides = moving_blocks.stride()
    view_size = (fixed_grid.shape[0],) + grid[:-1] + (side, grid[-1])
    view_strides = ((blocks_strides[0],) + tuple(blocks_strides[1 + a] * stride for a in range(spatial - 1))
                    + (blocks_strides[spatial], blocks_strides[spatial] * stride))
    fixed_view = fixed_grid.unsqueeze(-2)
    outer = itertools.product(range(side), repeat=spatial - 1)
    for index, start in enumerate(outer):
        corner = moving_blocks[(slice(None),) + tuple(slice(o, None) for o in start)]
        candidates = corner.as_strided(view_size, view_strides, corner.storage_offset())
        block = (fixed_view - candidates).pow_(2).mean(0)  # (*grid[:-1], side, grid[-1])
        cost[index * side:(index + 1) * side] = block.movedim(-2, 0)
    return cost, offsets.to(device=fixed.device, dtype=torch.float32) * step


def feature_levels(features: torch.Tensor, config: RegistrationConfig) -> dict[int, torch.Tensor]:
    """The pooled descriptors the method needs: ``{search_step: ..., adam_factor: ...}``.

    Computing these right after each image's descriptors lets the caller drop the
    full-resolution descriptors early (peak memory: one full-resolution descriptor volume).
    """
    levels = {config.search_step: pooled_features(features, config.search_step)}
    levels.setdefault(config.adam_factor, pooled_features(features, config.adam_factor))
    if config.adam_coarse_iterations > 0 and config.adam_iterations > 0:
        levels.setdefault(2 * config.adam_factor, pooled_features(features, 2 * config.adam_factor))
    return levels


def coupled_convex(cost: torch.Tensor, candidates: torch.Tensor, weights: tuple[float, ...],
                   sigma: float, step: int, chunk: int = 8192) -> torch.Tensor:
    """Coupled convex optimisation over a discrete cost volume.

    Args:
        cost: ``(K, *grid)`` from :func:`discrete_cost`.
        candidates: ``(K, S)`` displacements, voxels.
        weights: increasing coupling weights (cost normalised to mean 1, distances in steps).
        sigma: smoothing of the field between iterations, grid points.
        step: candidate quantisation, voxels (sets the unit of the coupling distance).
        chunk: grid points per argmin block (memory bound, not a parameter of the method).

    Returns:
        Smooth displacement ``(1, S, *grid)`` in voxels.
    """
    spatial = candidates.shape[1]
    grid = cost.shape[1:]
    flat = cost.reshape(cost.shape[0], -1)
    flat = flat.div_(flat.mean().clamp_min(1e-12))  # in place: the caller drops the cost
    steps = candidates / step  # (K, S)
    # |d - t|^2 = |d|^2 - 2 d.t + |t|^2 (the last term does not change the argmin), written as
    # one matrix product [d, |d|^2] @ [-2 w t; w] so each iteration is a single addmm + argmin.
    augmented = torch.cat([steps, steps.pow(2).sum(1, keepdim=True)], dim=1)  # (K, S+1)
    disp = steps[flat.argmin(0)].t().reshape(1, spatial, *grid)  # in steps
    smooth = gaussian_smooth(disp, sigma)
    ones = torch.ones(1, flat.shape[1], device=flat.device, dtype=flat.dtype)
    index = torch.empty(flat.shape[1], device=flat.device, dtype=torch.long)
    for weight in weights:
        target = torch.cat([-2.0 * weight * smooth.reshape(spatial, -1), weight * ones], dim=0)
        # Chunks over grid points bound the temporary to a slice of the cost volume.
        for begin in range(0, flat.shape[1], chunk):
            end = min(begin + chunk, flat.shape[1])
            index[begin:end] = torch.addmm(flat[:, begin:end], augmented, target[:, begin:end]).argmin(0)
        disp = steps[index].t().reshape(1, spatial, *grid)
        smooth = gaussian_smooth(disp, sigma)
    return smooth * step


def symmetrise(forward: torch.Tensor, backward: torch.Tensor, grid_spacing: float,
               iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a forward/backward pair of grid fields (voxels) closer to inverses of each other.

    Each iteration sets ``u <- (u - v o (id + u)) / 2`` and ``v <- (v - u o (id + v)) / 2``.
    """
    fwd = forward / grid_spacing
    bwd = backward / grid_spacing
    for _ in range(iterations):
        fwd_new = 0.5 * (fwd - warp(bwd, fwd))
        bwd_new = 0.5 * (bwd - warp(fwd, bwd))
        fwd, bwd = fwd_new, bwd_new
    return fwd * grid_spacing, bwd * grid_spacing


class SimpleAdam:
    """Adam on one tensor: the update of ``torch.optim.Adam`` with its defaults (no weight decay).

    Written out because building a ``torch.optim`` optimiser imports ``torch._dynamo`` on first
    use: about 1 s of CPU and several seconds of wall time on a busy machine, a large share of
    one ``medfoundry register`` process.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, float(lr), betas, float(eps)
        self.first = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.second = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        self.first.lerp_(grad, 1 - beta1)
        self.second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.second.sqrt() / math.sqrt(1 - beta2 ** self.steps)).add_(self.eps)
        self.param.addcdiv_(self.first, denom, value=-self.lr / (1 - beta1 ** self.steps))


def instance_optimise(fixed: torch.Tensor, moving: torch.Tensor, init: torch.Tensor,
                      config: RegistrationConfig, fixed_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Adam instance optimisation of a smoothed displacement on the fine grid.

    The similarity is the descriptor SSD (summed over channels, averaged over voxels). With
    ``config.adam_sample_fraction < 1`` each step evaluates it on a fresh random subset of the
    fine-grid voxels (seeded, so runs repeat): an unbiased, cheaper gradient, as in the
    stochastic samplers of elastix. The diffusion penalty always covers the whole field.

    Args:
        fixed, moving: ``(1, C, *grid)`` descriptors pooled by ``config.adam_factor``.
        init: ``(1, S, *grid)`` initial displacement, full-resolution voxels.
        config: uses ``adam_*`` and ``regularisation``.
        fixed_weight: optional ``(1, 1, *grid)`` weight of the similarity term (fixed mask).

    Returns:
        The smoothed displacement ``(1, S, *grid)`` in full-resolution voxels.
    """
    factor = float(config.adam_factor)
    spatial = init.ndim - 2
    grid_shape = tuple(fixed.shape[2:])
    channels = fixed.shape[1]
    # Parameters live in fine-grid units so the learning rate means the same at any factor.
    param = (init / factor).detach().clone().requires_grad_(True)
    optimiser = SimpleAdam(param, lr=config.adam_lr / factor)
    # Channels-last puts the channels of each voxel side by side: grid_sample reads all of them
    # at every corner it visits, which halves its CPU time (forward and backward, same values).
    layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(moving.ndim, torch.contiguous_format)
    moving = moving.detach().contiguous(memory_format=layout)
    fixed_flat = fixed.detach().reshape(channels, -1)
    weight_flat = None if fixed_weight is None else fixed_weight.detach().reshape(-1)
    base = identity_grid(grid_shape, fixed.device, fixed.dtype).reshape(spatial, -1)
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in moving.shape[2:]], device=fixed.device,
                         dtype=fixed.dtype).view(spatial, 1)
    # grid_sample wants (points, S) normalised coordinates, last axis first: the identity part is
    # converted once, so each step adds the scaled displacement in one fused op.
    base_normalised = (base * scale - 1.0).flip(0).t().contiguous()
    scale_reversed = scale.flip(0).t()
    points = base.shape[1]
    count = points if config.adam_sample_fraction >= 1 else max(1, int(points * config.adam_sample_fraction))
    generator = torch.Generator(device=fixed.device)
    generator.manual_seed(int(config.seed))

    def smoothed(p: torch.Tensor) -> torch.Tensor:
        return box_smooth(p, config.adam_smooth_radius, config.adam_smooth_passes)

    for _ in range(config.adam_iterations):
        disp = smoothed(param)
        flat = disp.reshape(spatial, -1)
        if count < points:
            index = torch.randint(0, points, (count,), device=fixed.device, generator=generator)
            grid = torch.addcmul(base_normalised[index], flat[:, index].flip(0).t(), scale_reversed)
            target = fixed_flat[:, index]
            weight = None if weight_flat is None else weight_flat[index]
        else:
            grid = torch.addcmul(base_normalised, flat.flip(0).t(), scale_reversed)
            target = fixed_flat
            weight = weight_flat
        warped = sample_points(moving, grid)
        if weight is not None:
            residual = (warped - target).pow(2).sum(0)
            similarity = (residual * weight).sum() / weight.sum().clamp_min(1.0)
        else:
            # One fused kernel forward and backward; equals the channel sum averaged over points.
            similarity = F.mse_loss(warped, target, reduction="sum") / count
        # The diffusion term is measured in full-resolution voxels per fine-grid step.
        loss = similarity + config.regularisation * diffusion_penalty(disp * factor)
        optimiser.step(torch.autograd.grad(loss, param)[0])
    with torch.no_grad():
        return smoothed(param) * factor


def project_channels(fixed: torch.Tensor, moving: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Project both descriptor volumes onto their ``channels`` leading principal components.

    One shared projection (from the pooled covariance of both images) keeps squared distances
    between descriptors close to the full ones while the warp in the fine stage, whose cost
    grows with the channel count, handles fewer channels.
    """
    c = fixed.shape[1]
    stacked = torch.cat([fixed.reshape(c, -1), moving.reshape(c, -1)], dim=1)
    mean = stacked.mean(1, keepdim=True)
    centred = stacked - mean
    cov = centred @ centred.t() / centred.shape[1]
    _, vectors = torch.linalg.eigh(cov.double())
    basis = vectors[:, -channels:].flip(1).t().to(fixed.dtype)  # (k, C), largest first
    # Eigenvector signs are arbitrary; fixing them keeps the result identical across devices.
    largest = basis.abs().argmax(1, keepdim=True)
    basis = basis * torch.sign(basis.gather(1, largest))

    def apply(x: torch.Tensor) -> torch.Tensor:
        flat = basis @ (x.reshape(c, -1) - mean)
        return flat.reshape(1, channels, *x.shape[2:])

    return apply(fixed), apply(moving)


def _adam_level(fixed_levels: dict[int, torch.Tensor], moving_levels: dict[int, torch.Tensor], factor: int,
                start: torch.Tensor, start_spacing: int, config: RegistrationConfig,
                fixed_mask: torch.Tensor | None) -> torch.Tensor:
    """Adam at ``factor`` from a field on the grid of spacing ``start_spacing`` (voxels)."""
    fixed_fine, moving_fine = fixed_levels[factor], moving_levels[factor]
    if 0 < config.adam_channels < fixed_fine.shape[1]:
        fixed_fine, moving_fine = project_channels(fixed_fine, moving_fine, config.adam_channels)
    weight = None if fixed_mask is None else pooled_features(fixed_mask.float(), factor)
    with torch.no_grad():
        init = resample_grid_field(start, start_spacing, factor, tuple(fixed_fine.shape[2:]))
    with torch.enable_grad():
        return instance_optimise(fixed_fine, moving_fine, init, config, weight)


def _upsample_to_image(disp: torch.Tensor, spacing: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Grid field (voxels) of spacing ``spacing`` -> dense field on the image grid ``shape``."""
    return resample_grid_field(disp, spacing, 1.0, shape)


def convex_adam(fixed_features: torch.Tensor | dict[int, torch.Tensor],
                moving_features: torch.Tensor | dict[int, torch.Tensor], config: RegistrationConfig,
                fixed_mask: torch.Tensor | None = None, times: StageTimes | None = None,
                shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Deformable registration of two descriptor volumes (already affinely aligned).

    Args:
        fixed_features, moving_features: ``(1, C, *spatial)`` on the same voxel grid, or their
            :func:`feature_levels` (then ``shape`` is required).
        config: method parameters.
        fixed_mask: optional ``(1, 1, *spatial)`` mask weighting the fine-stage similarity.
        times: optional accumulator of stage times.
        shape: spatial shape of the images (needed with feature levels).

    Returns:
        Dense displacement ``(1, S, *spatial)``, fixed -> moving, voxels.
    """
    if isinstance(fixed_features, torch.Tensor):
        shape = tuple(fixed_features.shape[2:])
        fixed_features = feature_levels(fixed_features, config)
    if isinstance(moving_features, torch.Tensor):
        moving_features = feature_levels(moving_features, config)
    if shape is None:
        raise ValueError("convex_adam(): pass shape= with precomputed feature levels")
    fixed_levels, moving_levels = fixed_features, moving_features
    device = fixed_levels[config.search_step].device
    times = times or StageTimes()
    start = time.perf_counter()
    g, q, r = config.grid_spacing, config.search_step, config.search_radius
    with torch.no_grad():
        cost, candidates = discrete_cost(fixed_levels[q], moving_levels[q], g, q, r, pooled=True)
        forward = coupled_convex(cost, candidates, config.coupling_weights, config.coupling_sigma, q)
        del cost
        if config.inverse_consistency:
            cost, candidates = discrete_cost(moving_levels[q], fixed_levels[q], g, q, r, pooled=True)
            backward = coupled_convex(cost, candidates, config.coupling_weights, config.coupling_sigma, q)
            del cost
            forward, _ = symmetrise(forward, backward, g, config.ic_iterations)
    start = times.add("coarse", start, device)

    if config.adam_iterations <= 0:
        with torch.no_grad():
            out = _upsample_to_image(forward, g, shape)
        times.add("upsample", start, device)
        return out

    factor = config.adam_factor
    spacing, field_now = g, forward
    if config.adam_coarse_iterations > 0:
        # A cheap first pass at twice the factor (an eighth of the points in 3D) does the bulk of
        # the descent; the fine pass then needs fewer of its expensive steps.
        spacing, field_now = 2 * factor, _adam_level(fixed_levels, moving_levels, 2 * factor, field_now, spacing,
                                                     config.replace(adam_factor=2 * factor,
                                                                    adam_iterations=config.adam_coarse_iterations),
                                                     fixed_mask)
    fine = _adam_level(fixed_levels, moving_levels, factor, field_now, spacing, config, fixed_mask)
    start = times.add("adam", start, device)
    with torch.no_grad():
        out = _upsample_to_image(fine, factor, shape)
    times.add("upsample", start, device)
    return out

