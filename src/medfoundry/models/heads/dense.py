"""Heads on the shared decoder map: the dense base and semantic segmentation."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from ...data.tasks import TaskSpec
from ..encoders import group_norm
from .base import Head, _spatial_mode

__all__ = ["SegmentationHead"]


class _DenseHead(Head):
    uses_decoder = True

    def _branch(self, out: int, bias: float = 0.0) -> nn.Sequential:
        conv = Conv[Conv.CONV, self.spatial_dims]
        c = self.decoder_channels
        last = conv(c, out, 1)
        nn.init.normal_(last.weight, std=0.01)
        nn.init.constant_(last.bias, bias)
        return nn.Sequential(conv(c, c, 3, padding=1, bias=False), group_norm(c), nn.SiLU(), last)

    def _check_map(self, features: torch.Tensor) -> torch.Tensor:
        if isinstance(features, (list, tuple)) or features.ndim != 2 + self.spatial_dims:
            raise ValueError(f"{type(self).__name__}: expects the decoder map (B, C, *spatial), got "
                             f"{type(features).__name__}")
        return features


class SegmentationHead(_DenseHead):
    """Semantic segmentation on the shared decoder map.

    ``forward(decoder_map, image_size)`` -> logits ``(B, C, *image_size)`` (upsampled from the
    decoder resolution when ``image_size`` is given); ``loss`` = (CE / ln C + soft Dice) / 2,
    Dice over foreground classes with batch statistics (about 1 untrained, 0 perfect);
    ``decode`` -> per sample label map ``(*image_size)`` int64.

    Args:
        smooth: added to the Dice numerator and denominator.
        ignore_index: a target value marking unlabelled pixels (e.g. 255 for partial
            annotations); they count in neither CE nor Dice. ``None``: every target value must
            be a class index.
    """


    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, smooth: float = 1e-5, ignore_index: int | None = None):
        super().__init__(spec, encoder_channels, decoder_channels, stride)
        self.classifier = self._branch(self.num_classes)
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, features: torch.Tensor, image_size: Sequence[int] | None = None) -> torch.Tensor:
        logits = self.classifier(self._check_map(features))
        if image_size is not None and tuple(logits.shape[2:]) != tuple(image_size):
            logits = F.interpolate(logits, size=tuple(int(s) for s in image_size),
                                   mode=_spatial_mode(self.spatial_dims), align_corners=False)
        return logits

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.float()  # Dice sums in half precision lose small structures
        target = torch.as_tensor(target, device=output.device).long()
        if target.shape[1:] != output.shape[2:]:
            raise ValueError(f"SegmentationHead.loss: target {tuple(target.shape)} does not match logits "
                             f"{tuple(output.shape)}; call forward with image_size")
        c = self.num_classes
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        bad = valid & ((target < 0) | (target >= c))
        if bool(bad.any()):
            raise ValueError(f"SegmentationHead.loss: task {self.spec.name!r} has {c} classes but the target "
                             f"holds {sorted(set(target[bad].unique().tolist()))[:5]}"
                             + ("" if self.ignore_index is None else f" (ignore_index={self.ignore_index})"))
        safe = torch.where(valid, target, torch.zeros_like(target))
        ce = F.cross_entropy(output, target, ignore_index=-100 if self.ignore_index is None else self.ignore_index)
        ce = ce / math.log(c)
        mask = valid.unsqueeze(1).to(output.dtype)
        probs = torch.softmax(output, dim=1)[:, 1:] * mask
        onehot = F.one_hot(safe, c).movedim(-1, 1)[:, 1:].to(probs.dtype) * mask
        dims = (0,) + tuple(range(2, probs.ndim))  # batch Dice: sum over samples and space
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)
        return 0.5 * (ce + dice.mean())

    def decode(self, output: torch.Tensor) -> list[np.ndarray]:
        return list(output.detach().argmax(dim=1).cpu().numpy().astype(np.int64))
