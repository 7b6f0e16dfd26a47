"""Which tasks enter a round, and per-process shards of each task's batch stream."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..data.loading import BatchStream
from ..errors import ConfigError
from ..utils import look_up_option

__all__ = ["TaskSampler", "ShardedBatchStream", "stream_seed"]


def stream_seed(seed: int, task: str) -> int:
    """Seed of one task's batch order: distinct per task, identical on every process."""
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32(task.encode())) % (2**63)


class TaskSampler:
    """Chooses the tasks of each round.

    Args:
        tasks: task names in a fixed order (the order tasks run in within a round).
        policy: ``all`` | ``random_k`` | ``size_weighted`` (see :class:`PretrainConfig`).
        k: tasks per round for the random policies (capped at the number of tasks).
        sizes: train-split size per task, for ``size_weighted``.
        seed: seed of the sampler's own generator; every process uses the same seed, so all
            ranks of a distributed run pick the same tasks without communicating.
    """

    def __init__(self, tasks: Sequence[str], policy: str = "all", k: int | None = None,
                 sizes: Mapping[str, int] | None = None, seed: int = 0):
        self.tasks = list(tasks)
        if not self.tasks:
            raise ConfigError("TaskSampler: needs at least one task")
        self.policy = look_up_option(policy, ("all", "random_k", "size_weighted"), what="sampling policy")
        if self.policy != "all" and (k is None or k < 1):
            raise ConfigError(f"TaskSampler: policy {policy!r} needs k >= 1, got {k!r}")
        self.k = len(self.tasks) if k is None else min(int(k), len(self.tasks))
        self.probabilities: np.ndarray | None = None
        if self.policy == "size_weighted":
            if sizes is None or any(t not in sizes for t in self.tasks):
                raise ConfigError("TaskSampler: size_weighted needs the train size of every task")
            weights = np.array([float(sizes[t]) for t in self.tasks])
            if (weights <= 0).any():
                raise ConfigError("TaskSampler: every task needs a positive size for size_weighted")
            self.probabilities = weights / weights.sum()
        self.rng = np.random.default_rng([int(seed), 0x7A5C])

    def select(self) -> list[str]:
        """Tasks of the next round, in the fixed task order."""
        if self.policy == "all":
            return list(self.tasks)
        chosen = self.rng.choice(len(self.tasks), size=self.k, replace=False, p=self.probabilities)
        return [self.tasks[i] for i in sorted(int(c) for c in chosen)]

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state, "tasks": list(self.tasks), "policy": self.policy}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks or state["policy"] != self.policy:
            raise ConfigError(f"task sampler state is for tasks {state['tasks']} / {state['policy']!r}, "
                              f"this run has {self.tasks} / {self.policy!r}")
        self.rng.bit_generator.state = state["bit_generator"]


# The sharded stream is the data loader's own BatchStream (rank/world_size arguments); the
# name stays for the trainers and for code written against it.
ShardedBatchStream = BatchStream
