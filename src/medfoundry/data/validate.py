"""Check a database folder against its format and report every problem found.

``validate_database`` never stops at the first problem and never writes: arrays are opened
read-only and memory-mapped, and large arrays are scanned in chunks so memory stays flat
whatever the database size.

Each :class:`Problem` names the file, the field (manifest key, array name, split) and what
was expected versus found. ``severity`` is ``error`` (training would fail or learn from wrong
labels) or ``warning`` (legal but probably unintended, e.g. an empty test split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from ..errors import DataError
from .database import IMAGE_DTYPES, FORMAT_VERSION, MANIFEST
from .tasks import SPLITS, TaskSpec

__all__ = ["Problem", "validate_database", "target_problems", "check_targets", "CHUNK_BYTES"]

CHUNK_BYTES = 64 * 2**20  # scanned per step; bounds the validator's own memory
_TOP_KEYS = {"format_version", "name", "description", "tasks"}
_COMMON_FILES = {"images.npy", "spacing.npy", "splits.json", "sources.json"}
_RANGE_WARN = 100.0  # |value| beyond which float images look unnormalised


@dataclass(frozen=True)
class Problem:
    """One finding: ``path`` (file or folder), ``field`` (key, array or split), ``message``,
    ``severity`` (``error`` or ``warning``)."""

    path: str
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.path} [{self.field}] {self.message}"


class _Report:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: Path | str, field: str, message: str) -> None:
        self.problems.append(Problem(str(path), field, message, "error"))

    def warn(self, path: Path | str, field: str, message: str) -> None:
        self.problems.append(Problem(str(path), field, message, "warning"))


def validate_database(root: str | Path, *, progress: bool = False, tasks: list[str] | None = None,
                      chunk_bytes: int = CHUNK_BYTES) -> list[Problem]:
    """Check a database and return every problem (empty list = valid).

    Checks: manifest present, YAML, format version, task entries (unknown or missing keys, bad
    kind/modality/sizes, duplicate names); per task: files present and readable, array shapes
    and dtypes against the TaskSpec (image size, channels, mask shape, sample counts), labels
    inside the class list (classification), multilabel values 0/1, mask values below the
    number of classes, box offsets consistent, boxes inside the image with x1 > x0 and y1 > y0,
    box labels valid, NaN/Inf in images, boxes and spacing, spacing positive, splits present,
    in range, without duplicates or overlap, not empty, covering every sample. Tasks of a
    kind that describes itself (``segmentation3d``: ``tasks/<task>/volumes3d.json``, no
    ``database.yaml`` entry, which a folder of such tasks only may lack) are checked by their
    kind (:meth:`~medfoundry.tasks.Kind.validate_stored`).

    Args:
        root: database folder.
        progress: show a rich progress bar while scanning arrays.
        tasks: only these tasks (default all).
        chunk_bytes: bytes of an array read per step.

    Returns:
        The problems, in the order found (manifest first, then task by task).
    """
    root = Path(root)
    rep = _Report()
    manifest_path = root / MANIFEST
    if not root.is_dir():
        rep.error(root, "database", "database folder does not exist")
        return rep.problems
    from ..tasks import stored_task_kinds

    all_stored = stored_task_kinds(root)
    stored = {name: kind for name, kind in all_stored.items() if tasks is None or name in tasks}
    if not manifest_path.is_file() and all_stored:
        # a folder of self-described tasks only (e.g. `data import volumes3d` into a new folder)
        for name, kind in stored.items():
            kind.validate_stored(root, name, rep.error, rep.warn)
        return rep.problems
    if not manifest_path.is_file():
        rep.error(manifest_path, "manifest", f"missing {MANIFEST}")
        return rep.problems
    try:
        manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        rep.error(manifest_path, "manifest", f"not valid YAML: {err}")
        return rep.problems
    if not isinstance(manifest, dict):
        rep.error(manifest_path, "manifest", f"must be a mapping, found {type(manifest).__name__}")
        return rep.problems
    if manifest.get("format_version") != FORMAT_VERSION:
        rep.error(manifest_path, "format_version",
                  f"expected {FORMAT_VERSION}, found {manifest.get('format_version')!r}")
    if "name" not in manifest:
        rep.warn(manifest_path, "name", "no database name (the folder name is used)")
    entries = manifest.get("tasks")
    if not isinstance(entries, list) or not entries:
        rep.error(manifest_path, "tasks", "'tasks' must be a non-empty list")
        entries = []
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    known_task_keys = set(TaskSpec.__dataclass_fields__)
    for k, entry in enumerate(entries):
        where = f"tasks[{k}]"
        if not isinstance(entry, dict):
            rep.error(manifest_path, where, f"must be a mapping, found {type(entry).__name__}")
            continue
        unknown = sorted(set(entry) - known_task_keys)
        if unknown:
            rep.error(manifest_path, f"{where}.{unknown[0]}",
                      f"unknown key(s) {unknown} in task {entry.get('name', '?')!r} "
                      f"(valid: {sorted(known_task_keys)})")
        try:
            spec = TaskSpec.from_dict({k2: v for k2, v in entry.items() if k2 in known_task_keys},
                                      source=str(manifest_path))
        except DataError as err:
            rep.error(manifest_path, f"{where}.{err.field or 'tasks'}", err.message)
            continue
        if spec.name in seen:
            rep.error(manifest_path, f"{where}.name", f"task name {spec.name!r} appears twice")
            continue
        seen.add(spec.name)
        specs.append(spec)
    tasks_dir = root / "tasks"
    if tasks_dir.is_dir():
        for folder in sorted(tasks_dir.iterdir()):
            if (folder.is_dir() and not folder.name.startswith(".") and folder.name not in seen
                    and folder.name not in all_stored):
                rep.warn(folder, "tasks", "task folder is not listed in the manifest (ignored by loaders)")
    selected = [s for s in specs if tasks is None or s.name in tasks]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress, transient=True) as bar:
        for spec in selected:
            _check_task(root, spec, rep, chunk_bytes, bar)
    for name, kind in stored.items():
        if name in seen:
            rep.error(manifest_path, "tasks", f"task {name!r} is both in {MANIFEST} and described by "
                      f"tasks/{name}/{kind.manifest}; keep one")
        kind.validate_stored(root, name, rep.error, rep.warn)
    return rep.problems


def target_problems(db: Any, task: str) -> list[Problem]:
    """Targets the head cannot take (e.g. a label outside the class list), one error per split.

    A vectorised min/max through the kind's :meth:`~medfoundry.tasks.Kind.invalid_targets`,
    cheap enough to run before every training run (unlike :func:`validate_database`).

    Args:
        db: an open :class:`~medfoundry.data.MultiTaskDatabase`.
        task: task name.
    """
    from ..tasks import get_kind

    spec = db.task(task)
    found = get_kind(spec.kind).invalid_targets(spec, db, task)
    if found is None or len(found[2]) == 0:
        return []
    field, expected, samples, values = found
    path = db.task_dir(task) / f"{field}.npy"
    problems = []
    for split in SPLITS:
        hit = np.isin(samples, db.split_indices(task, split))
        if hit.any():
            i, v = int(samples[hit][0]), float(values[hit][0])
            problems.append(Problem(str(path), field, f"task {task!r} split {split!r}: {int(hit.sum())} sample(s) "
                                    f"outside {expected} ({spec.num_classes} classes), e.g. sample {i} = {v:g}"))
    return problems


def check_targets(db: Any, tasks: Any) -> None:
    """Raise a one-line :class:`DataError` for the first task whose targets are out of range
    (see :func:`target_problems`); run before training so no run fails deep inside a loss."""
    for task in [tasks] if isinstance(tasks, str) else tasks:
        problems = target_problems(db, task)
        if problems:
            p = problems[0]
            more = f" (and {len(problems) - 1} more split(s))" if len(problems) > 1 else ""
            raise DataError(p.message + more, path=p.path, field=p.field)


# ---------------------------------------------------------------------- per task
def _load(folder: Path, name: str, rep: _Report, required: bool = True) -> np.ndarray | None:
    path = folder / f"{name}.npy"
    if not path.is_file():
        if required:
            rep.error(path, name, "missing array file")
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        rep.error(path, name, f"unreadable array: {err}")
        return None


def _chunks(array: np.ndarray, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    n = array.shape[0]
    per = max(1, int(array[:1].nbytes) if n else 1)
    step = max(1, chunk_bytes // per)
    for a in range(0, n, step):
        yield a, min(n, a + step)


def _check_task(root: Path, spec: TaskSpec, rep: _Report, chunk_bytes: int, bar) -> None:
    folder = root / "tasks" / spec.name
    if not folder.is_dir():
        rep.error(folder, "tasks", f"task folder of {spec.name!r} is missing")
        return
    from ..tasks import ValidationContext, get_kind

    expected = _COMMON_FILES | {f"{a}.npy" for a in get_kind(spec.kind).arrays}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name not in expected and not f.name.startswith("."):
            rep.warn(f, "files", "unexpected file in the task folder (ignored)")
    n = _check_images(folder, spec, rep, chunk_bytes, bar)

    def progress(description: str, total: int):
        job = bar.add_task(description, total=total)
        return lambda k: bar.advance(job, k)

    ctx = ValidationContext(
        folder, n, chunk_bytes, rep.error, rep.warn,
        load=lambda name, required=True: _load(folder, name, rep, required),
        count_mismatch=lambda path, field, found: _count_mismatch(path, field, rep, found, n),
        train_indices=lambda size: _train_indices(folder, size),
        chunks=lambda array: _chunks(array, chunk_bytes), progress=progress)
    get_kind(spec.kind).validate(spec, ctx)
    _check_spacing(folder, spec, rep, n)
    _check_splits(folder, rep, n)
    sources = folder / "sources.json"
    if sources.is_file():
        try:
            data = json.loads(sources.read_text(encoding="utf-8"))
            if not isinstance(data, list) or (n is not None and len(data) != n):
                rep.warn(sources, "sources", f"expected a list of {n} strings, found "
                         f"{len(data) if isinstance(data, list) else type(data).__name__}")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            rep.warn(sources, "sources", f"not valid JSON: {err}")


def _check_images(folder: Path, spec: TaskSpec, rep: _Report, chunk_bytes: int, bar) -> int | None:
    path = folder / "images.npy"
    images = _load(folder, "images", rep)
    if images is None:
        return None
    expected = (spec.channels, *spec.image_size)
    if images.ndim != 1 + len(expected) or tuple(images.shape[1:]) != expected:
        rep.error(path, "images", f"shape {tuple(images.shape)}, expected (N, {', '.join(map(str, expected))}) "
                  f"from channels={spec.channels}, image_size={list(spec.image_size)}")
    if images.dtype.name not in IMAGE_DTYPES:
        rep.error(path, "images", f"dtype {images.dtype}, expected one of {IMAGE_DTYPES}")
    n = int(images.shape[0]) if images.ndim else 0
    if n == 0:
        rep.error(path, "images", "no samples")
        return 0
    if images.dtype.kind == "f":
        job = bar.add_task(f"{spec.name}: images", total=n)
        bad = []
        lo, hi = np.inf, -np.inf
        for a, b in _chunks(images, chunk_bytes):
            block = np.asarray(images[a:b]).reshape(b - a, -1)
            finite = np.isfinite(block).all(axis=1)
            bad.extend((a + np.flatnonzero(~finite)).tolist())
            if finite.any():
                good = block[finite]
                lo, hi = min(lo, float(good.min())), max(hi, float(good.max()))
            bar.advance(job, b - a)
        if bad:
            rep.error(path, "images", f"{len(bad)} sample(s) contain NaN or Inf, e.g. indices {bad[:5]}")
        if np.isfinite(lo) and (lo < -_RANGE_WARN or hi > _RANGE_WARN):
            rep.warn(path, "images", f"values span {lo:.4g}..{hi:.4g}; the adapters store intensities scaled to "
                     "[0, 1] (raw HU or 16-bit values suggest a missing normalisation)")
    return n


def _count_mismatch(path: Path, field: str, rep: _Report, found: int, n: int | None) -> bool:
    if n is not None and found != n:
        rep.error(path, field, f"{found} entries, but images.npy holds {n} samples")
        return True
    return False


def _train_indices(folder: Path, n: int) -> np.ndarray | None:
    """Valid train indices, or None when the split file is unusable (reported by _check_splits)."""
    try:
        raw = json.loads((folder / "splits.json").read_text(encoding="utf-8"))
        train = np.asarray([i for i in raw["train"] if isinstance(i, int) and 0 <= i < n], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return train


def _check_spacing(folder: Path, spec: TaskSpec, rep: _Report, n: int | None) -> None:
    path = folder / "spacing.npy"
    spacing = _load(folder, "spacing", rep, required=False)
    if spacing is None:
        return
    if spacing.ndim != 2 or spacing.shape[1] != spec.spatial_dims:
        rep.error(path, "spacing", f"shape {spacing.shape}, expected (N, {spec.spatial_dims}) in mm")
        return
    _count_mismatch(path, "spacing", rep, len(spacing), n)
    s = np.asarray(spacing, dtype=np.float64)
    bad = ~(np.isfinite(s).all(axis=1) & (s > 0).all(axis=1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rep.error(path, "spacing", f"{int(bad.sum())} sample(s) have a non-positive or non-finite spacing, "
                  f"e.g. sample {i} = {s[i].tolist()} mm")


def _check_splits(folder: Path, rep: _Report, n: int | None) -> None:
    path = folder / "splits.json"
    if not path.is_file():
        rep.error(path, "splits", "missing splits file")
        return
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        rep.error(path, "splits", f"not valid JSON: {err}")
        return
    if not isinstance(raw, dict):
        rep.error(path, "splits", f"expected a mapping train/val/test -> indices, found {type(raw).__name__}")
        return
    for key in sorted(set(raw) - set(SPLITS)):
        rep.error(path, key, f"unknown split {key!r} (valid: {', '.join(SPLITS)})")
    owner: dict[int, str] = {}
    for split in SPLITS:
        if split not in raw:
            rep.error(path, split, "split is missing")
            continue
        values = raw[split]
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            rep.error(path, split, "expected a list of integer sample indices")
            continue
        if not values:
            (rep.error if split == "train" else rep.warn)(path, split, "split is empty")
            continue
        arr = np.asarray(values, dtype=np.int64)
        if n is not None:
            out = arr[(arr < 0) | (arr >= n)]
            if len(out):
                rep.error(path, split, f"{len(out)} index(es) outside 0..{n - 1}, e.g. {int(out[0])}")
        uniq, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            rep.error(path, split, f"{int((counts > 1).sum())} index(es) listed twice, e.g. "
                      f"{int(uniq[counts > 1][0])}")
        overlap = [int(i) for i in uniq if int(i) in owner]
        if overlap:
            rep.error(path, split, f"{len(overlap)} index(es) also in split {owner[overlap[0]]!r}, "
                      f"e.g. {overlap[0]}")
        for i in uniq:
            owner.setdefault(int(i), split)
    if n is not None and owner:
        unused = n - sum(1 for i in owner if 0 <= i < n)
        if unused > 0:
            rep.warn(path, "splits", f"{unused} of {n} samples belong to no split (never used)")
