"""One entry point that scores a task's predictions by its kind, plus each kind's primary metric.

Prediction formats (one list entry per test sample, numpy arrays or tensors):

========================  ==========================================  ===============================
kind                      prediction                                  target
========================  ==========================================  ===============================
classification            probabilities (C,)                          int class index
multilabel                probabilities (K,) in [0, 1]                (K,) of 0/1
segmentation              label map (H, W) / (D, H, W), int           label map, same shape
detection                 {"boxes" (P, 4), "scores" (P,), "labels"}   {"boxes" (G, 4), "labels" (G,)}
========================  ==========================================  ===============================

Primary metrics (the number a transfer sweep reports and plots), chosen to be comparable
across class balance and data-set size:

* classification: ``balanced_accuracy`` (mean recall; chance = 1 / C whatever the class
  frequencies, so a subset that shifts the balance does not move the floor);
* multilabel: ``auroc`` (macro over labels; chance 0.5);
* segmentation: ``dice`` (mean over test cases of the mean foreground Dice over classes;
  a class absent from both prediction and reference is NaN and left out);
* detection: ``map50`` (all-point AP at IoU 0.5, mean over classes).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..data.tasks import TaskKind, TaskSpec
from .classification import accuracy, balanced_accuracy, macro_auroc, macro_f1, multilabel_auroc
from .detection import detection_metrics, map50_bootstrap
from .segmentation import per_class_dice, per_class_hd95
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

_PRIMARY = {
    TaskKind.CLASSIFICATION: "balanced_accuracy",
    TaskKind.MULTILABEL: "auroc",
    TaskKind.SEGMENTATION: "dice",
    TaskKind.DETECTION: "map50",
}
_LOWER_IS_BETTER = ("hd95", "loss")


def _np(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    return np.asarray(x)


def primary_metric(kind: TaskKind | str) -> str:
    """Name of the metric a sweep reports for ``kind`` (see the module docstring)."""
    return _PRIMARY[TaskKind(kind)]


def higher_is_better(metric: str) -> bool:
    """False for distances and losses (``hd95``, ``loss`` and their ``/class`` variants)."""
    return metric.split("/")[0] not in _LOWER_IS_BETTER


def chance_level(spec: TaskSpec) -> float:
    """Expected primary metric of an uninformed predictor.

    classification 1 / C (balanced accuracy of any constant or random guess); multilabel 0.5
    (AUROC of random scores); segmentation and detection 0 (a conservative floor: an empty
    prediction has Dice 0 and AP 0).
    """
    kind = spec.kind
    if kind is TaskKind.CLASSIFICATION:
        return 1.0 / spec.num_classes
    if kind is TaskKind.MULTILABEL:
        return 0.5
    return 0.0


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def segmentation_case_values(spec: TaskSpec, preds: Sequence[Any], targets: Sequence[Any],
                             spacings: Sequence[Any] | None = None, with_hd95: bool = True
                             ) -> dict[str, np.ndarray]:
    """Per-case, per-class Dice and HD95 arrays, each (N, num_classes - 1) (background left out).

    HD95 is in mm where a case's spacing is known, else in pixels; a class with exactly one
    empty mask has NaN HD95 (excluded from means, see :mod:`.segmentation`).
    """
    n = len(preds)
    labels = range(1, spec.num_classes)
    dice = np.full((n, len(labels)), np.nan)
    hd = np.full((n, len(labels)), np.nan)
    for i, (p, t) in enumerate(zip(preds, targets)):
        p, t = _np(p).astype(np.int64), _np(t).astype(np.int64)
        dice[i] = per_class_dice(p, t, labels=labels)
        if with_hd95:
            sp = None if spacings is None else spacings[i]
            sp = None if sp is None else [float(s) for s in _np(sp).reshape(-1)]
            hd[i] = per_class_hd95(p, t, labels=labels, spacing=sp)
    return {"dice": dice, "hd95": hd}


def task_metrics(spec: TaskSpec, preds: Sequence[Any], targets: Sequence[Any],
                 spacings: Sequence[Any] | None = None) -> dict[str, float]:
    """All metrics of a task kind on a list of predictions.

    Args:
        spec: the task.
        preds: one prediction per sample (formats in the module docstring).
        targets: one target per sample.
        spacings: per-sample spacing in mm (segmentation HD95), entries may be ``None``.

    Returns:
        Flat ``{name: value}``; always contains ``primary_metric(spec.kind)``. Per-class
        entries are ``<metric>/<class name>``.

    Raises:
        ValueError: lengths or shapes that do not match.
    """
    if len(preds) != len(targets):
        raise ValueError(f"task_metrics(): task {spec.name!r} got {len(preds)} predictions for {len(targets)} targets")
    if spacings is not None and len(spacings) != len(preds):
        raise ValueError(f"task_metrics(): {len(spacings)} spacings for {len(preds)} predictions")
    kind = spec.kind
    out: dict[str, float] = {"n": float(len(preds))}
    if kind is TaskKind.CLASSIFICATION:
        probs = np.stack([_np(p).reshape(-1) for p in preds]) if preds else np.zeros((0, spec.num_classes))
        if probs.shape[1] != spec.num_classes:
            raise ValueError(f"task_metrics(): task {spec.name!r} expects (C={spec.num_classes},) probabilities, "
                             f"got ({probs.shape[1]},)")
        y = np.asarray([int(_np(t)) for t in targets], dtype=np.int64)
        out["accuracy"] = accuracy(y, probs)
        out["balanced_accuracy"] = balanced_accuracy(y, probs, spec.num_classes)
        out["macro_f1"] = macro_f1(y, probs, spec.num_classes)
        out["auroc"] = macro_auroc(y, probs) if len(y) else float("nan")
    elif kind is TaskKind.MULTILABEL:
        scores = np.stack([_np(p).reshape(-1) for p in preds]).astype(float)
        y = np.stack([_np(t).reshape(-1) for t in targets]).astype(float)
        if scores.shape != y.shape or scores.shape[1] != spec.num_classes:
            raise ValueError(f"task_metrics(): task {spec.name!r} expects (K={spec.num_classes},) scores and "
                             f"targets, got {scores.shape[1:]} and {y.shape[1:]}")
        per, macro = multilabel_auroc(y, scores)
        out["auroc"] = macro
        for name, v in zip(spec.classes, per):
            out[f"auroc/{name}"] = float(v)
        out["label_accuracy"] = float(np.mean((scores >= 0.5) == (y > 0.5)))
    elif kind is TaskKind.SEGMENTATION:
        vals = segmentation_case_values(spec, preds, targets, spacings)
        with np.errstate(all="ignore"):
            out["dice"] = _nanmean([_nanmean(row) for row in vals["dice"]])
            out["hd95"] = _nanmean([_nanmean(row) for row in vals["hd95"]])
            for j, name in enumerate(spec.classes[1:]):
                out[f"dice/{name}"] = _nanmean(vals["dice"][:, j])
                out[f"hd95/{name}"] = _nanmean(vals["hd95"][:, j])
    else:
        p = [_np(x) for x in preds]
        g = [_np(x) for x in targets]
        out.update(detection_metrics(p, g, spec.num_classes))
    return out


def primary_score(spec: TaskSpec, preds: Sequence[Any], targets: Sequence[Any]) -> float:
    """Only the primary metric (no HD95 or per-class entries): cheap enough for every
    validation pass of early stopping."""
    if spec.kind is TaskKind.SEGMENTATION:
        dice = segmentation_case_values(spec, preds, targets, with_hd95=False)["dice"]
        with np.errstate(all="ignore"):
            return _nanmean([_nanmean(row) for row in dice])
    return float(task_metrics(spec, preds, targets)[primary_metric(spec.kind)])


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
    idx = bootstrap_indices(n, n_boot, seed)
    kind = spec.kind
    if kind is TaskKind.CLASSIFICATION:
        probs = np.stack([_np(p).reshape(-1) for p in preds])
        y = np.asarray([int(_np(t)) for t in targets])
        pred = probs.argmax(axis=1)
        return np.array([balanced_accuracy(y[r], pred[r], spec.num_classes) for r in idx])
    if kind is TaskKind.MULTILABEL:
        s = np.stack([_np(p).reshape(-1) for p in preds]).astype(float)
        y = np.stack([_np(t).reshape(-1) for t in targets]).astype(float)
        return np.array([multilabel_auroc(y[r], s[r])[1] for r in idx])
    if kind is TaskKind.SEGMENTATION:
        dice = segmentation_case_values(spec, preds, targets, with_hd95=False)["dice"]
        with np.errstate(all="ignore"):
            case = np.array([_nanmean(row) for row in dice])
        finite = np.isfinite(case)
        cz = np.where(finite, case, 0.0)
        num = cz[idx].sum(axis=1)
        den = finite[idx].sum(axis=1)
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return map50_bootstrap([_np(x) for x in preds], [_np(x) for x in targets], spec.num_classes, idx)
