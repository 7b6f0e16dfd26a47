"""The head contract and the factory that builds a task's head through its kind.

Every head has

* ``uses_decoder``: ``False`` heads read the encoder's multi-scale list, ``True`` heads read
  the shared decoder's map (reduction ``stride``);
* ``forward(features, image_size=None) -> output`` (raw logits; see each class);
* ``loss(output, target) -> scalar`` **scaled so that an untrained head scores about 1**
  (cross-entropy / ln C and the like), so that no task dominates the shared gradient by its
  units;
* ``decode(output) -> list`` of per-sample numpy predictions (the format the kind's metrics
  take, see :mod:`medfoundry.tasks`).

Heads do not score themselves: metrics, the primary metric and the chance level belong to
the task kind (``medfoundry.tasks.get_kind(spec.kind)``). Targets follow the batch layout of
:mod:`medfoundry.data.loading`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ...data.tasks import TaskSpec
from ...errors import ConfigError
from ..encoders import per_axis

__all__ = ["Head", "create_head", "head_class"]


def head_class(kind: Any) -> type["Head"]:
    """The head class the registered task kind ``kind`` declares."""
    from ...tasks import get_kind

    cls = get_kind(kind).head
    if cls is None:
        raise ConfigError(f"no head declared by task kind {kind!r}")
    return cls


def create_head(spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                stride: int | Sequence[int] = 4, **kwargs: Any) -> "Head":
    """Build the head of ``spec`` through its registered kind.

    Args:
        spec: the task.
        encoder_channels: channels per encoder stage (``[f["num_chs"] for f in
            encoder.feature_info]``) or the last stage's channels.
        decoder_channels: channels of the shared decoder map.
        stride: reduction of the decoder map (pixels per decoder cell), used by detection; an
            int or one int per spatial axis (array order) for anisotropic encoders.
        **kwargs: head options (e.g. ``dropout``, ``label_smoothing``, ``ignore_index``,
            ``score_threshold``).

    Raises:
        ConfigError: unknown kind, or options the head does not take.
    """
    from ...tasks import get_kind

    kind = get_kind(spec.kind)
    try:
        return kind.create_head(spec, encoder_channels, decoder_channels, stride=stride, **kwargs)
    except TypeError as err:
        name = kind.head.__name__ if kind.head is not None else kind.name
        raise ConfigError(f"create_head: task {spec.name!r}: bad {name} options {sorted(kwargs)}: {err}") from err


def _spatial_mode(dims: int) -> str:
    return "bilinear" if dims == 2 else "trilinear"


class Head(nn.Module):
    """Base class; see the module docstring for the contract."""

    uses_decoder: ClassVar[bool] = False

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4):
        super().__init__()
        self.spec = spec
        self.encoder_channels = [int(encoder_channels)] if isinstance(encoder_channels, int) \
            else [int(c) for c in encoder_channels]
        self.decoder_channels = int(decoder_channels)
        self.spatial_dims = spec.spatial_dims
        self.stride_per_axis = per_axis(stride, self.spatial_dims, f"{type(self).__name__}: stride")
        self.stride = max(self.stride_per_axis)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def forward(self, features: Any, image_size: Sequence[int] | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: Any, target: Any) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode(self, output: Any) -> list[Any]:  # pragma: no cover
        raise NotImplementedError
