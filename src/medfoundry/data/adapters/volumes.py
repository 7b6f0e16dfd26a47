"""Tomographic volumes (NIfTI, DICOM series) plus label volumes, sliced into 2D samples.

Inputs:

* ``images``: a folder holding one entry per case: a ``.nii``/``.nii.gz`` file, a ``.dcm``
  file or a sub-folder with one DICOM series. nnU-Net's channel files ``case_0000.nii.gz``,
  ``case_0001.nii.gz`` are stacked as channels of case ``case``; a 4D NIfTI (H, W, D, C), as in
  the Medical Segmentation Decathlon, gives C channels.
* ``labels``: a folder with one label volume per case, same stem (optionally with a mask
  suffix such as ``_seg``), same voxel grid as the image.

Slicing: along on-disk axis ``axis`` (0, 1 or 2 of nibabel's (H, W, D) order; 2 = axial for
the usual RAS/LPS acquisitions); a slice keeps the two other axes in on-disk order as
(rows, columns). Which slices are kept:

* ``keep="foreground"``: slices with at least ``min_foreground`` labelled pixels, plus a
  seeded random ``background_fraction`` of the others (negatives teach the model to say "no");
* ``keep="all"``: every slice.

Intensity, per volume and channel (never per slice, so slices of one scan stay comparable):

* ``ct``: window ``(level, width)`` in HU, clipped to [level - width/2, level + width/2] and
  scaled to [0, 1] (default 40/400, soft tissue);
* ``mr``: clip to the ``percentiles`` of the non-zero voxels, scale to [0, 1];
* ``minmax``: the volume's range to [0, 1];
* ``auto``: ``ct`` if the volume goes below -500 (HU air), else ``mr``.

With a three-entry ``image_size`` (D, H, W) each case is stored whole as one sample of a
``spatial_dims=3`` task instead (depth along ``axis``), for 3D encoders.

Splits are drawn per case (or per patient with ``group_pattern``), stratified by the highest
class present, so slices of one patient never land in two splits. Each sample records its
in-plane spacing (mm, after resizing) and its source ``case:axis=a:slice=k``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ...io import VOLUME_SUFFIXES, file_suffix, read_volume
from ..tasks import TaskSpec
from ._common import (DEFAULT_RATIOS, Fit, ImportResult, Sample, check_size, finish, grouped_split, natural_key,
                      resize_image, resize_mask, scale_spacing, strip_suffix)
from .segmentation_folders import MASK_SUFFIXES, build_value_map

__all__ = ["import_volumes", "normalize_volume", "INTENSITY_MODES"]

INTENSITY_MODES = ("auto", "ct", "mr", "minmax")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class _Case:
    name: str
    images: list[Path]
    label: Path


def import_volumes(images: str | Path, labels: str | Path, db: str | Path, task: str, *, image_size: Sequence[int],
                   classes: Sequence[str] | None = None, label_values: Sequence[int] | None = None, axis: int = 2,
                   keep: str = "foreground", background_fraction: float = 0.0, min_foreground: int = 1,
                   intensity: str = "auto", window: Sequence[float] = (40.0, 400.0),
                   percentiles: Sequence[float] = (0.5, 99.5), group_pattern: str | None = None,
                   modality: str = "tomographic", fit: str = "stretch",
                   split_ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0,
                   image_dtype: str = "float16", description: str = "", group: str = "pretrain",
                   progress: bool = False) -> ImportResult:
    """Slice image volumes and their label volumes into a 2D segmentation task.

    Args:
        images: folder of image volumes (module docstring for the accepted layouts).
        labels: folder of label volumes with matching stems.
        db: database folder (created if missing; the task is added otherwise).
        task: task name.
        image_size: (H, W) of the stored slices (images linear, labels nearest), or
            (D, H, W) to store whole volumes as a ``spatial_dims=3`` task: one sample per case,
            depth along ``axis``, then the other two axes in on-disk order (``keep`` and
            ``background_fraction`` do not apply).
        classes: class names, index 0 = background; default ``background, class_<value>...``.
        label_values: raw label value of each class in class order (as ``mask_values`` of
            :func:`~medfoundry.data.adapters.import_segmentation_folders`).
        axis: on-disk axis to slice along (0, 1, 2).
        keep: ``foreground`` or ``all``.
        background_fraction: share of slices without foreground kept when ``keep="foreground"``.
        min_foreground: labelled pixels a slice needs to count as foreground.
        intensity: ``auto``, ``ct``, ``mr`` or ``minmax`` (module docstring).
        window: CT (level, width) in HU.
        percentiles: MR (lower, upper) percentiles of the non-zero voxels.
        group_pattern: regex whose first group extracts the patient id from the case name;
            cases of one patient then share a split.
        modality, fit, split_ratios, seed, image_dtype, description, group, progress: as in
            :func:`~medfoundry.data.adapters.import_image_folder`.

    Returns:
        An :class:`ImportResult`.
    """
    volumetric = len(image_size) == 3
    size = check_size(image_size, dims=3 if volumetric else 2, fit=fit)
    if volumetric and fit != "stretch":
        raise DataError("fit='pad' is for 2D slices; 3D volumes are resized with 'stretch'", field="fit")
    if axis not in (0, 1, 2):
        raise DataError(f"axis must be 0, 1 or 2, got {axis}", field="axis")
    if keep not in ("foreground", "all"):
        raise DataError(f"keep must be 'foreground' or 'all', got {keep!r}", field="keep")
    if intensity not in INTENSITY_MODES:
        raise DataError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}", field="intensity")
    if not 0.0 <= background_fraction <= 1.0:
        raise DataError(f"background_fraction must be in [0, 1], got {background_fraction}",
                        field="background_fraction")
    cases = _find_cases(Path(images), Path(labels))

    # Pass 1: labels only, one at a time (a large CT collection does not fit in memory), to
    # choose the slices and the class map; pass 2 reads each case's image and label again.
    background = int(label_values[0]) if label_values is not None else 0
    values: set[int] = set()
    case_values: list[set[int]] = []
    fg_per_case: list[np.ndarray] = []
    for case in cases:
        lab = _read_label(case)
        uniq = set(np.unique(lab).tolist())
        values |= uniq
        case_values.append(uniq)
        fg_per_case.append(np.count_nonzero(lab != background, axis=tuple(a for a in range(3) if a != axis)))
        del lab
    value_map = build_value_map(sorted(values), classes, label_values, Path(labels))
    bad = sorted(values - set(value_map))
    if bad:
        raise DataError(f"label values {bad[:5]} are not mapped to a class (mapping: {value_map})",
                        path=labels, field="label_values")
    if value_map.get(background, 0) != 0:
        raise DataError(f"label value {background} must map to class 0 (background)", field="label_values")
    if classes is None:
        classes = ["background"] + [f"class_{v}" for v, k in sorted(value_map.items(), key=lambda t: t[1]) if k > 0]
    lut = np.zeros(max(value_map) + 1, dtype=np.uint8)
    for v, k in value_map.items():
        lut[v] = k

    records: list[tuple[int, int]] = []  # (case index, slice index or -1 = whole volume), ordered by case
    strata, group_of = [], []
    for c, case in enumerate(cases):
        if volumetric:
            records.append((c, -1))
            strata.append(max(value_map[v] for v in case_values[c]))
            group_of.append(_patient(case.name, group_pattern))
            continue
        fg_counts = fg_per_case[c]
        slices = np.arange(len(fg_counts))
        if keep == "foreground":
            fg = slices[fg_counts >= min_foreground]
            bg = slices[fg_counts < min_foreground]
            rng = np.random.default_rng([seed, zlib.crc32(case.name.encode())])
            n_bg = int(np.floor(background_fraction * len(bg) + 0.5))
            slices = np.sort(np.concatenate([fg, rng.choice(bg, size=n_bg, replace=False)])).astype(int)
        case_stratum = max(value_map[v] for v in case_values[c])
        for k in slices:
            records.append((c, int(k)))
            strata.append(case_stratum)
            group_of.append(_patient(case.name, group_pattern))
    if not records:
        raise DataError(f"no slice kept: no label volume has {min_foreground}+ foreground pixels on any slice "
                        "(use keep='all' or lower min_foreground)", path=labels, field="keep")
    splits = grouped_split(group_of, strata, split_ratios, seed)

    first_case = cases[records[0][0]]
    pending = {first_case.name: _read_case_image(first_case)}  # read once: gives the channel count
    channels = pending[first_case.name].array.shape[3]
    what = f"volumes (depth = axis {axis})" if volumetric else f"slices (axis {axis}) of volumes"
    spec = TaskSpec(task, "segmentation", tuple(classes), modality, 3 if volumetric else 2, size, channels,
                    description=description or f"{what} from {Path(images).name}",
                    group=group, extra={"slice_axis": axis, "intensity": intensity})
    cache: dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float]]] = {}
    cache_spacing: dict[str, tuple[float, float, float]] = {}

    def load(r: tuple[int, int]) -> Sample:
        case = cases[r[0]]
        if case.name not in cache:
            cache.clear()  # one case in memory at a time; records are ordered by case
            vol = pending.pop(case.name) if case.name in pending else _read_case_image(case)
            lab = lut[_read_label(case)]
            if vol.array.shape[:3] != lab.shape:
                raise DataError(f"image shape {vol.array.shape[:3]} differs from the label's {lab.shape}",
                                path=case.label, field="labels")
            arr = np.stack([normalize_volume(vol.array[..., ch], intensity, window, percentiles)
                            for ch in range(vol.array.shape[3])], axis=0)  # (C, H, W, D)
            cache[case.name] = (arr, lab, tuple(s for a, s in enumerate(vol.spacing) if a != axis))
            cache_spacing.clear()
            cache_spacing[case.name] = vol.spacing
        arr, lab, inplane = cache[case.name]
        if r[1] < 0:  # whole volume: depth = the slicing axis, then the other two in on-disk order
            vol_spacing = cache_spacing[case.name]
            image = np.moveaxis(arr, axis + 1, 1)
            mask = np.moveaxis(lab, axis, 0)
            spacing = tuple(vol_spacing[a] for a in [axis] + [b for b in range(3) if b != axis])
            return Sample(resize_image(image, size), resize_mask(mask, size),
                          scale_spacing(spacing, image.shape[1:], size), f"{case.name}:axis={axis}")
        image = np.take(arr, r[1], axis=axis + 1)
        mask = np.take(lab, r[1], axis=axis)
        plan = Fit.plan(image.shape[1:], size, fit)
        return Sample(plan.image(image), plan.mask(mask), plan.spacing(inplane),
                      f"{case.name}:axis={axis}:slice={r[1]}")

    return finish(db, spec, records, load, splits, image_dtype, progress)


def normalize_volume(volume: np.ndarray, mode: str, window: Sequence[float] = (40.0, 400.0),
                     percentiles: Sequence[float] = (0.5, 99.5)) -> np.ndarray:
    """Scale one volume (one channel) to [0, 1] with ``ct``, ``mr``, ``minmax`` or ``auto``
    (module docstring); returns float32 of the same shape."""
    v = np.asarray(volume, dtype=np.float32)
    if mode == "auto":
        mode = "ct" if float(v.min()) < -500.0 else "mr"
    if mode == "ct":
        level, width = float(window[0]), float(window[1])
        if width <= 0:
            raise DataError(f"CT window width must be > 0, got {width}", field="window")
        lo, hi = level - width / 2, level + width / 2
    elif mode == "mr":
        nonzero = v[v != 0]
        if nonzero.size == 0:
            return np.zeros_like(v)
        lo, hi = (float(x) for x in np.percentile(nonzero, [percentiles[0], percentiles[1]]))
    elif mode == "minmax":
        lo, hi = float(v.min()), float(v.max())
    else:
        raise DataError(f"intensity must be one of {INTENSITY_MODES}, got {mode!r}", field="intensity")
    if hi <= lo:
        return np.zeros_like(v)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _patient(case: str, pattern: str | None) -> str:
    if pattern is None:
        return case
    m = re.search(pattern, case)
    if m is None:
        raise DataError(f"group_pattern {pattern!r} does not match case {case!r}", field="group_pattern")
    return m.group(1) if m.groups() else m.group(0)


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError("folder does not exist", path=folder)
    out = [p for p in folder.iterdir() if not p.name.startswith(".")
           and (p.is_dir() or file_suffix(p) in VOLUME_SUFFIXES)]
    return sorted(out, key=lambda p: natural_key(p.name))


def _find_cases(images: Path, labels: Path) -> list[_Case]:
    label_by_stem: dict[str, Path] = {}
    for p in _entries(labels):
        stem = strip_suffix(p)
        label_by_stem.setdefault(stem, p)
        for suf in MASK_SUFFIXES:
            if stem.endswith(suf):
                label_by_stem.setdefault(stem[: -len(suf)], p)
    grouped: dict[str, list[Path]] = {}
    entries = _entries(images)
    if not entries:
        raise DataError("no image volumes (.nii, .nii.gz, .dcm or DICOM folders) found", path=images)
    # nnU-Net channel files only when every entry carries the _0000 suffix.
    nnunet = all(_CHANNEL_SUFFIX.match(strip_suffix(p)) for p in entries)
    for p in entries:
        stem = strip_suffix(p)
        case = _CHANNEL_SUFFIX.match(stem).group("case") if nnunet else stem
        grouped.setdefault(case, []).append(p)
    cases, missing = [], []
    for name, files in grouped.items():
        label = label_by_stem.get(name)
        if label is None:
            missing.append(name)
        else:
            cases.append(_Case(name, sorted(files, key=lambda p: natural_key(p.name)), label))
    if missing:
        raise DataError(f"{len(missing)} case(s) have no label volume in {labels}, e.g. {missing[:3]}",
                        path=images, field="labels")
    counts = {len(c.images) for c in cases}
    if len(counts) > 1:
        raise DataError(f"cases have different numbers of channel files {sorted(counts)}", path=images)
    return cases


def _read_label(case: _Case) -> np.ndarray:
    lab = read_volume(case.label, dtype=np.int64).array
    if lab.ndim != 3:
        raise DataError(f"label volume must be 3D, got shape {lab.shape}", path=case.label, field="labels")
    if lab.size and lab.min() < 0:
        raise DataError("label volume holds negative values", path=case.label, field="labels")
    return lab


class _CaseImage:
    def __init__(self, array: np.ndarray, spacing: tuple[float, float, float]):
        self.array, self.spacing = array, spacing


def _read_case_image(case: _Case) -> _CaseImage:
    parts, spacing = [], None
    for p in case.images:
        vol = read_volume(p)
        a = vol.array if vol.array.ndim == 4 else vol.array[..., None]
        if parts and a.shape[:3] != parts[0].shape[:3]:
            raise DataError(f"channel file shape {a.shape[:3]} differs from {parts[0].shape[:3]} of "
                            f"{case.images[0].name}", path=p)
        parts.append(a)
        spacing = spacing or vol.spacing
    return _CaseImage(np.concatenate(parts, axis=3), spacing)  # (H, W, D, C)
