"""The task catalogue of the embedded default database: what each task shows and its label.

Every task is a ``sample(rng, index, size) -> (image, target, stratum, facts)`` function over
one of the scene renderers (``brain``, ``cells``, ``chest``, ``fundus``). The ``stratum`` is
only used to split 60/20/20 per stratum, so every split keeps the class (or object-count)
mix. ``facts`` are ground-truth scene quantities (lesion area, nucleus areas, ...) that are not
stored; tests use them to check that a label follows from the concept it is meant to test.

Classification labels cycle with the sample index (``index % num_classes``), so every
class holds the same number of samples whatever the database size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import chain
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..tasks import Modality, TaskSpec
from . import brain, cells, chest, fundus
from ._common import boxes_from_instances

__all__ = ["SyntheticTask", "CATALOG", "LESION_SIZE_BOUNDS_MM2"]

Sample = tuple[np.ndarray, Any, int, dict[str, Any]]

# Lesion-size classes of the downstream task, by measured in-slice lesion area (mm^2).
# The gap between them keeps the label unambiguous at either resolution.
LESION_SIZE_BOUNDS_MM2 = {"small": (40.0, 300.0), "large": (550.0, 1800.0)}


@dataclass(frozen=True)
class SyntheticTask:
    """One task of the synthetic catalogue (geometry depends on the chosen image size)."""

    name: str
    group: str  # "pretrain" or "downstream"
    role: str  # "pretrain", "in-domain" or "out-of-domain"
    kind: str  # a registered task kind (medfoundry.tasks)
    modality: Modality
    classes: tuple[str, ...]
    channels: int
    n_small: int  # samples at scale "small"
    description: str
    sample: Callable[[np.random.Generator, int, int], Sample]
    spacing_mm: Callable[[int], float] | None = None
    image_dtype: str = "float16"
    source: str = ""

    def spec(self, size: int) -> TaskSpec:
        sp = None if self.spacing_mm is None else (self.spacing_mm(size),) * 2
        return TaskSpec(self.name, self.kind, self.classes, self.modality, 2, (size, size), self.channels,
                        description=self.description, spacing=sp, group=self.group,
                        extra={"role": self.role, "synthetic": True, "source": self.source})


# ------------------------------------------------------------------------------ tomographic
def _lesions(rng: np.random.Generator, n: int, types: tuple[int, ...] = (0, 1),
             diameter_mm: tuple[float, float] = (10.0, 40.0)) -> list[tuple[int, float]]:
    return [(int(rng.choice(types)), float(rng.uniform(*diameter_mm))) for _ in range(n)]


def _lesion_count(rng: np.random.Generator) -> int:
    return int(rng.choice(4, p=[0.15, 0.45, 0.25, 0.15]))


def _mri_tissue(rng, index, size) -> Sample:
    s = brain.render_brain_slice(rng, size)
    return s.image[None], s.tissue, int(s.plane == "axial"), {}


def _mri_lesion_seg(rng, index, size) -> Sample:
    s = brain.render_brain_slice(rng, size, _lesions(rng, _lesion_count(rng)))
    return s.image[None], (s.lesions > 0).astype(np.uint8), min(len(s.lesion_types), 2), {}


def _mri_lesion_det(rng, index, size) -> Sample:
    s = brain.render_brain_slice(rng, size, _lesions(rng, _lesion_count(rng)))
    types = {k + 1: t for k, t in enumerate(s.lesion_types)}
    boxes, labels, _ = boxes_from_instances(s.lesions, types)
    return s.image[None], {"boxes": boxes, "labels": labels}, min(len(boxes), 2), {"instances": s.lesions}


def _mri_lesion_type(rng, index, size) -> Sample:
    label = index % 3
    for _ in range(20):
        wanted = [] if label == 0 else _lesions(rng, int(rng.integers(1, 3)), types=(label - 1,))
        s = brain.render_brain_slice(rng, size, wanted)
        if label == 0 or s.lesion_types:
            return s.image[None], label, label, {}
    raise RuntimeError(f"mri_lesion_type: no room for a lesion in sample {index}")  # pragma: no cover


def _mri_lesion_size(rng, index, size) -> Sample:
    label = index % 3
    if label == 0:
        return brain.render_brain_slice(rng, size).image[None], 0, 0, {"lesion_area_mm2": 0.0}
    lo, hi = LESION_SIZE_BOUNDS_MM2["small" if label == 1 else "large"]
    diameters = (12.0, 18.0) if label == 1 else (28.0, 42.0)
    for _ in range(40):
        s = brain.render_brain_slice(rng, size, _lesions(rng, 1, diameter_mm=diameters))
        if s.lesion_area_mm2 and lo <= s.lesion_area_mm2[0] <= hi:
            return s.image[None], label, label, {"lesion_area_mm2": s.lesion_area_mm2[0]}
    raise RuntimeError(f"mri_lesion_size: could not draw a lesion of the requested size ({index})")  # pragma: no cover


# ------------------------------------------------------------------------------ microscopy
def _fluo_specs(rng: np.random.Generator, n_mitotic: int, n: int = 90) -> Iterator[cells.NucleusSpec]:
    # Lazy: the renderer stops drawing nuclei once the coverage target is met.
    return chain((cells.nucleus("mitotic", rng) for _ in range(n_mitotic)),
                 (cells.nucleus("interphase", rng) for _ in range(n)))


def _fluo_seg(rng, index, size) -> Sample:
    coverage = rng.uniform(0.05, 0.45)
    f = cells.render_fluorescence(rng, size, _fluo_specs(rng, int(rng.poisson(0.7))), coverage=coverage)
    return f.image, (f.instances > 0).astype(np.uint8), int(coverage > 0.25), {}


def _fluo_det(rng, index, size) -> Sample:
    has_mitosis = index % 2
    n_mit = int(rng.integers(1, 4)) if has_mitosis else 0
    f = cells.render_fluorescence(rng, size, _fluo_specs(rng, n_mit), coverage=rng.uniform(0.05, 0.35))
    kinds = {k + 1: t for k, t in enumerate(f.kinds)}
    boxes, labels, _ = boxes_from_instances(f.instances, kinds)
    return f.image, {"boxes": boxes, "labels": labels}, int((labels == 1).any()), {"instances": f.instances}


def _endless(rng: np.random.Generator, kind: str, limit: int = 400) -> Iterator[cells.NucleusSpec]:
    for _ in range(limit):  # the coverage target stops it long before the limit
        yield cells.nucleus(kind, rng, "stain")


def _with_dab(specs: Iterable[cells.NucleusSpec], fraction: float,
              rng: np.random.Generator) -> Iterator[cells.NucleusSpec]:
    for s in specs:
        yield replace(s, dab=float(rng.uniform(0.5, 1.0))) if fraction > 0 and rng.random() < fraction else s


_STAIN_SEG_CLASS = {0: 1, 3: 1, 4: 1, 1: 2, 2: 3}  # epithelial/mitotic/atypical -> 1, lymphocyte 2, spindle 3


def _stain_seg(rng, index, size) -> Sample:
    stain = "he" if index % 2 == 0 else "ihc"
    specs = ([cells.nucleus("lymphocyte", rng, "stain") for _ in range(int(rng.integers(0, 10)))]
             + [cells.nucleus("spindle", rng, "stain") for _ in range(int(rng.integers(0, 6)))]
             + [cells.nucleus("epithelial", rng, "stain") for _ in range(10)])
    specs = [specs[j] for j in rng.permutation(len(specs))]
    frac = rng.uniform(0.0, 0.6) if stain == "ihc" else 0.0
    f = cells.render_stain(rng, size, _with_dab(chain(specs, _endless(rng, "epithelial")), frac, rng),
                           stain=stain, coverage=rng.uniform(0.1, 0.35))
    lut = np.zeros(len(f.kinds) + 1, np.uint8)
    for k, t in enumerate(f.kinds):
        lut[k + 1] = _STAIN_SEG_CLASS[t]
    return f.image, lut[f.instances], index % 2, {}


def _stain_multilabel(rng, index, size) -> Sample:
    stain = "he" if rng.random() < 0.5 else "ihc"
    want = rng.random(3) < 0.45  # mitotic figure, lymphocytes, spindle cells
    specs = []
    if want[0]:
        specs += [cells.nucleus("mitotic", rng, "stain") for _ in range(int(rng.integers(1, 3)))]
    if want[1]:
        specs += [cells.nucleus("lymphocyte", rng, "stain") for _ in range(int(rng.integers(4, 11)))]
    if want[2]:
        specs += [cells.nucleus("spindle", rng, "stain") for _ in range(int(rng.integers(3, 7)))]
    frac = rng.uniform(0.25, 0.7) if stain == "ihc" and rng.random() < 0.6 else 0.0
    f = cells.render_stain(rng, size, _with_dab(chain(specs, _endless(rng, "epithelial")), frac, rng),
                           stain=stain, coverage=rng.uniform(0.12, 0.35))
    kinds = np.asarray(f.kinds)
    target = np.array([(kinds == 3).any(), (kinds == 1).sum() >= 3, (kinds == 2).any(), any(f.dab_positive)],
                      dtype=np.uint8)
    return f.image, target, int(target[0]), {}


def _stain_atypia(rng, index, size) -> Sample:
    label = index % 2
    kind = "atypical" if label else "epithelial"
    specs = chain([cells.nucleus("lymphocyte", rng, "stain") for _ in range(int(rng.integers(0, 5)))],
                  _endless(rng, kind))
    # Same coverage distribution for both classes: the label must not show in mean colour.
    f = cells.render_stain(rng, size, specs, stain="he", coverage=rng.uniform(0.15, 0.35))
    areas = np.asarray(f.areas_px, float)[np.asarray(f.kinds) == cells.STAIN_TYPES.index(kind)]
    return f.image, label, label, {"median_nucleus_area_px": float(np.median(areas)) if len(areas) else 0.0,
                                   "coverage": float((f.instances > 0).mean())}


# ------------------------------------------------------------------------------ x-ray
def _nodule_diameters(rng: np.random.Generator, n: int) -> list[float]:
    return [float(rng.uniform(16.0, 36.0)) for _ in range(n)]


def _xray_finding(rng, index, size) -> Sample:
    label = index % 3
    for _ in range(20):
        r = chest.render_chest(rng, size, _nodule_diameters(rng, int(rng.integers(1, 3))) if label == 1 else [],
                               opacity=label == 2)
        if (label == 0 or (label == 1 and r.nodule_diameters_mm)
                or (label == 2 and r.opacity is not None and r.opacity.any())):
            return r.image[None], label, label, {}
    raise RuntimeError(f"xray_finding_cls: could not place the finding in sample {index}")  # pragma: no cover


def _xray_lung_seg(rng, index, size) -> Sample:
    n = int(rng.random() < 0.3) * int(rng.integers(1, 3))
    r = chest.render_chest(rng, size, _nodule_diameters(rng, n), opacity=bool(rng.random() < 0.3))
    return r.image[None], r.anatomy, 0, {}


def _xray_nodule_det(rng, index, size) -> Sample:
    n = int(rng.choice(4, p=[0.3, 0.35, 0.2, 0.15]))
    r = chest.render_chest(rng, size, _nodule_diameters(rng, n), opacity=bool(rng.random() < 0.2))
    boxes, labels, _ = boxes_from_instances(r.nodules)
    return r.image[None], {"boxes": boxes, "labels": labels}, min(len(boxes), 2), {"instances": r.nodules}


# ------------------------------------------------------------------------------ other (OOD)
def _fundus_lesion(rng, index, size) -> Sample:
    label = index % 3
    f = fundus.render_fundus(rng, size, label)
    facts = {"haemorrhage_px": float((f.lesion == 1).sum()), "exudate_px": float((f.lesion == 2).sum())}
    return f.image, label, label, facts


_T, _M, _X, _O = Modality.TOMOGRAPHIC, Modality.MICROSCOPIC, Modality.XRAY, Modality.OTHER
_MNI = "MNI152 2009 T1 template + GM/WM maps (nilearn)"

CATALOG: tuple[SyntheticTask, ...] = (
    SyntheticTask("mri_tissue_seg", "pretrain", "pretrain", "segmentation", _T, brain.TISSUE_CLASSES, 1, 300,
                  "Brain MRI slice: CSF / grey / white matter segmentation", _mri_tissue, brain.brain_spacing,
                  source=_MNI),
    SyntheticTask("mri_lesion_seg", "pretrain", "pretrain", "segmentation", _T, ("background", "lesion"), 1,
                  300, "Brain MRI slice: segment 0-3 focal lesions (enhancing or not)", _mri_lesion_seg,
                  brain.brain_spacing, source=_MNI),
    SyntheticTask("mri_lesion_det", "pretrain", "pretrain", "detection", _T, brain.LESION_TYPES, 1, 300,
                  "Brain MRI slice: boxes of enhancing / non-enhancing lesions", _mri_lesion_det, brain.brain_spacing,
                  source=_MNI),
    SyntheticTask("mri_lesion_type_cls", "pretrain", "pretrain", "classification", _T,
                  ("no_lesion", "enhancing", "non_enhancing"), 1, 360,
                  "Brain MRI slice: no lesion / enhancing (ring) / non-enhancing lesions", _mri_lesion_type,
                  brain.brain_spacing, source=_MNI),
    SyntheticTask("fluo_nuclei_seg", "pretrain", "pretrain", "segmentation", _M, ("background", "nucleus"), 1,
                  300, "Fluorescence nuclei (DAPI-like): nucleus vs background", _fluo_seg, cells.micro_spacing_mm,
                  source="rendered nuclei"),
    SyntheticTask("fluo_mitosis_det", "pretrain", "pretrain", "detection", _M, cells.FLUO_TYPES, 1, 300,
                  "Fluorescence nuclei: boxes of interphase and mitotic nuclei", _fluo_det, cells.micro_spacing_mm,
                  source="rendered nuclei"),
    SyntheticTask("stain_nuclei_seg", "pretrain", "pretrain", "segmentation", _M,
                  ("background", "epithelial", "lymphocyte", "stromal"), 3, 300,
                  "H&E / IHC field: nuclei by type (epithelial, lymphocyte, stromal spindle)", _stain_seg,
                  cells.micro_spacing_mm, "uint8", "rendered nuclei, Beer-Lambert stain mixing"),
    SyntheticTask("stain_cells_multilabel", "pretrain", "pretrain", "multilabel", _M,
                  ("mitotic_figure", "lymphocytes", "spindle_cells", "dab_positive"), 3, 360,
                  "H&E / IHC field: which cell populations are present", _stain_multilabel, cells.micro_spacing_mm,
                  "uint8", "rendered nuclei, Beer-Lambert stain mixing"),
    SyntheticTask("xray_finding_cls", "pretrain", "pretrain", "classification", _X,
                  ("normal", "nodule", "opacity"), 1, 360, "Chest radiograph: normal / nodule / opacity",
                  _xray_finding, chest.chest_spacing, source="projected torso phantom"),
    SyntheticTask("xray_lung_seg", "pretrain", "pretrain", "segmentation", _X, chest.CHEST_CLASSES, 1, 300,
                  "Chest radiograph: lung fields and heart", _xray_lung_seg, chest.chest_spacing,
                  source="projected torso phantom"),
    SyntheticTask("xray_nodule_det", "pretrain", "pretrain", "detection", _X, ("nodule",), 1, 300,
                  "Chest radiograph: boxes of pulmonary nodules", _xray_nodule_det, chest.chest_spacing,
                  source="projected torso phantom"),
    SyntheticTask("mri_lesion_size_cls", "downstream", "in-domain", "classification", _T,
                  ("no_lesion", "small", "large"), 1, 360,
                  "Brain MRI slice (new slices): lesion burden none / small (<=300 mm2) / large (>=550 mm2)",
                  _mri_lesion_size, brain.brain_spacing, source=_MNI),
    SyntheticTask("stain_atypia_cls", "downstream", "in-domain", "classification", _M,
                  ("regular", "atypical"), 3, 360,
                  "H&E field: regular vs enlarged pleomorphic (atypical) nuclei at equal nuclear coverage",
                  _stain_atypia, cells.micro_spacing_mm, "uint8", "rendered nuclei, Beer-Lambert stain mixing"),
    SyntheticTask("fundus_lesion_cls", "downstream", "out-of-domain", "classification", _O,
                  fundus.FUNDUS_FINDINGS, 3, 360,
                  "Fundus photo crop: healthy / haemorrhages / hard exudates (modality unseen in pretraining)",
                  _fundus_lesion, None, "uint8", "skimage.data.retina() crops + drawn lesions"),
)
