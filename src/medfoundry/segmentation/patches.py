"""Training patches from a stored 3D task: foreground oversampling and MONAI augmentation.

Every random choice (case, centre, augmentation parameters) comes from one NumPy
``Generator`` owned by the trainer, so a checkpoint that stores its state resumes the exact
sequence of patches. MONAI's transforms keep their own ``RandomState``; they are re-seeded
from that generator for every patch instead of being checkpointed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.volumes3d import VolumeTask

__all__ = ["PatchSampler", "crop_with_padding"]

_FG_POINTS = 20000  # foreground voxels remembered per case and class (a seeded subsample)
_CACHE_BYTES = 2 * 1024**3  # keep decoded training cases in memory up to this size
_MARGIN = 1.25  # crop larger than the patch so rotations do not bring in padded corners


def crop_with_padding(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop the last ``len(size)`` axes of ``array`` at ``start`` (may be negative or run past
    the end); the part outside the array is zero."""
    nd = len(size)
    spatial = array.shape[-nd:]
    out = np.zeros(array.shape[:-nd] + tuple(size), dtype=array.dtype)
    src, dst = [], []
    for s, n, full in zip(start, size, spatial):
        lo, hi = max(0, s), min(full, s + n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


class PatchSampler:
    """Draw (image, label) patches from the ``indices`` cases of a :class:`VolumeTask`.

    Args:
        task: the stored task.
        indices: training case indices.
        patch: patch size (voxels).
        foreground_fraction: share of patches centred on foreground (a random class present in
            the case, then one of its voxels), the rest centred uniformly.
        augment: apply the MONAI augmentation pipeline.
        cache_bytes: keep the decoded cases in memory when they all fit in this many bytes
            (multi-task pretraining splits one budget between its 3D tasks).
    """

    def __init__(self, task: VolumeTask, indices: Sequence[int], patch: Sequence[int],
                 foreground_fraction: float = 0.5, augment: bool = True, cache_bytes: int = _CACHE_BYTES):
        self.task, self.indices = task, list(indices)
        self.patch = tuple(int(p) for p in patch)
        self.foreground_fraction = float(foreground_fraction)
        total = sum(task.cases[i].size for i in self.indices) * (task.channels * 4 + 1)
        self._keep = total <= cache_bytes
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._foreground: dict[int, dict[int, np.ndarray]] = {}
        self.augment = _augmentation(self.patch) if augment else None

    def _case(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        pair = (self.task.image(index), self.task.label(index))
        if index not in self._foreground:
            rng = np.random.default_rng(index)  # the subsample is a property of the case, not of the run
            points = {}
            for cls in range(1, self.task.num_classes):
                idx = np.flatnonzero(pair[1].reshape(-1) == cls)
                if idx.size > _FG_POINTS:
                    idx = np.sort(rng.choice(idx, _FG_POINTS, replace=False))
                if idx.size:
                    points[cls] = idx
            self._foreground[index] = points
        if self._keep:
            self._cache[index] = pair
        return pair

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch: image (C, *patch) float32, label (*patch) uint8."""
        return self.draw(rng)[1:]

    def draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray, np.ndarray]:
        """One patch with the index of its case: ``(case, image (C, *patch), label (*patch))``."""
        index = self.indices[int(rng.integers(len(self.indices)))]
        image, label = self._case(index)
        shape = label.shape
        points = self._foreground[index]
        if points and rng.random() < self.foreground_fraction:
            cls = sorted(points)[int(rng.integers(len(points)))]
            flat = points[cls][int(rng.integers(len(points[cls])))]
            centre = np.array(np.unravel_index(flat, shape))
            centre = centre + rng.integers(-(np.array(self.patch) // 4), np.array(self.patch) // 4 + 1)
        else:
            centre = np.array([int(rng.integers(s)) for s in shape])
        crop = tuple(int(np.ceil(p * _MARGIN)) if self.augment else p for p in self.patch)
        start = [int(c) - n // 2 for c, n in zip(centre, crop)]
        img = crop_with_padding(image, start, crop)
        lab = crop_with_padding(label, start, crop)
        if self.augment is None:
            return index, img, lab
        self.augment.set_random_state(seed=int(rng.integers(2**31)))
        out = self.augment({"image": img, "label": lab[None]})
        return (index, np.asarray(out["image"], dtype=np.float32),
                np.asarray(out["label"], dtype=np.float32)[0].round().astype(np.uint8))

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` patches stacked: images (B, C, *patch), labels (B, 1, *patch)."""
        pairs = [self.sample(rng) for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])[:, None]


def _augmentation(patch: tuple[int, ...]):
    """MONAI pipeline, cheap on a CPU: one affine resampling (small rotation and scaling, also
    the centre crop from the enlarged crop to ``patch``), flips, intensity scale/shift, noise."""
    from monai import transforms as T

    keys = ["image", "label"]
    return T.Compose([
        T.RandAffined(keys, spatial_size=patch, prob=0.3, rotate_range=(0.26, 0.26, 0.26),
                      scale_range=(0.15, 0.15, 0.15), mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.CenterSpatialCropd(keys, roi_size=patch),
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandFlipd(keys, prob=0.5, spatial_axis=2),
        T.RandScaleIntensityd("image", factors=0.15, prob=0.5),
        T.RandShiftIntensityd("image", offsets=0.15, prob=0.5),
        T.RandGaussianNoised("image", prob=0.15, std=0.1),
    ], lazy=False)
