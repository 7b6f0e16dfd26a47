"""``predict``: decoded predictions of a model's task head, for image arrays, files or a
database task; every caller (trainer validation, transfer, demo) runs through
:func:`run_batches`."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .batches import move_to
from .predictors import Predictor, forward

__all__ = ["run_batches", "as_image_batches", "predict", "predict_task", "TaskPredictions"]

ImageInput = torch.Tensor | np.ndarray | Sequence[Any]


def run_batches(step: Callable[[Any], Any], items: Sequence[Any] | np.ndarray, batch_size: int,
                decode: Callable[[Any], list[Any]], on_output: Callable[[Any, Any], None] | None = None
                ) -> list[Any]:
    """Decoded predictions of ``step`` over ``items`` in chunks of ``batch_size``.

    Args:
        step: ``f(chunk of items) -> raw output`` (e.g. a predictor on a batch of images, or a
            probe on rows of cached features).
        items: anything sliceable (positions, images, ...).
        decode: raw output -> per-sample predictions (a head's ``decode``).
        on_output: optional ``f(chunk, output)`` seeing each raw output (e.g. a validation loss).
    """
    preds: list[Any] = []
    for a in range(0, len(items), max(1, int(batch_size))):
        chunk = items[a:a + batch_size]
        out = step(chunk)
        if on_output is not None:
            on_output(chunk, out)
        preds.extend(move_to(decode(out), torch.device("cpu")))
    return preds


def _read(item: Any) -> np.ndarray:
    if isinstance(item, (str, Path)):
        from ..io.images import read_image

        return np.asarray(read_image(item, normalize="dtype").array, dtype=np.float32)
    return np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item, dtype=np.float32)


def as_image_batches(images: ImageInput, batch_size: int) -> list[torch.Tensor]:
    """Images -> float32 batches ``(b, C, *spatial)``.

    ``images`` is one array/tensor ``(N, C, *spatial)`` or a sequence of ``(C, *spatial)``
    arrays, tensors or image file paths (read with intensities scaled by dtype to [0, 1]).
    Consecutive images of one shape share a batch; a change of shape starts a new one.
    """
    if isinstance(images, (torch.Tensor, np.ndarray)):
        stacked = torch.as_tensor(np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray)
                                  else images.float())
        return [stacked[a:a + batch_size] for a in range(0, len(stacked), batch_size)]
    batches: list[torch.Tensor] = []
    current: list[np.ndarray] = []
    for item in images:
        array = _read(item)
        if current and (array.shape != current[0].shape or len(current) == batch_size):
            batches.append(torch.from_numpy(np.stack(current)))
            current = []
        current.append(array)
    if current:
        batches.append(torch.from_numpy(np.stack(current)))
    return batches


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


@torch.no_grad()
def predict(model: nn.Module, task: str, images: ImageInput, batch_size: int = 32,
            device: str | torch.device | None = None, predictor: Predictor | None = None,
            autocast_dtype: torch.dtype | None = None) -> list[Any]:
    """Decoded predictions of ``model``'s head for ``task`` on ``images``.

    Args:
        model: a :class:`~medfoundry.models.FoundationModel` (or any module with
            ``model(image, task)`` and ``model.heads[task].decode``), in eval mode.
        task: the task whose head predicts.
        images: see :func:`as_image_batches`.
        device: where to run (default: where the model's parameters are).
        predictor: the step from a batch to the head's raw output (default
            :func:`~medfoundry.inference.predictors.forward`; see :mod:`.predictors` for
            sliding-window, TTA and ensemble wrappers).
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype.

    Returns:
        One prediction per image, in the kind's format (see :mod:`medfoundry.tasks`).
    """
    device = _device_of(model) if device is None else torch.device(device)
    predictor = predictor or forward
    head = model.heads[task]

    def step(batch: list[torch.Tensor]) -> Any:
        ctx = (torch.autocast(device_type=device.type, dtype=autocast_dtype)
               if autocast_dtype is not None else nullcontext())
        with ctx:
            return predictor(model, task, batch[0].to(device))

    # one item per batch: run_batches slices the list of prepared batches one at a time
    return run_batches(step, as_image_batches(images, batch_size), 1, head.decode)


@dataclass
class TaskPredictions:
    """Predictions of a database task with what scoring needs beside them."""

    preds: list[Any]
    targets: list[Any]
    spacings: list[Any] | None  # mm per sample, ``None`` when any is unknown
    indices: np.ndarray


def predict_task(model: nn.Module, db: Any, task: str, split: str = "val", indices: Sequence[int] | None = None,
                 max_samples: int | None = None, batch_size: int = 32, device: str | torch.device | None = None,
                 predictor: Predictor | None = None, autocast_dtype: torch.dtype | None = None) -> TaskPredictions:
    """:func:`predict` on ``split`` (or ``indices``) of a database task, with its targets.

    ``max_samples`` keeps the first samples of the split. Targets and spacings are per-sample
    numpy values as ``MultiTaskDatabase.target`` / ``spacing`` return them.
    """
    chosen = np.asarray(db.split_indices(task, split) if indices is None else indices, dtype=np.int64)
    if max_samples is not None:
        chosen = chosen[:max_samples]
    images = (db.image(task, int(i)) for i in chosen)
    preds: list[Any] = []
    for a in range(0, len(chosen), batch_size):  # stream the split: a task may not fit in memory
        batch = np.stack([next(images) for _ in range(min(batch_size, len(chosen) - a))])
        preds.extend(predict(model, task, batch, batch_size, device, predictor, autocast_dtype))
    spacings = [db.spacing(task, int(i)) for i in chosen]
    return TaskPredictions(preds, [db.target(task, int(i)) for i in chosen],
                           None if any(s is None for s in spacings) else spacings, chosen)
