"""Backbone encoders for 2D images and 3D volumes, all behind one small interface.

Every encoder is an :class:`Encoder`: a stack of stages, each halving the resolution, with

* ``feature_info``: one dict per stage, ``{"num_chs": int, "reduction": int,
  "reduction_per_axis": tuple[int, ...], "module": str}`` (reduction = input size / feature
  size; per axis in array order, ``reduction`` is their maximum),
* ``forward_intermediates(x) -> list[Tensor]``: one map per stage, finest first,
* ``forward_features(x)``: the last (coarsest) stage,
* ``out_channels``: channels of the last stage.

Layers come from MONAI's dimension-keyed factories (``Conv[Conv.CONV, dims]``), so the same
code builds 2D and 3D networks. Normalisation is GroupNorm (ResNet) or channel LayerNorm
(ConvNeXt): a multi-task round mixes batches of different tasks, which would corrupt
BatchNorm's running statistics.

Registered encoders (see :func:`medfoundry.models.list_encoders`):

==================  =====================================  ========  =================
name                widths / depths                        params    note
==================  =====================================  ========  =================
``resnet_small``    (32, 64, 128, 256) / (2, 2, 2, 2)      ~2.8 M    fast on CPU
``resnet_base``     (64, 128, 256, 512) / (2, 2, 2, 2)     ~11 M     ResNet-18 widths
``convnext_small``  (32, 64, 128, 256) / (2, 2, 4, 2)      ~1.9 M    fast on CPU
``convnext_base``   (96, 192, 384, 768) / (3, 3, 9, 3)     ~28 M     ConvNeXt-T widths
==================  =====================================  ========  =================
(2D counts at ``in_channels=16``; 3D kernels have more weights.) All strides are options
(``stem_strides``/``stage_strides`` for ResNets, ``stem_stride``/``stage_strides`` for
ConvNeXts), per axis if needed: thick-slice volumes keep their slice axis with e.g.
``stem_strides=((1, 2, 2), (1, 2, 2))``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .registry import EncoderDefaults, register_encoder

__all__ = [
    "Encoder",
    "ResNetEncoder",
    "ConvNeXtEncoder",
    "LayerNormChannels",
    "PadToMultiple",
    "per_axis",
    "DropPath",
    "group_norm",
    "resnet_small",
    "resnet_base",
    "convnext_small",
    "convnext_base",
]


def group_norm(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> nn.GroupNorm:
    """GroupNorm with as many groups as divide ``channels`` (at most ``max_groups``, and at
    least ``min_channels_per_group`` channels per group so statistics stay stable)."""
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class LayerNormChannels(nn.Module):
    """LayerNorm over the channel axis of a (B, C, *spatial) tensor, any number of spatial dims."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch of whole samples with probability ``p``
    during training (kept samples are rescaled by 1 / (1 - p))."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def per_axis(value: int | Sequence[int], spatial_dims: int, what: str = "stride") -> tuple[int, ...]:
    """``value`` as one positive int per spatial axis (array order D, H, W / H, W)."""
    values = (int(value),) * spatial_dims if isinstance(value, (int, float)) else tuple(int(v) for v in value)
    if len(values) != spatial_dims or min(values) < 1:
        raise ConfigError(f"{what} {value!r}: expected a positive int or {spatial_dims} positive ints (one per axis)")
    return values


def _info(num_chs: int, reduction: tuple[int, ...], module: str) -> dict[str, Any]:
    return {"num_chs": int(num_chs), "reduction": max(reduction), "reduction_per_axis": tuple(reduction),
            "module": module}


class PadToMultiple(nn.Module):
    """Zero-pad the end of every spatial axis up to a multiple of ``multiple`` so a following
    stride-``multiple`` conv covers the whole input (output size = ceil(size / multiple))."""

    def __init__(self, multiple: int | Sequence[int]):
        super().__init__()
        self.multiple = multiple if isinstance(multiple, int) else tuple(int(m) for m in multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[2:]
        mult = (self.multiple,) * len(sizes) if isinstance(self.multiple, int) else self.multiple
        pad: list[int] = []
        for size, m in zip(reversed(sizes), reversed(mult)):
            pad += [0, (-size) % m]
        return F.pad(x, pad) if any(pad) else x


class Encoder(nn.Module):
    """Base class of every registered encoder.

    Subclasses build ``self.stages`` (an ``nn.ModuleList``, one module per stage) and
    ``self.stem``, and fill ``self.feature_info``. ``forward(x)`` returns the same list as
    :meth:`forward_intermediates` (the decoder and the heads use every scale).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: channels the stem expects.
        feature_info: per stage ``{"num_chs", "reduction", "reduction_per_axis", "module"}``,
            finest first; ``reduction_per_axis`` is one factor per spatial axis (array order),
            ``reduction`` its maximum (they differ only for anisotropic strides).
        name, build_kwargs, defaults: set by :func:`create_encoder` (registry name, the
            architecture options used, :class:`EncoderDefaults`).
    """

    name: str = ""
    build_kwargs: dict[str, Any]
    defaults: EncoderDefaults | None = None

    def __init__(self, spatial_dims: int, in_channels: int):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"{type(self).__name__}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_info: list[dict[str, Any]] = []
        self.build_kwargs = {}
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> "Encoder":
        """Recompute each stage's activations in the backward pass instead of storing them
        (less memory for large 3D inputs, about one extra forward of compute)."""
        self.grad_checkpointing = bool(enable)
        return self

    @property
    def out_channels(self) -> int:
        """Channels of the last (coarsest) stage."""
        return int(self.feature_info[-1]["num_chs"])

    @property
    def reductions(self) -> list[int]:
        return [int(f["reduction"]) for f in self.feature_info]

    def _check_input(self, x: torch.Tensor) -> None:
        expected = 2 + self.spatial_dims
        if x.ndim != expected or x.shape[1] != self.in_channels:
            axes = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"{type(self).__name__}.forward: expected input {axes} with C={self.in_channels}, "
                             f"got shape {tuple(x.shape)}")

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One feature map per stage, finest first; stage i has ``feature_info[i]["num_chs"]``
        channels and spatial size ``ceil(input_size / feature_info[i]["reduction_per_axis"])``
        per axis."""
        self._check_input(x)
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last (coarsest) stage only."""
        return self.forward_intermediates(x)[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_intermediates(x)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """Pre-activation-free ResNet basic block (two 3x3 convs) with GroupNorm."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, stride: int | tuple[int, ...],
                 drop_path: float = 0.0):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.norm2 = group_norm(cout)
        # zero-init the last norm so each block starts as identity (Goyal et al. 2017)
        nn.init.zeros_(self.norm2.weight)
        self.act = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path)
        if per_axis(stride, spatial_dims) != (1,) * spatial_dims or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), group_norm(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(self.shortcut(x) + self.drop_path(y))


class ResNetEncoder(Encoder):
    """ResNet-style encoder with basic blocks and GroupNorm.

    Stem: 3x3 conv stride 2, 3x3 conv, max-pool stride 2 (reduction 4); then four stages, the
    first at reduction 4 and each further one halving the resolution (reductions 4, 8, 16, 32).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        widths: channels of the four stages.
        depths: basic blocks per stage.
        stem_channels: channels of the stem (default ``widths[0]``).
        drop_path_rate: stochastic depth rate, linearly increasing over blocks.
        stem_strides: strides of the stem conv and of the stem max-pool; each an int or one
            int per axis (array order), e.g. ``((1, 2, 2), (1, 2, 2))`` keeps the slice axis of
            a thick-slice MRI volume at full resolution.
        stage_strides: stride of the first block of each stage, int or per axis.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 16,
                 widths: Sequence[int] = (64, 128, 256, 512), depths: Sequence[int] = (2, 2, 2, 2),
                 stem_channels: int | None = None, drop_path_rate: float = 0.0,
                 stem_strides: Sequence[int | Sequence[int]] = (2, 2),
                 stage_strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2)):
        super().__init__(spatial_dims, in_channels)
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise ConfigError(f"ResNetEncoder: widths {widths} and depths {depths} must be equally long, depths >= 1")
        if len(stem_strides) != 2 or len(stage_strides) != len(widths):
            raise ConfigError(f"ResNetEncoder: stem_strides needs 2 entries and stage_strides {len(widths)}, got "
                              f"{list(stem_strides)} and {list(stage_strides)}")
        s_conv, s_pool = (per_axis(v, spatial_dims, "ResNetEncoder: stem_strides entry") for v in stem_strides)
        strides = [per_axis(v, spatial_dims, "ResNetEncoder: stage_strides entry") for v in stage_strides]
        conv = Conv[Conv.CONV, spatial_dims]
        pool = Pool[Pool.MAX, spatial_dims]
        stem = stem_channels or widths[0]
        self.stem = nn.Sequential(
            conv(in_channels, stem, 3, stride=s_conv, padding=1, bias=False), group_norm(stem), nn.ReLU(inplace=True),
            conv(stem, stem, 3, padding=1, bias=False), group_norm(stem), nn.ReLU(inplace=True),
            pool(3, stride=s_pool, padding=1),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        reduction = tuple(a * b for a, b in zip(s_conv, s_pool))
        stages, cin, k = [], stem, 0
        for i, (w, d, stride) in enumerate(zip(widths, depths, strides)):
            reduction = tuple(r * s for r, s in zip(reduction, stride))
            blocks = []
            for j in range(d):
                blocks.append(BasicBlock(spatial_dims, cin, w, stride if j == 0 else 1, rates[k]))
                cin, k = w, k + 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(_info(w, reduction, f"stages.{i}"))
        self.stages = nn.ModuleList(stages)


# ------------------------------------------------------------------------------- ConvNeXt
class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise kxk conv, channel LayerNorm, pointwise MLP (x4, GELU), layer
    scale, stochastic depth, residual."""

    def __init__(self, spatial_dims: int, dim: int, kernel_size: int = 7, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-6, mlp_ratio: int = 4):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.dwconv = conv(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNormChannels(dim)
        self.pw1 = conv(dim, mlp_ratio * dim, 1)
        self.act = nn.GELU()
        self.pw2 = conv(mlp_ratio * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,) + (1,) * spatial_dims, float(layer_scale_init)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.act(self.pw1(self.norm(self.dwconv(x)))))
        return x + self.drop_path(self.gamma * y)


class ConvNeXtEncoder(Encoder):
    """ConvNeXt-style encoder (Liu et al. 2022) for 2D or 3D.

    Stem: patchify conv (kernel = stride = 4) + channel LayerNorm; between stages a LayerNorm
    and a 2x2 stride-2 conv. Reductions 4, 8, 16, 32. Sizes that are not multiples are
    zero-padded at the end of each axis, so stage sizes are ceil(size / reduction) as for the
    ResNets.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        widths: channels of the four stages.
        depths: blocks per stage.
        kernel_size: depthwise kernel (7 as in the paper; 5 is cheaper in 3D).
        drop_path_rate: stochastic depth rate, linearly increasing over blocks.
        layer_scale_init: initial layer scale.
        stem_stride: patchify stride (= kernel) of the stem, int or per axis (array order).
        stage_strides: downsampling (stride = kernel) before stages 2..n, int or per axis;
            ``(2, (1, 2, 2), 2)`` e.g. keeps the slice axis once.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 16,
                 widths: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (3, 3, 9, 3),
                 kernel_size: int = 7, drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6,
                 stem_stride: int | Sequence[int] = 4, stage_strides: Sequence[int | Sequence[int]] = (2, 2, 2)):
        super().__init__(spatial_dims, in_channels)
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) != len(depths) or not widths or min(depths) < 1:
            raise ConfigError(f"ConvNeXtEncoder: widths {widths} and depths {depths} must be equally long, depths >= 1")
        if len(stage_strides) != len(widths) - 1:
            raise ConfigError(f"ConvNeXtEncoder: stage_strides needs {len(widths) - 1} entries (one per "
                              f"downsampling), got {list(stage_strides)}")
        stem_s = per_axis(stem_stride, spatial_dims, "ConvNeXtEncoder: stem_stride")
        strides = [per_axis(v, spatial_dims, "ConvNeXtEncoder: stage_strides entry") for v in stage_strides]
        conv = Conv[Conv.CONV, spatial_dims]
        self.stem = nn.Sequential(PadToMultiple(stem_s), conv(in_channels, widths[0], stem_s, stride=stem_s),
                                  LayerNormChannels(widths[0]))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, k, reduction = [], 0, stem_s
        for i, (w, d) in enumerate(zip(widths, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                st = strides[i - 1]
                layers += [LayerNormChannels(widths[i - 1]), PadToMultiple(st), conv(widths[i - 1], w, st, stride=st)]
                reduction = tuple(r * s for r, s in zip(reduction, st))
            for _ in range(d):
                layers.append(ConvNeXtBlock(spatial_dims, w, kernel_size, rates[k], layer_scale_init))
                k += 1
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(_info(w, reduction, f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# -------------------------------------------------------------------------------- registry
_RESNET = "ResNet-style CNN, basic blocks, GroupNorm"
_CONVNEXT = "ConvNeXt-style, depthwise 7x7(x7) convs, channel LayerNorm"


@register_encoder(defaults=EncoderDefaults("resnet", params_millions=2.8,
                                           description=f"{_RESNET}; widths 32-256, fast on CPU"))
def resnet_small(spatial_dims: int = 2, in_channels: int = 16, **kwargs: Any) -> ResNetEncoder:
    """ResNet-style encoder, half ResNet-18 widths (32, 64, 128, 256), 2 blocks per stage."""
    kwargs.setdefault("widths", (32, 64, 128, 256))
    kwargs.setdefault("depths", (2, 2, 2, 2))
    return ResNetEncoder(spatial_dims, in_channels, **kwargs)


@register_encoder(defaults=EncoderDefaults("resnet", params_millions=11.2,
                                           description=f"{_RESNET}; ResNet-18 widths 64-512"))
def resnet_base(spatial_dims: int = 2, in_channels: int = 16, **kwargs: Any) -> ResNetEncoder:
    """ResNet-18-like encoder: widths (64, 128, 256, 512), 2 blocks per stage."""
    kwargs.setdefault("widths", (64, 128, 256, 512))
    kwargs.setdefault("depths", (2, 2, 2, 2))
    return ResNetEncoder(spatial_dims, in_channels, **kwargs)


@register_encoder(defaults=EncoderDefaults("convnext", normalization="layer", params_millions=1.9,
                                           description=f"{_CONVNEXT}; widths 32-256, fast on CPU"))
def convnext_small(spatial_dims: int = 2, in_channels: int = 16, **kwargs: Any) -> ConvNeXtEncoder:
    """Small ConvNeXt: widths (32, 64, 128, 256), depths (2, 2, 4, 2)."""
    kwargs.setdefault("widths", (32, 64, 128, 256))
    kwargs.setdefault("depths", (2, 2, 4, 2))
    return ConvNeXtEncoder(spatial_dims, in_channels, **kwargs)


@register_encoder(defaults=EncoderDefaults("convnext", normalization="layer", params_millions=27.8,
                                           description=f"{_CONVNEXT}; ConvNeXt-T widths 96-768"))
def convnext_base(spatial_dims: int = 2, in_channels: int = 16, **kwargs: Any) -> ConvNeXtEncoder:
    """ConvNeXt-T-like encoder: widths (96, 192, 384, 768), depths (3, 3, 9, 3)."""
    kwargs.setdefault("widths", (96, 192, 384, 768))
    kwargs.setdefault("depths", (3, 3, 9, 3))
    return ConvNeXtEncoder(spatial_dims, in_channels, **kwargs)
