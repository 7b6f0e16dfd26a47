"""On-disk multi-task database: a manifest plus memory-mapped arrays per task.

Layout (documented for users in docs/database_format.md)::

    DB/
      database.yaml            format_version, name, description, tasks: [TaskSpec, ...]
      tasks/<task>/
        images.npy             (N, C, *image_size), float16/float32/uint8, memory-mapped
        (the files below are those of the built-in kinds; each kind declares its own,
        see medfoundry.tasks)
        labels.npy             classification (N,) int64 | multilabel (N, K) uint8
        masks.npy              segmentation (N, *image_size) uint8 (class index per pixel)
        boxes.npy              detection (M, 4) float32, x0 y0 x1 y1 in pixels (x = column);
                               3D: (M, 6) x0 y0 z0 x1 y1 z1 in voxels
        box_labels.npy         detection (M,) int64, index into classes
        box_offsets.npy        detection (N + 1,) int64: sample i owns boxes[off[i]:off[i+1]]
        spacing.npy            optional (N, spatial_dims) float32, mm per pixel/voxel
        splits.json            {"train": [...], "val": [...], "test": [...]} sample indices
        sources.json           optional provenance, one string per sample

Arrays are read with ``mmap_mode="r"`` so a database larger than RAM works: a sample costs
one slice of a file, and nothing is loaded until it is asked for.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import yaml

from ..errors import DataError
from ..utils import atomic_write_text
from .tasks import SPLITS, TaskSpec

__all__ = ["FORMAT_VERSION", "IMAGE_DTYPES", "MultiTaskDatabase", "DatabaseWriter", "TaskWriter", "MANIFEST",
           "stratified_prefix"]

FORMAT_VERSION = 1
MANIFEST = "database.yaml"
IMAGE_DTYPES = ("uint8", "float16", "float32")


class MultiTaskDatabase:
    """Read access to a database folder. Cheap to open; arrays are memory-mapped on first use.

    Example:
        >>> db = MultiTaskDatabase.open("demo_out/db")
        >>> spec = db.task("xray_nodule_det")
        >>> img = db.image("xray_nodule_det", 0)      # (C, H, W) float32
        >>> tgt = db.target("xray_nodule_det", 0)     # {"boxes": (M, 4), "labels": (M,)}
    """

    def __init__(self, root: Path, manifest: dict[str, Any], tasks: dict[str, TaskSpec]):
        self.root = root
        self.manifest = manifest
        self.tasks = tasks
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._splits: dict[str, dict[str, np.ndarray]] = {}
        self._strata: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: str | Path) -> "MultiTaskDatabase":
        root = Path(root)
        path = root / MANIFEST
        if not root.is_dir():
            raise DataError("database folder does not exist", path=root)
        if not path.is_file():
            raise DataError(f"no {MANIFEST} manifest in this folder", path=root)
        try:
            manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise DataError(f"manifest is not valid YAML: {err}", path=path) from err
        if not isinstance(manifest, dict):
            raise DataError("manifest must be a mapping with keys format_version, name, tasks", path=path)
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"format_version {version!r} is not supported (expected {FORMAT_VERSION})",
                            path=path, field="format_version")
        entries = manifest.get("tasks")
        if not isinstance(entries, list) or not entries:
            raise DataError("'tasks' must be a non-empty list", path=path, field="tasks")
        tasks: dict[str, TaskSpec] = {}
        for entry in entries:
            spec = TaskSpec.from_dict(entry, source=str(path))
            if spec.name in tasks:
                raise DataError(f"task name {spec.name!r} appears twice", path=path, field="tasks")
            tasks[spec.name] = spec
        return cls(root, manifest, tasks)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            from ..utils import look_up_option

            look_up_option(name, self.tasks, what=f"task in {self.root}")
        return self.tasks[name]

    def task_dir(self, name: str) -> Path:
        return self.root / "tasks" / name

    def task_names(self, group: str | None = None) -> list[str]:
        return [n for n, s in self.tasks.items() if group is None or s.group == group]

    # ----------------------------------------------------------------- arrays
    def array(self, task: str, name: str, required: bool = True) -> np.ndarray | None:
        """Memory-mapped array ``tasks/<task>/<name>.npy`` (cached)."""
        key = (task, name)
        if key not in self._arrays:
            path = self.task_dir(task) / f"{name}.npy"
            if not path.is_file():
                if not required:
                    return None
                raise DataError(f"missing array file for task {task!r}", path=path, field=name)
            try:
                self._arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as err:
                raise DataError(f"cannot read array: {err}", path=path, field=name) from err
        return self._arrays[key]

    def num_samples(self, task: str) -> int:
        return int(self.array(task, "images").shape[0])

    def image(self, task: str, index: int) -> np.ndarray:
        """Sample ``index`` as float32 (C, *image_size); uint8 images are scaled to [0, 1]."""
        raw = self.array(task, "images")[index]
        if raw.dtype == np.uint8:
            return raw.astype(np.float32) / 255.0
        return np.array(raw, dtype=np.float32)

    def target(self, task: str, index: int) -> Any:
        """The label of sample ``index`` in the form its task kind declares (``Kind.target``).

        Built-in kinds: classification int; multilabel (K,) float32 of 0/1; segmentation
        (*image_size) int64; detection dict with ``boxes`` (M, 4) float32 (x0, y0, x1, y1
        pixels) and ``labels`` (M,) int64.
        """
        from ..tasks import get_kind

        return get_kind(self.task(task).kind).target(self, task, index)

    def spacing(self, task: str, index: int) -> tuple[float, ...] | None:
        """Pixel/voxel spacing in mm of one sample, or the task default, or ``None`` if unknown."""
        arr = self.array(task, "spacing", required=False)
        if arr is not None:
            return tuple(float(s) for s in arr[index])
        return self.task(task).spacing

    # ----------------------------------------------------------------- splits
    def splits(self, task: str) -> dict[str, np.ndarray]:
        if task not in self._splits:
            path = self.task_dir(task) / "splits.json"
            if not path.is_file():
                raise DataError(f"missing splits file for task {task!r}", path=path)
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise DataError(f"not valid JSON: {err}", path=path) from err
            out = {}
            for split in SPLITS:
                if split not in raw:
                    raise DataError(f"split {split!r} is missing", path=path, field=split)
                out[split] = np.asarray(raw[split], dtype=np.int64)
            self._splits[task] = out
        return self._splits[task]

    def split_indices(self, task: str, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {split!r}", field="split")
        return self.splits(task)[split]

    def strata(self, task: str) -> np.ndarray:
        """One integer per sample used to stratify subsets (class, or a proxy for it)."""
        if task not in self._strata:
            self._strata[task] = _compute_strata(self, task)
        return self._strata[task]

    def fraction_indices(self, task: str, fraction: float, seed: int = 0, split: str = "train") -> np.ndarray:
        """A stratified subset holding ``fraction`` of ``split``; sorted sample indices.

        Subsets are nested for a fixed seed (the 1 % subset lies inside the 5 % subset) because
        every stratum is shuffled once from the seed and a larger fraction takes a longer prefix
        of that same order. Each non-empty stratum keeps at least one sample.
        """
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"fraction must be in (0, 1], got {fraction}", field="fraction")
        indices = self.split_indices(task, split)
        rng = np.random.default_rng([seed, zlib.crc32(f"{task}/{split}".encode())])
        return stratified_prefix(indices, self.strata(task)[indices], fraction, rng)


def stratified_prefix(indices: np.ndarray, strata: np.ndarray, fraction: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Sorted subset of ``indices`` holding ``fraction`` of each stratum (at least one sample of
    every non-empty stratum): a prefix of each stratum shuffled by ``rng``, so for one generator
    state larger fractions contain smaller ones."""
    chosen = []
    for s in np.unique(strata):
        members = indices[strata == s]
        members = members[rng.permutation(len(members))]
        k = max(1, math.floor(fraction * len(members) + 0.5))
        chosen.append(members[: min(k, len(members))])
    return np.sort(np.concatenate(chosen)) if chosen else indices[:0]


def _compute_strata(db: MultiTaskDatabase, task: str) -> np.ndarray:
    from ..tasks import get_kind

    return np.asarray(get_kind(db.task(task).kind).strata(db, task), dtype=np.int64)


class TaskWriter:
    """Fills the arrays of one task; created by :meth:`DatabaseWriter.add_task`."""

    def __init__(self, folder: Path, spec: TaskSpec, n: int, image_dtype: str):
        if image_dtype not in IMAGE_DTYPES:
            raise DataError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
        if n < 1:
            raise DataError(f"task {spec.name!r}: needs at least one sample, got n={n}")
        self.folder, self.spec, self.n = folder, spec, n
        folder.mkdir(parents=True)
        shape = (n, spec.channels, *spec.image_size)
        self.images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=image_dtype, shape=shape)
        self._filled = np.zeros(n, dtype=bool)
        self._spacing: np.ndarray | None = None
        self._splits: dict[str, list[int]] | None = None
        self._sources: list[str] | None = None
        from ..tasks import get_kind

        self._targets = get_kind(spec.kind).writer(folder, spec, n)

    def set_sample(self, i: int, image: np.ndarray, target: Any, spacing: Iterable[float] | None = None,
                   source: str | None = None) -> None:
        """Store sample ``i``: image (C, *image_size) and its target (see ``MultiTaskDatabase.target``)."""
        spec = self.spec
        image = np.asarray(image)
        if image.shape != self.images.shape[1:]:
            raise DataError(f"task {spec.name!r} sample {i}: image shape {image.shape}, "
                            f"expected {self.images.shape[1:]}", field="images")
        if self.images.dtype == np.uint8 and image.dtype != np.uint8:
            image = np.clip(np.rint(image * 255.0), 0, 255)
        self.images[i] = image.astype(self.images.dtype)
        self._targets.set(i, target)
        if spacing is not None:
            if self._spacing is None:
                self._spacing = np.zeros((self.n, spec.spatial_dims), dtype=np.float32)
            self._spacing[i] = np.asarray(list(spacing), dtype=np.float32)
        if source is not None:
            if self._sources is None:
                self._sources = [""] * self.n
            self._sources[i] = source
        self._filled[i] = True

    def clear_spacing(self) -> None:
        """Forget per-sample spacing (e.g. when only some source files state it): none is better than zeros."""
        self._spacing = None

    def set_splits(self, splits: Mapping[str, Iterable[int]]) -> None:
        self._splits = {s: sorted(int(i) for i in splits.get(s, [])) for s in SPLITS}

    def close(self) -> None:
        name = self.spec.name
        if not self._filled.all():
            missing = np.flatnonzero(~self._filled)[:5].tolist()
            raise DataError(f"task {name!r}: samples {missing}... were never written")
        if self._splits is None:
            raise DataError(f"task {name!r}: set_splits() was never called")
        self.images.flush()
        del self.images
        self._targets.close()
        if self._spacing is not None:
            np.save(self.folder / "spacing.npy", self._spacing)
        (self.folder / "splits.json").write_text(json.dumps(self._splits) + "\n", encoding="utf-8")
        if self._sources is not None:
            (self.folder / "sources.json").write_text(json.dumps(self._sources, indent=0) + "\n", encoding="utf-8")


class DatabaseWriter:
    """Writes a whole database atomically: into a hidden sibling folder, renamed on success.

    Example:
        >>> with DatabaseWriter("db", name="mine") as w:
        ...     tw = w.add_task(spec, n=100)
        ...     for i in range(100):
        ...         tw.set_sample(i, image, label)
        ...     tw.set_splits({"train": range(80), "val": range(80, 90), "test": range(90, 100)})
    """

    def __init__(self, root: str | Path, name: str, description: str = "", overwrite: bool = False,
                 extra: dict[str, Any] | None = None):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise DataError("output folder exists; pass overwrite=True (--overwrite) to replace it", path=self.root)
        self.tmp = self.root.parent / f".{self.root.name}.partial"
        self.name, self.description, self.extra = name, description, dict(extra or {})
        self._tasks: dict[str, TaskWriter] = {}

    def __enter__(self) -> "DatabaseWriter":
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        (self.tmp / "tasks").mkdir(parents=True)
        return self

    def add_task(self, spec: TaskSpec, n: int, image_dtype: str = "float16") -> TaskWriter:
        if spec.name in self._tasks:
            raise DataError(f"task {spec.name!r} added twice")
        tw = TaskWriter(self.tmp / "tasks" / spec.name, spec, n, image_dtype)
        self._tasks[spec.name] = tw
        return tw

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            for tw in self._tasks.values():
                tw.close()
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "description": self.description,
                **self.extra,
                "tasks": [tw.spec.to_dict() for tw in self._tasks.values()],
            }
            atomic_write_text(self.tmp / MANIFEST, yaml.safe_dump(manifest, sort_keys=False))
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if self.root.exists():
            old = self.root.parent / f".{self.root.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            self.root.rename(old)
            self.tmp.rename(self.root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.root)
