"""Seeded random smooth fields shared by the synthetic generators (database and registration).

All functions are N-D (2D images and 3D volumes alike) and work in voxel units.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["smooth_noise", "random_displacement", "random_bias_field", "random_gamma", "warp_array"]


def smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise normalised to unit maximum absolute value (float32).

    The noise is drawn on a grid coarsened by ``sigma / 2`` and upsampled, so smoothing large
    volumes stays cheap.
    """
    factor = max(1, int(sigma // 2))
    coarse_shape = tuple(max(2, -(-s // factor)) for s in shape)
    noise = rng.standard_normal(coarse_shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=max(sigma / factor, 0.5), mode="reflect")
    if factor > 1:
        zoom = [s / c for s, c in zip(shape, coarse_shape)]
        noise = ndimage.zoom(noise, zoom, order=1, mode="nearest")[tuple(slice(0, s) for s in shape)]
    peak = float(np.max(np.abs(noise)))
    return noise / peak if peak > 0 else noise


def random_displacement(shape: tuple[int, ...], magnitude: float, sigma: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement field (len(shape), *shape), float32, voxels.

    ``magnitude`` is the largest displacement per axis in voxels and ``sigma`` the smoothness
    (Gaussian width in voxels). With ``magnitude`` well below ``sigma`` the map stays
    diffeomorphic.
    """
    return np.stack([magnitude * smooth_noise(shape, sigma, rng) for _ in shape]).astype(np.float32)


def random_bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator,
                      sigma: float | None = None) -> np.ndarray:
    """Multiplicative smooth bias field ``exp(strength * noise)`` (MRI-like inhomogeneity)."""
    sigma = sigma if sigma is not None else max(shape) / 4
    return np.exp(strength * smooth_noise(shape, sigma, rng)).astype(np.float32)


def random_gamma(image: np.ndarray, rng: np.random.Generator, log_range: float = 0.3) -> np.ndarray:
    """Contrast change ``x ** gamma`` on an image scaled to [0, 1], gamma = exp(U(-r, r))."""
    gamma = float(np.exp(rng.uniform(-log_range, log_range)))
    return np.clip(image, 0.0, 1.0) ** gamma


def warp_array(array: np.ndarray, displacement: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample ``array`` at x + u(x) (pull-back warp); ``displacement`` is (ndim, *shape) voxels.

    Use ``order=0`` for label maps.
    """
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in array.shape], indexing="ij")
    coords = [g + d for g, d in zip(grid, displacement)]
    return ndimage.map_coordinates(array, coords, order=order, mode="nearest")
