"""Microscopy-like fields of nuclei: fluorescence (DAPI-like) and bright-field stains (H&E, IHC).

Every nucleus is an irregular ellipse drawn in physical units (micrometres) and converted to
pixels with the field's spacing, so the ``full`` scale shows the same tissue at twice the
resolution. Nuclei never overlap (later ones are rejected when they would cover an earlier
one by more than a few per cent), so the instance map, the semantic mask and the boxes agree.

Fluorescence: dark background, bright nuclei with chromatin texture, optical blur (Gaussian
PSF) and Poisson (shot) noise at a random photon budget.

Stains: Beer-Lambert mixing of optical densities, ``RGB = exp(-sum_s OD_s * v_s)``, with
the Ruifrok-Johnston stain vectors (haematoxylin, eosin, DAB) jittered per image. H&E
shows blue-purple nuclei on pink stroma with white lumina; IHC (H-DAB) a pale haematoxylin
counterstain with brown DAB on positive cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from scipy import ndimage

from ...randomfields import smooth_noise
from ._common import irregular_blob, paint_instance

__all__ = ["FIELD_UM", "FLUO_TYPES", "STAIN_TYPES", "CellField", "NucleusSpec", "micro_spacing_mm",
           "nucleus", "render_fluorescence", "render_stain"]

FIELD_UM = 51.2  # field width in micrometres: 0.8 um/pixel at 64 pixels, 0.4 um at 128
FLUO_TYPES = ("interphase", "mitotic")
STAIN_TYPES = ("epithelial", "lymphocyte", "spindle", "mitotic", "atypical")

# Ruifrok & Johnston (2001) optical-density vectors (R, G, B) for the three stains.
_HAEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_EOSIN = np.array([0.072, 0.990, 0.105])
_DAB = np.array([0.268, 0.570, 0.776])


def micro_spacing_mm(size: int) -> float:
    """Pixel spacing in mm of a ``size`` x ``size`` microscopy field."""
    return FIELD_UM / size / 1000.0


@dataclass(frozen=True)
class NucleusSpec:
    """Geometry and appearance of one nucleus (lengths in micrometres)."""

    kind: int
    radii_um: tuple[float, float]
    irregularity: float
    level: float  # fluorescence brightness or haematoxylin optical density
    harmonics: int = 5
    dab: float = 0.0  # DAB optical density (IHC positive cells)


@dataclass
class CellField:
    """A rendered field.

    Attributes:
        image: (C, H, W) float32 in [0, 1]; C = 1 (fluorescence) or 3 (RGB stain).
        instances: (H, W) int32 instance map, 0 = background, k = k-th placed nucleus.
        kinds: type index of nucleus k at position k - 1 (``FLUO_TYPES`` or ``STAIN_TYPES``).
        areas_px: pixel area of nucleus k at position k - 1.
        dab_positive: whether nucleus k carries DAB (IHC only).
    """

    image: np.ndarray
    instances: np.ndarray
    kinds: list[int] = field(default_factory=list)
    areas_px: list[int] = field(default_factory=list)
    dab_positive: list[bool] = field(default_factory=list)


def nucleus(kind: str, rng: np.random.Generator, stain: str = "fluorescence") -> NucleusSpec:
    """Draw one nucleus of a named type with biologically plausible sizes (micrometres)."""
    if stain == "fluorescence":
        if kind == "interphase":
            r = rng.uniform(3.0, 4.6)
            a = rng.uniform(0.7, 1.0)
            return NucleusSpec(0, (r / np.sqrt(a), r * np.sqrt(a)), rng.uniform(0.03, 0.08), rng.uniform(0.35, 0.75))
        # metaphase plate: a condensed, elongated, very bright and ragged bar
        r = rng.uniform(3.0, 4.2)
        return NucleusSpec(1, (r, r * rng.uniform(0.3, 0.45)), rng.uniform(0.2, 0.3), rng.uniform(1.2, 1.6), 8)
    k = STAIN_TYPES.index(kind)
    if kind == "epithelial":
        r, a, irr, od = rng.uniform(3.3, 4.5), rng.uniform(0.65, 1.0), rng.uniform(0.04, 0.1), rng.uniform(0.6, 0.95)
        return NucleusSpec(k, (r / np.sqrt(a), r * np.sqrt(a)), irr, od)
    if kind == "lymphocyte":
        r = rng.uniform(2.1, 2.7)
        return NucleusSpec(k, (r, r * rng.uniform(0.88, 1.0)), 0.03, rng.uniform(1.0, 1.3))
    if kind == "spindle":
        r = rng.uniform(3.6, 4.6)
        return NucleusSpec(k, (r * 1.8, r * rng.uniform(0.35, 0.5)), 0.05, rng.uniform(0.55, 0.85))
    if kind == "mitotic":
        r = rng.uniform(3.4, 4.6)
        return NucleusSpec(k, (r, r * rng.uniform(0.45, 0.7)), rng.uniform(0.3, 0.4), rng.uniform(1.3, 1.7), 9)
    if kind == "atypical":  # enlarged, pleomorphic nuclei; same stain density as epithelial ones
        r = float(np.clip(rng.lognormal(np.log(5.6), 0.18), 4.4, 8.5))
        a = rng.uniform(0.55, 1.0)
        return NucleusSpec(k, (r / np.sqrt(a), r * np.sqrt(a)), rng.uniform(0.15, 0.25), rng.uniform(0.6, 0.95), 6)
    raise ValueError(f"nucleus(): unknown kind {kind!r} for stain {stain!r}")


def _place(size: int, specs: Iterable[NucleusSpec], rng: np.random.Generator, max_overlap: float = 0.08,
           coverage: float | None = None):
    """Place nuclei in order at random positions; returns the instance map, the accepted
    (spec, blob) pairs and their pixel areas.

    ``specs`` may be a lazy iterable: with ``coverage`` placement stops once that fraction of
    the field is covered, and nuclei beyond that point are never drawn.
    """
    um = FIELD_UM / size
    instances = np.zeros((size, size), np.int32)
    placed = []
    centres: list[tuple[float, float, float]] = []  # row, column, smaller radius (pixels)
    covered = 0
    for spec in specs:
        if coverage is not None and covered >= coverage * size * size:
            break
        radii = (spec.radii_um[0] / um, spec.radii_um[1] / um)
        rmin = min(radii)
        for _ in range(12):
            center = rng.uniform(-1.0, size, 2)
            # Cheap pre-test on centre distances before drawing the shape.
            if any((center[0] - r0) ** 2 + (center[1] - c0) ** 2 < (0.9 * (rmin + r1)) ** 2
                   for r0, c0, r1 in centres):
                continue
            blob = irregular_blob((size, size), (float(center[0]), float(center[1])), radii, rng.uniform(0, np.pi),
                                  rng, irregularity=spec.irregularity, harmonics=spec.harmonics, edge=0.7)
            inside = blob.soft >= 0.5
            n_inside = int(inside.sum())
            if n_inside < 3 or (instances[blob.window][inside] > 0).sum() > max_overlap * n_inside:
                continue
            label = len(placed) + 1
            written = paint_instance(instances, blob, label)
            if written < 3:
                instances[instances == label] = 0
                continue
            covered += written
            placed.append((spec, blob))
            centres.append((float(center[0]), float(center[1]), rmin))
            break
    areas = np.bincount(instances.ravel(), minlength=len(placed) + 1)[1:]
    return instances, placed, areas


def render_fluorescence(rng: np.random.Generator, size: int, specs: Iterable[NucleusSpec],
                        coverage: float | None = None) -> CellField:
    """Fluorescence field with the given nuclei (see module docstring)."""
    instances, placed, areas = _place(size, specs, rng, coverage=coverage)
    tex = smooth_noise((size, size), 0.8 * size / 64, rng)
    canvas = np.zeros((size, size), np.float32)
    for spec, blob in placed:
        strength = 0.25 if spec.kind == 0 else 0.45
        level = spec.level * (1.0 + strength * tex[blob.window])
        canvas[blob.window] = np.maximum(canvas[blob.window], blob.soft * level)
    canvas = ndimage.gaussian_filter(canvas, rng.uniform(0.5, 1.0) * size / 64)
    canvas += rng.uniform(0.01, 0.06) * (1.0 + 0.5 * smooth_noise((size, size), size / 4, rng))
    photons = rng.uniform(15.0, 150.0)
    image = rng.poisson(np.clip(canvas, 0, None) * photons).astype(np.float32) / photons
    image = np.clip(image / max(float(np.percentile(image, 99.8)), 0.4), 0.0, 1.0)
    return CellField(image[None].astype(np.float32), instances, [s.kind for s, _ in placed],
                     [int(a) for a in areas], [False] * len(placed))


def _jitter(vector: np.ndarray, rng: np.random.Generator, amount: float = 0.05) -> np.ndarray:
    v = np.clip(vector + rng.normal(0.0, amount, 3), 0.01, None)
    return v / np.linalg.norm(v)


def render_stain(rng: np.random.Generator, size: int, specs: Iterable[NucleusSpec], stain: str = "he",
                 coverage: float | None = None) -> CellField:
    """Bright-field field, ``stain`` = ``he`` (H&E) or ``ihc`` (haematoxylin + DAB)."""
    instances, placed, areas = _place(size, specs, rng, coverage=coverage)
    shape = (size, size)
    tex = smooth_noise(shape, 0.7 * size / 64, rng)
    od_h = np.zeros(shape, np.float32)
    od_d = np.zeros(shape, np.float32)
    for spec, blob in placed:
        rough = 0.35 if spec.kind in (0, 4) else 0.15
        od_h[blob.window] += blob.soft * spec.level * (1.0 + rough * tex[blob.window])
        if spec.dab > 0:
            # DAB sits in the cytoplasm/membrane around the nucleus as well: a blurred halo.
            od_d[blob.window] += spec.dab * np.clip(ndimage.gaussian_filter(blob.soft, 1.2) * 1.6, 0, 1)
    sc = size / 64
    fibres = smooth_noise(shape, 2.5 * sc, rng)
    lumen = np.clip((smooth_noise(shape, 7.0 * sc, rng) - 0.45) * 5.0, 0.0, 1.0) * (rng.random() < 0.6)
    stroma = np.clip(1.0 - lumen - ndimage.gaussian_filter((instances > 0).astype(np.float32), 0.5), 0, 1)
    h_vec, e_vec, d_vec = _jitter(_HAEMATOXYLIN, rng), _jitter(_EOSIN, rng), _jitter(_DAB, rng)
    if stain == "he":
        od_e = rng.uniform(0.15, 0.4) * (0.75 + 0.25 * fibres) * (1.0 - lumen)
        od_h = od_h * rng.uniform(0.85, 1.2) + 0.05 * stroma
        od_d[:] = 0.0
    elif stain == "ihc":
        od_e = np.zeros(shape, np.float32)
        od_h = od_h * rng.uniform(0.35, 0.55) + rng.uniform(0.03, 0.08) * (0.8 + 0.2 * fibres) * (1.0 - lumen)
    else:
        raise ValueError(f"render_stain(): stain must be 'he' or 'ihc', got {stain!r}")
    od = od_h[..., None] * h_vec + od_e[..., None] * e_vec + od_d[..., None] * d_vec
    rgb = np.exp(-od * rng.uniform(0.9, 1.15)) * rng.uniform(0.9, 1.0)
    rgb = ndimage.gaussian_filter(rgb, (rng.uniform(0.3, 0.9) * sc,) * 2 + (0,))
    rgb = rgb + rng.normal(0.0, 0.012, rgb.shape)
    image = np.clip(rgb, 0.0, 1.0).transpose(2, 0, 1).astype(np.float32)
    return CellField(image, instances, [s.kind for s, _ in placed], [int(a) for a in areas],
                     [s.dab > 0 for s, _ in placed])
