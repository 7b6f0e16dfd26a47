"""The memory-decoupled multi-task training loop (one optimizer step per round of tasks).

One **round**: for each task the sampler picks, fetch that task's batch, run adapter ->
encoder -> decoder -> that task's head, compute the loss, ``backward()`` and let the graph go.
Gradients of the shared trunk accumulate across the tasks of the round; after the last task
they are all-reduced once (under torchrun), clipped, and the trunk takes ONE AdamW step. Peak
accelerator memory is therefore that of the largest single task, whatever the number of tasks.

Head placement: a head lives on the accelerator only during its own task. It is moved there
with its AdamW state before the forward pass and moved back to the CPU after. A head receives
gradient from exactly one task per round, so its gradient is final right after that task's
backward: the head is synchronised, clipped and stepped there and then, while on the device.
This is the same update as stepping it after the round (the trunk's weights it saw are the
pre-step weights either way), without a second transfer. Clipping is therefore per group: the
shared gradient's norm is clipped to ``grad_clip``, and each head's own gradient separately.

The learning rate is a pure function of the round (linear warm-up, cosine decay), so the
schedule's state is the round counter.

Stored 3D tasks (``segmentation3d``, volumes of different shapes) enter the same round: their
kind supplies a stream of fixed-size patch batches (``batch_stream``) and whole-volume
validation predictions (``predict_split``); see :mod:`.patches3d`. Every task of a run shares
the model's ``spatial_dims``.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..data.database import MultiTaskDatabase
from ..data.loading import TaskDataset
from ..errors import ConfigError
from ..inference import Predictor, move_to, predict_task
from ..utils import look_up_option, resolve_device
from .checkpoint import capture_rng_state, latest_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from .config import PretrainConfig
from .distributed import DistContext, all_reduce_gradients, barrier, broadcast_module
from .logging import RunLogger
from .sampling import ShardedBatchStream, TaskSampler, stream_seed

__all__ = ["MultiTaskTrainer", "WarmupCosine", "evaluate", "resolve_tasks", "param_groups"]




class WarmupCosine:
    """Learning rate of round ``r`` (0-based): linear warm-up, then cosine decay to ``min_ratio * lr``."""

    def __init__(self, lr: float, total_rounds: int, warmup_rounds: int = 0, min_ratio: float = 0.0):
        self.lr, self.total, self.warmup, self.min_ratio = float(lr), int(total_rounds), int(warmup_rounds), min_ratio

    def __call__(self, round_: int) -> float:
        if self.warmup and round_ < self.warmup:
            return self.lr * (round_ + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, max(0.0, (round_ - self.warmup) / span))
        return self.lr * (self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def resolve_tasks(db: MultiTaskDatabase, tasks: Sequence[str] | None, group: str = "pretrain") -> list[str]:
    """The tasks of a run: the given names (checked) or every task of ``group``."""
    if tasks is None:
        names = db.task_names(group=group)
        if not names:
            raise ConfigError(f"database {db.root} has no task with group={group!r}; "
                              f"name the tasks (--tasks), available: {', '.join(db.task_names())}")
        return names
    return [look_up_option(t, db.task_names(), what=f"task in {db.root}") for t in tasks]


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices/kernels, none on biases and norm scales (1-D)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    plain = [p for p in params if p.ndim <= 1]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0})
            if g["params"]]


def _move_optimizer_state(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for state in opt.state.values():
        for key, value in state.items():
            # Adam's "step" counter stays a CPU scalar (as torch keeps it for non-fused Adam).
            if torch.is_tensor(value) and key != "step":
                state[key] = value.to(device, non_blocking=True)


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None  # autocast is for the accelerator; CPU runs in fp32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class MultiTaskTrainer:
    """Memory-decoupled multi-task trainer (see the module docstring for the algorithm).

    Args:
        model: a :class:`~medfoundry.models.FoundationModel` (or anything with ``heads``
            (a ModuleDict keyed by task), ``forward(image, task)``, ``trunk_parameters()`` and
            heads with ``loss``, ``decode``, ``metrics``).
        db: the training database.
        config: the run configuration (tasks, batch size, rounds, optimizer, schedule...).
        run_dir: where ``metrics.jsonl`` and checkpoints go; ``None`` writes nothing.
        dist: process-group context from :func:`~medfoundry.training.distributed.init_distributed`.
        device: overrides ``config.device`` (under torchrun: ``cuda:LOCAL_RANK`` by default).

    Example:
        >>> trainer = MultiTaskTrainer(model, db, PretrainConfig(rounds=200), run_dir="runs/a")
        >>> trainer.resume()          # no-op without a checkpoint
        >>> val_metrics = trainer.fit()
    """

    def __init__(self, model: nn.Module, db: MultiTaskDatabase, config: PretrainConfig,
                 run_dir: str | Path | None = None, dist: DistContext | None = None,
                 device: str | torch.device | None = None):
        self.cfg = config
        self.db = db
        self.dist = dist or DistContext()
        self.run_dir = None if run_dir is None else Path(run_dir)
        if device is None:
            device = resolve_device(config.device)
            if device.type == "cuda" and self.dist.enabled and device.index is None:
                device = torch.device("cuda", self.dist.local_rank)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        self.model = model
        self.tasks = resolve_tasks(db, config.tasks)
        missing = [t for t in self.tasks if t not in model.heads]
        if missing:
            raise ConfigError(f"the model has no head for tasks {missing} (heads: {sorted(model.heads.keys())})")
        self.amp_dtype = _amp_dtype(config.precision, self.device)
        if config.precision in ("bf16", "fp16") and self.device.type != "cuda":
            self.amp_dtype = None  # documented: no autocast on CPU
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None

        self._place_model()
        broadcast_module(model, self.dist, device=self.device)
        head_ids = {id(p) for t in model.heads for p in model.heads[t].parameters()}
        self.trunk_params = [p for p in model.trunk_parameters() if p.requires_grad]
        trunk_ids = {id(p) for p in self.trunk_params}
        orphans = [n for n, p in model.named_parameters()
                   if p.requires_grad and id(p) not in trunk_ids and id(p) not in head_ids]
        if orphans:
            raise ConfigError(f"parameters neither in trunk_parameters() nor in a head would never train: {orphans[:5]}")
        opt_kw = dict(lr=config.lr, betas=tuple(config.betas))
        self.trunk_opt = torch.optim.AdamW(param_groups(self.trunk_params, config.weight_decay), **opt_kw)
        self.head_opts = {t: torch.optim.AdamW(param_groups(model.heads[t].parameters(), config.weight_decay), **opt_kw)
                          for t in self.tasks}
        self.schedule = WarmupCosine(config.lr, config.rounds, config.warmup_rounds, config.min_lr_ratio)

        streams = _task_streams(db, self.tasks, config, self.dist)
        self.streams = {t: s for t, (s, _) in streams.items()}
        self.sampler = TaskSampler(self.tasks, config.sampling, config.tasks_per_round,
                                   sizes={t: n for t, (_, n) in streams.items()}, seed=config.seed)
        self.round = 0
        self.resumed_from: Path | None = None
        self._pool = ThreadPoolExecutor(config.num_workers) if config.num_workers > 0 else None

    # ------------------------------------------------------------------ placement
    def _place_model(self) -> None:
        """Trunk on the device, every head on the CPU (moved in only for its task)."""
        heads = self.model.heads
        for module in self.model.children():
            if module is not heads:
                module.to(self.device)
        for p in self.model.parameters(recurse=False):
            p.data = p.data.to(self.device)
        for b_name, b in self.model.named_buffers(recurse=False):
            setattr(self.model, b_name, b.to(self.device))
        heads.to("cpu")

    def _head_to(self, task: str, device: torch.device) -> None:
        if self.device.type == "cpu":
            return
        self.model.heads[task].to(device)
        if task in self.head_opts:
            _move_optimizer_state(self.head_opts[task], device)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ one round
    def _batches(self, tasks: Sequence[str]) -> Iterator[dict[str, Any]]:
        if self._pool is None:
            for t in tasks:
                yield self.streams[t].next_batch()
        else:
            futures = [self._pool.submit(self.streams[t].next_batch) for t in tasks]
            for f in futures:
                yield f.result()

    def _clip(self, params: Sequence[nn.Parameter]) -> float:
        grads = [p for p in params if p.grad is not None]
        if not grads:
            return 0.0
        if self.cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(grads, self.cfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads]))
        return float(norm)

    def _step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def train_round(self) -> dict[str, Any]:
        """Run one round; returns ``tasks``, ``losses`` (floats), ``lr``, ``grad_norm``, ``images``."""
        tasks = self.sampler.select()
        lr = self.schedule(self.round)
        for opt in (self.trunk_opt, *self.head_opts.values()):
            for group in opt.param_groups:
                group["lr"] = lr
        self.model.train()
        shared_weight = 1.0 / len(tasks) if self.cfg.loss_reduction == "mean" else 1.0
        losses: dict[str, torch.Tensor] = {}
        images = 0
        for task, batch in zip(tasks, self._batches(tasks)):
            head = self.model.heads[task]
            self._head_to(task, self.device)
            image = batch["image"].to(self.device, non_blocking=True)
            target = move_to(batch["target"], self.device)
            images += image.shape[0]
            with self._autocast():
                output = self.model(image, task)
                loss = head.loss(output, target)
            weighted = loss.float() * (shared_weight * self.cfg.loss_weights.get(task, 1.0))
            (self.scaler.scale(weighted) if self.scaler is not None else weighted).backward()
            losses[task] = loss.detach().float()
            # Nothing of the graph survives this point: only a detached scalar is kept.
            del output, loss, weighted, image, target, batch
            head_params = list(head.parameters())
            all_reduce_gradients(head_params, self.dist)
            if self.scaler is not None:
                self.scaler.unscale_(self.head_opts[task])
            self._clip(head_params)
            self._step(self.head_opts[task])
            self._head_to(task, torch.device("cpu"))
        all_reduce_gradients(self.trunk_params, self.dist)
        if self.scaler is not None:
            self.scaler.unscale_(self.trunk_opt)
        grad_norm = self._clip(self.trunk_params)
        self._step(self.trunk_opt)
        if self.scaler is not None:
            self.scaler.update()
        self.round += 1
        return {"tasks": tasks, "losses": {t: float(v) for t, v in losses.items()}, "lr": lr,
                "grad_norm": grad_norm, "images": images * self.dist.world_size}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "trunk_optimizer": self.trunk_opt.state_dict(),
            "head_optimizers": {t: o.state_dict() for t, o in self.head_opts.items()},
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "streams": {t: s.state_dict() for t, s in self.streams.items()},
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng_state(),
            "tasks": list(self.tasks),
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            from ..errors import CheckpointError

            raise CheckpointError(f"checkpoint is for tasks {state['tasks']}, this run has {self.tasks}")
        self.model.load_state_dict(state["model"])
        self.trunk_opt.load_state_dict(state["trunk_optimizer"])
        for t, o in self.head_opts.items():
            o.load_state_dict(state["head_optimizers"][t])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for t, s in self.streams.items():
            s.load_state_dict(state["streams"][t])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"])
        self.round = int(state["round"])

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the current round (main process only)."""
        path = None
        if self.run_dir is not None and self.dist.is_main:
            path = save_checkpoint(self.run_dir, self.round, self.state_dict(), keep=self.cfg.keep_checkpoints)
        barrier(self.dist)
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` or the run folder's newest checkpoint; ``False`` when there is none."""
        if path is None:
            path = None if self.run_dir is None else latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.load_state_dict(load_checkpoint(path))
        self.resumed_from = Path(path)
        return True

    # ------------------------------------------------------------------ loop
    def evaluate(self, split: str = "val", chance: bool = False) -> dict[str, dict[str, float]]:
        """Per-task metrics on ``split`` (main process); the training RNG streams are untouched."""
        rng = capture_rng_state()
        try:
            return evaluate(self.model, self.db, split, tasks=self.tasks, batch_size=self.cfg.batch_size,
                            device=self.device, max_samples=self.cfg.eval_max_samples, chance=chance,
                            autocast_dtype=self.amp_dtype)
        finally:
            restore_rng_state(rng)

    def fit(self, chance: bool = False) -> dict[str, dict[str, float]]:
        """Train until ``config.rounds``, log, evaluate and checkpoint; returns final val metrics."""
        cfg = self.cfg
        main = self.dist.is_main
        # Lines past the round we start from were written by an interrupted attempt: dropped.
        logger = RunLogger(self.run_dir if main else None, tensorboard=cfg.tensorboard, resume_round=self.round)
        progress = _progress(cfg.progress and main)
        lines = PlainProgress("pretraining rounds", cfg.rounds, cfg.progress and main)
        try:
            with progress:
                bar = progress.add_task("pretraining", total=cfg.rounds, completed=self.round, info="")
                while self.round < cfg.rounds:
                    start = time.perf_counter()
                    stats = self.train_round()
                    seconds = time.perf_counter() - start
                    if self.round % cfg.log_every == 0 or self.round == cfg.rounds:
                        logger.log({"kind": "train", "round": self.round, "lr": stats["lr"],
                                    "losses": stats["losses"], "grad_norm": stats["grad_norm"],
                                    "seconds": seconds, "images": stats["images"]})
                    mean_loss = float(np.mean(list(stats["losses"].values())))
                    info = f"loss {mean_loss:.3f}  lr {stats['lr']:.2e}  {stats['images'] / seconds:.0f} img/s"
                    progress.update(bar, advance=1, info=info)
                    lines.update(self.round, info)
                    if cfg.eval_every and self.round % cfg.eval_every == 0 and self.round < cfg.rounds:
                        if main:
                            logger.log({"kind": "eval", "round": self.round, "split": "val",
                                        "metrics": self.evaluate("val")})
                        barrier(self.dist)
                    if (cfg.checkpoint_every and self.round % cfg.checkpoint_every == 0) or self.round == cfg.rounds:
                        self.save_checkpoint()
            final: dict[str, dict[str, float]] = {}
            if main:
                final = self.evaluate("val", chance=chance)
                logger.log({"kind": "eval", "round": self.round, "split": "val", "metrics": final})
            barrier(self.dist)
            return final
        finally:
            logger.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class PlainProgress:
    """Plain progress lines for logs and pipes, where a rich bar shows nothing until it ends.

    Active only when ``enabled`` and stdout is not a terminal; then :meth:`update` prints
    ``"<label>: done/total ..."`` at its first call, every ``max(1, total // lines)`` items and
    at the last, so a long stage prints about ``lines`` lines, flushed at once.

    Args:
        label: stage name at the start of each line.
        total: items in the stage.
        enabled: the caller's progress setting.
        lines: about how many lines a whole stage prints.
    """

    def __init__(self, label: str, total: int, enabled: bool = True, lines: int = 20):
        import sys

        self.label, self.total, self.calls = label, int(total), 0
        self.every = max(1, self.total // max(1, lines))
        self.active = bool(enabled) and not sys.stdout.isatty()
        self.t0 = time.perf_counter()

    def update(self, done: int, info: str = "") -> None:
        """Report that ``done`` of ``total`` items are finished."""
        self.calls += 1
        if not self.active or not (self.calls == 1 or done % self.every == 0 or done >= self.total):
            return
        elapsed = time.perf_counter() - self.t0
        print(f"{self.label}: {done}/{self.total} ({elapsed:.0f} s){'  ' + info if info else ''}", flush=True)


def _task_streams(db: MultiTaskDatabase, tasks: Sequence[str], config: PretrainConfig, dist: DistContext
                  ) -> dict[str, tuple[Any, int]]:
    """Each task's batch stream and train-split size. A kind with a ``batch_stream`` hook (the
    stored 3D kind: patches of ``config.patch``) makes its own; the others read samples
    whole through :class:`~medfoundry.data.loading.TaskDataset`."""
    from ..tasks import get_kind
    from .patches3d import CACHE_BYTES

    hooks = {t: getattr(get_kind(db.task(t).kind), "batch_stream", None) for t in tasks}
    own = sum(h is not None for h in hooks.values())
    out: dict[str, tuple[Any, int]] = {}
    for t in tasks:
        seed = stream_seed(config.seed, t)
        if hooks[t] is not None:
            # one in-memory budget of decoded volumes for the whole run, not one per task
            stream = hooks[t](db, t, config.batch_size, seed, rank=dist.rank, world_size=dist.world_size,
                              foreground=config.patch_foreground, augment=config.patch_augment,
                              cache_bytes=CACHE_BYTES // own)
            out[t] = (stream, len(stream))
        else:
            dataset = TaskDataset(db, t, "train", augment=config.augment)
            out[t] = (ShardedBatchStream(dataset, config.batch_size, seed=seed, rank=dist.rank,
                                         world_size=dist.world_size), len(dataset))
    return out


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)


def evaluate(model: nn.Module, db: MultiTaskDatabase, split: str = "val", tasks: Sequence[str] | None = None,
             batch_size: int = 32, device: str | torch.device | None = None, max_samples: int | None = None,
             chance: bool = False, autocast_dtype: torch.dtype | None = None,
             predictor: Predictor | None = None) -> dict[str, dict[str, float]]:
    """Per-task metrics of ``model`` on ``split`` of ``db``: predictions from
    :func:`medfoundry.inference.predict_task`, scored by the task's kind.

    Args:
        model: a foundation model; its heads may live anywhere (each is moved to ``device``
            for its task and back).
        tasks: tasks to evaluate (default: every task the model has a head for and ``db`` holds).
        device: where to run (default: where the trunk's parameters are).
        max_samples: evaluate at most this many samples per task (the first of the split).
        chance: also report ``<primary_metric>_chance``, the kind's analytic chance level
            (:func:`medfoundry.evaluation.tasks.chance_level`).
        predictor: the inference step (default the plain forward; see
            :mod:`medfoundry.inference.predictors`). Stored 3D tasks are predicted whole by
            their kind (``predict_split``: sliding window over each case) and ignore it.

    Returns:
        ``{task: {metric: value}}``.
    """
    from ..evaluation.tasks import chance_level, primary_metric, task_metrics
    from ..tasks import get_kind

    if tasks is None:
        tasks = [t for t in model.heads if t in db.tasks]
    if device is None:
        device = next(iter(model.trunk_parameters())).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    try:
        for task in tasks:
            head = model.heads[task]
            home = next(head.parameters()).device if any(True for _ in head.parameters()) else device
            head.to(device)
            stored = getattr(get_kind(db.task(task).kind), "predict_split", None)
            try:
                if stored is not None:
                    out = stored(model, db, task, split, max_samples=max_samples, device=device,
                                 autocast_dtype=autocast_dtype)
                else:
                    out = predict_task(model, db, task, split, max_samples=max_samples, batch_size=batch_size,
                                       device=device, predictor=predictor, autocast_dtype=autocast_dtype)
            finally:
                head.to(home)
            if not out.preds:
                continue
            spec = db.task(task)
            metrics = {k: float(v) for k, v in task_metrics(spec, out.preds, out.targets, out.spacings).items()}
            if chance:
                metrics[f"{primary_metric(spec.kind)}_chance"] = chance_level(spec)
            results[task] = metrics
    finally:
        model.train(was_training)
    return results
