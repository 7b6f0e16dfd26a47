"""Writing the synthetic database: scale presets, task selection, progress, determinism."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import ConfigError
from ...utils import look_up_option
from ..database import DatabaseWriter, MultiTaskDatabase
from ..tasks import TaskSpec
from ._common import sample_rng, stratified_splits, task_rng
from .catalog import CATALOG, SyntheticTask

__all__ = ["SCALES", "SYNTHETIC_TASKS", "SYNTHETIC_3D_TASKS", "list_synthetic_tasks", "synthetic_task_spec",
           "make_synthetic_database"]

GENERATOR_VERSION = 1  # bump when a renderer changes its output for the same seed

# image_size: pixels per side; factor: samples per task relative to the "small" counts, or
# samples: samples per task by group (pretrain / downstream) instead;
# cases_3d: (training, held-out) phantoms per 3D task.
# bench: 16,680 per downstream task split 60/20/20 per class gives 10,008 training and 3,336
# val / test images (so 1 % is 100 images); 10,000 per pretraining task (110,000 images) is
# more than a CPU pretraining run of the 2-hour benchmark can use up (several epochs), and the
# whole folder builds in minutes on 2 cores (about 1.8 GB). 64 px keeps the sweep's CPU cost.
SCALES = types.MappingProxyType({
    "small": {"image_size": 64, "factor": 1, "cases_3d": (16, 4)},
    "bench": {"image_size": 64, "samples": {"pretrain": 10_000, "downstream": 16_680}, "cases_3d": (64, 16)},
    "full": {"image_size": 128, "factor": 5, "cases_3d": (64, 16)},
})

# Samples per worker job: large enough to amortise the inter-process transfer, small enough
# to keep both cores busy until the end of a task.
_CHUNK = 250
# Below this many samples in all, starting worker processes costs more than it saves.
_MIN_PARALLEL = 2_000

#: Held-out 3D segmentation tasks of ``with_3d`` (task name -> phantom family of
#: :mod:`medfoundry.data.synthetic.phantoms3d`), stored as ``segmentation3d`` tasks.
SYNTHETIC_3D_TASKS = types.MappingProxyType({"brain_tumour3d": "brain_tumour", "kidney3d": "kidney"})

#: Task name -> group ("pretrain" or "downstream"), in database order.
SYNTHETIC_TASKS = types.MappingProxyType({t.name: t.group for t in CATALOG})
_BY_NAME = {t.name: t for t in CATALOG}


def list_synthetic_tasks(group: str | None = None) -> list[str]:
    """Names of the synthetic tasks, optionally only one group (``pretrain`` / ``downstream``)."""
    if group is not None and group not in ("pretrain", "downstream"):
        raise ConfigError(f"list_synthetic_tasks(): group must be 'pretrain' or 'downstream', got {group!r}")
    return [t.name for t in CATALOG if group is None or t.group == group]


def synthetic_task_spec(name: str, scale: str = "small") -> TaskSpec:
    """The ``TaskSpec`` a task gets at a scale (without generating anything)."""
    look_up_option(name, _BY_NAME, what="synthetic task")
    return _BY_NAME[name].spec(_scale(scale)["image_size"])


def _scale(scale: str) -> dict:
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r} for the synthetic database (valid: {', '.join(SCALES)})")
    return dict(SCALES[scale])


def make_synthetic_database(out: str | Path, seed: int = 0, scale: str = "small", overwrite: bool = False,
                            progress: bool = True, *, tasks: Sequence[str] | None = None,
                            image_size: int | None = None, with_3d: bool | Sequence[str] = False,
                            workers: int | None = None, _n_override: int | None = None,
                            _cases_3d: tuple[int, int] | None = None) -> MultiTaskDatabase:
    """Generate the embedded default database (pretraining and downstream tasks) into ``out``.

    The same ``seed`` gives byte-identical files: each sample draws from its own generator
    seeded by ``(seed, crc32(task), index)``, so a task does not depend on which other tasks
    are built or in which order, and the first k samples are the same whatever the size.
    The bytes do not depend on ``workers`` either: workers only render samples; the parent
    writes them into memory-mapped arrays.

    With ``with_3d`` the folder also holds held-out 3D segmentation tasks (``segmentation3d``,
    described by ``tasks/<task>/volumes3d.json``, not by ``database.yaml``): seeded phantoms
    written by :func:`~medfoundry.data.synthetic.phantoms3d.make_phantoms` as nnU-Net folders
    under ``raw3d/<task>/`` (kept: ``segment predict`` reads NIfTI) and stored by
    :func:`~medfoundry.data.adapters.nnunet_folder.import_volumes3d`, the ``imagesTs`` cases
    as the ``test`` split. About 1.5 s per brain case and 0.3 s per kidney case on one core,
    so it is opt-in (``make demo`` does not pay for it).

    Args:
        out: database folder to create (written atomically via ``DatabaseWriter``).
        seed: base seed.
        scale: ``small`` (64 x 64 px, about 300-360 samples per task; the CPU demo),
            ``bench`` (64 x 64 px, 10,000 samples per pretraining task and 16,680 per
            downstream task: 10,008 train / 3,336 val / 3,336 test; the data-efficiency
            benchmark) or ``full`` (128 x 128 px, five times the small counts).
        overwrite: replace an existing folder.
        progress: show a rich progress bar.
        tasks: build only these tasks (default: all of ``SYNTHETIC_TASKS``).
        with_3d: ``True`` adds every task of ``SYNTHETIC_3D_TASKS`` (brain tumours: T1, T1c,
            T2, FLAIR with BraTS labels; CT-like kidneys with KiTS labels); a list adds those.
        image_size: override the scale's image side in pixels (tests, experiments).
        workers: processes that render samples (``None``: every core when the build has at
            least 2,000 samples, else 1; 1 renders in this process). Worker processes are
            spawned, so a calling script needs an ``if __name__ == "__main__":`` guard.
        _n_override: samples per task instead of the scale's counts (tests only).
        _cases_3d: (training, held-out) cases per 3D task instead of the scale's (tests only).

    Returns:
        The opened database.

    Raises:
        ConfigError: unknown scale or task name, or an image size below 32 pixels.
        DataError: ``out`` exists and ``overwrite`` is false.
    """
    preset = _scale(scale)
    size = int(image_size if image_size is not None else preset["image_size"])
    if size < 32:
        raise ConfigError(f"make_synthetic_database(): image_size must be >= 32 pixels, got {size}")
    names = list(SYNTHETIC_TASKS) if tasks is None else [look_up_option(n, _BY_NAME, "synthetic task") for n in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"make_synthetic_database(): duplicate task names in {names}")
    if _n_override is not None and _n_override < 3:
        raise ConfigError(f"make_synthetic_database(): _n_override must be >= 3, got {_n_override}")
    selected = [_BY_NAME[n] for n in names]
    names_3d = (list(SYNTHETIC_3D_TASKS) if with_3d is True else [] if not with_3d else
                [look_up_option(n, SYNTHETIC_3D_TASKS, "synthetic 3D task") for n in with_3d])
    cases_3d = tuple(_cases_3d if _cases_3d is not None else preset["cases_3d"])
    counts = {t.name: int(_n_override) if _n_override is not None else _count(t, preset) for t in selected}
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"make_synthetic_database(): workers must be >= 1, got {workers}")
    n_workers = int(workers) if workers is not None else (
        _cores() if sum(counts.values()) >= _MIN_PARALLEL else 1)
    meta = {"generator": {"name": "medfoundry.data.synthetic", "version": GENERATOR_VERSION, "seed": int(seed),
                          "scale": scale, "image_size": size, **({"tasks_3d": names_3d} if names_3d else {})}}
    description = (f"Synthetic multi-modal default database ({scale}, {size}x{size} px, seed {seed}): "
                   "pretraining tasks plus held-out downstream tasks; see docs/synthetic_tasks.md")
    with DatabaseWriter(out, name=f"medfoundry-synthetic-{scale}", description=description,
                        overwrite=overwrite, extra=meta) as writer, _progress(progress) as bar, \
            _renderer(n_workers) as render:
        total = bar.add_task("synthetic database", total=sum(counts.values()) + sum(cases_3d) * len(names_3d)
                             ) if bar is not None else None
        for task in selected:
            if bar is not None:
                bar.update(total, description=f"{task.name:<24}")
            _write_task(writer, task, counts[task.name], size, seed, bar, total, render)
        for name in names_3d:  # into the writer's hidden folder: the whole database stays atomic
            if bar is not None:
                bar.update(total, description=f"{name:<24}")
            _write_3d_task(writer.tmp, name, cases_3d, seed, bar, total)
    return MultiTaskDatabase.open(out)


def _write_3d_task(root: Path, name: str, cases: tuple[int, int], seed: int, bar, bar_task) -> None:
    from ..adapters.nnunet_folder import import_volumes3d
    from .phantoms3d import make_phantoms

    family = SYNTHETIC_3D_TASKS[name]
    raw = root / "raw3d" / name
    step = (lambda done, total: bar.advance(bar_task)) if bar is not None else None
    make_phantoms(raw, family, cases=cases[0], test_cases=cases[1], seed=seed, progress=step)
    import_volumes3d(raw / "imagesTr", raw / "labelsTr", root, name, modality="tomographic", seed=seed,
                     test_images=raw / "imagesTs", test_labels=raw / "labelsTs",
                     source=f"raw3d/{name} (make_phantoms {family!r}, seed {seed})",
                     description=f"synthetic 3D {family.replace('_', ' ')} phantoms (held-out 3D task)")


def _cores() -> int:
    # The cores this process may run on (a container or taskset can allow fewer than cpu_count).
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _count(task: SyntheticTask, preset: dict) -> int:
    if "samples" in preset:
        return int(preset["samples"][task.group])
    return task.n_small * int(preset["factor"])


def _render_chunk(job: tuple[str, int, int, int, int]) -> list[tuple[np.ndarray, object, int]]:
    """Samples ``start .. stop - 1`` of one task (run in a worker; each sample has its own seed)."""
    name, start, stop, size, seed = job
    task = _BY_NAME[name]
    return [task.sample(sample_rng(seed, name, i), i, size)[:3] for i in range(start, stop)]


def _jobs(name: str, n: int, size: int, seed: int) -> list[tuple[str, int, int, int, int]]:
    return [(name, a, min(a + _CHUNK, n), size, seed) for a in range(0, n, _CHUNK)]


class _InProcess:
    def __enter__(self):
        return lambda jobs: map(_render_chunk, jobs)

    def __exit__(self, *exc) -> None:
        return None


class _Pool:
    """Renders chunks in ``n`` spawned processes, in order.

    Spawned rather than forked: safe after torch or a progress-bar thread has started. As with
    any spawned pool, a script that builds the database must guard its entry point with
    ``if __name__ == "__main__":``.
    """

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import multiprocessing as mp

        self.pool = mp.get_context("spawn").Pool(self.n)
        return lambda jobs: self.pool.imap(_render_chunk, jobs)

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()


def _renderer(workers: int):
    return _Pool(workers) if workers > 1 else _InProcess()


def _write_task(writer: DatabaseWriter, task: SyntheticTask, n: int, size: int, seed: int, bar, bar_task,
                render) -> None:
    tw = writer.add_task(task.spec(size), n=n, image_dtype=task.image_dtype)
    strata = np.zeros(n, np.int64)
    i = 0
    for chunk in render(_jobs(task.name, n, size, seed)):
        for image, target, stratum in chunk:
            tw.set_sample(i, image, target)
            strata[i] = stratum
            i += 1
        if bar is not None:
            bar.advance(bar_task, len(chunk))
    tw.set_splits(stratified_splits(strata, task_rng(seed, task.name)))


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn())
