"""Shared multi-scale decoder (FPN-style) feeding the dense heads.

:class:`SharedDecoder` takes the encoder's ``forward_intermediates`` (finest first), projects
each to ``channels`` with a 1x1 conv, merges them top-down (upsample the coarser sum, add the
lateral), and refines the finest merged map with two 3x3 convs (GroupNorm, SiLU). The result
is one map at the finest encoder reduction (4 for the registered encoders), or optionally at
full resolution using the input adapters' output as a skip connection, shared by the
segmentation and detection heads. Works for 2D and 3D.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from ..errors import ConfigError
from .encoders import group_norm

__all__ = ["SharedDecoder"]


def _interp_mode(spatial_dims: int) -> str:
    return "bilinear" if spatial_dims == 2 else "trilinear"


class SharedDecoder(nn.Module):
    """FPN-style top-down decoder over encoder features.

    Args:
        feature_info: the encoder's ``feature_info`` (``num_chs``, ``reduction`` per stage).
        channels: channels of every merged level and of the output.
        spatial_dims: 2 or 3.
        full_resolution_channels: ``None`` (default): the output is at the finest encoder
            reduction (4). An int: the channels of the input adapters' output, which is then
            passed to :meth:`forward` as ``skip``; the merged map is upsampled to the input
            size, concatenated with it and refined by two more 3x3(x3) convs (a U-Net-style
            last step), so segmentation is predicted at full resolution. Costs full-resolution
            activations: mind memory on large 3D volumes.

    Attributes:
        out_channels: ``channels``.
        reduction: input size / output size (the finest stage's reduction, or 1).
        reduction_per_axis: the same per spatial axis (array order).
        needs_skip: whether :meth:`forward` needs the adapters' output.

    Shapes:
        ``forward(list of (B, C_i, *S_i), skip=None) -> (B, channels, *S_0)``, or
        ``(B, channels, *input size)`` with ``full_resolution_channels``.
    """

    def __init__(self, feature_info: Sequence[dict[str, Any]], channels: int = 64, spatial_dims: int = 2,
                 full_resolution_channels: int | None = None):
        super().__init__()
        if not feature_info:
            raise ConfigError("SharedDecoder: feature_info is empty")
        if channels < 1:
            raise ConfigError(f"SharedDecoder: channels must be >= 1, got {channels}")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.out_channels = channels
        self.in_channels = [int(f["num_chs"]) for f in feature_info]
        self.lateral = nn.ModuleList(conv(c, channels, 1) for c in self.in_channels)
        self.refine = nn.Sequential(
            conv(channels, channels, 3, padding=1, bias=False), group_norm(channels), nn.SiLU(),
            conv(channels, channels, 3, padding=1, bias=False), group_norm(channels), nn.SiLU(),
        )
        self.full_resolution_channels = full_resolution_channels
        self.needs_skip = full_resolution_channels is not None
        if self.needs_skip:
            c_in = channels + int(full_resolution_channels)
            self.full = nn.Sequential(
                conv(c_in, channels, 3, padding=1, bias=False), group_norm(channels), nn.SiLU(),
                conv(channels, channels, 3, padding=1, bias=False), group_norm(channels), nn.SiLU(),
            )
            self.reduction = 1
            self.reduction_per_axis = (1,) * spatial_dims
        else:
            self.reduction = int(feature_info[0]["reduction"])
            self.reduction_per_axis = tuple(int(r) for r in feature_info[0].get("reduction_per_axis",
                                                                               (self.reduction,) * spatial_dims))

    def forward(self, features: Sequence[torch.Tensor], skip: torch.Tensor | None = None) -> torch.Tensor:
        if len(features) != len(self.lateral):
            raise ValueError(f"SharedDecoder: expected {len(self.lateral)} feature maps, got {len(features)}")
        mode = _interp_mode(self.spatial_dims)
        x = self.lateral[-1](features[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(list(features[:-1]))):
            # size= instead of scale_factor: inputs need not be multiples of the reduction
            x = F.interpolate(x, size=f.shape[2:], mode=mode, align_corners=False)
            x = x + lat(f)
        x = self.refine(x)
        if self.needs_skip:
            if skip is None:
                raise ValueError("SharedDecoder: built with full_resolution_channels, so forward needs skip= "
                                 "(the input adapters' output)")
            x = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)
            x = self.full(torch.cat([x, skip], dim=1))
        return x
