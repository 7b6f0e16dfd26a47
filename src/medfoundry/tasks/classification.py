"""Single-label classification: one class index per image, softmax head.

Stored: ``labels.npy`` (N,) int64. Target: ``int``. Prediction: probabilities (C,).
Primary metric ``balanced_accuracy`` (mean recall): its chance level is 1 / C whatever the
class frequencies, so a subset that shifts the balance does not move the floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..evaluation.classification import accuracy, balanced_accuracy, macro_auroc, macro_f1
from ..models.heads import ClassificationHead
from . import register_kind
from .base import Kind, KindWriter, ValidationContext, format_items, to_numpy

__all__ = ["ClassificationKind", "LabelWriter"]


class LabelWriter(KindWriter):
    """``labels.npy``: one row per sample, shape ``(N, *row_shape)`` of ``dtype``, written at close."""

    def __init__(self, folder: Path, spec: Any, n: int, row_shape: tuple[int, ...] = (), dtype: Any = np.int64,
                 fill: int = -1):
        super().__init__(folder, spec, n)
        self.labels = np.full((n, *row_shape), fill, dtype=dtype)

    def set(self, i: int, target: Any) -> None:
        value = np.asarray(target)
        if value.shape != self.labels.shape[1:]:
            raise DataError(f"task {self.spec.name!r} sample {i}: label shape {value.shape}, "
                            f"expected {self.labels.shape[1:]}", field="labels")
        self.labels[i] = value.astype(self.labels.dtype)

    def close(self) -> None:
        np.save(self.folder / "labels.npy", self.labels)


def check_labels_in_range(spec: Any, ctx: ValidationContext, labels: np.ndarray) -> bool:
    """Report (N,) integer labels outside ``0..C-1``; ``True`` when all are valid."""
    path = ctx.folder / "labels.npy"
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        ctx.error(path, "labels", f"expected (N,) integers, found shape {labels.shape} dtype {labels.dtype}")
        return False
    ctx.count_mismatch(path, "labels", len(labels))
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
    if len(bad):
        ctx.error(path, "labels", f"{len(bad)} label(s) outside 0..{spec.num_classes - 1} "
                  f"({spec.num_classes} classes), e.g. sample {int(bad[0])} = {int(labels[bad[0]])}")
        return False
    return True


class ClassificationKind(Kind):
    name = "classification"
    arrays = ("labels",)
    min_classes = 2
    primary_metric = "balanced_accuracy"
    pooled = True
    head = ClassificationHead

    def writer(self, folder: Path, spec: Any, n: int) -> KindWriter:
        return LabelWriter(folder, spec, n)

    def target(self, db: Any, task: str, index: int) -> int:
        return int(db.array(task, "labels")[index])

    def example_target(self, spec: Any, rng: np.random.Generator) -> int:
        return int(rng.integers(spec.num_classes))

    def validate(self, spec: Any, ctx: ValidationContext) -> None:
        labels = ctx.load("labels")
        if labels is None or not check_labels_in_range(spec, ctx, labels):
            return
        train = ctx.train_indices(len(labels))
        if train is not None and len(train):
            counts = np.bincount(np.asarray(labels)[train], minlength=spec.num_classes)
            absent = [spec.classes[k] for k in np.flatnonzero(counts == 0)]
            if absent:
                ctx.warn(ctx.folder / "labels.npy", "labels",
                         f"class(es) {absent} have no sample in the train split (never learned)")

    def invalid_targets(self, spec: Any, db: Any, task: str) -> tuple[str, str, np.ndarray, np.ndarray]:
        labels = np.asarray(db.array(task, "labels"))
        bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
        return "labels", f"0..{spec.num_classes - 1}", bad, labels[bad].astype(np.int64)

    def strata(self, db: Any, task: str) -> np.ndarray:
        return np.asarray(db.array(task, "labels"), dtype=np.int64)

    def collate(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.tensor([int(t) for t in targets], dtype=torch.long)

    def summary(self, db: Any, task: str) -> dict[str, Any]:
        spec = db.task(task)
        k = spec.num_classes
        labels = np.asarray(db.array(task, "labels"), dtype=np.int64)
        valid = (labels >= 0) & (labels < k)  # an invalid label is reported, never counted as a class
        counts = np.bincount(labels[valid], minlength=k)
        out: dict[str, Any] = {"counts": {c: int(v) for c, v in zip(spec.classes, counts)}}
        if not valid.all():
            out["invalid"] = int((~valid).sum())
        return out

    def summary_text(self, balance: dict[str, Any], limit: int = 12) -> str:
        text = format_items(balance["counts"], str, limit)
        return text + (f"; INVALID: {balance['invalid']}" if balance.get("invalid") else "")

    def draw(self, ax: Any, spec: Any, target: Any, palette: Sequence[Any]) -> str:
        return str(spec.classes[int(target)] if 0 <= int(target) < spec.num_classes else target)

    def metrics(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                spacings: Sequence[Any] | None = None) -> dict[str, float]:
        probs = np.stack([to_numpy(p).reshape(-1) for p in preds]) if len(preds) else np.zeros((0, spec.num_classes))
        if probs.shape[1] != spec.num_classes:
            raise ValueError(f"task_metrics(): task {spec.name!r} expects (C={spec.num_classes},) probabilities, "
                             f"got ({probs.shape[1]},)")
        y = np.asarray([int(to_numpy(t)) for t in targets], dtype=np.int64)
        return {"n": float(len(preds)), "accuracy": accuracy(y, probs),
                "balanced_accuracy": balanced_accuracy(y, probs, spec.num_classes),
                "macro_f1": macro_f1(y, probs, spec.num_classes),
                "auroc": macro_auroc(y, probs) if len(y) else float("nan")}

    def bootstrap(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                  resamples: np.ndarray) -> np.ndarray:
        pred = np.stack([to_numpy(p).reshape(-1) for p in preds]).argmax(axis=1)
        y = np.asarray([int(to_numpy(t)) for t in targets])
        return np.array([balanced_accuracy(y[r], pred[r], spec.num_classes) for r in resamples])

    def chance_level(self, spec: Any) -> float:
        return 1.0 / spec.num_classes


register_kind(ClassificationKind())
