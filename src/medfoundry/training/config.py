"""Typed configuration of a multi-task pretraining run, loaded from YAML, overridden by flags.

The resolved configuration is written as ``config.yaml`` into the run folder, so a run can be
reproduced (``medfoundry pretrain --config RUN/config.yaml``) or resumed from that folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigBase
from ..utils import look_up_option

__all__ = ["PretrainConfig", "SAMPLING_POLICIES", "PRECISIONS", "LOSS_REDUCTIONS", "RESUMABLE_OVERRIDES"]

SAMPLING_POLICIES = ("all", "random_k", "size_weighted")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSS_REDUCTIONS = ("sum", "mean")
# Fields that may differ between the saved config of a run and the flags of its resumption:
# they change where or how fast the run goes, or how long, never what one round computes.
RESUMABLE_OVERRIDES = frozenset({
    "rounds", "device", "num_workers", "eval_every", "checkpoint_every", "keep_checkpoints",
    "progress", "tensorboard", "eval_max_samples", "database", "out", "log_every",
})


@dataclass
class PretrainConfig(ConfigBase):
    """Everything that defines a pretraining run.

    Attributes:
        database: folder of a :class:`~medfoundry.data.MultiTaskDatabase`.
        out: run folder (config, ``metrics.jsonl``, ``checkpoints/``, ``model/``).
        encoder: encoder name from the encoder registry (``medfoundry.models``).
        encoder_kwargs: architecture options of the encoder (``widths``, ``depths``, ...), e.g.
            ``{depths: [1, 1, 1, 1]}`` for a lighter 3D encoder as ``segment train`` uses.
        decoder_channels: width of the shared decoder.
        tasks: task names; ``None`` means every task of ``group="pretrain"``.
        batch_size: samples per task per round (the *global* batch under DDP; it must be a
            multiple of the number of processes).
        rounds: number of rounds; one round = one optimizer step.
        sampling: which tasks enter a round: ``all`` (every task), ``random_k`` (``k`` tasks
            uniformly without replacement) or ``size_weighted`` (``k`` tasks without
            replacement, probability proportional to the train-split size).
        tasks_per_round: ``k`` for ``random_k`` and ``size_weighted``.
        loss_reduction: how task losses combine in the shared gradient: ``sum`` (each task's
            gradient adds in; heads already scale their loss so chance scores ~1) or ``mean``
            (divided by the number of tasks in the round). AdamW is invariant to a factor common
            to all gradients, so the choice matters mainly through ``grad_clip`` (the threshold
            applies to the reduced gradient) and through Adam's epsilon.
        loss_weights: optional per-task multipliers (default 1).
        lr: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (not applied to biases and norm weights).
        betas: AdamW betas.
        warmup_rounds: linear warm-up length, in rounds; then cosine decay to ``min_lr_ratio * lr``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: maximum L2 norm of the shared gradient, and of each head's gradient
            (clipped separately); ``None`` or 0 disables clipping.
        precision: ``auto`` (bf16 autocast on CUDA when supported, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (with dynamic loss scaling). Autocast is never used on CPU.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds weights, task sampling and batch order.
        eval_every: evaluate on the validation split every N rounds (0: only at the end).
        eval_max_samples: cap on validation samples per task (``None``: the whole split).
        checkpoint_every: write a checkpoint every N rounds (0: only at the end).
        keep_checkpoints: how many of the newest checkpoints to keep.
        num_workers: threads that load the batches of a round in parallel (0: load in the
            training thread). The batch contents do not depend on it.
        log_every: write a ``metrics.jsonl`` line every N rounds.
        tensorboard: also log to TensorBoard (needs the ``tensorboard`` package).
        progress: show a rich progress bar.
        patch: training patch (voxels, NIfTI axis order) of stored 3D tasks
            (``segmentation3d``: volumes of different shapes, so every round cuts one patch per
            sample); also their validation window. Unused by 2D tasks.
        patch_foreground: share of 3D patches centred on a foreground voxel (as
            ``segment train``), the rest placed uniformly.
        patch_augment: MONAI spatial and intensity augmentation of 3D patches (the pipeline of
            ``segment train``).
        augment: augmentation of 2D training samples: ``none``, ``light`` or ``standard``
            (:mod:`medfoundry.data.augment`; seeded per draw, so resumes are exact).
    """

    database: str | None = None
    out: str | None = None
    encoder: str = "resnet_small"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder_channels: int = 64
    tasks: list[str] | None = None
    batch_size: int = 16
    rounds: int = 1000
    sampling: str = "all"
    tasks_per_round: int | None = None
    loss_reduction: str = "sum"
    loss_weights: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_rounds: int = 50
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    eval_every: int = 0
    eval_max_samples: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 1
    num_workers: int = 0
    log_every: int = 1
    tensorboard: bool = False
    progress: bool = True
    patch: tuple[int, int, int] = (32, 32, 32)
    patch_foreground: float = 0.5
    patch_augment: bool = True
    augment: str = "none"

    def validate(self) -> None:
        """Raise :class:`~medfoundry.errors.ConfigError` naming the field, the expected and the found value."""
        bad = self.bad
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if self.tasks is not None:
            self.tasks = [str(t) for t in self.tasks]
            if not self.tasks:
                raise bad("tasks", "a non-empty list of task names or null (all pretrain tasks)")
            if len(set(self.tasks)) != len(self.tasks):
                raise bad("tasks", "unique task names")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.loss_weights = {str(k): float(v) for k, v in dict(self.loss_weights or {}).items()}
        self.encoder_kwargs = dict(self.encoder_kwargs or {})
        for name in ("batch_size", "rounds", "decoder_channels", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "an integer >= 1")
        for name in ("warmup_rounds", "eval_every", "checkpoint_every", "num_workers", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "an integer >= 0")
        look_up_option(self.sampling, SAMPLING_POLICIES, what="config field 'sampling'")
        look_up_option(self.precision, PRECISIONS, what="config field 'precision'")
        look_up_option(self.loss_reduction, LOSS_REDUCTIONS, what="config field 'loss_reduction'")
        if self.sampling != "all":
            k = self.tasks_per_round
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise bad("tasks_per_round", f"an integer >= 1 with sampling={self.sampling!r}")
        if not (self.lr > 0):
            raise bad("lr", "a positive number")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "a number in [0, 1]")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise bad("grad_clip", "a number >= 0 or null")
        if self.eval_max_samples is not None and self.eval_max_samples < 1:
            raise bad("eval_max_samples", "an integer >= 1 or null")
        if any(w < 0 for w in self.loss_weights.values()):
            raise bad("loss_weights", "non-negative weights")
        try:
            self.patch = tuple(int(p) for p in self.patch)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise bad("patch", "3 integers (voxels)") from None
        if len(self.patch) != 3 or min(self.patch) < 8:
            raise bad("patch", "3 sizes >= 8 voxels")
        if not 0.0 <= float(self.patch_foreground) <= 1.0:
            raise bad("patch_foreground", "a share in [0, 1]")
        from ..data.augment import check_level

        check_level(self.augment, where="config field 'augment'")
