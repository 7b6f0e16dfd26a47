"""One entry point that scores a task's predictions by its kind.

The metric set, the primary metric (the number a transfer sweep reports, plots and
early-stops on) and the chance level of each kind are declared once, in its module under
:mod:`medfoundry.tasks`; these functions ask the kind registry. Built-in kinds:

========================  ==========================================  ===============================
kind (primary metric)     prediction                                  target
========================  ==========================================  ===============================
classification (balanced  probabilities (C,)                          int class index
accuracy, chance 1 / C)
multilabel (auroc, 0.5)   probabilities (K,) in [0, 1]                (K,) of 0/1
segmentation (dice, 0)    label map (H, W) / (D, H, W), int           label map, same shape
detection (map50, 0)      {"boxes" (P, 4), "scores" (P,), "labels"}   {"boxes" (G, 4), "labels" (G,)}
========================  ==========================================  ===============================

Chance levels are analytic (from the task definition, see each kind's ``chance_level``):
they cost nothing, do not depend on which split or predictions are at hand, and are the same
number in every table and report. For segmentation and detection they are a conservative
floor of 0 (an empty prediction scores Dice 0 and AP 0).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..data.tasks import TaskSpec
from ..tasks import get_kind
from ..tasks.segmentation import segmentation_case_values
from .directions import higher_is_better
from .stats import bootstrap_indices

__all__ = [
    "task_metrics",
    "primary_metric",
    "chance_level",
    "higher_is_better",
    "primary_bootstrap",
    "primary_score",
    "segmentation_case_values",
]


def primary_metric(kind: Any) -> str:
    """Name of the metric a sweep reports for ``kind`` (a kind name or ``TaskKind``)."""
    return get_kind(kind).primary_metric


def chance_level(spec: TaskSpec) -> float:
    """Expected primary metric of an uninformed predictor (declared by the task's kind)."""
    return float(get_kind(spec.kind).chance_level(spec))


def task_metrics(spec: TaskSpec, preds: Sequence[Any], targets: Sequence[Any],
                 spacings: Sequence[Any] | None = None) -> dict[str, float]:
    """All metrics of a task kind on a list of predictions.

    Args:
        spec: the task.
        preds: one prediction per sample (formats in the module docstring).
        targets: one target per sample.
        spacings: per-sample spacing in mm (segmentation HD95), entries may be ``None``.

    Returns:
        Flat ``{name: value}``; always contains ``n`` and ``primary_metric(spec.kind)``.
        Per-class entries are ``<metric>/<class name>``.

    Raises:
        ValueError: lengths or shapes that do not match.
    """
    if len(preds) != len(targets):
        raise ValueError(f"task_metrics(): task {spec.name!r} got {len(preds)} predictions for {len(targets)} targets")
    if spacings is not None and len(spacings) != len(preds):
        raise ValueError(f"task_metrics(): {len(spacings)} spacings for {len(preds)} predictions")
    out: dict[str, float] = {"n": float(len(preds))}
    out.update(get_kind(spec.kind).metrics(spec, preds, targets, spacings))
    return out


def primary_score(spec: TaskSpec, preds: Sequence[Any], targets: Sequence[Any]) -> float:
    """Only the primary metric (no HD95 or per-class entries): cheap enough for every
    validation pass of early stopping."""
    return float(get_kind(spec.kind).primary_score(spec, preds, targets))


def primary_bootstrap(spec: TaskSpec, preds: Sequence[Any], targets: Sequence[Any], n_boot: int = 200,
                      seed: int = 0) -> np.ndarray:
    """The primary metric on ``n_boot`` resamples of the test cases, (n_boot,).

    The resamples depend only on ``(seed, len(preds))``, so every run scored on the same test
    set uses the same case indices; :func:`medfoundry.evaluation.stats.seed_case_ci` relies
    on that to pair replicates across seeds.
    """
    n = len(preds)
    if n == 0 or n_boot == 0:
        return np.zeros(0)
    return np.asarray(get_kind(spec.kind).bootstrap(spec, preds, targets, bootstrap_indices(n, n_boot, seed)))
