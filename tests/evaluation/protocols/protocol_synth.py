"""Synthetic label maps for the protocol tests (imported by them; not a test module): a few 32^3 cases with several lesions and empty ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def blobs(rng: np.random.Generator, shape: tuple[int, ...], n: int, labels: list[int]) -> np.ndarray:
    """``n`` random ellipsoids (radius 1-5 voxels), each of a random label, later ones on top."""
    out = np.zeros(shape, np.uint8)
    grid = np.indices(shape)
    for _ in range(n):
        centre = rng.uniform(0, np.asarray(shape))
        radius = rng.uniform(1.0, 5.0)
        stretch = rng.uniform(0.5, 2.0, len(shape))
        dist = sum(s * (g - c) ** 2 for s, g, c in zip(stretch, grid, centre))
        out[dist < radius**2] = rng.choice(labels)
    return out


def perturb(rng: np.random.Generator, ref: np.ndarray, labels: list[int]) -> np.ndarray:
    """A plausible prediction: shifted, with dropped voxels and a few extra lesions."""
    axis = int(rng.integers(0, ref.ndim))
    pred = np.roll(ref, int(rng.integers(-2, 3)), axis=axis)
    pred = np.where(rng.random(ref.shape) < 0.03, 0, pred).astype(np.uint8)
    return np.maximum(pred, blobs(rng, ref.shape, int(rng.integers(0, 4)), labels))


def random_cases(seed: int, n: int, labels: list[int], shape=(32, 32, 32)):
    """``(pred, ref, spacing)`` triples; they include empty references, empty and perfect
    predictions, and anisotropic spacing."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        ref = blobs(rng, shape, int(rng.integers(1, 7)), labels)
        pred = perturb(rng, ref, labels)
        if i % 5 == 1:
            pred = np.zeros_like(ref)
        if i % 5 == 2:
            ref = np.zeros_like(ref)
        if i % 7 == 3:
            pred = ref.copy()
        spacing = tuple(float(s) for s in rng.choice([0.8, 1.0, 1.25, 2.0], len(shape)))
        cases.append((pred, ref, spacing))
    return cases


def save_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    if affine is None:
        affine = np.diag(list(spacing) + [1.0])
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path
