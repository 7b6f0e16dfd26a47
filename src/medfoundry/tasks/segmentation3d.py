"""3D segmentation of whole volumes of different shapes: the ``segmentation3d`` kind.

Stored by ``medfoundry data import volumes3d`` (:mod:`medfoundry.data.volumes3d`): flat,
memory-mapped ``images.npy`` / ``labels.npy`` plus ``volumes3d.json``, which holds the class
names, channels and a per-case index (shape in voxels, spacing in mm, affine, split).

Why the kind contract grew a ``manifest`` (self-described tasks) instead of these tasks
entering ``database.yaml``: a ``database.yaml`` task is a :class:`~medfoundry.data.TaskSpec`
with one ``image_size``, and every reader of that file (loaders, ``pretrain``, ``transfer``,
the stratified fractions) indexes ``images.npy`` as ``(N, C, *image_size)``. Volumes keep
their own shape and spacing (resizing would change the voxel size), so a 3D task listed there
would either lie about its size or break those readers. The task folder describes itself
instead, and the registry tells ``data validate`` and ``data inspect`` how to find
(:meth:`stored_tasks`), check (:meth:`validate_stored`), summarise
(:meth:`summarize_stored`) and draw (:meth:`draw_stored`) it. A ``database.yaml`` entry of
this kind is refused by :class:`~medfoundry.data.TaskSpec` with that explanation.

Target and prediction: a label map (X, Y, Z) of class indices, int64. Metrics are those of
:mod:`medfoundry.tasks.segmentation` (per-class Dice, HD95 in mm from the case spacing);
training and prediction are ``medfoundry segment train`` / ``predict``
(:mod:`medfoundry.segmentation`), whose 3D network is not a pooled-feature head.

Multi-task pretraining (``medfoundry pretrain``) takes these tasks too: the head is the dense
:class:`~medfoundry.models.heads.SegmentationHead` of 2D segmentation (softmax classes,
(CE / ln C + batch Dice) / 2) on the shared 3D decoder. The hooks below give the trainer what
a ``database.yaml`` task gets from the database: a model :class:`~medfoundry.data.TaskSpec`
(:meth:`stored_spec`, ``image_size`` = the training patch, ``extra["stored_in"]`` naming the
manifest), the splits (:meth:`stored_splits`), a resumable stream of foreground-oversampled
patch batches (:meth:`batch_stream`) and whole-volume predictions for validation
(:meth:`predict_split`, sliding window); see :mod:`medfoundry.training.patches3d`.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.volumes3d import MANIFEST, SPLITS, VolumeTask, volume_task_problems
from ..errors import DataError
from . import register_kind
from .base import format_items
from .segmentation import SegmentationKind

__all__ = ["Segmentation3dKind"]

_CHUNK_VOXELS = 32 * 2**20  # labels scanned per step by the inspect summary (uint8: 32 MiB)


class Segmentation3dKind(SegmentationKind):
    name = "segmentation3d"
    arrays = ()
    manifest = MANIFEST

    # ----------------------------------------------------------------- storage
    def writer(self, folder: Path, spec: Any, n: int):
        raise DataError(f"task {spec.name!r}: {self.name} tasks are written by `medfoundry data import volumes3d` "
                        "(medfoundry.data.adapters.nnunet_folder.import_volumes3d), not DatabaseWriter",
                        field="kind")

    def target(self, db: Any, task: str, index: int) -> np.ndarray:
        return np.asarray(VolumeTask.open(db.root, task).label(index), dtype=np.int64)

    def example_target(self, spec: Any, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(spec.num_classes, size=spec.image_size).astype(np.int64)

    def invalid_targets(self, spec: Any, db: Any, task: str) -> tuple[str, str, np.ndarray, np.ndarray]:
        t = VolumeTask.open(db.root, task)
        labels, k = t._array("labels"), spec.num_classes
        # one max per case: a case is one contiguous slice of the flat label array
        hi = np.array([int(np.max(labels[c.offset:c.offset + c.size])) if c.size else 0 for c in t.cases],
                      dtype=np.int64)
        bad = np.flatnonzero(hi >= k)
        return "labels", f"0..{k - 1}", bad, hi[bad]

    # ------------------------------------------------- multi-task pretraining
    def stored_spec(self, root: Path, task: str, patch: Sequence[int], group: str = "3d") -> Any:
        """The model's :class:`~medfoundry.data.TaskSpec` of stored task ``task``:
        ``image_size`` is the training ``patch`` (voxels); ``spacing`` the target spacing when
        the task was resampled to one; ``group`` keeps these tasks out of the default
        (``pretrain``) task list, which is 2D."""
        from ..data.tasks import TaskSpec

        t = VolumeTask.open(root, task)
        return TaskSpec(t.name, self.name, tuple(t.classes), t.modality, 3, tuple(int(p) for p in patch), t.channels,
                        description=t.description, spacing=t.target_spacing, group=group,
                        extra={"stored_in": f"tasks/{t.name}/{MANIFEST}"})

    def stored_splits(self, root: Path, task: str) -> dict[str, np.ndarray]:
        """Case indices per split."""
        t = VolumeTask.open(root, task)
        return {s: np.asarray(t.split(s), dtype=np.int64) for s in SPLITS}

    def batch_stream(self, db: Any, task: str, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                     **options: Any) -> Any:
        """Endless, resumable patch batches of the ``train`` split
        (:class:`~medfoundry.training.patches3d.VolumePatchStream`; ``options``: ``foreground``,
        ``augment``, ``cache_bytes``)."""
        from ..training.patches3d import VolumePatchStream

        return VolumePatchStream(VolumeTask.open(db.root, task), db.task(task).image_size, batch_size, seed=seed,
                                 rank=rank, world_size=world_size, **options)

    def predict_split(self, model: Any, db: Any, task: str, split: str, **options: Any) -> Any:
        """Whole-volume predictions of ``split`` with their targets
        (:func:`~medfoundry.training.patches3d.predict_volumes`)."""
        from ..training.patches3d import predict_volumes

        return predict_volumes(model, VolumeTask.open(db.root, task), db.task(task), split, **options)

    # ------------------------------------------------- self-described tasks
    def validate_stored(self, root: Path, task: str, error: Callable, warn: Callable) -> None:
        for path, field, message in volume_task_problems(root, task):
            error(path, field, message)
        try:
            t = VolumeTask.open(root, task)
        except DataError:
            return  # reported above
        if not t.split("val"):
            warn(t.root / MANIFEST, "cases", "no case in the 'val' split (training reports no validation Dice)")

    def summarize_stored(self, root: Path, task: str) -> dict[str, Any]:
        t = VolumeTask.open(root, task)
        shapes = np.array([c.shape for c in t.cases]) if t.cases else np.zeros((1, 3), dtype=int)
        labels = t._array("labels")
        k = t.num_classes
        voxels = np.zeros(k, dtype=np.int64)
        for a in range(0, labels.size, _CHUNK_VOXELS):
            block = np.asarray(labels[a:a + _CHUNK_VOXELS])
            voxels += np.bincount(block, minlength=k)[:k]
        present = np.zeros(k, dtype=np.int64)
        for i in range(len(t)):  # one case at a time keeps memory flat
            present[np.unique(np.minimum(t.label(i), k - 1))] += 1
        total = max(1, int(voxels.sum()))
        return {
            "name": t.name, "kind": self.name, "modality": t.modality, "group": "3d", "classes": list(t.classes),
            "channels": t.channels, "image_size": shapes.max(0).tolist(), "image_size_min": shapes.min(0).tolist(),
            "spacing": None if t.target_spacing is None else list(t.target_spacing), "num_samples": len(t),
            "splits": {s: len(t.split(s)) for s in SPLITS}, "description": t.description,
            "balance": {"voxel_share": {c: float(v) / total for c, v in zip(t.classes, voxels)},
                        "cases_with": {c: int(v) for c, v in zip(t.classes, present)}},
        }

    def summary_text(self, balance: dict[str, Any], limit: int = 12) -> str:
        return "voxels " + format_items(balance["voxel_share"], lambda v: f"{100 * v:.2f}%", limit)

    def draw_stored(self, axes: Sequence[Any], root: Path, task: str, seed: int) -> None:
        from ..segmentation.figures import best_slice, draw_overlay

        t = VolumeTask.open(root, task)
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])  # same cases whatever the row
        chosen = np.sort(rng.choice(len(t), size=min(len(axes), len(t)), replace=False))
        for ax, i in zip(axes, chosen):
            image, label = t.image(int(i)), t.label(int(i))
            k = best_slice(label, label.shape[2])
            present = [t.classes[c] for c in np.unique(label[:, :, k]) if 0 < c < t.num_classes]
            draw_overlay(ax, f"{t.cases[int(i)].name} k={k}\n{', '.join(present) or '(background)'}",
                         image[-1][:, :, k], label[:, :, k])
        for ax in axes[len(chosen):]:
            ax.axis("off")
        from matplotlib.patches import Patch

        from ..segmentation.figures import LABEL_COLOURS

        handles = [Patch(color=LABEL_COLOURS[min(c, len(LABEL_COLOURS) - 1)], label=t.classes[c])
                   for c in range(1, t.num_classes)]
        axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)


register_kind(Segmentation3dKind())
