"""3D segmentation tasks stored whole: ragged volumes, one memory-mapped file per array.

A 2D task of the database stores ``(N, C, H, W)`` arrays: every sample has one shape. Volumes
do not (each scan has its own field of view and spacing), and resizing them to one shape would
change their voxel size. A 3D task therefore stores each array **flat**, one case after the
other, with a per-case index::

    DB/tasks/<task>/
      volumes3d.json     task description + per-case index (module constants below)
      images.npy         (sum_i C * X_i * Y_i * Z_i,) float16, z-scored per case and channel
      labels.npy         (sum_i X_i * Y_i * Z_i,) uint8, class index per voxel

Case ``i`` is ``images[o_i * C : (o_i + n_i) * C].reshape(C, X_i, Y_i, Z_i)`` with ``o_i`` its
voxel offset and ``n_i`` its voxel count: one contiguous slice of a memory-mapped file, the
same cost as a 2D sample, without thousands of small files (one ``.npy`` per case would also
work; one file per array keeps the database's convention and its memory benchmark valid).

Spatial axes stay in NIfTI voxel order (i, j, k): the network does not care which axis is
"depth", and predictions go back to the original file without any transposition. Each case
keeps the affine and shape of its ``CASE_0000`` file; when the task was resampled to a target
spacing, ``shape`` and ``spacing`` are those of the stored grid and ``original_shape`` /
``affine`` those of the file, so predictions are resampled back.

The task is described in ``volumes3d.json`` (not in ``database.yaml``, whose tasks have one
image size each); :func:`list_volume_tasks` finds them, and the ``segmentation3d`` kind
(:mod:`medfoundry.tasks.segmentation3d`) lets ``data validate`` / ``data inspect`` see them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..io.volumes import write_nifti  # noqa: F401  (moved to io.volumes; old imports keep working)
from ..utils import atomic_write_json

__all__ = ["KIND", "MANIFEST", "VolumeCase", "VolumeTask", "list_volume_tasks", "VolumeTaskWriter",
           "validate_volume_task", "volume_task_problems"]

KIND = "segmentation3d"
MANIFEST = "volumes3d.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VolumeCase:
    """Index entry of one stored case.

    Attributes:
        name: case identifier (the nnU-Net ``CASE`` stem).
        shape: stored spatial shape (X, Y, Z), voxels, NIfTI axis order.
        spacing: stored voxel size (mm) per axis.
        offset: voxel offset of the case in the flat arrays (before multiplying by channels).
        original_shape: shape of the source file (differs from ``shape`` after resampling).
        affine: 4x4 voxel -> world (mm) matrix of the source ``CASE_0000`` file.
        split: ``train``, ``val`` or ``test``.
    """

    name: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    offset: int
    original_shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    split: str = "train"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "spacing": list(self.spacing),
                "offset": self.offset, "original_shape": list(self.original_shape),
                "affine": [list(r) for r in self.affine], "split": self.split}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> "VolumeCase":
        try:
            return cls(str(d["name"]), tuple(int(v) for v in d["shape"]), tuple(float(v) for v in d["spacing"]),
                       int(d["offset"]), tuple(int(v) for v in d["original_shape"]),
                       tuple(tuple(float(v) for v in r) for r in d["affine"]), str(d.get("split", "train")))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"bad case entry {d.get('name', '?')!r}: {err}", path=source, field="cases") from err


@dataclass
class VolumeTask:
    """Read access to one stored 3D segmentation task (arrays memory-mapped on first use).

    Example:
        >>> task = VolumeTask.open("db", "brain_tumour")
        >>> image = task.image(0)      # (C, X, Y, Z) float32
        >>> label = task.label(0)      # (X, Y, Z) uint8, class index
    """

    root: Path
    name: str
    classes: tuple[str, ...]
    channel_names: tuple[str, ...]
    modality: str
    cases: list[VolumeCase]
    intensity: str = "zscore"
    target_spacing: tuple[float, float, float] | None = None
    label_values: tuple[int, ...] = ()
    regions: str | None = None
    description: str = ""
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    kind = KIND

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def spatial_dims(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.cases)

    @classmethod
    def open(cls, db: str | Path, task: str) -> "VolumeTask":
        root = Path(db) / "tasks" / task
        path = root / MANIFEST
        if not path.is_file():
            found = list_volume_tasks(db)
            hint = f" (3D tasks here: {', '.join(found)})" if found else ""
            raise DataError(f"no 3D segmentation task {task!r}{hint}", path=path)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"not valid JSON: {err}", path=path) from err
        if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != KIND:
            raise DataError(f"expected kind {KIND!r} format {FORMAT_VERSION}", path=path, field="format_version")
        try:
            return cls(root, task, tuple(meta["classes"]), tuple(meta["channel_names"]), str(meta["modality"]),
                       [VolumeCase.from_dict(c, str(path)) for c in meta["cases"]], str(meta.get("intensity", "")),
                       None if meta.get("target_spacing") is None else tuple(meta["target_spacing"]),
                       tuple(int(v) for v in meta.get("label_values", range(len(meta["classes"])))),
                       meta.get("regions"), str(meta.get("description", "")))
        except KeyError as err:
            raise DataError(f"missing key {err}", path=path) from err

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            path = self.root / f"{name}.npy"
            if not path.is_file():
                raise DataError(f"missing array file of 3D task {self.name!r}", path=path, field=name)
            self._arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._arrays[name]

    def index(self, case: int | str) -> int:
        if isinstance(case, str):
            names = [c.name for c in self.cases]
            if case not in names:
                raise DataError(f"task {self.name!r} has no case {case!r}", path=self.root, field="cases")
            return names.index(case)
        return int(case)

    def image(self, case: int | str) -> np.ndarray:
        """Case image (C, X, Y, Z) float32 (z-scored per channel at import)."""
        c = self.cases[self.index(case)]
        flat = self._array("images")[c.offset * self.channels:(c.offset + c.size) * self.channels]
        return np.asarray(flat, dtype=np.float32).reshape((self.channels,) + c.shape)

    def label(self, case: int | str) -> np.ndarray:
        """Case label map (X, Y, Z) uint8, class index (0 = background)."""
        c = self.cases[self.index(case)]
        return np.asarray(self._array("labels")[c.offset:c.offset + c.size]).reshape(c.shape)

    def split(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.cases) if c.split == name]

    def summary(self) -> dict[str, Any]:
        shapes = np.array([c.shape for c in self.cases])
        return {"task": self.name, "kind": KIND, "modality": self.modality, "cases": len(self.cases),
                "channels": list(self.channel_names), "classes": list(self.classes),
                "splits": {s: len(self.split(s)) for s in SPLITS},
                "shape_min": shapes.min(0).tolist(), "shape_max": shapes.max(0).tolist(),
                "target_spacing": self.target_spacing}


def list_volume_tasks(db: str | Path) -> list[str]:
    """Names of the 3D segmentation tasks stored in database folder ``db``."""
    tasks = Path(db) / "tasks"
    if not tasks.is_dir():
        return []
    return sorted(p.parent.name for p in tasks.glob(f"*/{MANIFEST}"))


class VolumeTaskWriter:
    """Write a 3D task case by case into a hidden folder, renamed into place by :meth:`close`
    (an error in between leaves nothing under ``DB/tasks/<task>``).

    Args:
        db: database folder (created if missing).
        task: task name, ``[a-z0-9_]+``; must not exist yet.
        shapes: stored shape of every case, in writing order (sizes the flat arrays).
        channels: image channels.
    """

    def __init__(self, db: str | Path, task: str, shapes: Sequence[Sequence[int]], channels: int):
        if not task or task != task.lower() or not all(ch.isalnum() or ch == "_" for ch in task):
            raise DataError(f"task name {task!r} must be lower-case letters, digits and '_'", field="task")
        self.final = Path(db) / "tasks" / task
        if self.final.exists():
            raise DataError(f"task {task!r} already exists in the database; choose another name", path=self.final)
        self.tmp = self.final.parent / f".{task}.writing"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.channels = channels
        sizes = [int(np.prod(s)) for s in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.images = np.lib.format.open_memmap(self.tmp / "images.npy", "w+", np.float16, (total * channels,))
        self.labels = np.lib.format.open_memmap(self.tmp / "labels.npy", "w+", np.uint8, (total,))
        self.count = 0

    def add(self, image: np.ndarray, label: np.ndarray) -> int:
        """Append case ``count`` (image (C, X, Y, Z), label (X, Y, Z)); returns its voxel offset."""
        o, n = int(self.offsets[self.count]), int(self.offsets[self.count + 1] - self.offsets[self.count])
        if label.size != n or image.shape != (self.channels,) + label.shape:
            raise DataError(f"case {self.count}: image {image.shape} / label {label.shape} do not match the "
                            f"planned size of {n} voxels x {self.channels} channels")
        self.images[o * self.channels:(o + n) * self.channels] = image.reshape(-1)
        self.labels[o:o + n] = label.reshape(-1)
        self.count += 1
        return o

    def close(self, meta: dict[str, Any]) -> Path:
        """Flush, write ``volumes3d.json`` and move the task into place."""
        self.images.flush()
        self.labels.flush()
        del self.images, self.labels
        atomic_write_json(self.tmp / MANIFEST, {"format_version": FORMAT_VERSION, "kind": KIND, **meta})
        self.tmp.rename(self.final)
        return self.final

    def abort(self) -> None:
        for name in ("images", "labels"):
            if hasattr(self, name):
                delattr(self, name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def volume_task_problems(db: str | Path, task: str) -> list[tuple[str, str, str]]:
    """Problems of a stored 3D task as ``(path, field, message)`` (empty: valid): manifest
    readable, index consistent with the array sizes, label values within the classes,
    affines finite, splits known, a training case present."""
    try:
        t = VolumeTask.open(db, task)
        images, labels = t._array("images"), t._array("labels")
    except DataError as err:
        return [(str(err.path or Path(db) / "tasks" / task), err.field or "manifest", err.message)]
    except (ValueError, OSError) as err:  # a truncated or foreign .npy
        return [(str(Path(db) / "tasks" / task), "arrays", f"unreadable array: {err}")]
    where = str(t.root / MANIFEST)
    problems: list[tuple[str, str, str]] = []
    expected = 0
    for c in t.cases:
        if c.offset != expected:
            problems.append((where, "cases", f"case {c.name!r} offset {c.offset}, expected {expected}"))
        expected = c.offset + c.size
        if c.split not in SPLITS:
            problems.append((where, "cases", f"case {c.name!r} split {c.split!r}, expected one of {SPLITS}"))
        if not np.all(np.isfinite(np.asarray(c.affine))) or len(c.affine) != 4:
            problems.append((where, "cases", f"case {c.name!r} affine is not a finite 4x4 matrix"))
    if t.cases and not t.split("train"):
        problems.append((where, "cases", "no case in the 'train' split"))
    if labels.shape != (expected,):
        problems.append((str(t.root / "labels.npy"), "labels",
                         f"{labels.shape[0]} voxels, the index needs {expected}"))
    elif labels.size and int(labels.max()) >= t.num_classes:
        problems.append((str(t.root / "labels.npy"), "labels",
                         f"label value {int(labels.max())} >= {t.num_classes} classes"))
    if images.shape != (expected * t.channels,):
        problems.append((str(t.root / "images.npy"), "images", f"{images.shape[0]} values, the index needs "
                         f"{expected} voxels x {t.channels} channels"))
    elif images.size and not np.isfinite(np.asarray(images[:: max(1, images.size // 100000)],
                                                    dtype=np.float32)).all():
        problems.append((str(t.root / "images.npy"), "images", "non-finite values"))
    return problems


def validate_volume_task(db: str | Path, task: str) -> list[str]:
    """:func:`volume_task_problems` as ``"path: [field] message"`` lines (empty: valid)."""
    return [f"{path}: [{name}] {message}" for path, name, message in volume_task_problems(db, task)]
