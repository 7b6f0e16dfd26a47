"""The registry of registration methods: explicit registration, duplicates refused, close-match hints.

A method is a function that registers two images already on one voxel grid (the fixed one;
:func:`medfoundry.registration.register` does the world-space resampling first)::

    @register_method("mine", MyConfig, description="...")
    def run_mine(pair: MethodInput, config: MyConfig) -> MethodOutput: ...

``MethodOutput.disp`` is the dense displacement ``(1, S, *shape)`` in voxels of the fixed grid,
fixed -> moving (the moving image as resampled into the fixed grid). Importing this module does
not import torch; the built-in methods (``hybrid``, ``affine``, ``rigid``) are loaded on the
first lookup.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError
from ..utils import look_up_option
from .configs import MethodConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["MethodInput", "MethodOutput", "MethodSpec", "register_method", "get_method", "list_methods"]

# Modules whose import registers the built-in methods (named here, not found by scanning).
_BUILTIN_MODULES = ("medfoundry.registration.hybrid", "medfoundry.registration.linear")
_METHODS: dict[str, "MethodSpec"] = {}


@dataclass
class MethodInput:
    """Two images on the fixed voxel grid, as ``(1, 1, *shape)`` float32 tensors on one device.

    ``fixed_mask``/``moving_mask`` are {0, 1}; labels are integer-valued floats; any of them may
    be None. ``spacing`` is the fixed grid's voxel size in mm per axis (for rigid transforms).
    ``times`` accumulates seconds per stage.
    """

    fixed: "torch.Tensor"
    moving: "torch.Tensor"
    fixed_mask: "torch.Tensor | None" = None
    moving_mask: "torch.Tensor | None" = None
    fixed_labels: "torch.Tensor | None" = None
    moving_labels: "torch.Tensor | None" = None
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
    times: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.fixed.shape[2:])


@dataclass
class MethodOutput:
    """``disp`` ``(1, S, *shape)`` voxels, fixed -> moving; ``matrix`` the ``(S, S+1)`` voxel matrix of
    the linear part (fixed voxel -> moving voxel on the fixed grid) or None."""

    disp: "torch.Tensor"
    matrix: "torch.Tensor | np.ndarray | None" = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, config class, the values it forces, and the function."""

    name: str
    config_class: type[MethodConfig]
    run: Callable[[MethodInput, Any], MethodOutput]
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    needs_labels: Callable[[Any], bool] | None = None

    def default_config(self) -> MethodConfig:
        return self.config_class(**self.fixed)

    def requires_labels(self, config: Any) -> bool:
        """Whether this method, with ``config``, needs the label maps of both images."""
        return bool(self.needs_labels and self.needs_labels(config))


def register_method(name: str, config_class: type[MethodConfig], *, description: str = "",
                    fixed: dict[str, Any] | None = None,
                    needs_labels: Callable[[Any], bool] | None = None) -> Callable:
    """Decorator adding a method to the registry.

    Args:
        name: the name users pass as ``method=`` / ``--method``.
        config_class: a :class:`~medfoundry.registration.configs.MethodConfig` dataclass.
        description: one line for ``list_methods`` and the docs.
        fixed: config values the method forces (e.g. ``rigid`` forces ``model="rigid"``).
        needs_labels: ``config -> bool``: whether the method needs both label maps.

    Raises:
        ConfigError: the name is taken.
    """
    def decorate(run: Callable[[MethodInput, Any], MethodOutput]) -> Callable:
        if name in _METHODS:
            raise ConfigError(f"registration method {name!r} is already registered "
                              f"(by {_METHODS[name].run.__module__}); pick another name")
        spec = MethodSpec(name, config_class, run, description, dict(fixed or {}), needs_labels)
        spec.default_config()  # the forced values must form a valid config
        _METHODS[name] = spec
        return run

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; unknown names raise ``ConfigError`` with close matches."""
    _load_builtins()
    look_up_option(name, _METHODS, "registration method")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    _load_builtins()
    return sorted(_METHODS)
