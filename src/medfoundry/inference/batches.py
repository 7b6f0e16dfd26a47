"""Batches in and out of the device: targets collated by their kind, outputs moved back."""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["move_to", "batch_targets"]


def move_to(obj: Any, device: torch.device) -> Any:
    """Tensors inside nested lists / tuples / dicts moved to ``device`` (other values unchanged)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    return obj


def batch_targets(kind: Any, targets: Sequence[Any], device: torch.device) -> Any:
    """Per-sample numpy targets -> the batch target of ``kind`` (``Kind.collate``) on ``device``."""
    from ..tasks import get_kind

    return move_to(get_kind(kind).collate(targets), device)
