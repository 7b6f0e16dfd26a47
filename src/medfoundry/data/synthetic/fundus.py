"""Fundus-photograph crops with synthetic retinal lesions (the out-of-domain modality).

The background is real: rotated, flipped and colour-jittered crops of the colour fundus
photograph shipped with scikit-image (``skimage.data.retina()``, public domain), so vessels,
optic disc and fundus texture are genuine. Lesions are drawn on top:

* ``haemorrhage``: dark-red blots and dot haemorrhages (red channel kept, green and blue
  absorbed), as in diabetic retinopathy;
* ``exudate``: clusters of small bright yellow hard exudates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ._common import irregular_blob

__all__ = ["FUNDUS_FINDINGS", "FundusCrop", "retina_photo", "render_fundus"]

FUNDUS_FINDINGS = ("healthy", "haemorrhage", "exudate")


@dataclass
class FundusCrop:
    """One crop: image (3, H, W) float32 in [0, 1]; ``lesion`` (H, W) uint8, 0 none, 1
    haemorrhage, 2 exudate (pixels with >= 50 % lesion coverage)."""

    image: np.ndarray
    lesion: np.ndarray


@lru_cache(maxsize=1)
def retina_photo() -> tuple[np.ndarray, np.ndarray]:
    """The scikit-image retina photo at 1/3 resolution (H, W, 3) float32 and, per pixel, its
    distance in pixels to the edge of the circular field of view."""
    from skimage import data

    rgb = data.retina().astype(np.float32) / 255.0
    h, w = (rgb.shape[0] // 3) * 3, (rgb.shape[1] // 3) * 3
    small = rgb[:h, :w].reshape(h // 3, 3, w // 3, 3, 3).mean(axis=(1, 3))
    fov = ndimage.binary_erosion(small[..., 0] > 0.12, iterations=6)
    return small, ndimage.distance_transform_edt(fov)


def render_fundus(rng: np.random.Generator, size: int, finding: int) -> FundusCrop:
    """Render one crop; ``finding`` indexes ``FUNDUS_FINDINGS``."""
    photo, depth = retina_photo()
    crop = rng.uniform(0.22, 0.32) * photo.shape[0]  # crop side in photo pixels
    cand = np.flatnonzero(depth.ravel() > 0.75 * crop)
    cy, cx = divmod(int(cand[rng.integers(len(cand))]), photo.shape[1])
    a = rng.uniform(0, 2 * np.pi)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    c = (np.arange(size) - (size - 1) / 2.0) * (crop / size)
    v, u = np.meshgrid(c, c, indexing="ij")
    u = u * flip
    rows = cy + np.sin(a) * u + np.cos(a) * v
    cols = cx + np.cos(a) * u - np.sin(a) * v
    image = np.stack([ndimage.map_coordinates(photo[..., k], [rows, cols], order=1, mode="nearest")
                      for k in range(3)], axis=-1)
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, 3)
    image = np.clip(image * gain, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    lesion = np.zeros((size, size), np.uint8)
    sc = size / 64
    if finding == 1:
        cover = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(2, 6))):
            r = rng.uniform(1.2, 3.5) * sc
            b = irregular_blob((size, size), tuple(rng.uniform(4, size - 4, 2)), (r, r * rng.uniform(0.5, 1.0)),
                               rng.uniform(0, np.pi), rng, irregularity=0.2, edge=0.8 * sc)
            cover[b.window] = np.maximum(cover[b.window], b.soft)
        dark = np.array([rng.uniform(0.5, 0.7), rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.35)])
        image = image * (1.0 - cover[..., None] * (1.0 - dark))
        lesion[cover >= 0.5] = 1
    elif finding == 2:
        cover = np.zeros((size, size), np.float32)
        centre = rng.uniform(10, size - 10, 2)
        for _ in range(int(rng.integers(5, 14))):
            r = rng.uniform(0.6, 1.6) * sc
            p = centre + rng.normal(0, 6 * sc, 2)
            b = irregular_blob((size, size), tuple(p), (r, r * rng.uniform(0.6, 1.0)), rng.uniform(0, np.pi),
                               rng, irregularity=0.15, edge=0.7 * sc)
            cover[b.window] = np.maximum(cover[b.window], b.soft)
        yellow = np.array([1.0, rng.uniform(0.85, 0.95), rng.uniform(0.35, 0.55)]) * rng.uniform(0.85, 1.0)
        image = image + cover[..., None] * (yellow - image) * 0.85
        lesion[cover >= 0.5] = 2
    image = image + rng.normal(0.0, 0.01, image.shape)
    return FundusCrop(np.clip(image, 0.0, 1.0).transpose(2, 0, 1).astype(np.float32), lesion)
