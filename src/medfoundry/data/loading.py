"""Per-task datasets, batch collation and endless per-task batch streams.

A batch is a dict::

    {"task": str,
     "image": FloatTensor (B, C, *image_size),
     "target": as the task's kind collates it (``Kind.collate``); built-in kinds:
               classification LongTensor (B,) | multilabel FloatTensor (B, K)
               | segmentation LongTensor (B, *image_size)
               | detection list of B dicts {"boxes": FloatTensor (M, 4), "labels": LongTensor (M,)},
     "index": LongTensor (B,)  sample indices in the task's arrays,
     "spacing": FloatTensor (B, spatial_dims) mm, or None when unknown}
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .database import MultiTaskDatabase

__all__ = ["TaskDataset", "collate", "BatchStream"]


class TaskDataset(Dataset):
    """Samples of one task restricted to ``indices`` (default: the whole split).

    Args:
        db: an open database (re-opened lazily inside worker processes).
        task: task name.
        split: ``train``, ``val`` or ``test``; ignored when ``indices`` is given.
        indices: explicit sample indices, e.g. from ``db.fraction_indices``.
        transform: optional ``f(image, target, rng) -> (image, target)`` on numpy arrays, e.g.
            :func:`medfoundry.data.augment.make_augmenter`. Plain indexing seeds ``rng`` from the
            sample index and torch's seed; :class:`BatchStream` seeds it per draw instead
            (:meth:`sample`), so a sample is augmented differently in every epoch.
        augment: shorthand for ``transform=make_augmenter(spec, augment)`` (``none``: no transform).
    """

    def __init__(self, db: MultiTaskDatabase, task: str, split: str = "train",
                 indices: Sequence[int] | np.ndarray | None = None,
                 transform: Callable[..., tuple[np.ndarray, Any]] | None = None, augment: str = "none"):
        self.db = db
        self.task = task
        self.spec = db.task(task)
        self.indices = np.asarray(db.split_indices(task, split) if indices is None else indices, dtype=np.int64)
        if transform is None and augment != "none":
            from .augment import make_augmenter

            transform = make_augmenter(self.spec, augment)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.sample(item, (int(self.indices[item]), torch.initial_seed() % (2**32)))

    def sample(self, item: int, rng_key: Sequence[int]) -> dict[str, Any]:
        """Sample ``item``, its transform (if any) drawing from ``default_rng(rng_key)``."""
        index = int(self.indices[item])
        image = self.db.image(self.task, index)
        target = self.db.target(self.task, index)
        if self.transform is not None:
            image, target = self.transform(image, target, np.random.default_rng([int(k) for k in rng_key]))
        return {"image": image, "target": target, "index": index, "spacing": self.db.spacing(self.task, index)}


def collate(samples: list[dict[str, Any]], task: str, kind: Any) -> dict[str, Any]:
    """Stack samples of one task into a batch (see the module docstring for the layout);
    the target is stacked by the registered kind ``kind`` (``Kind.collate``)."""
    from ..tasks import get_kind

    image = torch.from_numpy(np.stack([s["image"] for s in samples])).float()
    target = get_kind(kind).collate([s["target"] for s in samples])
    spacings = [s["spacing"] for s in samples]
    spacing = None if any(sp is None for sp in spacings) else torch.tensor(spacings, dtype=torch.float32)
    return {"task": task, "image": image, "target": target,
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.long), "spacing": spacing}


class BatchStream:
    """Endless, resumable stream of shuffled batches of one task, optionally sharded.

    The order is a function of ``(seed, epoch)`` only, and the position is two integers, so a
    trainer can checkpoint ``state_dict()`` and continue exactly where it stopped. A dataset
    transform (augmentation) draws from ``(seed, epoch, slot)``, so it resumes exactly too.

    With ``world_size > 1`` the global batch is split across processes: every process walks
    the same global order and loads only positions ``rank, rank + world_size, ...`` of each
    global batch, so the union of the shards is exactly the single-process batch and the
    stream state is identical on every rank.
    """

    def __init__(self, dataset: TaskDataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        from ..errors import ConfigError, DataError

        if len(dataset) == 0:
            raise DataError(f"task {dataset.task!r}: the selected split is empty", field="splits")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"BatchStream: rank {rank} is not in [0, {world_size})")
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of the number of processes "
                              f"({world_size}) so every rank gets the same shard size")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(len(self.dataset))

    def next_batch(self) -> dict[str, Any]:
        draws = []  # (sample, epoch, slot in the epoch): the slot seeds the sample's augmentation
        while len(draws) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation()
            draws.append((int(self._order[self.position]), self.epoch, self.position))
            self.position += 1
        items = [self.dataset.sample(p, (self.seed, epoch, slot, 104729))
                 for p, epoch, slot in draws[self.rank::self.world_size]]
        return collate(items, self.dataset.task, self.dataset.spec.kind)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order = self._permutation()
