"""Linear (affine or rigid) alignment of two images on one voxel grid, optimised in millimetres.

The transform is estimated in the fixed grid's physical frame: a fixed voxel ``x`` has the
centred position ``p = s * (x - c)`` in mm (``s`` the voxel size per axis, ``c`` the grid
centre), maps to ``q = A p + R t`` and then to the moving voxel ``y = q / s + c``. ``A`` is a
rotation (``rigid``: ``expm`` of a skew matrix, so it stays rigid on anisotropic voxels) or any
matrix (``affine``: ``I + P``); ``R`` is the mean half extent of the grid in mm, so all
parameters are unitless and one learning rate fits both. Because the images were brought onto
the fixed grid through their world affines, this is a world-space transform too.

Result: a voxel matrix ``M`` ``(S, S+1)``, ``moving_voxel = M[:, :S] @ fixed_voxel + M[:, S]``,
axes in (H, W, D) order.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import RegistrationError
from .convex_adam import SimpleAdam
from .features import mind_ssc, pooled_features

__all__ = ["center_of_mass", "theta_to_voxel_matrix", "affine_align"]


def center_of_mass(image: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre ``(S,)`` in voxels of ``(1, 1, *spatial)``, after subtracting the minimum.

    Voxels below the mean of the shifted image get zero weight, so background (air, padding)
    does not pull the centre.
    """
    weights = image[0, 0].float() - image.min()
    weights = torch.where(weights > weights.mean(), weights, torch.zeros_like(weights))
    total = weights.sum().clamp_min(1e-12)
    centre = []
    for axis, size in enumerate(weights.shape):
        coords = torch.arange(size, device=image.device, dtype=torch.float32)
        other = [d for d in range(weights.ndim) if d != axis]
        profile = weights.sum(dim=other) if other else weights
        centre.append((profile * coords).sum() / total)
    return torch.stack(centre)


def theta_to_voxel_matrix(theta: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``F.affine_grid`` matrix ``(S, S+1)`` (normalised, reversed axes) -> voxel matrix ``(S, S+1)``.

    ``F.affine_grid`` maps output normalised coordinates (last axis first) to input normalised
    coordinates with ``align_corners=True``; the voxel matrix maps fixed voxel indices in
    (H, W, D) order to moving voxel indices.
    """
    spatial = len(shape)
    flip = torch.eye(spatial, device=theta.device, dtype=theta.dtype).flip(0)
    linear = flip @ theta[:, :spatial] @ flip
    shift = flip @ theta[:, spatial]
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=theta.device, dtype=theta.dtype)
    ones = torch.ones(spatial, device=theta.device, dtype=theta.dtype)
    # n = D v - 1;  v_in = D^-1 (A (D v - 1) + t + 1)
    matrix = (linear * scale.view(1, -1)) / scale.view(-1, 1)
    offset = (shift - linear @ ones + ones) / scale
    return torch.cat([matrix, offset.view(-1, 1)], dim=1)


def _rotation(omega: torch.Tensor, spatial: int) -> torch.Tensor:
    """Rotation matrix ``(S, S)`` from ``omega`` (radians; 3 values in 3D, 1 in 2D)."""
    skew = torch.zeros(spatial, spatial, dtype=omega.dtype, device=omega.device)
    if spatial == 2:
        skew = skew + torch.stack([torch.stack([omega[0] * 0, -omega[0]]), torch.stack([omega[0], omega[0] * 0])])
    else:
        a, b, c = omega
        zero = a * 0
        skew = torch.stack([torch.stack([zero, -c, b]), torch.stack([c, zero, -a]), torch.stack([-b, a, zero])])
    return torch.linalg.matrix_exp(skew)


def _level_points(shape: Sequence[int], factor: int, device: torch.device) -> torch.Tensor:
    """Full-resolution voxel positions ``(S, N)`` of the cells of a grid pooled by ``factor``."""
    sizes = [-(-s // factor) for s in shape]
    axes = [torch.arange(n, device=device, dtype=torch.float32) * factor + (factor - 1) / 2 for n in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(len(shape), -1)


def _sample_level(level: torch.Tensor, voxels: torch.Tensor, factor: int) -> torch.Tensor:
    """Sample a grid pooled by ``factor`` ``(1, C, *g)`` at full-resolution voxels ``(S, N)`` -> ``(C, N)``."""
    spatial = voxels.shape[0]
    sizes = torch.tensor(level.shape[2:], device=voxels.device, dtype=voxels.dtype).view(spatial, 1)
    index = (voxels - (factor - 1) / 2) / factor
    norm = index * 2.0 / (sizes - 1).clamp_min(1) - 1.0
    grid = norm.flip(0).t().reshape(1, -1, *([1] * (spatial - 1)), spatial)
    out = F.grid_sample(level, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(level.shape[1], -1)


def _ncc_loss(warped: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    w = torch.ones_like(target[0]) if weight is None else weight
    total = w.sum().clamp_min(1e-6)
    a = warped[0] - (warped[0] * w).sum() / total
    b = target[0] - (target[0] * w).sum() / total
    ncc = (a * b * w).sum() / ((a * a * w).sum() * (b * b * w).sum()).sqrt().clamp_min(1e-12)
    return 1.0 - ncc


class _Frame:
    """The fixed grid's centred physical frame (see the module docstring)."""

    def __init__(self, shape: tuple[int, ...], spacing: Sequence[float] | None, device: torch.device):
        spatial = len(shape)
        self.shape = shape
        self.spatial = spatial
        self.s = torch.tensor(list(spacing) if spacing is not None else [1.0] * spatial, device=device,
                              dtype=torch.float32).view(spatial, 1)
        self.centre = torch.tensor([(n - 1) / 2 for n in shape], device=device, dtype=torch.float32).view(spatial, 1)
        self.extent = float((self.s[:, 0] * self.centre[:, 0]).mean().clamp_min(1e-6))

    def voxel_matrix(self, a: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        """``(S, S+1)`` voxel matrix of ``q = A p + extent * t``."""
        s, centre = self.s, self.centre[:, 0]
        linear = a * s.view(1, -1) / s  # diag(1/s) A diag(s)
        offset = centre - linear @ centre + self.extent * translation / s[:, 0]
        return torch.cat([linear, offset.view(-1, 1)], dim=1)


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Voxel matrices ``(S, S+1)``: ``x -> outer(inner(x))``."""
    spatial = outer.shape[0]
    return torch.cat([outer[:, :spatial] @ inner[:, :spatial],
                      (outer[:, :spatial] @ inner[:, spatial:] + outer[:, spatial:])], dim=1)


def _optimise(frame: _Frame, fixed_feat: torch.Tensor, moving_feat: torch.Tensor, fmask: torch.Tensor | None,
              model: str, similarity: str, iterations: int, lr: float, shift: torch.Tensor,
              factors: Sequence[int], max_points: int = 50_000) -> torch.Tensor:
    """Adam on the transform parameters over pyramid levels of half-resolution features.

    A level with more than ``max_points`` cells uses a fixed, seeded random subset of them.
    """
    device = fixed_feat.device
    spatial = frame.spatial
    translation = shift.clone().requires_grad_(True)
    linear = torch.zeros((3 if spatial == 3 else 1,) if model == "rigid" else (spatial, spatial), device=device,
                         requires_grad=True)
    # One Adam per tensor, as torch.optim.Adam does per parameter, without its import cost.
    optimisers = [SimpleAdam(linear, lr), SimpleAdam(translation, lr)]

    def matrix_a() -> torch.Tensor:
        if model == "rigid":
            return _rotation(linear, spatial)
        return torch.eye(spatial, device=device) + linear

    for factor in factors:
        fixed_level = pooled_features(fixed_feat, factor)
        moving_level = pooled_features(moving_feat, factor)
        weight = None if fmask is None else (pooled_features(fmask, factor) > 0).float().reshape(-1)
        voxels = _level_points(frame.shape, 2 * factor, device)
        target = fixed_level.reshape(fixed_level.shape[1], -1)
        if voxels.shape[1] > max_points:
            generator = torch.Generator(device="cpu").manual_seed(0)
            keep = torch.randperm(voxels.shape[1], generator=generator)[:max_points].to(device)
            voxels, target = voxels[:, keep], target[:, keep]
            weight = None if weight is None else weight[keep]
        centred = frame.s * (voxels - frame.centre)
        with torch.enable_grad():
            for step in range(iterations):
                # Decaying steps: Adam's steps stay near ``lr`` close to the optimum, and lr = 0.01
                # of the half extent is about a millimetre.
                for optimiser in optimisers:
                    optimiser.lr = lr * (1.0 - 0.9 * step / max(iterations - 1, 1))
                moved = (matrix_a() @ centred + frame.extent * translation.view(spatial, 1)) / frame.s + frame.centre
                warped = _sample_level(moving_level, moved, 2 * factor)
                if similarity == "ncc":
                    loss = _ncc_loss(warped, target, weight)
                elif weight is None:
                    loss = (warped - target).pow(2).mean()
                else:
                    loss = ((warped - target).pow(2).mean(0) * weight).sum() / weight.sum().clamp_min(1)
                for optimiser, grad in zip(optimisers, torch.autograd.grad(loss, [linear, translation])):
                    optimiser.step(grad)
    with torch.no_grad():
        return frame.voxel_matrix(matrix_a(), translation)


def affine_align(fixed: torch.Tensor, moving: torch.Tensor, iterations: int = 60, lr: float = 0.01,
                 fixed_mask: torch.Tensor | None = None, moving_mask: torch.Tensor | None = None,
                 mind_radius: int = 1, mind_dilation: int = 2, *, model: str = "affine",
                 similarity: str = "mind", spacing: Sequence[float] | None = None,
                 center_of_mass_init: bool = True, refinements: int = 2) -> torch.Tensor:
    """Estimate the linear map from fixed to moving voxels (both images on one grid).

    MIND-SSC channels compare intensities along the grid axes, so descriptors of a rotated
    image are not the rotated descriptors: after the first estimate, each refinement warps the
    moving image by it, recomputes its descriptors and estimates the remaining (small)
    transform, which removes that bias (without refinements a 7-degree rotation left ~3 mm).

    Args:
        fixed, moving: ``(1, 1, *spatial)`` images on grids of the same shape.
        iterations: Adam steps per pyramid level (1/4, then 1/2 resolution); refinements take
            half as many, at 1/2 resolution only.
        lr: Adam step size of the unitless parameters (see the module docstring).
        fixed_mask, moving_mask: optional masks; MIND descriptors are zeroed outside them and
            the similarity is weighted by the fixed mask.
        mind_radius, mind_dilation: MIND-SSC parameters at half resolution, voxels.
        model: ``affine`` or ``rigid``.
        similarity: ``mind`` (MIND-SSC squared difference; multi-contrast) or ``ncc`` (global
            normalised cross-correlation of the intensities; one contrast).
        spacing: voxel size of the grid in mm per axis (default 1); rigid means rigid in mm.
        center_of_mass_init: start from the translation between the centres of mass.
        refinements: rounds of re-warping the moving image (0 = one estimate).

    Returns:
        Voxel-space matrix ``(S, S+1)`` float32, fixed voxel -> moving voxel.
    """
    if model not in ("affine", "rigid") or similarity not in ("mind", "ncc"):
        raise RegistrationError(f"affine_align(): model must be affine or rigid and similarity mind or ncc, "
                                f"found {model!r}, {similarity!r}")
    if fixed.shape != moving.shape:
        raise RegistrationError(f"affine_align(): images must share a grid, found {tuple(fixed.shape)} and "
                                f"{tuple(moving.shape)}")
    device = fixed.device
    shape = tuple(fixed.shape[2:])
    frame = _Frame(shape, spacing, device)
    # Work at half resolution: a linear transform needs no fine detail.
    fmask = pooled_features(fixed_mask.float(), 2) if fixed_mask is not None else None

    def features(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        half = pooled_features(image.float(), 2)
        if similarity == "ncc":
            return half
        return mind_ssc(half, mind_radius, mind_dilation, None if mask is None else pooled_features(mask.float(), 2))

    fixed_feat = features(fixed, fixed_mask)
    shift = torch.zeros(frame.spatial, device=device)
    if center_of_mass_init:
        shift = (frame.s[:, 0] * (center_of_mass(moving) - center_of_mass(fixed))) / frame.extent
    total = _optimise(frame, fixed_feat, features(moving, moving_mask), fmask, model, similarity, iterations, lr,
                      shift, (2, 1))
    full = _level_points(shape, 1, device)
    for _ in range(refinements if similarity == "mind" else 0):
        with torch.no_grad():
            points = total[:, :frame.spatial] @ full + total[:, frame.spatial:]
            warped = _sample_level(moving.float(), points, 1).reshape(1, 1, *shape)
            warped_mask = None if moving_mask is None else \
                _sample_level(moving_mask.float(), points, 1).reshape(1, 1, *shape).round()
        delta = _optimise(frame, fixed_feat, features(warped, warped_mask), fmask, model, similarity,
                          max(iterations // 2, 1), lr / 4, torch.zeros(frame.spatial, device=device), (1,))
        total = _compose(total, delta)
    return total.float()
