"""Heads on the pooled last encoder stage: classification (softmax) and multilabel (sigmoid)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.tasks import TaskSpec
from .base import Head

__all__ = ["ClassificationHead", "MultilabelHead"]


class _GlobalHead(Head):
    """Global-average-pooled last encoder stage -> LayerNorm -> dropout -> linear."""

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, dropout: float = 0.0):
        super().__init__(spec, encoder_channels, decoder_channels, stride)
        c = self.encoder_channels[-1]
        self.norm = nn.LayerNorm(c)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, self.num_classes)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.fc.weight, std=0.01)

    def forward(self, features: Sequence[torch.Tensor] | torch.Tensor,
                image_size: Sequence[int] | None = None) -> torch.Tensor:
        x = features[-1] if isinstance(features, (list, tuple)) else features
        x = x.flatten(2).mean(dim=2)
        return self.fc(self.dropout(self.norm(x)))


class ClassificationHead(_GlobalHead):
    """Single-label classification.

    ``forward`` -> logits ``(B, C)``; ``loss`` = cross-entropy / ln C (1 for uniform logits,
    with or without label smoothing); ``decode`` -> per sample ``probs (C,)`` float32 (softmax).

    Args:
        dropout: dropout before the linear layer.
        label_smoothing: passed to ``F.cross_entropy``.
    """


    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__(spec, encoder_channels, decoder_channels, stride, dropout)
        self.label_smoothing = float(label_smoothing)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target, device=output.device).long()
        if target.ndim != 1 or target.shape[0] != output.shape[0]:
            raise ValueError(f"ClassificationHead.loss: expected ({output.shape[0]},) class indices, "
                             f"got shape {tuple(target.shape)}")
        ce = F.cross_entropy(output, target, label_smoothing=self.label_smoothing)
        return ce / math.log(self.num_classes)

    def decode(self, output: torch.Tensor) -> list[np.ndarray]:
        probs = torch.softmax(output.detach().float(), dim=1).cpu().numpy().astype(np.float32)
        return list(probs)


class MultilabelHead(_GlobalHead):
    """K independent binary labels.

    ``forward`` -> logits ``(B, K)``; ``loss`` = mean binary cross-entropy / ln 2 (1 for zero
    logits) over labelled entries (a NaN target marks a missing label and is ignored);
    ``decode`` -> per sample ``scores (K,)`` float32 in [0, 1] (sigmoid).
    """


    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target, device=output.device).float()
        known = ~torch.isnan(target)
        if bool(known.all()):
            bce = F.binary_cross_entropy_with_logits(output, target)
        else:
            per = F.binary_cross_entropy_with_logits(output, torch.nan_to_num(target), reduction="none")
            bce = (per * known).sum() / known.sum().clamp(min=1)
        return bce / math.log(2.0)

    def decode(self, output: torch.Tensor) -> list[np.ndarray]:
        return list(torch.sigmoid(output.detach().float()).cpu().numpy().astype(np.float32))
