"""An ordinal-regression task kind defined outside the package: the plug-in proof.

Grades 0..C-1 per image; stored as ``grades.npy`` (N,) int64 (not the classification
``labels.npy``, to show a kind owns its arrays). The head has C - 1 cumulative logits
(P(grade > k), so its width differs from the number of classes) and decodes them to grade
probabilities (C,). Primary metric ``within_one``: share of predictions at most one grade
off (higher is better); its analytic chance level is that of a uniform guess under uniform
grades, ``(3C - 2) / C**2``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.errors import DataError
from medfoundry.models.heads import Head
from medfoundry.tasks import Kind, KindWriter, ValidationContext


class OrdinalHead(Head):
    """Cumulative-link (CORAL-style) head: C - 1 logits of P(grade > k), k = 0..C-2."""

    def __init__(self, spec, encoder_channels, decoder_channels, stride=4):
        super().__init__(spec, encoder_channels, decoder_channels, stride)
        c = self.encoder_channels[-1]
        self.fc = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, self.num_classes - 1))

    def forward(self, features, image_size=None):
        x = features[-1] if isinstance(features, (list, tuple)) else features
        return self.fc(x.flatten(2).mean(dim=2))

    def loss(self, output, target):
        steps = torch.arange(self.num_classes - 1, device=output.device)
        above = (torch.as_tensor(target, device=output.device)[:, None] > steps[None]).float()
        return F.binary_cross_entropy_with_logits(output.float(), above) / math.log(2.0)

    def decode(self, output):
        above = torch.sigmoid(output.detach().float())  # P(grade > k)
        ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
        cumulative = torch.cat([ones, above, zeros], 1)
        return list((cumulative[:, :-1] - cumulative[:, 1:]).clamp(min=0).cpu().numpy())


class GradeWriter(KindWriter):
    def __init__(self, folder: Path, spec: Any, n: int):
        super().__init__(folder, spec, n)
        self.grades = np.full(n, -1, dtype=np.int64)

    def set(self, i: int, target: Any) -> None:
        if not 0 <= int(target) < self.spec.num_classes:
            raise DataError(f"task {self.spec.name!r} sample {i}: grade {target} outside 0..{self.spec.num_classes - 1}",
                            field="grades")
        self.grades[i] = int(target)

    def close(self) -> None:
        np.save(self.folder / "grades.npy", self.grades)


class OrdinalKind(Kind):
    name = "ordinal"
    arrays = ("grades",)
    min_classes = 3
    primary_metric = "within_one"
    pooled = True
    head = OrdinalHead

    def outputs(self, spec):
        return spec.num_classes - 1

    def writer(self, folder, spec, n):
        return GradeWriter(folder, spec, n)

    def target(self, db, task, index):
        return int(db.array(task, "grades")[index])

    def example_target(self, spec, rng):
        return int(rng.integers(spec.num_classes))

    def validate(self, spec, ctx: ValidationContext) -> None:
        grades = ctx.load("grades")
        if grades is None:
            return
        ctx.count_mismatch(ctx.folder / "grades.npy", "grades", len(grades))
        bad = np.flatnonzero((grades < 0) | (grades >= spec.num_classes))
        if len(bad):
            ctx.error(ctx.folder / "grades.npy", "grades", f"{len(bad)} grade(s) outside 0..{spec.num_classes - 1}")

    def strata(self, db, task):
        return np.asarray(db.array(task, "grades"), dtype=np.int64)

    def collate(self, targets: Sequence[Any]):
        return torch.tensor([int(t) for t in targets], dtype=torch.long)

    def summary(self, db, task):
        spec = db.task(task)
        counts = np.bincount(np.asarray(db.array(task, "grades")), minlength=spec.num_classes)
        return {"grades": {c: int(v) for c, v in zip(spec.classes, counts)}}

    def metrics(self, spec, preds, targets, spacings=None):
        probs = np.stack([np.asarray(p) for p in preds])
        grade = probs.argmax(1)
        y = np.asarray([int(t) for t in targets])
        return {"within_one": float(np.mean(np.abs(grade - y) <= 1)), "mae": float(np.mean(np.abs(grade - y)))}

    def chance_level(self, spec):
        c = spec.num_classes
        return (3 * c - 2) / c**2
