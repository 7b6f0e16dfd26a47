"""Multilabel: K independent binary labels per image, sigmoid head.

Stored: ``labels.npy`` (N, K) uint8 of 0/1. Target: (K,) float32. Prediction: scores (K,)
in [0, 1]. Primary metric ``auroc`` (macro over labels; chance 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..evaluation.classification import multilabel_auroc
from ..models.heads import MultilabelHead
from . import register_kind
from .base import Kind, KindWriter, ValidationContext, format_items, to_numpy
from .classification import LabelWriter
from .strata import multilabel_strata

__all__ = ["MultilabelKind", "multilabel_strata"]


class MultilabelKind(Kind):
    name = "multilabel"
    arrays = ("labels",)
    min_classes = 1
    primary_metric = "auroc"
    pooled = True
    head = MultilabelHead

    def writer(self, folder: Path, spec: Any, n: int) -> KindWriter:
        return LabelWriter(folder, spec, n, row_shape=(spec.num_classes,), dtype=np.uint8, fill=0)

    def target(self, db: Any, task: str, index: int) -> np.ndarray:
        return np.array(db.array(task, "labels")[index], dtype=np.float32)

    def example_target(self, spec: Any, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(spec.num_classes) < 0.5).astype(np.float32)

    def validate(self, spec: Any, ctx: ValidationContext) -> None:
        path = ctx.folder / "labels.npy"
        labels = ctx.load("labels")
        if labels is None:
            return
        if labels.ndim != 2 or labels.shape[1] != spec.num_classes:
            ctx.error(path, "labels", f"shape {labels.shape}, expected (N, {spec.num_classes}) for the classes "
                      f"{list(spec.classes)}")
            return
        ctx.count_mismatch(path, "labels", len(labels))
        bad = ~np.isin(np.asarray(labels), (0, 1))
        if bad.any():
            i, k = (int(v) for v in np.argwhere(bad)[0])
            ctx.error(path, "labels", f"{int(bad.sum())} value(s) are not 0/1, e.g. sample {i} class "
                      f"{spec.classes[k]!r} = {labels[i, k]}")
            return
        train = ctx.train_indices(len(labels))
        if train is not None and len(train):
            positives = np.asarray(labels)[train].sum(axis=0)
            absent = [spec.classes[k] for k in np.flatnonzero(positives == 0)]
            if absent:
                ctx.warn(path, "labels", f"label(s) {absent} are never positive in the train split (never learned)")

    def invalid_targets(self, spec: Any, db: Any, task: str) -> tuple[str, str, np.ndarray, np.ndarray]:
        labels = np.asarray(db.array(task, "labels")).reshape(len(db.array(task, "labels")), -1)
        off = ~np.isin(labels, (0, 1))
        bad = np.flatnonzero(off.any(axis=1))
        return "labels", "0/1", bad, labels[bad, off[bad].argmax(axis=1)] if len(bad) else labels[:0, 0]

    def strata(self, db: Any, task: str) -> np.ndarray:
        return multilabel_strata(np.asarray(db.array(task, "labels")))

    def collate(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(t) for t in targets])).float()

    def summary(self, db: Any, task: str) -> dict[str, Any]:
        spec = db.task(task)
        labels = np.asarray(db.array(task, "labels"), dtype=bool)
        return {"positives": {c: int(v) for c, v in zip(spec.classes, labels.sum(axis=0))},
                "none": int((~labels.any(axis=1)).sum())}

    def summary_text(self, balance: dict[str, Any], limit: int = 12) -> str:
        return format_items(balance["positives"], str, limit) + f"; none: {balance['none']}"

    def draw(self, ax: Any, spec: Any, target: Any, palette: Sequence[Any]) -> str:
        pos = [spec.classes[k] for k in np.flatnonzero(np.asarray(target) > 0.5)]
        return ", ".join(pos) if pos else "(none)"

    def metrics(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                spacings: Sequence[Any] | None = None) -> dict[str, float]:
        scores = np.stack([to_numpy(p).reshape(-1) for p in preds]).astype(float)
        y = np.stack([to_numpy(t).reshape(-1) for t in targets]).astype(float)
        if scores.shape != y.shape or scores.shape[1] != spec.num_classes:
            raise ValueError(f"task_metrics(): task {spec.name!r} expects (K={spec.num_classes},) scores and "
                             f"targets, got {scores.shape[1:]} and {y.shape[1:]}")
        per, macro = multilabel_auroc(y, scores)
        out = {"n": float(len(preds)), "auroc": macro}
        for name, v in zip(spec.classes, per):
            out[f"auroc/{name}"] = float(v)
        out["label_accuracy"] = float(np.mean((scores >= 0.5) == (y > 0.5)))
        return out

    def bootstrap(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                  resamples: np.ndarray) -> np.ndarray:
        s = np.stack([to_numpy(p).reshape(-1) for p in preds]).astype(float)
        y = np.stack([to_numpy(t).reshape(-1) for t in targets]).astype(float)
        return np.array([multilabel_auroc(y[r], s[r])[1] for r in resamples])

    def chance_level(self, spec: Any) -> float:
        return 0.5


register_kind(MultilabelKind())
