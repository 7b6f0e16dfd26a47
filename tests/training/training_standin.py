"""A small stand-in foundation model with the FoundationModel interface, for trainer tests.

Deliberately tiny (a few thousand parameters) so training tests take seconds; every loss is a
per-sample mean so that splitting a batch across processes changes nothing but rounding.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class _Head(nn.Module):
    def __init__(self, spec, width: int):
        super().__init__()
        self.spec = spec
        self.kind = spec.kind.value
        c = spec.num_classes
        if self.kind == "segmentation":
            self.out = nn.Conv2d(width, c, 1)
        elif self.kind == "detection":
            self.out = nn.Linear(width, 4)
        else:
            self.out = nn.Linear(width, c)

    def forward(self, feats: torch.Tensor, size) -> torch.Tensor:
        if self.kind == "segmentation":
            return F.interpolate(self.out(feats), size=size, mode="bilinear", align_corners=False)
        pooled = feats.mean(dim=(2, 3))
        return self.out(pooled)

    def loss(self, output, target) -> torch.Tensor:
        c = self.spec.num_classes
        if self.kind in ("classification", "segmentation"):
            return F.cross_entropy(output.float(), target) / math.log(c)
        if self.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(output.float(), target) / math.log(2)
        size = self.spec.image_size[0]
        first = torch.stack([t["boxes"][0] for t in target]) / size
        return F.smooth_l1_loss(torch.sigmoid(output.float()), first)

    def decode(self, output):
        # Predictions in the kind's format (medfoundry.tasks), since the kind scores them.
        output = output.detach().float()
        if self.kind == "classification":
            return list(torch.softmax(output, 1).cpu().numpy())
        if self.kind == "segmentation":
            return list(output.argmax(1).cpu().numpy())
        if self.kind == "multilabel":
            return list(torch.sigmoid(output).cpu().numpy())
        size = self.spec.image_size[0]
        return [{"boxes": (torch.sigmoid(o) * size).cpu().numpy()[None], "scores": np.ones(1, np.float32),
                 "labels": np.zeros(1, np.int64)} for o in output]


class StandInModel(nn.Module):
    """adapter (per channel count) -> encoder (2 strided convs, GroupNorm) -> decoder -> heads."""

    def __init__(self, specs, width: int = 8):
        super().__init__()
        self.task_specs = {s.name: s for s in specs}
        self.adapters = nn.ModuleDict({f"c{c}": nn.Conv2d(c, width, 3, padding=1)
                                       for c in sorted({s.channels for s in specs})})
        self.encoder = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(2, width),
                                     nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({s.name: _Head(s, width) for s in specs})

    def trunk_parameters(self):
        for m in (self.adapters, self.encoder, self.decoder):
            yield from m.parameters()

    def forward(self, image: torch.Tensor, task: str):
        x = self.adapters[f"c{image.shape[1]}"](image)
        feats = self.decoder(self.encoder(x))
        return self.heads[task](feats, image.shape[2:])

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), folder / "standin.pt")


def standin_factory(specs, config):
    return StandInModel(specs)
