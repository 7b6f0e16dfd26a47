"""Affine pre-alignment: centre-of-mass initialisation refined by Adam on MIND-SSC descriptors.

The transform is estimated in the normalised frame of ``F.affine_grid`` (both images on grids
of the same shape, corners at -1 and +1) and returned as a voxel-space matrix ``(S, S+1)``:
``moving_voxel = M[:, :S] @ fixed_voxel + M[:, S]``, axes in (H, W, D) order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .features import mind_ssc, pooled_features
from .fields import affine_to_field

__all__ = ["center_of_mass", "theta_to_voxel_matrix", "affine_align", "affine_field"]


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
    """``affine_grid`` matrix ``(S, S+1)`` (normalised, reversed axes) -> voxel matrix ``(S, S+1)``.

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


def affine_align(fixed: torch.Tensor, moving: torch.Tensor, iterations: int = 60, lr: float = 0.01,
                 fixed_mask: torch.Tensor | None = None, moving_mask: torch.Tensor | None = None,
                 mind_radius: int = 1, mind_dilation: int = 2) -> torch.Tensor:
    """Estimate the affine map from fixed to moving voxels.

    Args:
        fixed, moving: ``(1, 1, *spatial)`` images on grids of the same shape.
        iterations: Adam steps per pyramid level (1/4, then 1/2 resolution).
        lr: Adam step size of the normalised parameters.
        fixed_mask, moving_mask: optional masks restricting the descriptors.
        mind_radius, mind_dilation: MIND-SSC parameters at the working resolution, voxels.

    Returns:
        Voxel-space matrix ``(S, S+1)`` float32, fixed voxel -> moving voxel.
    """
    spatial = fixed.ndim - 2
    shape = tuple(fixed.shape[2:])
    # Work at half resolution: affine parameters need no fine detail.
    fixed_half = pooled_features(fixed.float(), 2)
    moving_half = pooled_features(moving.float(), 2)
    fmask = pooled_features(fixed_mask.float(), 2) if fixed_mask is not None else None
    mmask = pooled_features(moving_mask.float(), 2) if moving_mask is not None else None
    fixed_feat = mind_ssc(fixed_half, mind_radius, mind_dilation, fmask)
    moving_feat = mind_ssc(moving_half, mind_radius, mind_dilation, mmask)

    eye = torch.eye(spatial, spatial + 1, device=fixed.device, dtype=torch.float32)
    # Translation from the centres of mass, in normalised units (reversed axis order).
    com_shift = center_of_mass(moving) - center_of_mass(fixed)
    norm_shift = (com_shift * torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=fixed.device)).flip(0)
    delta = torch.zeros(spatial, spatial + 1, device=fixed.device, dtype=torch.float32)
    delta[:, spatial] = norm_shift
    delta.requires_grad_(True)
    optimiser = torch.optim.Adam([delta], lr=lr)
    for factor in (2, 1):
        fixed_level = pooled_features(fixed_feat, factor)
        moving_level = pooled_features(moving_feat, factor)
        size = (1, fixed_level.shape[1]) + tuple(fixed_level.shape[2:])
        with torch.enable_grad():
            for _ in range(iterations):
                optimiser.zero_grad(set_to_none=True)
                grid = F.affine_grid((eye + delta).unsqueeze(0), list(size), align_corners=True)
                warped = F.grid_sample(moving_level, grid, mode="bilinear", padding_mode="border",
                                       align_corners=True)
                loss = (warped - fixed_level).pow(2).mean()
                loss.backward()
                optimiser.step()
    return theta_to_voxel_matrix((eye + delta).detach(), shape)


def affine_field(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Displacement ``(1, S, *shape)`` voxels of a voxel-space affine (see :func:`affine_align`)."""
    return affine_to_field(matrix, shape)
