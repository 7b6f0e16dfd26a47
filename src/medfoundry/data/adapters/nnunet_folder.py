"""Import an nnU-Net-style folder of NIfTI volumes as a stored 3D segmentation task.

Inputs (nnU-Net v2 raw-dataset naming):

* ``images``: ``CASE_0000.nii.gz`` ... ``CASE_000K.nii.gz``, one file per channel, every case
  with the same channels; or one file per case (``CASE.nii.gz``), 3D or 4D (X, Y, Z, C).
* ``labels``: ``CASE.nii.gz`` per case, integer class indices 0..K-1 on the grid of the case's
  channel files.

Everything is checked from the NIfTI headers and the label values **before** anything is
written: a missing channel file, channel files on different grids (shape or affine), a
label on another grid, or label values outside the classes give one error naming the file.

Intensity (``intensity``), per case and channel: ``zscore`` subtracts the mean and divides by
the standard deviation of the voxels inside the body (non-zero in any channel, as skull-
stripped MRI; all voxels when nearly all are non-zero, as CT), and sets voxels outside it to
0; ``none`` keeps the values. With ``spacing`` (mm) every case is resampled to that voxel
size (images linearly, labels nearest-neighbour) before normalisation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import DataError
from ..volumes3d import VolumeCase, VolumeTask, VolumeTaskWriter
from ._common import natural_key

__all__ = ["import_volumes3d", "find_nnunet_cases", "NnunetCase", "normalize_case", "resample_case",
           "INTENSITY_MODES"]

INTENSITY_MODES = ("zscore", "none")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_NIFTI = (".nii.gz", ".nii")
_AFFINE_TOL_MM = 1e-3  # grids whose affines differ by less are the same grid


@dataclass
class NnunetCase:
    """One case: its channel files in channel order and (for training data) its label file."""

    name: str
    images: list[Path]
    label: Path | None = None


def _stem(path: Path) -> str | None:
    for suffix in _NIFTI:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def find_nnunet_cases(images: str | Path, labels: str | Path | None = None) -> list[NnunetCase]:
    """Group the NIfTI files of ``images`` into cases (and pair them with ``labels``).

    Raises:
        DataError: no volumes, a channel file missing, cases with different channel counts, or
            (with ``labels``) a label file missing, naming the expected file.
    """
    images = Path(images)
    if not images.is_dir():
        raise DataError("image folder does not exist", path=images)
    files = sorted((p for p in images.iterdir() if _stem(p) and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise DataError("no NIfTI volumes (.nii, .nii.gz) found", path=images)
    grouped: dict[str, dict[int, Path]] = {}
    if all(_CHANNEL.match(_stem(p) or "") for p in files):
        for p in files:
            m = _CHANNEL.match(_stem(p) or "")
            grouped.setdefault(m.group("case"), {})[int(m.group("channel"))] = p
    else:
        grouped = {_stem(p) or "": {0: p} for p in files}
    expected = max(max(ch) for ch in grouped.values()) + 1
    cases = []
    for name, chans in grouped.items():
        for k in range(expected):
            if k not in chans:
                suffix = next(iter(chans.values())).name[len(name) + 5:]
                raise DataError(f"channel {k} of case {name!r} is missing (other cases have {expected} "
                                f"channels: _0000 ... _{expected - 1:04d})", path=images / f"{name}_{k:04d}{suffix}")
        cases.append(NnunetCase(name, [chans[k] for k in range(expected)]))
    if labels is not None:
        labels = Path(labels)
        if not labels.is_dir():
            raise DataError("label folder does not exist", path=labels)
        for case in cases:
            found = [labels / f"{case.name}{s}" for s in _NIFTI if (labels / f"{case.name}{s}").is_file()]
            if not found:
                raise DataError(f"no label volume for case {case.name!r}", path=labels / f"{case.name}.nii.gz")
            case.label = found[0]
    return cases


def _header(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    from ...io.volumes import read_nifti_header

    shape, affine, _ = read_nifti_header(path, "NIfTI volume")
    return shape, affine


def check_case_grids(case: NnunetCase) -> tuple[tuple[int, int, int], np.ndarray, int]:
    """Shape (X, Y, Z), affine and channel count of a case; raises naming the file whose grid
    differs from ``CASE_0000``."""
    shape0, affine0 = _header(case.images[0])
    if len(shape0) not in (3, 4):
        raise DataError(f"expected a 3D or 4D volume, got shape {shape0}", path=case.images[0])
    channels = 0
    for p in case.images:
        shape, affine = _header(p) if p != case.images[0] else (shape0, affine0)
        if shape[:3] != shape0[:3] or not np.allclose(affine, affine0, atol=_AFFINE_TOL_MM):
            raise DataError(f"channel on another grid than {case.images[0].name}: shape {shape[:3]} vs "
                            f"{shape0[:3]}, or affines differ by more than {_AFFINE_TOL_MM} mm", path=p)
        channels += shape[3] if len(shape) == 4 else 1
    if case.label is not None:
        shape, affine = _header(case.label)
        if shape != shape0[:3] or not np.allclose(affine, affine0, atol=_AFFINE_TOL_MM):
            raise DataError(f"label volume does not match the image grid of {case.images[0].name}: shape "
                            f"{shape} vs {shape0[:3]}, or affines differ by more than {_AFFINE_TOL_MM} mm",
                            path=case.label, field="labels")
    return shape0[:3], affine0, channels  # type: ignore[return-value]


def read_case_image(case: NnunetCase) -> np.ndarray:
    """Channel-first image (C, X, Y, Z) float32 of a case."""
    from ...io.volumes import read_nifti

    parts = []
    for p in case.images:
        a = np.asarray(read_nifti(p, "image channel")[0], dtype=np.float32)
        parts.append(np.moveaxis(a, 3, 0) if a.ndim == 4 else a[None])
    return np.concatenate(parts, axis=0)


def read_case_label(path: Path, num_classes: int | None) -> np.ndarray:
    from ...io.volumes import read_nifti

    raw = read_nifti(path, "label volume")[0]
    values = np.unique(raw)
    if not np.all(np.equal(np.mod(values, 1), 0)) or (values.size and values.min() < 0):
        raise DataError(f"label values must be non-negative integers, found {values[:6].tolist()}", path=path,
                        field="labels")
    if num_classes is not None and values.size and values.max() >= num_classes:
        raise DataError(f"label value {int(values.max())} is outside the {num_classes} classes 0..{num_classes - 1}",
                        path=path, field="labels")
    if values.size and values.max() > 255:
        raise DataError(f"label value {int(values.max())} > 255 is not supported", path=path, field="labels")
    return raw.astype(np.uint8)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float] | None
                    ) -> tuple[int, int, int]:
    """Shape of a grid of ``shape`` voxels of ``spacing`` mm resampled to ``target`` mm."""
    if target is None:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    return tuple(max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target))  # type: ignore


def resample_case(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample the spatial axes (last three) of ``array`` to ``shape`` voxels exactly
    (``order`` 1 linear for images, 0 nearest for labels); corners stay aligned."""
    from scipy import ndimage

    shape = tuple(int(s) for s in shape)
    if array.shape[-3:] == shape:
        return array
    zoom = [n / o for n, o in zip(shape, array.shape[-3:])]
    if array.ndim == 4:
        return np.stack([resample_case(a, shape, order) for a in array])
    out = ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True)
    return out[tuple(slice(0, s) for s in shape)]


def normalize_case(image: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """Normalise a (C, X, Y, Z) image per channel (module docstring)."""
    if mode == "none":
        return image.astype(np.float32)
    if mode != "zscore":
        raise DataError(f"intensity must be one of {INTENSITY_MODES}, got {mode!r}", field="intensity")
    body = np.any(image != 0, axis=0)
    if body.mean() > 0.95 or not body.any():
        body = np.ones_like(body)
    out = np.zeros_like(image, dtype=np.float32)
    for c, channel in enumerate(image):
        values = channel[body]
        std = float(values.std())
        out[c][body] = (values - float(values.mean())) / (std if std > 0 else 1.0)
    return out


def _default_classes(images: Path, count: int) -> list[str]:
    """Class names from an nnU-Net ``dataset.json`` beside the image folder, else generic."""
    meta = images.parent / "dataset.json"
    if meta.is_file():
        try:
            labels = json.loads(meta.read_text(encoding="utf-8")).get("labels", {})
            by_value = {int(v): str(k) for k, v in labels.items() if isinstance(v, int)}
            if len(by_value) >= count and all(i in by_value for i in range(len(by_value))):
                return [by_value[i] for i in range(len(by_value))]
        except (ValueError, AttributeError):
            pass
    return ["background"] + [f"label_{v}" for v in range(1, count)]


def import_volumes3d(images: str | Path, labels: str | Path, db: str | Path, task: str, *,
                     modality: str = "tomographic", classes: Sequence[str] | None = None,
                     spacing: Sequence[float] | None = None, intensity: str = "zscore",
                     val_fraction: float = 0.2, seed: int = 0, description: str = "",
                     progress: Callable[[int, int], Any] | None = None,
                     test_images: str | Path | None = None, test_labels: str | Path | None = None,
                     source: str | None = None) -> VolumeTask:
    """Store an nnU-Net-style folder as a 3D segmentation task of database ``db``.

    Args:
        images: folder of channel files (module docstring).
        labels: folder of label files ``CASE.nii.gz``.
        db: database folder (created if missing).
        task: new task name.
        modality: modality group (``tomographic``, ...), used to pick an input adapter.
        classes: class names, index 0 background; default from ``dataset.json`` next to
            ``images`` (nnU-Net), else ``background, label_1, ...``.
        spacing: target voxel size (mm) per axis in NIfTI order; ``None`` keeps each case's.
        intensity: ``zscore`` or ``none``.
        val_fraction: share of cases (seeded) in the ``val`` split, at least one when there
            are two cases or more; the rest is ``train``.
        seed: seed of the split.
        description: one line for tables.
        progress: called as ``progress(done, total)`` after each case is written.
        test_images, test_labels: an optional second folder pair (nnU-Net ``imagesTs`` /
            ``labelsTs``) stored as the ``test`` split (held-out cases), checked as strictly.
        source: provenance recorded in ``volumes3d.json`` (default: the absolute image folder).

    Returns:
        The stored :class:`~medfoundry.data.volumes3d.VolumeTask`.

    Raises:
        DataError: any problem with the inputs (nothing is written then).
    """
    if intensity not in INTENSITY_MODES:
        raise DataError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}", field="intensity")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise DataError(f"spacing must be 3 positive values (mm), got {list(spacing)}", field="spacing")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}", field="val_fraction")
    cases = find_nnunet_cases(images, labels)
    n_trainval = len(cases)
    if (test_images is None) != (test_labels is None):
        raise DataError("test_images and test_labels go together; got only one", field="test_images")
    if test_images is not None:
        held_out = find_nnunet_cases(test_images, test_labels)
        clash = sorted({c.name for c in cases} & {c.name for c in held_out})
        if clash:
            raise DataError(f"case {clash[0]!r} is in both the training and the test folder", path=test_images)
        cases += held_out
    grids, channel_counts = [], set()
    for case in cases:
        shape, affine, channels = check_case_grids(case)
        grids.append((shape, affine))
        channel_counts.add(channels)
    if len(channel_counts) > 1:
        raise DataError(f"cases have different channel counts {sorted(channel_counts)}", path=images)
    channels = channel_counts.pop()
    num_classes = None if classes is None else len(classes)
    top = 0
    for case in cases:  # label values before anything is written
        top = max(top, int(read_case_label(case.label, num_classes).max(initial=0)))  # type: ignore[arg-type]
    classes = list(classes) if classes is not None else _default_classes(Path(images), top + 1)
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes (background first), got {classes}", field="classes")
    spacings = [tuple(float(np.linalg.norm(a[:3, i])) for i in range(3)) for _, a in grids]
    shapes = [resampled_shape(s, sp, spacing) for (s, _), sp in zip(grids, spacings)]

    rng = np.random.default_rng(seed)
    n_val = 0 if n_trainval < 2 else max(1, int(round(val_fraction * n_trainval)))
    val = set(rng.permutation(n_trainval)[:n_val].tolist())
    writer = VolumeTaskWriter(db, task, shapes, channels)
    entries = []
    try:
        for i, case in enumerate(cases):
            image = normalize_case(resample_case(read_case_image(case), shapes[i], order=1), intensity)
            label = resample_case(read_case_label(case.label, len(classes)), shapes[i], order=0)  # type: ignore
            offset = writer.add(image, label)
            entries.append(VolumeCase(case.name, shapes[i], spacing or spacings[i], offset, grids[i][0],
                                      tuple(tuple(r) for r in grids[i][1].tolist()),
                                      "test" if i >= n_trainval else "val" if i in val else "train"))
            if progress is not None:
                progress(i + 1, len(cases))
        channel_names = [f"channel_{c}" for c in range(channels)]
        meta_path = Path(images).parent / "dataset.json"
        regions = None
        if meta_path.is_file():
            try:
                dataset = json.loads(meta_path.read_text(encoding="utf-8"))
                regions = dataset.get("regions") if isinstance(dataset.get("regions"), str) else None
                names = dataset.get("channel_names", {})
                if len(names) == channels:
                    channel_names = [str(names[str(c)]) for c in range(channels)]
            except (ValueError, KeyError, AttributeError):
                pass
        writer.close({"name": task, "classes": classes, "channel_names": channel_names, "modality": modality,
                      "intensity": intensity, "target_spacing": None if spacing is None else list(spacing),
                      "label_values": list(range(len(classes))), "regions": regions,
                      "description": description or f"3D segmentation from {Path(images).name}",
                      "source": source if source is not None else str(Path(images).resolve()),
                      "cases": [e.to_dict() for e in entries]})
    except BaseException:
        writer.abort()
        raise
    return VolumeTask.open(db, task)
