"""The database a pretraining run sees: ``database.yaml`` tasks plus stored (ragged) tasks.

Tasks of a kind that describes itself (``segmentation3d``: ``tasks/<task>/volumes3d.json``)
are not ``database.yaml`` entries, so :class:`~medfoundry.data.MultiTaskDatabase` does not
list them. :class:`RunDatabase` adds them as model specs built by their kind
(``stored_spec``: ``image_size`` is the run's training patch) in the group ``3d``, so
``--tasks`` can name them while the default task list (group ``pretrain``) stays as it was.
Their splits come from the kind (``stored_splits``); their batches and their validation
predictions too (``batch_stream``, ``predict_split``, see :mod:`.patches3d`). A folder that
holds only stored tasks needs no ``database.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.database import MANIFEST, MultiTaskDatabase
from ..errors import DataError

__all__ = ["RunDatabase", "open_run_database", "STORED_GROUP"]

STORED_GROUP = "3d"


class RunDatabase(MultiTaskDatabase):
    """A :class:`~medfoundry.data.MultiTaskDatabase` that also lists the stored tasks.

    Attributes:
        stored: stored task name -> its registered kind.
        unreadable: stored tasks whose description could not be read -> the error, raised
            only when a run names them (a broken 3D task does not stop a 2D run).
    """

    stored: dict[str, Any]
    unreadable: dict[str, DataError]

    def task(self, name: str) -> Any:
        if name in self.unreadable:
            raise self.unreadable[name]
        return super().task(name)

    def task_names(self, group: str | None = None) -> list[str]:
        names = super().task_names(group)
        return names + sorted(self.unreadable) if group in (None, STORED_GROUP) else names

    def splits(self, task: str) -> dict[str, np.ndarray]:
        if task in self.stored:
            if task not in self._splits:
                self._splits[task] = self.stored[task].stored_splits(self.root, task)
            return self._splits[task]
        return super().splits(task)

    def num_samples(self, task: str) -> int:
        if task in self.stored:
            return int(sum(len(v) for v in self.splits(task).values()))
        return super().num_samples(task)


def open_run_database(root: str | Path, patch: Sequence[int]) -> RunDatabase:
    """Open ``root`` with its stored tasks; ``patch`` is the training patch of those tasks.

    Raises:
        DataError: the folder is missing, holds neither a ``database.yaml`` nor a stored task,
            or a stored task has the name of a ``database.yaml`` task.
    """
    from ..tasks import stored_task_kinds

    root = Path(root)
    stored = stored_task_kinds(root) if root.is_dir() else {}
    if (root / MANIFEST).is_file() or not stored:
        base = MultiTaskDatabase.open(root)  # the usual errors for a missing or broken manifest
        manifest, tasks = base.manifest, dict(base.tasks)
    else:
        manifest, tasks = {"format_version": 1, "name": root.name, "tasks": []}, {}
    unreadable: dict[str, DataError] = {}
    for name, kind in stored.items():
        if name in tasks:
            raise DataError(f"task {name!r} is both a database.yaml entry and a stored {kind.name} task",
                            path=root / "tasks" / name, field="tasks")
        try:
            tasks[name] = kind.stored_spec(root, name, patch, group=STORED_GROUP)
        except DataError as err:
            unreadable[name] = err
    db = RunDatabase(root, manifest, tasks)
    db.stored = {n: k for n, k in stored.items() if n in tasks}
    db.unreadable = unreadable
    return db
