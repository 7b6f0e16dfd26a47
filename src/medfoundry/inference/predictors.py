"""The predictor seam: how a batch of images becomes a head's raw output.

A predictor is any callable ``predictor(model, task, image) -> output`` with ``image`` a
``(B, C, *spatial)`` tensor on the model's device and ``output`` what ``model.heads[task]``
decodes (logits, or the detection dict). :func:`forward` is the plain forward pass. Later
steps wrap a predictor and return a predictor, so callers never change:

* sliding-window prediction of volumes larger than the training patch
  (:mod:`medfoundry.inference.sliding_window`, engineer F);
* test-time augmentation (flip / rotate, predict, undo, average the logits);
* test-time adaptation (adjust normalisation statistics or adapters on the batch first);
* ensembles (average the outputs of several models or checkpoints).

Example (a wrapper; not shipped)::

    def flip_tta(inner: Predictor) -> Predictor:
        def run(model, task, image):
            out = inner(model, task, image)
            flipped = inner(model, task, image.flip(-1))
            return (out + flipped.flip(-1)) / 2
        return run

    preds = predict(model, "xray_lung_seg", images, predictor=compose(flip_tta))
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import nn

__all__ = ["Predictor", "forward", "compose"]


class Predictor(Protocol):
    """``(model, task, image (B, C, *spatial)) -> raw head output`` for ``task``."""

    def __call__(self, model: nn.Module, task: str, image: torch.Tensor) -> Any: ...  # pragma: no cover


def forward(model: nn.Module, task: str, image: torch.Tensor) -> Any:
    """The plain forward pass ``model(image, task)``."""
    return model(image, task)


def compose(*wrappers: Callable[[Predictor], Predictor], base: Predictor = forward) -> Predictor:
    """``base`` wrapped by each of ``wrappers`` in turn (the first wraps ``base`` directly)."""
    predictor = base
    for wrap in wrappers:
        predictor = wrap(predictor)
    return predictor
