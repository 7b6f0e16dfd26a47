"""Chest-radiograph-like projections of an analytic torso phantom.

The phantom is a set of ellipsoids (body, two lungs, heart), cylinders (ribs, clavicles,
spine) and spheres (nodules), each with a linear attenuation coefficient. Their projected
path lengths have closed forms (an ellipsoid of depth semi-axis c projects to
``2 c sqrt(1 - rho^2)``), so the line integral ``P = sum_i mu_i L_i`` is exact and cheap.
The detector counts ``Poisson(N0 exp(-P))`` photons; the image is ``log(N0 / counts)``
windowed for display, so dense structures (bone, heart, nodules) are bright and aerated lung
is dark, as on a PA radiograph. Image columns run from the patient's right to left (PA view).

Per sample the body habitus, lung and heart size and position, rib spacing, exposure,
smooth deformation of the whole field, rotation and display gamma vary. Findings:
``nodule`` (soft-tissue spheres inside the lung fields) and ``opacity`` (an
air-space consolidation: part of one lung's air replaced by fluid, with soft margins).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ...randomfields import random_displacement, smooth_noise
from ._common import irregular_blob

__all__ = ["FOV_MM", "CHEST_CLASSES", "ChestRadiograph", "chest_spacing", "render_chest"]

FOV_MM = 400.0
CHEST_CLASSES = ("background", "lung", "heart")  # segmentation label indices

_MU_SOFT = 0.020  # 1/mm, water-like soft tissue at ~70 keV
_D_LUNG = -0.016  # aerated lung relative to soft tissue
_D_BONE = 0.030  # bone relative to soft tissue


def chest_spacing(size: int) -> float:
    """Pixel spacing in mm of a ``size`` x ``size`` radiograph."""
    return FOV_MM / size


@dataclass
class ChestRadiograph:
    """One projection and its labels.

    Attributes:
        image: (H, W) float32 in [0, 1].
        anatomy: (H, W) uint8 index into ``CHEST_CLASSES`` (lung fields exclude the heart).
        nodules: (H, W) int32 instance map of nodules (k = k-th nodule).
        nodule_diameters_mm: diameter of nodule k at position k - 1.
        opacity: (H, W) bool, pixels where the consolidation is denser than half its peak.
    """

    image: np.ndarray
    anatomy: np.ndarray
    nodules: np.ndarray
    nodule_diameters_mm: list[float] = field(default_factory=list)
    opacity: np.ndarray | None = None


def _ellipsoid_path(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, depth: float,
                    angle: float = 0.0) -> np.ndarray:
    ca, sa = np.cos(angle), np.sin(angle)
    u = (ca * (x - cx) + sa * (y - cy)) / ax
    v = (-sa * (x - cx) + ca * (y - cy)) / ay
    return 2.0 * depth * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))


def render_chest(rng: np.random.Generator, size: int, nodule_diameters_mm: list[float] = (),
                 opacity: bool = False) -> ChestRadiograph:
    """Render one radiograph.

    Args:
        rng: the sample's generator.
        size: output size in pixels (square); spacing is ``FOV_MM / size`` mm.
        nodule_diameters_mm: one entry per nodule to place inside the lung fields; nodules
            that find no room are skipped (see ``result.nodule_diameters_mm``).
        opacity: add one consolidation in a lower or middle lung zone.
    """
    sp = chest_spacing(size)
    c = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * sp
    y, x = np.meshgrid(c, c, indexing="ij")
    disp = random_displacement((size, size), rng.uniform(1.0, 2.5) * size / 64, size / 5, rng)
    a = np.deg2rad(rng.uniform(-5, 5))
    s = rng.uniform(0.92, 1.08)
    xs, ys = x + disp[1] * sp, y + disp[0] * sp
    x = s * (np.cos(a) * xs - np.sin(a) * ys) + rng.normal(0, 8)
    y = s * (np.sin(a) * xs + np.cos(a) * ys) + rng.normal(0, 8)

    half_width = rng.uniform(140, 172)
    neck = 1.0 / (1.0 + np.exp(-(-140.0 - y) / 12.0))
    width = half_width - (half_width - 60.0) * neck
    body = 2.0 * rng.uniform(95, 125) * np.sqrt(np.clip(1.0 - (x / width) ** 2, 0.0, None))

    lungs = np.zeros_like(x)
    lung_y = rng.uniform(-35, -15)
    for side in (-1, 1):
        cx = side * rng.uniform(70, 80)
        ax, ay = rng.uniform(47, 56), rng.uniform(105, 125)
        path = _ellipsoid_path(x, y, cx, lung_y, ax, ay, rng.uniform(65, 85), side * rng.uniform(0.0, 0.12))
        # Dome of the hemidiaphragm; the right one (image left) sits a little higher.
        dome = lung_y + 0.72 * ay - (12.0 if side < 0 else 0.0) + 0.006 * (x - cx) ** 2
        lungs += path * np.clip((dome - y) / 6.0, 0.0, 1.0)
    # The heart sits on the left hemidiaphragm and overlaps the medial lower lung fields.
    heart = _ellipsoid_path(x, y, rng.uniform(14, 30), lung_y + rng.uniform(0.38, 0.5) * ay,
                            rng.uniform(50, 62), rng.uniform(40, 48), 45.0, np.deg2rad(rng.uniform(-40, -20)))
    # The heart silhouette displaces lung over its whole projected outline (the cardiac border).
    aerated = lungs * np.clip(1.0 - heart / 25.0, 0.0, 1.0)

    bone = 30.0 * np.clip(1.0 - (np.abs(x) / 16.0) ** 4, 0.0, None) * (0.85 + 0.15 * np.cos(2 * np.pi * y / 24.0))
    ax_abs = np.abs(x)
    t = (ax_abs - 15.0) / (half_width - 15.0)
    spacing_ribs = rng.uniform(21, 26)
    top = rng.uniform(-150, -135)
    for k in range(10):
        yk = top + k * spacing_ribs + rng.normal(0, 1.5)
        curve = yk + 50.0 * t - 22.0 * np.sin(np.pi * np.clip(t, 0, 1))
        half = rng.uniform(4.0, 5.5)
        prof = np.sqrt(np.clip(1.0 - ((y - curve) / half) ** 2, 0.0, None))
        bone += 12.0 * prof * ((t > 0) & (t < 1))
    for side in (-1, 1):  # clavicles: straight-ish bars from the sternal notch outwards
        x0, x1 = side * 18.0, side * rng.uniform(115, 135)
        y0, y1 = rng.uniform(-160, -145), rng.uniform(-178, -165)
        tt = np.clip((x - x0) / (x1 - x0), 0.0, 1.0)
        dy = y - (y0 + tt * (y1 - y0) + 6.0 * np.sin(np.pi * tt))
        inside = ((x - x0) / (x1 - x0) >= 0) & ((x - x0) / (x1 - x0) <= 1)
        bone += 14.0 * np.sqrt(np.clip(1.0 - (dy / 6.0) ** 2, 0.0, None)) * inside

    extra = np.zeros_like(x)
    nodules = np.zeros((size, size), np.int32)
    placed = []
    for d in nodule_diameters_mm:
        r = 0.5 * d
        ok = (aerated > 80.0) & (heart <= 0.0) & (nodules == 0)
        ok &= ndimage.distance_transform_edt(nodules == 0) * sp > 2 * r
        cand = np.flatnonzero(ok.ravel())
        if len(cand) == 0:
            continue
        row, col = divmod(int(cand[rng.integers(len(cand))]), size)
        rho2 = ((x - x[row, col]) ** 2 + (y - y[row, col]) ** 2) / (r * r)
        extra += -_D_LUNG * 2.0 * r * np.sqrt(np.clip(1.0 - rho2, 0.0, None)) * rng.uniform(0.8, 1.1)
        sel = (rho2 < 1.0) & (nodules == 0)
        if sel.sum() == 0:
            sel[row, col] = True
        nodules[sel] = len(placed) + 1
        placed.append(float(d))

    opacity_mask = None
    if opacity:
        ok = np.flatnonzero(((aerated > 60.0) & (y > lung_y - 20)).ravel())
        if len(ok):
            row, col = divmod(int(ok[rng.integers(len(ok))]), size)
            radius = rng.uniform(35, 65) / sp
            blob = irregular_blob((size, size), (row, col), (radius, radius * rng.uniform(0.6, 1.0)),
                                  rng.uniform(0, np.pi), rng, irregularity=0.25, edge=max(2.0, 0.6 * radius))
            soft = blob.full((size, size)) * (0.65 + 0.35 * smooth_noise((size, size), 2.0 * size / 64, rng))
            density = rng.uniform(0.4, 0.75)
            extra += -_D_LUNG * density * aerated * soft
            opacity_mask = (soft > 0.5) & (aerated > 0)

    line_integral = _MU_SOFT * body + _D_LUNG * aerated + _D_BONE * bone + extra
    n0 = rng.uniform(3e3, 3e4)
    counts = rng.poisson(n0 * np.exp(-line_integral)).astype(np.float64)
    log_image = np.log(n0 / np.maximum(counts, 0.5))
    log_image = ndimage.gaussian_filter(log_image, 0.5 * size / 64)
    lo, hi = np.percentile(log_image, [1.0, 99.5])
    image = (log_image - lo) / max(hi - lo, 1e-6)
    image = np.clip(image, 0.0, 1.0) ** float(np.exp(rng.uniform(-0.25, 0.25)))

    anatomy = np.zeros((size, size), np.uint8)
    anatomy[lungs > 1.0] = 1
    anatomy[(heart > 1.0) & (body > 0)] = 2
    return ChestRadiograph(image.astype(np.float32), anatomy, nodules, placed, opacity_mask)
