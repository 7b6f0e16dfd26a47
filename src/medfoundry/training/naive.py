"""The naive joint-loss baseline: every task's loss in one graph, one backward, one step.

Kept for benchmarks and as an independent check of :class:`MultiTaskTrainer`: with clipping
off, both give the same update from the same batches. Its peak memory grows with the number
of tasks, because the activations of all tasks stay alive until the single backward, and all
heads sit on the device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.database import MultiTaskDatabase
from ..data.loading import TaskDataset
from ..utils import resolve_device
from .config import PretrainConfig
from ..inference import move_to
from .multitask import WarmupCosine, param_groups, resolve_tasks
from .sampling import ShardedBatchStream, TaskSampler, stream_seed

__all__ = ["NaiveJointTrainer"]


class NaiveJointTrainer:
    """Joint-loss multi-task training (the memory-hungry baseline).

    Args:
        model: same contract as for :class:`MultiTaskTrainer`.
        db: training database.
        config: same config; uses tasks, batch_size, sampling, lr schedule, AdamW settings,
            loss weights/reduction, ``grad_clip`` (one global norm over all parameters).
        device: overrides ``config.device``.
    """

    def __init__(self, model: nn.Module, db: MultiTaskDatabase, config: PretrainConfig,
                 device: str | torch.device | None = None):
        self.cfg = config
        self.device = resolve_device(config.device) if device is None else torch.device(device)
        self.model = model.to(self.device)
        self.tasks = resolve_tasks(db, config.tasks)
        groups = param_groups(model.trunk_parameters(), config.weight_decay)
        for t in self.tasks:
            groups += param_groups(model.heads[t].parameters(), config.weight_decay)
        self.opt = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))
        self.schedule = WarmupCosine(config.lr, config.rounds, config.warmup_rounds, config.min_lr_ratio)
        self.streams = {t: ShardedBatchStream(TaskDataset(db, t, "train"), config.batch_size,
                                              seed=stream_seed(config.seed, t)) for t in self.tasks}
        self.sampler = TaskSampler(self.tasks, config.sampling, config.tasks_per_round,
                                   sizes={t: len(s.dataset) for t, s in self.streams.items()}, seed=config.seed)
        self.round = 0

    def train_round(self) -> dict[str, Any]:
        tasks = self.sampler.select()
        lr = self.schedule(self.round)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.train()
        shared_weight = 1.0 / len(tasks) if self.cfg.loss_reduction == "mean" else 1.0
        total = torch.zeros((), device=self.device)
        losses = {}
        for task in tasks:
            batch = self.streams[task].next_batch()
            output = self.model(batch["image"].to(self.device), task)
            loss = self.model.heads[task].loss(output, move_to(batch["target"], self.device))
            total = total + loss.float() * (shared_weight * self.cfg.loss_weights.get(task, 1.0))
            losses[task] = float(loss.detach())
        total.backward()
        params = [p for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.round += 1
        return {"tasks": tasks, "losses": losses, "lr": lr}

    def fit(self) -> None:
        while self.round < self.cfg.rounds:
            self.train_round()
