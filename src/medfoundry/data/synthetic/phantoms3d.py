"""Multi-sequence brain-tumour phantoms in 3D, written as an nnU-Net-style folder.

Anatomy is nilearn's MNI152 2009 template (2 mm grid, GM/WM/brain-mask maps shipped with
nilearn, no download), resampled per case through a random similarity transform plus a
smooth deformation onto a grid of ``spacing`` mm whose field of view is the brain's bounding
box with a random margin, so cases differ in shape. Four sequences are synthesised from the
tissue partial volumes with per-case contrast jitter, an MRI-like bias field and noise:

===========  =====  =====  =====  =========  ==========  ======
sequence     CSF    GM     WM     necrosis   enhancing   oedema
===========  =====  =====  =====  =========  ==========  ======
T1           dark   mid    bright dark       mid-dark    mid
T1c          dark   mid    bright dark       very bright mid
T2           bright mid    dark   bright     bright      bright
FLAIR        dark   mid    mid    mid        bright      very bright
===========  =====  =====  =====  =========  ==========  ======

One tumour per case, BraTS labels: 1 necrotic core (NCR), 2 oedema (ED), 3 enhancing tumour
(ET), nested as in BraTS: ET is a rim around NCR, and ED surrounds both; the regions
WT = {1, 2, 3}, TC = {1, 3}, ET = {3} satisfy ET ⊆ TC ⊆ WT.

A second family, ``kidney`` (CT-like kidneys with tumours and cysts, KiTS labels), lives in
:mod:`medfoundry.data.synthetic.kidney3d`. Layout written by :func:`make_phantoms` (nnU-Net v2
raw-dataset naming)::

    OUT/imagesTr/BRATSPH_0000_0000.nii.gz ... _0003.nii.gz   T1, T1c, T2, FLAIR
    OUT/labelsTr/BRATSPH_0000.nii.gz                         uint8 labels 0..3
    OUT/imagesTs/, OUT/labelsTs/                             held-out cases, same naming
    OUT/dataset.json                                         channel names, labels, regions, counts

Case ``i`` of the training (test) set depends only on ``(seed, "train" ("test"), i)``, so the
held-out cases do not change with the number of training cases, and the same seed gives the
same bytes (gzip headers carry no time stamp).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from ...errors import DataError
from ...io.volumes import write_nifti
from ...randomfields import random_bias_field, random_displacement, smooth_noise
from ...utils import atomic_write_json

__all__ = ["SEQUENCES", "BRATS_LABELS", "BRATS_REGIONS", "PhantomCase", "PhantomFamily", "FAMILIES",
           "render_brain_tumour", "make_phantoms"]

SEQUENCES = ("T1", "T1c", "T2", "FLAIR")
BRATS_LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
BRATS_REGIONS = "WT=1,2,3;TC=1,3;ET=3"

# Mean intensity per sequence (rows) and tissue (columns: CSF, GM, WM, NCR, ET, ED), in [0, 1].
_CONTRAST = np.array([
    [0.15, 0.45, 0.70, 0.20, 0.40, 0.50],
    [0.15, 0.45, 0.70, 0.20, 0.95, 0.50],
    [0.95, 0.55, 0.35, 0.85, 0.70, 0.80],
    [0.10, 0.50, 0.40, 0.55, 0.75, 0.90],
], dtype=np.float32)
_MARGIN_MM = (3.0, 12.0)  # random margin around the brain's bounding box, per side


class PhantomCase:
    """One rendered phantom: ``image`` (C, X, Y, Z) float32, ``label`` (X, Y, Z) uint8 and the
    voxel -> world ``affine`` (4, 4), mm; voxel axes in NIfTI order (i, j, k)."""

    def __init__(self, image: np.ndarray, label: np.ndarray, affine: np.ndarray):
        self.image, self.label, self.affine = image, label, affine


@dataclass(frozen=True)
class PhantomFamily:
    """A phantom generator and what ``dataset.json`` says about it. ``render(rng, spacing)``
    returns a :class:`PhantomCase`; ``spacing`` is the in-plane voxel size in mm."""

    name: str
    render: Callable[[np.random.Generator, float], PhantomCase]
    channels: tuple[str, ...]
    labels: dict[str, int]
    regions: str
    prefix: str
    description: str


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _brain_box_mm(vol: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(vol["mask"] > 0.5)
    lo = vol["origin"] + idx.min(0) * vol["step"]
    hi = vol["origin"] + idx.max(0) * vol["step"]
    return lo, hi


def _tumour_shell(shape: tuple[int, ...], centre: np.ndarray, radius: float, rng: np.random.Generator,
                  irregularity: float = 0.25) -> np.ndarray:
    """Normalised radius field: < 1 inside an irregular sphere of ``radius`` voxels."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    wobble = 1.0 + irregularity * smooth_noise(shape, sigma=max(2.0, radius / 2), rng=rng)
    return dist / (radius * wobble)


def render_brain_tumour(rng: np.random.Generator, spacing: float = 3.0) -> PhantomCase:
    """Render one phantom on a grid of ``spacing`` mm (isotropic).

    Args:
        rng: the case's generator (everything random about the case comes from it).
        spacing: voxel size in mm; 3 mm gives about 52 x 64 x 56 voxels.

    Returns:
        A :class:`PhantomCase` with the four sequences as channels.
    """
    from .brain import mni_volumes

    if not 1.0 <= spacing <= 8.0:
        raise DataError(f"phantom spacing must be within [1, 8] mm, got {spacing}", field="spacing")
    vol = mni_volumes()
    lo, hi = _brain_box_mm(vol)
    margin_lo = rng.uniform(*_MARGIN_MM, size=3)
    margin_hi = rng.uniform(*_MARGIN_MM, size=3)
    start = lo - margin_lo
    shape = tuple(int(np.ceil(((hi + margin_hi) - start)[a] / spacing)) + 1 for a in range(3))
    affine = np.eye(4)
    affine[:3, :3] = np.diag([spacing] * 3)
    affine[:3, 3] = start

    # world point of each output voxel, then a random similarity + smooth warp into MNI space
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    world = grid * spacing + start[:, None, None, None]
    centre = (lo + hi) / 2
    rot = _rotation(np.deg2rad(rng.uniform(-8, 8, size=3))) * rng.uniform(0.93, 1.07)
    src = np.einsum("ij,j...->i...", rot, world - centre[:, None, None, None]) + centre[:, None, None, None]
    src += rng.normal(0, 3.0, size=3)[:, None, None, None]
    src += random_displacement(shape, magnitude=4.0, sigma=8.0, rng=rng).astype(np.float64)  # mm
    coords = (src - vol["origin"][:, None, None, None]) / vol["step"][:, None, None, None]
    sample = {k: ndimage.map_coordinates(vol[k], coords, order=1, mode="constant", cval=0.0).astype(np.float32)
              for k in ("gm", "wm", "mask")}
    brain = np.clip(sample["mask"], 0, 1)
    gm = np.clip(sample["gm"], 0, 1) * brain
    wm = np.clip(sample["wm"], 0, 1) * brain
    csf = np.clip(brain - gm - wm, 0, 1)

    label = _place_tumour(shape, wm, brain, spacing, rng)
    tissue = np.stack([csf, gm, wm,
                       (label == 1).astype(np.float32), (label == 3).astype(np.float32),
                       (label == 2).astype(np.float32)])
    # tumour voxels replace the healthy tissue's partial volumes
    healthy = 1.0 - tissue[3:].sum(0)
    tissue[:3] *= healthy
    tissue = ndimage.gaussian_filter(tissue, sigma=(0, 0.6, 0.6, 0.6))  # partial-volume edges
    contrast = _CONTRAST * rng.uniform(0.9, 1.1, size=_CONTRAST.shape).astype(np.float32)
    image = np.einsum("st,t...->s...", contrast, tissue).astype(np.float32)
    for s in range(len(SEQUENCES)):
        image[s] *= random_bias_field(shape, strength=0.15, rng=rng)
        image[s] += rng.normal(0, 0.03, size=shape).astype(np.float32) * (brain > 0.05)
        image[s] = np.clip(image[s], 0, None) * 1000.0 * rng.uniform(0.8, 1.2)  # MR units differ per scan
    return PhantomCase(image.astype(np.float32), label, affine)


def _place_tumour(shape: tuple[int, ...], wm: np.ndarray, brain: np.ndarray, spacing: float,
                  rng: np.random.Generator) -> np.ndarray:
    radius = rng.uniform(20.0, 32.0) / spacing  # whole-tumour radius, voxels
    depth = ndimage.distance_transform_edt(brain > 0.5)
    candidates = np.argwhere((depth >= 0.6 * radius) & (wm > 0.3))
    if len(candidates) == 0:
        candidates = np.argwhere(depth >= depth.max() * 0.8)
    centre = candidates[rng.integers(len(candidates))].astype(np.float32)
    whole = _tumour_shell(shape, centre, radius, rng)
    core = _tumour_shell(shape, centre, radius * rng.uniform(0.55, 0.75), rng)
    necrosis = _tumour_shell(shape, centre + rng.normal(0, 0.5, 3), radius * rng.uniform(0.25, 0.4), rng,
                             irregularity=0.15)
    inside = brain > 0.5
    label = np.zeros(shape, np.uint8)
    label[(whole < 1) & inside] = 2
    label[(core < 1) & inside] = 3
    label[(necrosis < 1) & (core < 1) & inside] = 1
    return label


def _case_rng(seed: int, subset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(subset.encode()), int(index)])


def _families() -> dict[str, PhantomFamily]:
    from .kidney3d import KITS_LABELS, KITS_REGIONS, render_kidney

    return {
        "brain_tumour": PhantomFamily("brain_tumour", render_brain_tumour, SEQUENCES, BRATS_LABELS, BRATS_REGIONS,
                                      "BRATSPH", "multi-sequence brain-tumour phantoms on MNI152"),
        "kidney": PhantomFamily("kidney", render_kidney, ("CT",), KITS_LABELS, KITS_REGIONS, "KIDPH",
                                "CT-like kidney phantoms with tumours and cysts"),
    }


FAMILIES = ("brain_tumour", "kidney")


def make_phantoms(out: str | Path, family: str = "brain_tumour", cases: int = 8, test_cases: int = 4, seed: int = 0,
                  spacing: float = 3.0, progress: Callable[[int, int], Any] | None = None) -> Path:
    """Write ``cases`` training and ``test_cases`` held-out phantoms as an nnU-Net folder.

    Args:
        out: folder to create (module docstring for the layout); must not hold a
            ``dataset.json`` already.
        family: ``brain_tumour`` or ``kidney``.
        cases, test_cases: numbers of training and held-out cases.
        seed: the same seed gives the same bytes.
        spacing: voxel size in mm (in-plane for ``kidney``, whose slices are twice as thick).
        progress: called as ``progress(done, total)`` after each case.

    Returns:
        ``out``.
    """
    from ...utils import look_up_option

    spec = _families()[look_up_option(family, FAMILIES, what="phantom family")]
    out = Path(out)
    if cases < 1 or test_cases < 0:
        raise DataError(f"need cases >= 1 and test_cases >= 0, got {cases} and {test_cases}", field="cases")
    if (out / "dataset.json").exists():
        raise DataError("folder already holds a dataset.json; choose a new folder", path=out)
    total = cases + test_cases
    done = 0
    for subset, count, offset in (("train", cases, 0), ("test", test_cases, cases)):
        images = out / ("imagesTr" if subset == "train" else "imagesTs")
        labels = out / ("labelsTr" if subset == "train" else "labelsTs")
        for i in range(count):
            case = spec.render(_case_rng(seed, subset, i), spacing)
            name = f"{spec.prefix}_{offset + i:04d}"
            for c in range(len(spec.channels)):
                write_nifti(images / f"{name}_{c:04d}.nii.gz", case.image[c], case.affine)
            write_nifti(labels / f"{name}.nii.gz", case.label, case.affine)
            done += 1
            if progress is not None:
                progress(done, total)
    atomic_write_json(out / "dataset.json", {
        "name": f"{spec.name}_phantoms",
        "description": f"medfoundry {spec.description} (seed {seed}, {spacing} mm)",
        "channel_names": {str(i): s for i, s in enumerate(spec.channels)},
        "labels": spec.labels,
        "regions": spec.regions,
        "numTraining": cases,
        "numTest": test_cases,
        "file_ending": ".nii.gz",
    })
    return out
