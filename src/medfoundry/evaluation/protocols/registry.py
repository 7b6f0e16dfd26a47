"""The protocol interface and its registry: one module per protocol, one registration call each.

A protocol turns one pair of label maps (prediction, reference) on the same grid into figures per
region or label, and says what a missing prediction scores. Built-in protocols live in the
modules of :data:`_BUILTIN_MODULES`, imported on the first look-up so that importing this package
stays cheap; a user protocol is one :func:`register_protocol` call.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from ...utils import look_up_option

__all__ = [
    "SegmentationProtocol",
    "CaseFigures",
    "register_protocol",
    "get_protocol",
    "list_protocols",
]

# region (or label) name -> figure name -> value
CaseFigures = dict[str, dict[str, float]]

_REGISTRY: dict[str, "SegmentationProtocol"] = {}
_BUILTIN_MODULES = (
    "medfoundry.evaluation.protocols.default",
    "medfoundry.evaluation.protocols.brats",
    "medfoundry.evaluation.protocols.isles22",
    "medfoundry.evaluation.protocols.kits21",
)
_builtins_loaded = False


class SegmentationProtocol(ABC):
    """How one challenge scores a label map against its reference.

    Attributes:
        name: registry key, e.g. ``"brats-gli"``.
        description: one line for ``--help`` and the results file.
        source: the official code or document the figures were checked against.
    """

    name: str = ""
    description: str = ""
    source: str = ""

    @abstractmethod
    def evaluate_case(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        """Figures of one case.

        Args:
            pred: integer label map, 2D or 3D, in the file's voxel order.
            ref: reference label map of the same shape.
            spacing: voxel size in mm per axis (from the NIfTI header).

        Returns:
            ``{region: {figure: value}}``; NaN and inf are allowed and counted by the aggregates.

        Raises:
            DataError: a label the protocol does not define (the runner adds the file names).
        """

    @abstractmethod
    def missing_case(self, ref: np.ndarray, spacing: Sequence[float]) -> CaseFigures:
        """Figures for a case whose prediction is missing: the protocol's worst case."""

    def headline(self) -> tuple[str, ...]:
        """Figures the CLI summary shows (every figure is in the results file); empty = all."""
        return ()

    def info(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description, "source": self.source}


def register_protocol(protocol: SegmentationProtocol) -> SegmentationProtocol:
    """Add ``protocol`` under ``protocol.name``; a second protocol of the same name is an error."""
    if not isinstance(protocol, SegmentationProtocol):
        raise TypeError(f"register_protocol(): expected a SegmentationProtocol, got {type(protocol).__name__}")
    if not protocol.name:
        raise ValueError("register_protocol(): the protocol has an empty 'name'")
    if protocol.name in _REGISTRY and _REGISTRY[protocol.name] is not protocol:
        raise ValueError(f"register_protocol(): a protocol named {protocol.name!r} is already registered")
    _REGISTRY[protocol.name] = protocol
    return protocol


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def list_protocols() -> list[str]:
    """Names of every registered protocol, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_protocol(name: str | SegmentationProtocol) -> SegmentationProtocol:
    """The protocol registered as ``name`` (a protocol object is returned as is).

    Raises:
        ConfigError: unknown name, with the closest registered names.
    """
    if isinstance(name, SegmentationProtocol):
        return name
    _load_builtins()
    return _REGISTRY[look_up_option(name, _REGISTRY, what="evaluation protocol")]
