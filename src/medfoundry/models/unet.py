"""U-Net-style dense predictor over any registered encoder (2D or 3D by ``spatial_dims``).

:class:`SegmentationUNet` = input adapter -> encoder (``forward_intermediates``, reductions
4, 8, 16, 32 for the registered encoders) + a light full-resolution path -> :class:`UNetDecoder`.
The encoders start at reduction 4, so the two finest skips come from the adapter's output
(reduction 1) and one strided block on it (reduction 2); both belong to the decoder and are
trained from scratch even when the encoder is pretrained.

The decoder walks from the coarsest map to full resolution: upsample to the next skip's size
(trilinear or bilinear, so odd sizes need no cropping), concatenate, two 3x3(x3) convs with
normalisation and leaky ReLU (nnU-Net's block). ``norm="instance"`` (default; nnU-Net's choice,
and on 32^3 brain-tumour phantoms it learned the small tumour core and enhancing rim faster
than GroupNorm) needs every decoder level to hold more than one voxel during training, i.e.
patches of at least 32 voxels per axis for the registered encoders; ``norm="group"`` has no
such limit. The network is single-task, so instance statistics are safe here (the shared
multi-task trunk keeps GroupNorm). One 1x1(x1) conv gives ``out_channels`` logits at input
resolution.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from torch import nn

from ..errors import ConfigError
from .encoders import group_norm

__all__ = ["UNetDecoder", "SegmentationUNet", "conv_block", "NORMS"]



NORMS = ("instance", "group")


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "group":
        return group_norm(channels)
    return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)


def conv_block(spatial_dims: int, cin: int, cout: int, stride: int = 1, norm: str = "instance") -> nn.Sequential:
    """Two 3x3(x3) convs (the first with ``stride``), each followed by ``norm`` (``instance``
    or ``group``) and leaky ReLU."""
    if norm not in NORMS:
        raise ConfigError(f"conv_block: norm must be one of {NORMS}, got {norm!r}")
    conv = Conv[Conv.CONV, spatial_dims]
    return nn.Sequential(conv(cin, cout, 3, stride=stride, padding=1, bias=False), _norm(norm, spatial_dims, cout),
                         nn.LeakyReLU(0.01, inplace=True),
                         conv(cout, cout, 3, padding=1, bias=False), _norm(norm, spatial_dims, cout),
                         nn.LeakyReLU(0.01, inplace=True))


class UNetDecoder(nn.Module):
    """Top-down U-Net decoder.

    Args:
        skip_channels: channels of every skip map, finest first (the finest is at the output
            resolution).
        spatial_dims: 2 or 3.
        out_channels: logits per voxel.
        channels: decoder channels at each level, finest first (default: the skip's).
        norm: ``instance`` or ``group`` (module docstring).

    Shapes:
        ``forward([(B, skip_channels[i], *S_i) ...]) -> (B, out_channels, *S_0)``.
    """

    def __init__(self, skip_channels: Sequence[int], spatial_dims: int, out_channels: int,
                 channels: Sequence[int] | None = None, norm: str = "instance"):
        super().__init__()
        skips = [int(c) for c in skip_channels]
        chans = [int(c) for c in (channels or skips)]
        if len(skips) < 2 or len(chans) != len(skips):
            raise ConfigError(f"UNetDecoder: need >= 2 skip levels and one width per level, got {skips} / {chans}")
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        blocks = []
        below = skips[-1]
        for level in range(len(skips) - 2, -1, -1):
            blocks.append(conv_block(spatial_dims, below + skips[level], chans[level], norm=norm))
            below = chans[level]
        self.blocks = nn.ModuleList(blocks)
        self.out = Conv[Conv.CONV, spatial_dims](chans[0], out_channels, 1)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for block, skip in zip(self.blocks, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)


class SegmentationUNet(nn.Module):
    """Encoder (with input adapters) + U-Net decoder for one segmentation task.

    Args:
        trunk: an :class:`~medfoundry.models.EncoderWithAdapters` (random or pretrained).
        modality: modality group of the images (selects or creates the input adapter).
        channels: image channels.
        out_channels: logits per voxel (classes for softmax, regions for sigmoid).
        half_channels: channels of the reduction-2 skip block.
        norm: normalisation of the decoder blocks, ``instance`` or ``group``.

    Shapes:
        ``forward((B, channels, *S)) -> (B, out_channels, *S)``; any spatial size works (the
        encoders pad internally and the decoder upsamples to each skip's size).
    """

    def __init__(self, trunk: nn.Module, modality: str, channels: int, out_channels: int,
                 half_channels: int = 24, norm: str = "instance"):
        super().__init__()
        self.trunk = trunk
        self.modality = str(modality)
        self.channels = int(channels)
        trunk.ensure_adapter(self.modality, self.channels)
        dims = trunk.spatial_dims
        full = trunk.encoder.in_channels
        self.half_res = conv_block(dims, full, half_channels, stride=2, norm=norm)
        enc = [int(f["num_chs"]) for f in trunk.feature_info]
        self.decoder = UNetDecoder([full, half_channels] + enc, dims, out_channels, norm=norm)
        self.norm = norm
        self.out_channels = int(out_channels)

    @property
    def spatial_dims(self) -> int:
        return int(self.trunk.spatial_dims)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        adapted, features = self.trunk.forward_with_input(image, self.modality)
        return self.decoder([adapted, self.half_res(adapted)] + list(features))

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.trunk.config(), "modality": self.modality, "channels": self.channels,
                "out_channels": self.out_channels, "norm": self.norm,
                "parameters": int(sum(p.numel() for p in self.parameters()))}
