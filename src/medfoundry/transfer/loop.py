"""Shared pieces of probe and fine-tune runs: in-memory task data, batching, the early-stopped
training loop and test-split scoring."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.database import MultiTaskDatabase
from ..data.tasks import SPLITS, TaskSpec
from ..errors import DataError
from ..inference import batch_targets, run_batches
from .config import TransferConfig

__all__ = ["TaskData", "FitResult", "RunOutput", "fit", "step_budget", "budget_capped", "train_and_score",
           "STOP_REASONS", "NOT_CONVERGED"]


class TaskData:
    """Images, targets and spacings of every sample in a task's train/val/test splits, loaded once.

    Downstream tasks are small (the whole point of data efficiency), so holding them in memory
    makes every run of a sweep cheap; images are float32 ``(N, C, *image_size)``.

    Args:
        db: the database.
        task: task name.
    """

    def __init__(self, db: MultiTaskDatabase, task: str):
        self.db, self.task = db, task
        self.spec: TaskSpec = db.task(task)
        splits = {s: db.split_indices(task, s) for s in SPLITS}
        for s in ("train", "test"):
            if len(splits[s]) == 0:
                raise DataError(f"task {task!r}: the {s} split is empty; a transfer run needs train and test samples",
                                path=db.task_dir(task) / "splits.json", field=s)
        self.indices = np.unique(np.concatenate([splits[s] for s in SPLITS]))
        self.position = {int(i): p for p, i in enumerate(self.indices)}
        self.images = torch.from_numpy(np.stack([db.image(task, int(i)) for i in self.indices])).float()
        self.targets = [db.target(task, int(i)) for i in self.indices]
        self.spacings = [db.spacing(task, int(i)) for i in self.indices]

    def positions(self, indices: Iterable[int]) -> np.ndarray:
        """Rows of :attr:`images` holding the given sample indices."""
        return np.array([self.position[int(i)] for i in indices], dtype=np.int64)


def step_budget(n_train: int, cfg: TransferConfig) -> tuple[int, int, int]:
    """``(batch_size, total_steps, eval_every)`` of a run on ``n_train`` samples.

    The budget is in epochs (``max_epochs`` passes over the run's training subset, so it grows
    with the subset), at least ``min_steps`` and at most ``max_steps``; early stopping on the
    validation split normally ends a run long before (see :func:`fit`).
    """
    bs = max(1, min(cfg.batch_size, n_train))
    per_epoch = math.ceil(n_train / bs)
    total = int(np.clip(cfg.max_epochs * per_epoch, cfg.min_steps, cfg.max_steps))
    every = cfg.eval_every or max(per_epoch, cfg.min_eval_interval)
    return bs, total, min(every, total)


def budget_capped(n_train: int, cfg: TransferConfig) -> bool:
    """Whether ``max_steps`` (not the epoch budget) limits a run on ``n_train`` samples."""
    bs = max(1, min(cfg.batch_size, n_train))
    return cfg.max_epochs * math.ceil(n_train / bs) > cfg.max_steps


# Why a run ended: the validation metric stopped improving for ``patience`` evaluations
# (converged), the epoch budget ran out while it still improved, or the ``max_steps`` cap did.
STOP_REASONS = ("plateau", "epochs", "cap")
NOT_CONVERGED = "may not have converged"


@dataclass
class FitResult:
    """How a run's training went."""

    steps: int
    best_step: int
    val_primary: float
    val_loss: float
    epochs: float
    evaluations: int
    train_time_s: float
    budget_steps: int = 0
    stop_reason: str = "plateau"

    @property
    def converged(self) -> bool:
        """Only a run stopped by a validation plateau is known to have converged."""
        return self.stop_reason == "plateau"

    def convergence(self) -> dict[str, object]:
        """The fields a result record keeps about how the run ended."""
        return {"budget_steps": self.budget_steps, "stop_reason": self.stop_reason, "converged": self.converged,
                "convergence_note": None if self.converged else NOT_CONVERGED}


def _snapshot(modules: Sequence[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def fit(modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer, train_step: Callable[[np.ndarray], torch.Tensor],
        validate: Callable[[], tuple[float, float]], n_train: int, cfg: TransferConfig, seed: int,
        grad_clip: float | None = 1.0) -> FitResult:
    """Train with early stopping on the validation split and restore the best weights.

    Args:
        modules: the trained modules (their state is snapshotted at the best evaluation).
        optimizer: over the trainable parameters.
        train_step: ``f(batch positions into the run's training list) -> loss``; called in
            train mode.
        validate: ``f() -> (primary metric, loss)`` on the validation subset; called in eval mode.
            The best evaluation has the highest metric (NaN counts as worst), ties broken by
            the lower loss.
        n_train: size of the run's training subset.
        cfg: budgets (see :class:`TransferConfig`).
        seed: seeds the batch order.
        grad_clip: max gradient L2 norm (``None``: off).

    Returns:
        the training facts, with ``stop_reason``: ``plateau`` (``patience`` evaluations without
        improvement: converged), ``epochs`` (the epoch budget ran out first) or ``cap``
        (``max_steps`` ran out first); the last two are flagged "may not have converged".
    """
    bs, total, every = step_budget(n_train, cfg)
    rng = np.random.default_rng([seed, 7919])
    order, pos = rng.permutation(n_train), 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    best_key: tuple[float, float] | None = None
    best_state = _snapshot(modules)
    best_step, best_val, best_loss, bad, evals = 0, float("nan"), float("nan"), 0, 0
    stop_reason = "cap" if budget_capped(n_train, cfg) else "epochs"
    t0 = time.perf_counter()
    step = 0
    for step in range(1, total + 1):
        idx = []
        while len(idx) < bs:
            if pos >= n_train:
                order, pos = rng.permutation(n_train), 0
            take = order[pos:pos + bs - len(idx)]
            idx.extend(take.tolist())
            pos += len(take)
        for m in modules:
            m.train()
        loss = train_step(np.asarray(idx, dtype=np.int64))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if step % every == 0 or step == total:
            for m in modules:
                m.eval()
            with torch.no_grad():
                metric, vloss = validate()
            evals += 1
            key = (metric if math.isfinite(metric) else -math.inf, -vloss if math.isfinite(vloss) else -math.inf)
            no_signal = key == (-math.inf, -math.inf)  # no validation data: keep the latest weights
            if best_key is None or key > best_key or no_signal:
                best_key, best_state, best_step, best_val, best_loss, bad = key, _snapshot(modules), step, metric, vloss, 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    stop_reason = "plateau"
                    break
    for m, state in zip(modules, best_state):
        m.load_state_dict(state)
        m.eval()
    return FitResult(steps=step, best_step=best_step, val_primary=float(best_val), val_loss=float(best_loss),
                     epochs=step * bs / max(n_train, 1), evaluations=evals, train_time_s=time.perf_counter() - t0,
                     budget_steps=total, stop_reason=stop_reason)


@dataclass
class RunOutput:
    """What a probe or fine-tune run hands back: training facts and decoded test predictions."""

    fit: FitResult
    test_preds: list[Any]
    test_positions: np.ndarray


def _predict(forward: Callable[[np.ndarray], Any], loss_fn: Callable[[Any, Any], torch.Tensor],
             decode: Callable[[Any], list[Any]], data: TaskData, positions: np.ndarray, batch_size: int,
             device: torch.device, with_loss: bool) -> tuple[list[Any], float]:
    total, count = 0.0, 0

    def add_loss(pos: np.ndarray, out: Any) -> None:
        nonlocal total, count
        tgt = batch_targets(data.spec.kind, [data.targets[p] for p in pos], device)
        total += float(loss_fn(out, tgt)) * len(pos)
        count += len(pos)

    preds = run_batches(forward, positions, batch_size, decode, add_loss if with_loss else None)
    return preds, (total / count if count else float("nan"))


def train_and_score(modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer,
                    forward: Callable[[np.ndarray], Any], loss_fn: Callable[[Any, Any], torch.Tensor],
                    decode: Callable[[Any], list[Any]], data: TaskData, train_pos: np.ndarray,
                    val_pos: np.ndarray, test_pos: np.ndarray, cfg: TransferConfig, seed: int,
                    device: torch.device,
                    train_forward: Callable[[np.ndarray, int], tuple[Any, list[Any]]] | None = None
                    ) -> RunOutput:
    """Early-stopped training on ``train_pos`` (validated on ``val_pos``), then test predictions.

    ``forward(positions) -> head output`` maps rows of ``data`` (or of cached features, which
    share the row order) to the head's raw output. ``train_forward(positions, step) -> (head
    output, targets)``, when given, replaces it for training batches (augmentation: the images
    and their targets change together, seeded by the step).
    """
    from ..evaluation.tasks import primary_score

    spec = data.spec

    step = 0

    def train_step(batch: np.ndarray) -> torch.Tensor:
        nonlocal step
        step += 1  # fit calls this once per optimizer step, in order
        pos = train_pos[batch]
        if train_forward is not None:
            out, targets = train_forward(pos, step)
        else:
            out, targets = forward(pos), [data.targets[p] for p in pos]
        return loss_fn(out, batch_targets(spec.kind, targets, device))

    def validate() -> tuple[float, float]:
        if len(val_pos) == 0:  # no validation data: keep the last weights (loss decides nothing)
            return float("nan"), float("nan")
        preds, vloss = _predict(forward, loss_fn, decode, data, val_pos, cfg.eval_batch_size, device, True)
        with np.errstate(all="ignore"):
            score = primary_score(spec, preds, [data.targets[p] for p in val_pos])
        return score, vloss

    result = fit(modules, optimizer, train_step, validate, len(train_pos), cfg, seed)
    with torch.no_grad():
        preds, _ = _predict(forward, loss_fn, decode, data, test_pos, cfg.eval_batch_size, device, False)
    return RunOutput(result, preds, test_pos)
