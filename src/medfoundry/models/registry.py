"""Encoder registry (timm-style): one decorator, one factory, one listing.

A builder is a function ``builder(spatial_dims=2, in_channels=..., **kw) -> Encoder``
decorated with :func:`register_encoder`. Its name becomes the encoder name, and the frozen
:class:`EncoderDefaults` handed to the decorator describe it as data (dimensions, input
channels, normalisation, licence, weights source).

Example:
    >>> from medfoundry.models import create_encoder, list_encoders
    >>> list_encoders("resnet*")
    ['resnet_base', 'resnet_small']
    >>> enc = create_encoder("resnet_small", spatial_dims=3, in_channels=1)
    >>> [f["reduction"] for f in enc.feature_info]
    [4, 8, 16, 32]
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..errors import ConfigError
from ..utils import look_up_option

if TYPE_CHECKING:  # pragma: no cover
    from .encoders import Encoder

__all__ = [
    "EncoderDefaults",
    "register_encoder",
    "create_encoder",
    "list_encoders",
    "encoder_defaults",
]


@dataclass(frozen=True)
class EncoderDefaults:
    """Defaults of one registered encoder, kept beside its architecture.

    Attributes:
        architecture: family name, e.g. ``resnet`` or ``convnext``.
        spatial_dims: default number of spatial dimensions (2 images, 3 volumes).
        in_channels: default input channels of the encoder proper (after the input adapter).
        normalization: normalisation layers used inside the encoder (never BatchNorm: batches
            of a multi-task round come from different tasks, so running statistics would mix).
        input_normalization: what the input is expected to look like; medfoundry's input
            adapters standardise every image per sample and channel, so ``zscore``.
        license: licence of the architecture code and of any weights.
        weights_source: where pretrained weights come from; ``None`` = none bundled (train
            with ``medfoundry pretrain`` or bring a state dict, see ``load_encoder_state``).
        params_millions: approximate parameter count in 2D, for tables (millions).
        description: one line for ``list_encoders`` tables.
    """

    architecture: str
    spatial_dims: int = 2
    in_channels: int = 16
    normalization: str = "group"
    input_normalization: str = "zscore"
    license: str = "Apache-2.0"
    weights_source: str | None = None
    params_millions: float = 0.0
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., "Encoder"]
    defaults: EncoderDefaults


_REGISTRY: dict[str, _Entry] = {}

F = TypeVar("F", bound=Callable[..., Any])


def register_encoder(fn: F | None = None, *, name: str | None = None,
                     defaults: EncoderDefaults | None = None) -> Any:
    """Register an encoder builder under its function name (or ``name``).

    Usable bare (``@register_encoder``) or with arguments
    (``@register_encoder(defaults=EncoderDefaults("resnet"))``).

    Raises:
        ConfigError: when the name is already registered (duplicates are errors, so a plugin
            cannot silently replace a built-in encoder).
    """

    def wrap(builder: F) -> F:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ConfigError(f"register_encoder: encoder {key!r} is already registered "
                              f"(by {_REGISTRY[key].builder.__module__}.{_REGISTRY[key].builder.__qualname__})")
        _REGISTRY[key] = _Entry(key, builder, defaults or EncoderDefaults(architecture=key))
        return builder

    if fn is not None:
        return wrap(fn)
    return wrap


def _ensure_builtins() -> None:
    # the built-in encoders register themselves on import
    from . import encoders  # noqa: F401


def list_encoders(pattern: str = "*") -> list[str]:
    """Sorted names of registered encoders matching a shell-style ``pattern``."""
    _ensure_builtins()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def encoder_defaults(name: str) -> EncoderDefaults:
    """The :class:`EncoderDefaults` of a registered encoder.

    Raises:
        ConfigError: unknown name (the message lists close matches).
    """
    _ensure_builtins()
    return _REGISTRY[look_up_option(name, _REGISTRY, what="encoder")].defaults


def create_encoder(name: str, spatial_dims: int | None = None, in_channels: int | None = None,
                   pretrained: bool = False, **kwargs: Any) -> "Encoder":
    """Build a registered encoder.

    Args:
        name: registered name, see :func:`list_encoders`.
        spatial_dims: 2 or 3; default from the encoder's :class:`EncoderDefaults`.
        in_channels: input channels of the encoder proper; default from its defaults.
        pretrained: must be ``False``: no weights are bundled. Load trained weights with
            ``FoundationModel.from_pretrained``, ``load_encoder`` or ``load_encoder_state``.
        **kwargs: architecture options (e.g. ``widths``, ``depths``, ``drop_path_rate``).

    Returns:
        The encoder, with ``defaults`` set to its :class:`EncoderDefaults` (``spatial_dims``
        and ``in_channels`` replaced by the values used).

    Raises:
        ConfigError: unknown name (with close matches), bad ``spatial_dims`` or
            ``in_channels``, ``pretrained=True``, or options the builder does not accept.
    """
    _ensure_builtins()
    entry = _REGISTRY[look_up_option(name, _REGISTRY, what="encoder")]
    dims = entry.defaults.spatial_dims if spatial_dims is None else spatial_dims
    chans = entry.defaults.in_channels if in_channels is None else in_channels
    if dims not in (2, 3):
        raise ConfigError(f"create_encoder({name!r}): spatial_dims must be 2 or 3, got {dims!r}")
    if not isinstance(chans, int) or chans < 1:
        raise ConfigError(f"create_encoder({name!r}): in_channels must be a positive int, got {chans!r}")
    if pretrained:
        raise ConfigError(f"create_encoder({name!r}, pretrained=True): no pretrained weights are bundled; "
                          "use FoundationModel.from_pretrained(dir), load_encoder(dir) or "
                          "load_encoder_state(path, name)")
    try:
        encoder = entry.builder(spatial_dims=dims, in_channels=chans, **kwargs)
    except TypeError as err:
        raise ConfigError(f"create_encoder({name!r}): bad options {sorted(kwargs)}: {err}") from err
    encoder.name = name
    encoder.build_kwargs = dict(kwargs)
    encoder.defaults = dataclasses.replace(entry.defaults, spatial_dims=dims, in_channels=chans)
    return encoder
