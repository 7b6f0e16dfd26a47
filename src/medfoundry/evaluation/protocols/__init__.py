"""Challenge protocols on label-map files: BraTS, ISLES'22, KiTS21 and a default per-label one.

``evaluate_segmentation(pred_dir, ref_dir, protocol)`` matches files by case name, scores each
case with the protocol and aggregates; ``medfoundry evaluate segmentation`` is its CLI. See
docs/evaluation_protocols.md for every protocol's figures, edge cases and official source.
"""

from .registry import (
    CaseFigures as CaseFigures,
    SegmentationProtocol as SegmentationProtocol,
    get_protocol as get_protocol,
    list_protocols as list_protocols,
    register_protocol as register_protocol,
)
from .run import aggregate as aggregate, evaluate_segmentation as evaluate_segmentation

__all__ = [
    "CaseFigures",
    "SegmentationProtocol",
    "aggregate",
    "evaluate_segmentation",
    "get_protocol",
    "list_protocols",
    "register_protocol",
]
