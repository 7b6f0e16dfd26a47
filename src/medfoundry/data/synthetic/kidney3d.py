"""CT-like abdominal phantoms with kidneys, kidney tumours and cysts (KiTS-style labels).

Geometry (all in mm, then sampled on a grid of ``spacing`` mm in-plane and ``2 * spacing`` mm
between slices, like thick-slice clinical CT): an elliptic body whose axes vary along the
slices, a subcutaneous fat layer, a vertebral body behind, and two kidneys (tilted ellipsoids
on either side of the spine). One kidney carries a tumour (a sphere centred near its surface,
heterogeneous); a cyst (small homogeneous water-density sphere) appears in 70 % of cases.
Values are Hounsfield units with Gaussian noise (portal-venous-like enhancement).

Labels (KiTS 2021): 1 kidney, 2 tumour, 3 cyst; regions ``KID=1,2,3;MASS=2,3;TUM=2`` (kidney
and masses ⊇ masses ⊇ tumour).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...errors import DataError
from ...randomfields import smooth_noise

__all__ = ["KITS_LABELS", "KITS_REGIONS", "render_kidney"]

KITS_LABELS = {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3}
KITS_REGIONS = "KID=1,2,3;MASS=2,3;TUM=2"
_HU = {"air": -1000.0, "fat": -100.0, "soft": 45.0, "bone": 450.0, "kidney": 170.0, "tumour": 80.0,
       "cyst": 10.0}


def _ellipsoid(points: np.ndarray, centre: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    """Normalised radius (< 1 inside) of an ellipsoid rotated by ``angle`` about the slice axis."""
    d = points - centre[:, None, None, None]
    c, s = np.cos(angle), np.sin(angle)
    x = c * d[0] + s * d[1]
    y = -s * d[0] + c * d[1]
    return np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (d[2] / radii[2]) ** 2)


def render_kidney(rng: np.random.Generator, spacing: float = 3.0):
    """Render one phantom: a single CT channel in HU on a (``spacing``, ``spacing``,
    ``2 * spacing``) mm grid, labels 0..3.

    Returns:
        A :class:`~medfoundry.data.synthetic.phantoms3d.PhantomCase`.
    """
    from .phantoms3d import PhantomCase

    if not 1.0 <= spacing <= 8.0:
        raise DataError(f"phantom spacing must be within [1, 8] mm, got {spacing}", field="spacing")
    half = np.array([rng.uniform(170, 190), rng.uniform(125, 140), rng.uniform(70, 90)])  # field of view / 2
    step = np.array([spacing, spacing, 2 * spacing])
    shape = tuple(int(np.ceil(2 * h / s)) for h, s in zip(half, step))
    start = -half
    affine = np.diag(list(step) + [1.0])
    affine[:3, 3] = start
    points = np.stack(np.meshgrid(*[start[a] + step[a] * np.arange(shape[a]) for a in range(3)], indexing="ij"))

    # body: an ellipse in-plane whose size drifts along the slices
    z = points[2] / half[2]
    a = rng.uniform(140, 165) * (1 + 0.05 * z)
    b = rng.uniform(100, 120) * (1 + 0.04 * z)
    r_body = np.sqrt((points[0] / a) ** 2 + (points[1] / b) ** 2)
    fat = rng.uniform(12, 25)
    image = np.full(shape, _HU["air"], np.float32)
    image[r_body < 1] = _HU["fat"]
    inner = r_body < 1 - fat / np.minimum(a, b)
    image[inner] = _HU["soft"]
    spine_centre = np.array([0.0, -b.mean() + rng.uniform(35, 45), 0.0])
    spine = np.sqrt((points[0] - spine_centre[0]) ** 2 + (points[1] - spine_centre[1]) ** 2) < rng.uniform(14, 18)
    image[spine & inner] = _HU["bone"]

    label = np.zeros(shape, np.uint8)
    kidneys = []
    for side in (-1, 1):
        centre = np.array([side * rng.uniform(60, 75), spine_centre[1] + rng.uniform(10, 25), rng.normal(0, 10)])
        radii = np.array([rng.uniform(24, 30), rng.uniform(28, 35), rng.uniform(45, 55)])
        field = _ellipsoid(points, centre, radii, side * rng.uniform(0.3, 0.6))
        label[(field < 1) & inner] = 1
        kidneys.append((centre, radii))
    centre, radii = kidneys[int(rng.integers(2))]
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    r_t = rng.uniform(10, 22)
    t_centre = centre + direction * radii * rng.uniform(0.5, 0.85)
    tumour = np.linalg.norm(points - t_centre[:, None, None, None], axis=0) < r_t * (
        1 + 0.15 * smooth_noise(shape, 2.0, rng))
    label[tumour & inner] = 2
    if rng.random() < 0.7:
        centre, radii = kidneys[int(rng.integers(2))]
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        c_centre = centre + direction * radii * rng.uniform(0.3, 0.7)
        cyst = np.linalg.norm(points - c_centre[:, None, None, None], axis=0) < rng.uniform(6, 12)
        label[cyst & inner & (label != 2)] = 3
    image[label == 1] = _HU["kidney"] * rng.uniform(0.85, 1.15)
    heterogeneity = 25.0 * smooth_noise(shape, 1.5, rng)
    image[label == 2] = (_HU["tumour"] * rng.uniform(0.8, 1.3) + heterogeneity)[label == 2]
    image[label == 3] = _HU["cyst"]
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0.3))  # partial volume
    image += rng.normal(0, 15.0, size=shape).astype(np.float32)
    return PhantomCase(image[None].astype(np.float32), label, affine)
