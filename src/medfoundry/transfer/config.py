"""Typed configuration of a transfer / data-efficiency sweep."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigBase
from ..utils import look_up_option

__all__ = ["TransferConfig", "MODES", "VAL_POLICIES", "PROBES", "SCORE_SPLITS", "DEFAULT_FRACTIONS"]

MODES = ("frozen", "finetune")
VAL_POLICIES = ("scaled", "full")
PROBES = ("linear", "mlp")
SCORE_SPLITS = ("test", "val")
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class TransferConfig(ConfigBase):
    """Budgets and optimiser settings of every run of a sweep.

    Every run, whatever its encoder (pretrained or random init), follows one convergence rule:
    it may train for ``clip(max_epochs * steps_per_epoch, min_steps, max_steps)`` optimizer
    steps (an epoch is one pass over the run's training subset, so the budget grows with the
    data), evaluates the primary metric on the validation subset every ``eval_every`` steps
    (default: once per epoch, but not more often than every ``min_eval_interval`` steps) and
    stops after ``patience`` evaluations without improvement (a plateau); the weights of the
    best validation evaluation are scored on the test split. A run that ends on its budget
    instead of a plateau is recorded with ``stop_reason`` ``epochs`` or ``cap`` (``max_steps``
    was the limit) and flagged "may not have converged". The test split is never used for any
    choice.

    Attributes:
        fractions: training-data fractions in (0, 1].
        seeds: number of seeds (0 .. seeds-1); a seed fixes the subset, the head init, the
            batch order and, for random-init encoders, the encoder init.
        modes: ``frozen`` (encoder and input adapters fixed; features computed once per task)
            and/or ``finetune`` (everything trains).
        batch_size: training batch size (capped by the subset size).
        eval_batch_size: batch size of feature extraction and evaluation.
        lr: learning rate of the head (decoder + head for dense tasks, head when fine-tuning).
        probe_lr: learning rate of the frozen-mode probe on standardised pooled features.
        encoder_lr_ratio: encoder (and adapter) learning rate = ``lr * encoder_lr_ratio`` when
            fine-tuning a pretrained encoder (slow, so the new head catches up before the
            features move).
        scratch_encoder_lr_ratio: the same ratio for random-init encoders, which have no
            features to protect: training from scratch at a tenth of the head's rate is a
            handicap that flatters every pretrained encoder (``None``: ``encoder_lr_ratio``).
        weight_decay: AdamW weight decay.
        max_epochs, min_steps, max_steps: the step budget (see above).
        finetune_max_steps: a lower cap for fine-tuning runs, whose steps cost a full
            forward/backward pass (``None``: ``max_steps``). Frozen runs train on cached
            features and are cheap, so they keep ``max_steps``.
        goal_fractions: also run the fractions the report's goals are judged at
            (``goal_in_domain_fraction`` on tasks whose ``extra["role"]`` is ``in-domain``,
            ``goal_out_of_domain_fraction`` on ``out-of-domain`` tasks; only those tasks get
            the extra fraction).
        goal_in_domain_fraction, goal_in_domain_ratio: goal A of the report: a pretrained
            encoder, frozen, trained on this fraction of an in-domain task reaches this ratio
            of the reference (random init, fine-tuned, 100 %).
        goal_out_of_domain_fraction: goal B: on an out-of-domain task, a pretrained encoder
            (either mode) at this fraction reaches the reference.
        reference_full_budget: the reference run every goal is measured against (random init,
            fine-tuned, 100 % of the data) ignores ``finetune_max_steps`` and trains up to
            ``max_steps``, so a tight budget cannot flatter the pretrained encoders by
            under-training the baseline.
        eval_every: validation interval in steps (``None``: automatic).
        min_eval_interval: lower bound of the automatic validation interval.
        patience: evaluations without improvement before stopping.
        val_policy: ``scaled`` (validation subset = the same stratified fraction of the val
            split, at least one sample per stratum: a 1 % run sees 1 % of the labels in total)
            or ``full`` (the whole val split for every fraction).
        score_split: the split the best weights are scored on: ``test`` (every reported figure)
            or ``val``, for choosing a recipe without reading the test split: the val split is
            then cut once, by a fixed seeded permutation, into a selection half (early stopping,
            under ``val_policy``) and a scoring half, so no run is scored on the cases that
            chose its weights.
        probe: frozen classification/multilabel head on the pooled embedding: ``linear`` or
            ``mlp`` (one hidden layer).
        probe_multiscale: probe on the pooled maps of every encoder stage concatenated (default)
            instead of the last stage only. Chosen on the bench val split
            (``benchmarks/recipe_study.py``): +0.06 to +0.26 balanced accuracy for the multi-task
            encoder on all three downstream tasks, at 1 % and at 100 %.
        encoder: architecture of random-init encoders (registry name).
        decoder_channels: width of the decoder of random-init models.
        init_seed: offset of the random-init encoder seed (encoder seed = init_seed + seed).
        augment: augmentation of fine-tuning batches: ``none``, ``light`` or ``standard``
            (:mod:`medfoundry.data.augment`). Frozen probes train on cached features of the
            unaugmented images and ignore it.
        n_boot: bootstrap resamples of the test cases stored per run (for the report's CIs).
        single_task_rounds: pretraining rounds of ``single:<task>`` baseline encoders.
        device: ``auto``, ``cpu``, ``cuda[:N]``.
        progress: rich progress bar.
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seeds: int = 3
    modes: tuple[str, ...] = ("frozen", "finetune")
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 1e-3
    probe_lr: float = 1e-2
    encoder_lr_ratio: float = 0.1
    scratch_encoder_lr_ratio: float | None = 1.0
    weight_decay: float = 1e-4
    max_epochs: int = 100
    min_steps: int = 30
    max_steps: int = 5000
    finetune_max_steps: int | None = None
    goal_fractions: bool = True
    goal_in_domain_fraction: float = 0.01
    goal_in_domain_ratio: float = 0.95
    goal_out_of_domain_fraction: float = 0.5
    reference_full_budget: bool = True
    eval_every: int | None = None
    min_eval_interval: int = 10
    patience: int = 5
    val_policy: str = "scaled"
    score_split: str = "test"
    probe: str = "linear"
    probe_multiscale: bool = True
    encoder: str = "resnet_small"
    decoder_channels: int = 64
    init_seed: int = 0
    augment: str = "none"
    n_boot: int = 200
    single_task_rounds: int = 200
    device: str = "auto"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        bad = self.bad
        if isinstance(self.fractions, str):
            self.fractions = tuple(float(x) for x in self.fractions.split(",") if x.strip())
        self.fractions = tuple(sorted({float(f) for f in self.fractions}))
        if not self.fractions or not all(0.0 < f <= 1.0 for f in self.fractions):
            raise bad("fractions", "numbers in (0, 1]")
        if isinstance(self.modes, str):
            self.modes = tuple(m.strip() for m in self.modes.split(",") if m.strip())
        self.modes = tuple(dict.fromkeys(look_up_option(m, MODES, what="transfer mode") for m in self.modes))
        if not self.modes:
            raise bad("modes", f"one or more of {MODES}")
        for name in ("seeds", "batch_size", "eval_batch_size", "max_epochs", "min_steps", "max_steps",
                     "patience", "min_eval_interval", "decoder_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "an integer >= 1")
        if self.min_steps > self.max_steps:
            raise bad("min_steps", f"<= max_steps ({self.max_steps})")
        if self.finetune_max_steps is not None and (isinstance(self.finetune_max_steps, bool)
                                                    or not isinstance(self.finetune_max_steps, int)
                                                    or self.finetune_max_steps < 1):
            raise bad("finetune_max_steps", "an integer >= 1 or null")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise bad("eval_every", "an integer >= 1 or null")
        for name in ("n_boot", "init_seed", "single_task_rounds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(name, "an integer >= 0")
        for name in ("lr", "probe_lr"):
            if not getattr(self, name) > 0:
                raise bad(name, "a positive number")
        if not self.encoder_lr_ratio >= 0:
            raise bad("encoder_lr_ratio", "a number >= 0")
        if self.scratch_encoder_lr_ratio is not None and not self.scratch_encoder_lr_ratio >= 0:
            raise bad("scratch_encoder_lr_ratio", "a number >= 0 or null")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        look_up_option(self.val_policy, VAL_POLICIES, what="transfer val_policy")
        look_up_option(self.score_split, SCORE_SPLITS, what="transfer score_split")
        from ..data.augment import check_level

        check_level(self.augment, where="transfer config field 'augment'")
        look_up_option(self.probe, PROBES, what="transfer probe")
        for name in ("goal_in_domain_fraction", "goal_out_of_domain_fraction", "goal_in_domain_ratio"):
            if not 0.0 < float(getattr(self, name)) <= 1.0:
                raise bad(name, "a number in (0, 1]")

    def goal_fraction(self, role: str | None) -> float | None:
        """The training fraction the report's goal for a task of ``role`` is judged at (``None``: no goal)."""
        return {"in-domain": self.goal_in_domain_fraction,
                "out-of-domain": self.goal_out_of_domain_fraction}.get(role or "")

    def for_run(self, mode: str, reference: bool = False, scratch: bool = False) -> "TransferConfig":
        """The config a run uses: ``finetune_max_steps`` applies to fine-tuning runs, except the
        random-init 100 % reference when ``reference_full_budget`` is set; a random-init
        (``scratch``) encoder fine-tunes at ``scratch_encoder_lr_ratio``."""
        if mode != "finetune":
            return self
        cfg = self
        if scratch and self.scratch_encoder_lr_ratio is not None:
            cfg = dataclasses.replace(cfg, encoder_lr_ratio=self.scratch_encoder_lr_ratio)
        if self.finetune_max_steps is None or (reference and self.reference_full_budget):
            return cfg
        cap = self.finetune_max_steps
        return dataclasses.replace(cfg, max_steps=cap, min_steps=min(self.min_steps, cap))
