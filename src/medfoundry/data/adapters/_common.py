"""Shared machinery of the adapters: resizing, channel conversion, splits and task writing.

Resizing (every stored sample has the task's ``image_size``):

* images: linear interpolation (spline order 1) with Gaussian anti-aliasing when a side
  shrinks (scikit-image ``resize``), so thin structures do not alias away;
* masks: nearest neighbour, no anti-aliasing, so class indices stay valid;
* boxes: coordinates scaled by ``new_size / old_size`` per axis (pixel-edge convention: a box
  ``[0, 0, W, H]`` covering the whole image stays the whole image);
* spacing: multiplied by ``old_size / new_size`` per axis (mm per pixel grows when shrinking).

``fit="stretch"`` (default) changes the aspect ratio, as most classification pipelines do;
``fit="pad"`` keeps it (letterbox: scaled to fit, centred, zero padding, masks padded with
background, boxes shifted accordingly).
"""

from __future__ import annotations

import os
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import yaml

from ...errors import DataError
from ...utils import atomic_write_text
from ..database import MANIFEST, DatabaseWriter, MultiTaskDatabase, TaskWriter
from ..tasks import SPLITS, TaskSpec

__all__ = [
    "Sample",
    "add_task",
    "resize_image",
    "resize_mask",
    "scale_boxes",
    "scale_spacing",
    "match_channels",
    "stratified_split",
    "grouped_split",
    "canonical_split",
    "DEFAULT_RATIOS",
    "ImportResult",
    "Fit",
    "FIT_MODES",
]

DEFAULT_RATIOS = (0.7, 0.15, 0.15)
_SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "tune": "val",
    "test": "test", "testing": "test", "ts": "test", "holdout": "test",
}


@dataclass
class Sample:
    """One converted sample, ready to store.

    Attributes:
        image: (C, *image_size) float32, usually in [0, 1].
        target: class index (classification), (K,) 0/1 (multilabel), (*image_size) class
            indices (segmentation) or ``{"boxes": (M, 4) x0 y0 x1 y1 pixels, "labels": (M,)}``.
        spacing: mm per pixel/voxel in ``image_size`` order, or ``None``.
        source: provenance string (file name, volume and slice, ...).
    """

    image: np.ndarray
    target: Any
    spacing: Sequence[float] | None = None
    source: str | None = None


# ------------------------------------------------------------------ geometry
def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (C, *spatial) to (C, *size) with linear interpolation (anti-aliased when shrinking)."""
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float32)
    size = tuple(int(s) for s in size)
    if image.shape[1:] == size:
        return image
    shrinking = any(n < o for n, o in zip(size, image.shape[1:]))
    out = resize(image, (image.shape[0], *size), order=1, mode="edge", anti_aliasing=shrinking,
                 preserve_range=True)
    return out.astype(np.float32)


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a label map (*spatial) to ``size`` with nearest-neighbour interpolation."""
    from skimage.transform import resize

    mask = np.asarray(mask)
    size = tuple(int(s) for s in size)
    if mask.shape == size:
        return mask
    out = resize(mask, size, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    return np.rint(out).astype(mask.dtype)


def scale_boxes(boxes: np.ndarray, old_hw: Sequence[int], new_hw: Sequence[int]) -> np.ndarray:
    """Scale (M, 4) boxes x0 y0 x1 y1 (pixels) from an image of ``old_hw`` to ``new_hw``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    boxes[:, [0, 2]] *= sx
    boxes[:, [1, 3]] *= sy
    return boxes


def scale_spacing(spacing: Sequence[float] | None, old: Sequence[int], new: Sequence[int]) -> tuple[float, ...] | None:
    """Spacing (mm) after resizing from ``old`` to ``new`` voxels per axis."""
    if spacing is None:
        return None
    return tuple(float(s) * o / n for s, o, n in zip(spacing, old, new))


def match_channels(image: np.ndarray, channels: int, source: str | Path = "") -> np.ndarray:
    """Convert (C, ...) to ``channels``: grey -> RGB by repetition, RGB -> grey by luminance
    (ITU-R BT.601 weights 0.299, 0.587, 0.114); any other mismatch is an error."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1:
        return np.repeat(image, channels, axis=0)
    if c == 3 and channels == 1:
        w = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(3, *([1] * (image.ndim - 1)))
        return (image * w).sum(axis=0, keepdims=True)
    raise DataError(f"image has {c} channels, the task expects {channels} (only 1 <-> 3 converts)",
                    path=source or None, field="channels")


# ------------------------------------------------------------------ splits
def canonical_split(value: Any, source: str | Path | None = None, field_name: str = "split") -> str:
    """Map ``training``/``valid``/``validation``/``testing``/... to ``train``/``val``/``test``."""
    key = str(value).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise DataError(f"unknown split name {value!r}; expected train, val or test (or an alias: "
                        f"{', '.join(sorted(_SPLIT_ALIASES))})", path=source, field=field_name)
    return _SPLIT_ALIASES[key]


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r.sum() <= 0:
        raise DataError(f"split ratios must be three non-negative numbers (train, val, test), got {list(ratios)}",
                        field="split_ratios")
    return r / r.sum()


def stratified_split(strata: Sequence[int] | np.ndarray, ratios: Sequence[float] = DEFAULT_RATIOS,
                     seed: int = 0) -> dict[str, list[int]]:
    """Seeded stratified train/val/test split of ``len(strata)`` items.

    Within each stratum the members are shuffled and member ``k`` of ``n`` falls at position
    ``u = (k + offset) / n`` on [0, 1), with a seeded random ``offset`` in [0, 1) per stratum;
    the split is the ratio interval ``u`` lands in. Each stratum is thus split in the given
    ratios to within one item, and a stratum smaller than 1 / ratio still reaches every split
    with the right probability instead of always landing in ``train``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, sorted item indices.
    """
    r = _check_ratios(ratios)
    strata = np.asarray(strata)
    bounds = np.cumsum(r)
    bounds[-1] = 1.0 + 1e-9
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        key = value.item() if hasattr(value, "item") else value
        rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
        members = members[rng.permutation(len(members))]
        offset = rng.random()
        u = (np.arange(len(members)) + offset) / len(members)
        which = np.searchsorted(bounds, u, side="right")
        for k, split in enumerate(SPLITS):
            out[split].extend(int(i) for i in members[which == k])
    return {s: sorted(v) for s, v in out.items()}


def grouped_split(groups: Sequence[Any], strata: Sequence[int] | None = None,
                  ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> dict[str, list[int]]:
    """Split items so that all items of one group (patient, volume) land in the same split.

    Groups are split with :func:`stratified_split`, stratified by ``strata`` (one value per
    item; a group takes the largest value of its items, e.g. the rarest class it contains
    when classes are numbered by rarity, or "has foreground").
    """
    keys = [str(g) for g in groups]
    unique = sorted(set(keys))
    gindex = {g: i for i, g in enumerate(unique)}
    item_group = np.array([gindex[k] for k in keys], dtype=np.int64)
    gstrata = np.zeros(len(unique), dtype=np.int64)
    if strata is not None:
        np.maximum.at(gstrata, item_group, np.asarray(strata, dtype=np.int64))
    gsplit = stratified_split(gstrata, ratios, seed)
    out = {}
    for split, members in gsplit.items():
        chosen = np.isin(item_group, np.asarray(members, dtype=np.int64))
        out[split] = np.flatnonzero(chosen).tolist()
    return out


# ------------------------------------------------------------------ writing
def _progress(total: int, description: str, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=True)


def _fill(tw: TaskWriter, samples: Iterable[Sample], n: int, splits: Mapping[str, Iterable[int]],
          progress: bool, notes: list[str] | None = None) -> None:
    count = 0
    known = 0
    with _progress(n, tw.spec.name, progress) as bar:
        job = bar.add_task(f"writing {tw.spec.name}", total=n)
        for i, sample in enumerate(samples):
            if i >= n:
                raise DataError(f"task {tw.spec.name!r}: more than the announced {n} samples")
            tw.set_sample(i, sample.image, sample.target, spacing=sample.spacing, source=sample.source)
            known += sample.spacing is not None
            count += 1
            bar.advance(job)
    if count != n:
        raise DataError(f"task {tw.spec.name!r}: got {count} samples, expected {n}")
    if 0 < known < n:
        # A partial spacing.npy would hold zeros for the unknown samples; an absent one says
        # "unknown" honestly, so drop it (TaskWriter has no public switch for this).
        tw.clear_spacing()
        if notes is not None:
            notes.append(f"spacing dropped: only {known} of {n} files state their pixel spacing")
    tw.set_splits(splits)


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read manifest: {err}", path=path) from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks"), list):
        raise DataError("manifest must be a mapping with a 'tasks' list", path=path, field="tasks")
    return manifest


def add_task(db_root: str | Path, spec: TaskSpec, samples: Iterable[Sample], n: int,
             splits: Mapping[str, Iterable[int]], *, image_dtype: str = "float16", db_name: str | None = None,
             db_description: str = "", progress: bool = False,
             notes: list[str] | None = None) -> MultiTaskDatabase:
    """Write one task into a database, creating the database if it does not exist yet.

    A new database (``db_root`` missing or an empty folder) is written through
    :class:`~medfoundry.data.database.DatabaseWriter` (hidden sibling folder, renamed at the end).
    For an existing database the task is written to ``tasks/.<name>.partial``, renamed to
    ``tasks/<name>`` once complete, and ``database.yaml`` is then rewritten atomically with the
    new task appended. A crash before the rename leaves the database as it was (plus a hidden
    ``.partial`` folder the next call removes); a crash between the rename and the manifest
    write leaves an unlisted ``tasks/<name>`` folder, which loaders ignore, ``validate`` reports
    and a new ``add_task`` of that name asks you to remove.

    Args:
        db_root: database folder.
        spec: the task; its name must not exist in the database yet.
        samples: exactly ``n`` samples in storage order (a generator keeps memory flat).
        n: number of samples.
        splits: ``{"train": [...], "val": [...], "test": [...]}`` sample indices.
        image_dtype: ``float16`` (default, half the disk of float32), ``float32`` or ``uint8``
            (images in [0, 1] are stored as round(255 x)).
        db_name, db_description: manifest name/description of a new database (default: the
            folder name).
        progress: show a rich progress bar.
        notes: if given, remarks about the import (e.g. dropped spacing) are appended.

    Returns:
        The database, re-opened.

    Raises:
        DataError: duplicate task name, bad samples or splits, unreadable manifest.
    """
    root = Path(db_root)
    if not (root / MANIFEST).is_file():
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise DataError(f"folder exists but holds no {MANIFEST}; refusing to write a database into it", path=root)
        with DatabaseWriter(root, name=db_name or root.name, description=db_description,
                            overwrite=root.exists()) as writer:
            tw = writer.add_task(spec, n=n, image_dtype=image_dtype)
            _fill(tw, samples, n, splits, progress, notes)
        return MultiTaskDatabase.open(root)

    manifest = _read_manifest(root)
    names = [t.get("name") for t in manifest["tasks"] if isinstance(t, dict)]
    final = root / "tasks" / spec.name
    if spec.name in names:
        raise DataError(f"task {spec.name!r} already exists in this database; choose another --task name",
                        path=root / MANIFEST, field="tasks")
    if final.exists():
        raise DataError(f"folder tasks/{spec.name} exists but is not listed in {MANIFEST}; remove it first",
                        path=final)
    partial = root / "tasks" / f".{spec.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    (root / "tasks").mkdir(exist_ok=True)
    try:
        tw = TaskWriter(partial, spec, n, image_dtype)
        _fill(tw, samples, n, splits, progress, notes)
        tw.close()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # Re-read just before committing: another writer may have added a task meanwhile.
    manifest = _read_manifest(root)
    if spec.name in [t.get("name") for t in manifest["tasks"] if isinstance(t, dict)]:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"task {spec.name!r} was added by someone else meanwhile", path=root / MANIFEST)
    os.replace(partial, final)
    manifest["tasks"].append(spec.to_dict())
    atomic_write_text(root / MANIFEST, yaml.safe_dump(manifest, sort_keys=False))
    return MultiTaskDatabase.open(root)


# ------------------------------------------------------------------ files
def natural_key(text: str) -> list[Any]:
    """Sort key putting ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def strip_suffix(path: str | Path) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    from ...io import file_suffix

    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def list_files(folder: Path, suffixes: Sequence[str], recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (or below it when ``recursive``) with one of ``suffixes`` (plus
    suffix-less DICOM files when ``.dcm`` is wanted), in natural order of their relative path;
    hidden files and folders are skipped."""
    from ...io import file_suffix

    if not folder.is_dir():
        raise DataError("folder does not exist", path=folder)
    from ...io.images import IMAGE_SUFFIXES, looks_like_dicom

    dicom_wanted = ".dcm" in suffixes
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    # DICOM files often carry no suffix at all (PACS exports): recognise them by their magic.
    files = [p for p in candidates if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)
             and (file_suffix(p) in suffixes
                  or (dicom_wanted and file_suffix(p) not in IMAGE_SUFFIXES and looks_like_dicom(p)))]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def check_size(image_size: Sequence[int], dims: int = 2, fit: str = "stretch") -> tuple[int, ...]:
    """Validate ``image_size`` (and the ``fit`` mode) before any file is read."""
    if fit not in FIT_MODES:
        raise DataError(f"fit must be one of {FIT_MODES}, got {fit!r}", field="fit")
    size = tuple(int(s) for s in image_size)
    if len(size) != dims or min(size) < 1:
        raise DataError(f"image_size must have {dims} positive entries, got {list(image_size)}", field="image_size")
    return size


@dataclass
class ImportResult:
    """What an adapter wrote: the task spec, the number of samples per split and notes
    (skipped items and why), for the CLI to print."""

    spec: TaskSpec
    split_sizes: dict[str, int]
    notes: list[str] = field(default_factory=list)


def finish(db: str | Path, spec: TaskSpec, records: Sequence[Any], load: Callable[[Any], Sample],
           splits: Mapping[str, Sequence[int]], image_dtype: str, progress: bool,
           notes: list[str] | None = None) -> ImportResult:
    """Write ``records`` (converted one by one by ``load``) as task ``spec`` and report."""
    notes = list(notes or [])
    if not records:
        raise DataError(f"task {spec.name!r}: no samples found to import")
    for split in SPLITS:
        if not len(splits.get(split, [])):
            notes.append(f"split {split!r} is empty")
    add_task(db, spec, (load(r) for r in records), len(records), splits, image_dtype=image_dtype,
             progress=progress, notes=notes)
    return ImportResult(spec, {s: len(splits.get(s, [])) for s in SPLITS}, notes)


FIT_MODES = ("stretch", "pad")


@dataclass(frozen=True)
class Fit:
    """How an image of ``old`` (h, w) pixels is placed into the stored ``size`` (H, W).

    ``stretch`` resizes to (H, W), changing the aspect ratio; ``pad`` (letterbox) resizes by
    ``min(H / h, W / w)`` to ``inner`` and centres it at ``offset`` on a zero canvas, so shapes
    keep their proportions. Images, masks, boxes and spacing all go through the same plan.
    """

    old: tuple[int, int]
    size: tuple[int, int]
    inner: tuple[int, int]
    offset: tuple[int, int]

    @classmethod
    def plan(cls, old: Sequence[int], size: Sequence[int], mode: str = "stretch") -> "Fit":
        old_t = (int(old[0]), int(old[1]))
        size_t = (int(size[0]), int(size[1]))
        if mode == "stretch":
            return cls(old_t, size_t, size_t, (0, 0))
        if mode != "pad":
            raise DataError(f"fit must be one of {FIT_MODES}, got {mode!r}", field="fit")
        scale = min(size_t[0] / old_t[0], size_t[1] / old_t[1])
        inner = (max(1, min(size_t[0], round(old_t[0] * scale))), max(1, min(size_t[1], round(old_t[1] * scale))))
        return cls(old_t, size_t, inner, ((size_t[0] - inner[0]) // 2, (size_t[1] - inner[1]) // 2))

    def _place(self, array: np.ndarray) -> np.ndarray:
        if self.inner == self.size:
            return array
        out = np.zeros(array.shape[:-2] + self.size, dtype=array.dtype)
        oy, ox = self.offset
        out[..., oy:oy + self.inner[0], ox:ox + self.inner[1]] = array
        return out

    def image(self, image: np.ndarray) -> np.ndarray:
        """(C, h, w) -> (C, H, W), linear (anti-aliased when shrinking)."""
        return self._place(resize_image(image, self.inner))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """(h, w) -> (H, W), nearest; padding is background (0)."""
        return self._place(resize_mask(mask, self.inner))

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(M, 4) x0 y0 x1 y1 pixels of the original -> of the stored image."""
        out = scale_boxes(boxes, self.old, self.inner)
        out[:, [0, 2]] += self.offset[1]
        out[:, [1, 3]] += self.offset[0]
        return out

    def spacing(self, spacing: Sequence[float] | None) -> tuple[float, ...] | None:
        return scale_spacing(spacing, self.old, self.inner)


def load_image_2d(path: Path, size: Sequence[int], channels: int, normalize: str, fit: str = "stretch",
                  source: str | None = None) -> tuple[np.ndarray, tuple[float, ...] | None, Fit]:
    """Read, convert channels and resize (``fit``: ``stretch`` or ``pad``) one 2D image.

    Returns:
        ``(image (channels, *size) float32, spacing mm after resizing or None, the Fit used)``.
    """
    from ...io import read_image

    array, spacing = read_image(path, normalize=normalize)
    array = match_channels(array, channels, source or path)
    plan = Fit.plan(array.shape[1:], size, fit)
    return plan.image(array), plan.spacing(spacing), plan


def probe_channels(path: Path, normalize: str) -> int:
    """Channels of the first image (used when the caller did not say)."""
    from ...io import read_image

    return int(read_image(path, normalize=normalize).array.shape[0])

