"""Stored 3D tasks in the multi-task trainer: patch batches in, whole-volume validation out.

A stored 3D task (``segmentation3d``, :mod:`medfoundry.data.volumes3d`) holds volumes of
different shapes, so a round cannot stack whole cases: every sample of its batch is a patch of
the run's ``patch`` size, cut by :class:`~medfoundry.segmentation.patches.PatchSampler` (the
sampler of ``medfoundry segment train``: half the patches centred on a foreground voxel of a
random class present in the case, MONAI spatial and intensity augmentation). The batch has the
layout of :mod:`medfoundry.data.loading` (``image`` (B, C, *patch), ``target`` (B, *patch)
int64), so the trainer's round, its loss and its memory behaviour are those of a 2D task: one
task's patch batch on the accelerator at a time, whatever the number of tasks.

Exact resumption: the stream's state is one NumPy generator (saved as JSON text, so a
checkpoint keeps loading with ``weights_only``). Each batch draws one seed per sample from it
and each sample is cut from its own generator, so under torchrun a rank cuts only its shard
(samples ``rank, rank + world_size, ...``) and the union of the shards is the single-process
batch, as :class:`~medfoundry.data.loading.BatchStream` guarantees for 2D tasks.

Validation predicts every case of the split whole, by sliding window (window = the training
patch, overlap 0.5, Gaussian blending; :class:`~medfoundry.inference.sliding_window.SlidingWindowPredictor`),
and scores it with the kind's metrics. Whole cases rather than a centre patch: the kind's
Dice is a per-case figure, the same one ``segment train`` and ``segment predict`` report,
and a centre patch would score a crop whose content depends on where the lesion lies (a
tumour off-centre gives an empty reference and an undefined Dice).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import torch

from ..data.volumes3d import VolumeTask
from ..errors import ConfigError, DataError
from ..inference.predict import TaskPredictions

__all__ = ["VolumePatchStream", "predict_volumes", "CACHE_BYTES"]

#: In-memory budget of decoded training cases, split between the 3D tasks of a run.
CACHE_BYTES = 2 * 1024**3


class VolumePatchStream:
    """Endless, resumable stream of patch batches of one stored 3D task (the
    :class:`~medfoundry.data.loading.BatchStream` interface: ``next_batch``,
    ``state_dict``, ``load_state_dict``).

    Args:
        task: the stored task.
        patch: patch size (voxels).
        batch_size: patches per batch (global under torchrun; a multiple of ``world_size``).
        seed: seed of the stream's generator.
        rank, world_size: this process's shard.
        foreground: share of patches centred on foreground.
        augment: MONAI augmentation of each patch.
        cache_bytes: keep the decoded training cases in memory when they fit in this budget.
        split: the cases to cut from.
    """

    def __init__(self, task: VolumeTask, patch: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, foreground: float = 0.5, augment: bool = True,
                 cache_bytes: int = CACHE_BYTES, split: str = "train"):
        from ..segmentation.patches import PatchSampler

        cases = task.split(split)
        if not cases:
            raise DataError(f"task {task.name!r}: the {split!r} split holds no case", path=task.root, field="cases")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"VolumePatchStream: rank {rank} is not in [0, {world_size})")
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of the number of processes "
                              f"({world_size}) so every rank gets the same shard size")
        self.task, self.batch_size, self.seed = task, int(batch_size), int(seed)
        self.rank, self.world_size = rank, world_size
        self.sampler = PatchSampler(task, cases, patch, foreground, augment, cache_bytes=cache_bytes)
        self.rng = np.random.default_rng([self.seed, 0x3D])
        self.spacing = {i: task.cases[i].spacing for i in cases}

    def __len__(self) -> int:
        return len(self.sampler.indices)

    def next_batch(self) -> dict[str, Any]:
        seeds = self.rng.integers(2**63, size=self.batch_size)
        drawn = [self.sampler.draw(np.random.default_rng(int(s))) for s in seeds[self.rank::self.world_size]]
        return {"task": self.task.name,
                "image": torch.from_numpy(np.stack([d[1] for d in drawn])).float(),
                "target": torch.from_numpy(np.stack([d[2] for d in drawn]).astype(np.int64)),
                "index": torch.tensor([d[0] for d in drawn], dtype=torch.long),
                "spacing": torch.tensor([self.spacing[d[0]] for d in drawn], dtype=torch.float32)}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = json.loads(state["rng"])


def predict_volumes(model: torch.nn.Module, task: VolumeTask, spec: Any, split: str = "val",
                    max_samples: int | None = None, device: torch.device | str = "cpu",
                    autocast_dtype: torch.dtype | None = None, overlap: float = 0.5,
                    sw_batch_size: int = 2) -> TaskPredictions:
    """Whole-volume predictions of a multi-task model's head for ``split`` of a stored task.

    Args:
        model: a foundation model (``model(image, task)`` -> logits) with a head for ``spec``.
        task: the stored task.
        spec: the model's spec of it (:meth:`Segmentation3dKind.stored_spec`; its
            ``image_size`` is the window).
        split: cases to predict.
        max_samples: the first cases of the split only.
        device: where the windows run.
        autocast_dtype: autocast on the accelerator (``None``: full precision).

    Returns:
        Label maps (uint8, to keep memory low over many cases) with the stored label maps,
        the case spacings and the case indices.
    """
    from contextlib import nullcontext

    from ..inference.sliding_window import SlidingWindowPredictor

    cases = task.split(split)[:max_samples] if max_samples is not None else task.split(split)
    device = torch.device(device)

    def logits(window: torch.Tensor) -> torch.Tensor:
        ctx = nullcontext() if autocast_dtype is None else torch.autocast(device.type, dtype=autocast_dtype)
        with ctx:
            return model(window, spec.name).float()

    predictor = SlidingWindowPredictor(logits, spec.image_size, "softmax", overlap=overlap,
                                       sw_batch_size=sw_batch_size, device=device)
    preds, targets, spacings = [], [], []
    for i in cases:
        preds.append(predictor(task.image(i)).argmax(0).numpy().astype(np.uint8))
        targets.append(task.label(i))
        spacings.append(task.cases[i].spacing)
    return TaskPredictions(preds, targets, spacings, np.asarray(cases, dtype=np.int64))
