"""``embed`` and ``features``: frozen encoder outputs for probes, ``medfoundry extract`` and
feature caches, for image arrays, files or a database task."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .predict import ImageInput, as_image_batches

__all__ = ["embed", "features", "task_images"]


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


@torch.no_grad()
def embed(model: nn.Module, images: ImageInput, modality: Any, batch_size: int = 32,
          device: str | torch.device | None = None, multiscale: bool = False) -> torch.Tensor:
    """Pooled embeddings ``(N, D)`` float32 on the CPU.

    Args:
        model: anything with ``embed(image, modality, multiscale=...)`` (a
            :class:`~medfoundry.models.FoundationModel` or the encoder of ``load_encoder``).
        images: one ``(N, C, *spatial)`` array/tensor or a sequence of images / file paths.
        modality: modality group of the images (picks the input adapter).
        multiscale: concatenate the pooled features of every encoder stage.
    """
    device = _device_of(model) if device is None else torch.device(device)
    out = [model.embed(b.to(device), modality, multiscale=multiscale).float().cpu()
           for b in as_image_batches(images, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)


@torch.no_grad()
def features(model: nn.Module, images: ImageInput, modality: Any, batch_size: int = 32,
             device: str | torch.device | None = None) -> list[torch.Tensor]:
    """Multi-scale encoder feature maps ``[(N, C_i, *S_i), ...]`` (finest first), float32 on the CPU.

    ``model`` has ``features(image, modality)`` (a ``FoundationModel``) or is the encoder
    itself (called as ``model(image, modality)``).
    """
    device = _device_of(model) if device is None else torch.device(device)
    run = model.features if hasattr(model, "features") else model
    chunks = [[f.float().cpu() for f in run(b.to(device), modality)] for b in as_image_batches(images, batch_size)]
    return [torch.cat([c[level] for c in chunks]) for level in range(len(chunks[0]))] if chunks else []


def task_images(db: Any, task: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Images of ``indices`` of a database task as one float32 ``(N, C, *image_size)`` array."""
    return np.stack([db.image(task, int(i)) for i in indices]).astype(np.float32, copy=False)
