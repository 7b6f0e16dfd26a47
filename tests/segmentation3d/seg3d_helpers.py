"""Helpers of the 3D segmentation tests: tiny nnU-Net-style folders and configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.io.volumes import write_nifti

TINY_ENCODER = {"widths": [8, 8, 8, 8], "depths": [1, 1, 1, 1]}


def tiny_case(rng: np.random.Generator, shape: tuple[int, int, int], channels: int = 2):
    """A bright sphere (label 2) with a brighter core (label 1) on a noisy background."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    centre = np.array(shape, np.float32) / 2 + rng.uniform(-2, 2, 3)
    r = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    label[r < 5] = 2
    label[r < 2.5] = 1
    image = np.stack([100 + 10 * rng.standard_normal(shape) + 50 * (label > 0) + 30 * (label == 1) * c
                      for c in range(channels)]).astype(np.float32)
    return image, label


def write_folder(root: Path, shapes, channels: int = 2, seed: int = 0, spacing=(1.0, 1.0, 1.0),
                 prefix: str = "case") -> Path:
    rng = np.random.default_rng(seed)
    for i, shape in enumerate(shapes):
        image, label = tiny_case(rng, shape, channels)
        affine = np.diag(list(spacing) + [1.0])
        affine[:3, 3] = rng.uniform(-50, 50, 3)
        for c in range(channels):
            write_nifti(root / "imagesTr" / f"{prefix}{i}_{c:04d}.nii.gz", image[c], affine)
        write_nifti(root / "labelsTr" / f"{prefix}{i}.nii.gz", label, affine)
    return root


def tiny_config(task, **overrides):
    from medfoundry.segmentation import SegmentConfig

    base = dict(database=str(task.root.parent.parent), task=task.name, encoder_kwargs=TINY_ENCODER,
                adapter_channels=8, patch=(32, 32, 32), batch_size=2, steps=4, checkpoint_every=2, warmup_steps=1,
                device="cpu", seed=3, threads=1)
    base.update(overrides)
    return SegmentConfig(**base)
