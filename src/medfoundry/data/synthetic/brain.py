"""MRI-like brain slices cut from the MNI152 template, with synthetic lesions.

Anatomy is real: each sample is an oblique-ish axial or coronal plane through nilearn's
MNI152 2009 T1 template (2 mm grid) and its grey/white-matter probability maps, all
shipped inside nilearn (no download). Per sample the plane position, in-plane rotation,
scale and a smooth random deformation vary, followed by an MRI-like bias field, contrast
(gamma) change and Rician noise. Lesions are irregular blobs inside the parenchyma:

* ``enhancing``: tumour-like, a bright rim around a dark necrotic core, faint oedema halo;
* ``non_enhancing``: infarct/cyst-like, homogeneously hypointense with a soft edge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ...randomfields import random_bias_field, random_displacement, smooth_noise
from ._common import Blob, irregular_blob, paint_instance

__all__ = ["FOV_MM", "LESION_TYPES", "TISSUE_CLASSES", "BrainSlice", "mni_volumes", "render_brain_slice",
           "brain_spacing"]

FOV_MM = 200.0  # square field of view of every slice in mm (the MNI brain fits with a margin)
LESION_TYPES = ("enhancing", "non_enhancing")
TISSUE_CLASSES = ("background", "csf", "grey_matter", "white_matter")


def brain_spacing(size: int) -> float:
    """In-plane pixel spacing in mm of a ``size`` x ``size`` slice."""
    return FOV_MM / size


@dataclass
class BrainSlice:
    """One rendered slice and everything the tasks derive labels from.

    Attributes:
        image: (H, W) float32 in [0, 1].
        tissue: (H, W) uint8, index into ``TISSUE_CLASSES``.
        lesions: (H, W) int32 instance map, 0 = no lesion, k = k-th lesion.
        lesion_types: type index (into ``LESION_TYPES``) of lesion k at position k - 1.
        lesion_area_mm2: area in mm^2 of lesion k at position k - 1.
        plane: ``axial`` or ``coronal``; position_mm: the plane's offset (z or y) in MNI mm.
    """

    image: np.ndarray
    tissue: np.ndarray
    lesions: np.ndarray
    lesion_types: list[int] = field(default_factory=list)
    lesion_area_mm2: list[float] = field(default_factory=list)
    plane: str = "axial"
    position_mm: float = 0.0


@lru_cache(maxsize=1)
def mni_volumes() -> dict[str, np.ndarray]:
    """T1, GM, WM, brain-mask (float32) and tissue-label (uint8, ``TISSUE_CLASSES``) volumes of
    MNI152 on its 2 mm grid, voxel axes i, j, k = x, y, z; plus ``origin`` and ``step`` (mm)."""
    # The templates are package data of nilearn; keep any hub client nilearn imports offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    out = {
        "t1": t1.get_fdata(dtype=np.float32),
        "gm": datasets.load_mni152_gm_template(resolution=2).get_fdata(dtype=np.float32),
        "wm": datasets.load_mni152_wm_template(resolution=2).get_fdata(dtype=np.float32),
        "mask": datasets.load_mni152_brain_mask(resolution=2).get_fdata(dtype=np.float32),
    }
    # Tissue labels once on the 2 mm grid; slices then sample them nearest-neighbour (one
    # interpolation instead of three trilinear ones per slice).
    out["tissue"] = _tissue_labels(out["gm"], out["wm"], out["mask"])
    affine = np.asarray(t1.affine, dtype=np.float64)
    out["origin"] = affine[:3, 3].astype(np.float64)
    out["step"] = np.diag(affine)[:3].astype(np.float64)
    return out


def _sample_plane(rng: np.random.Generator, size: int, plane: str) -> tuple[np.ndarray, np.ndarray, float]:
    vol = mni_volumes()
    sp = brain_spacing(size)
    c = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * sp
    v, u = np.meshgrid(c, c, indexing="ij")  # v: down the rows, u: along the columns (mm)
    disp = random_displacement((size, size), magnitude=rng.uniform(0.8, 2.0) * size / 64, sigma=size / 6, rng=rng)
    u = u + disp[1] * sp
    v = v + disp[0] * sp
    a = np.deg2rad(rng.uniform(-10, 10))
    s = rng.uniform(0.9, 1.1)
    ur = s * (np.cos(a) * u - np.sin(a) * v) + rng.normal(0, 4)
    vr = s * (np.sin(a) * u + np.cos(a) * v) + rng.normal(0, 4)
    tilt = rng.normal(0, 0.06, 2)
    if plane == "axial":
        pos = rng.uniform(-12.0, 52.0)
        world = (ur, -vr - 18.0, pos + tilt[0] * ur + tilt[1] * vr)
    else:
        pos = rng.uniform(-72.0, 22.0)
        world = (ur, pos + tilt[0] * ur + tilt[1] * vr, -vr + 18.0)
    coords = np.stack([(w - o) / st for w, o, st in zip(world, vol["origin"], vol["step"])])
    t1 = ndimage.map_coordinates(vol["t1"], coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    tissue = ndimage.map_coordinates(vol["tissue"], coords, order=0, mode="constant", cval=0)
    return t1, tissue.astype(np.uint8), float(pos)


def _tissue_labels(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    scores = np.stack([1.0 - mask, csf, gm, wm])
    return np.argmax(scores, axis=0).astype(np.uint8)


def _insert_lesion(image: np.ndarray, parenchyma: np.ndarray, instances: np.ndarray, label: int,
                   kind: int, diameter_mm: float, sp: float, wm_level: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """Place one lesion; returns (new image, area mm^2) or ``None`` when no room is left."""
    r = 0.5 * diameter_mm / sp
    free = parenchyma & (instances == 0)
    depth = ndimage.distance_transform_edt(free)
    cand = np.flatnonzero(depth.ravel() >= max(1.5, 0.6 * r))
    if len(cand) == 0:
        return None
    idx = int(cand[rng.integers(len(cand))])
    cy, cx = divmod(idx, image.shape[1])
    aspect = rng.uniform(0.7, 1.0)
    radii = (r / np.sqrt(aspect), r * np.sqrt(aspect))
    angle = rng.uniform(0, np.pi)
    outer = irregular_blob(image.shape, (cy, cx), radii, angle, rng, irregularity=0.18, edge=0.8)
    soft = outer.full(image.shape) * (parenchyma | (instances == label)).astype(np.float32)
    before = int((instances == 0).sum())
    trial = instances.copy()
    paint_instance(trial, Blob(outer.window, soft[outer.window]), label)
    area_px = before - int((trial == 0).sum())
    if area_px < 2:
        return None
    instances[:] = trial
    if kind == 0:  # enhancing: bright rim, necrotic core, faint oedema halo
        core = irregular_blob(image.shape, (cy, cx), (radii[0] * 0.6, radii[1] * 0.6), angle, rng,
                              irregularity=0.1, edge=0.8).full(image.shape)
        halo = irregular_blob(image.shape, (cy, cx), (radii[0] * 1.7, radii[1] * 1.7), angle, rng,
                              irregularity=0.2, edge=2.0).full(image.shape) * parenchyma
        rim_level = wm_level * rng.uniform(1.3, 1.55)
        core_level = wm_level * rng.uniform(0.35, 0.6)
        image = image * (1.0 - 0.18 * halo * (1.0 - soft))
        target = rim_level + (core_level - rim_level) * core
    else:  # non-enhancing: CSF-like hypointensity with mild texture
        texture = 1.0 + 0.12 * smooth_noise(image.shape, 2.0, rng)
        target = wm_level * rng.uniform(0.3, 0.5) * texture
    image = image * (1.0 - soft) + target * soft
    return image.astype(np.float32), area_px * sp * sp


def render_brain_slice(rng: np.random.Generator, size: int, lesions: list[tuple[int, float]] = (),
                       plane: str | None = None) -> BrainSlice:
    """Render one slice.

    Args:
        rng: the sample's generator.
        size: output size in pixels (square); spacing is ``FOV_MM / size`` mm.
        lesions: (type index, diameter in mm) per lesion to insert; lesions that find no room
            are skipped (check ``len(result.lesion_types)``).
        plane: ``axial`` or ``coronal``; random (70 % axial) when ``None``.
    """
    if plane is None:
        plane = "axial" if rng.random() < 0.7 else "coronal"
    image, tissue, pos = _sample_plane(rng, size, plane)
    parenchyma = tissue >= 2
    wm = tissue == 3
    wm_level = float(np.median(image[wm])) if wm.any() else float(np.percentile(image, 95))
    sp = brain_spacing(size)
    instances = np.zeros((size, size), np.int32)
    types, areas = [], []
    for kind, diameter in lesions:
        out = _insert_lesion(image, parenchyma, instances, len(types) + 1, kind, diameter, sp, wm_level, rng)
        if out is None:
            continue
        image, area = out
        types.append(int(kind))
        areas.append(float(area))
    image = image * random_bias_field((size, size), rng.uniform(0.1, 0.3), rng)
    image = image / max(float(np.percentile(image, 99.5)), 1e-6)
    image = np.clip(image, 0.0, None) ** float(np.exp(rng.uniform(-0.3, 0.3)))
    sigma = rng.uniform(0.015, 0.05)
    # Rician noise: magnitude of a complex signal with Gaussian noise on both channels.
    image = np.sqrt((image + sigma * rng.standard_normal(image.shape)) ** 2
                    + (sigma * rng.standard_normal(image.shape)) ** 2)
    # Scale the mean inside the head to a random level drawn independently of the lesions (an
    # intensity normalisation most MRI pipelines apply), so global brightness carries no label.
    head = tissue > 0
    level = float(np.mean(image[head])) if head.any() else float(np.mean(image))
    image = np.clip(image * (rng.uniform(0.36, 0.44) / max(level, 1e-6)), 0.0, 1.0).astype(np.float32)
    return BrainSlice(image, tissue, instances, types, areas, plane, pos)
