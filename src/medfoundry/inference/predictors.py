"""The predictor seam: how a batch of images becomes a head's raw output.

A predictor is any callable ``predictor(model, task, image) -> output`` with ``image`` a
``(B, C, *spatial)`` tensor on the model's device and ``output`` what ``model.heads[task]``
decodes (logits, or the detection dict). :func:`forward` is the plain forward pass. Later
steps wrap a predictor and return a predictor, so callers never change:

* sliding-window prediction of volumes larger than the training patch
  (:mod:`medfoundry.inference.sliding_window`, engineer F);
* test-time augmentation: :func:`tta` (flips and in-plane 90-degree rotations, predict,
  undo on dense outputs, average the probabilities);
* test-time adaptation: :func:`medfoundry.robustness.head_adapt.adapt_heads` (entropy
  minimisation of the normalisation affines, ETTA);
* ensembles: :mod:`medfoundry.robustness.head_eval` combines the probabilities of several runs.

Example::

    preds = predict(model, "xray_lung_seg", images, predictor=compose(tta()))

Averaged probabilities go back through the seam as log-probabilities (softmax heads) or
logits (sigmoid heads), so every head's own ``decode`` still applies unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import nn

__all__ = ["Predictor", "forward", "compose", "head_activation", "activate", "deactivate", "tta_transforms",
           "apply_transform", "invert_transform", "tta"]


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


_SOFTMAX_KINDS = ("classification", "segmentation", "segmentation3d")
_SIGMOID_KINDS = ("multilabel",)


def head_activation(model: nn.Module, task: str) -> str:
    """``softmax`` or ``sigmoid``: how the head of ``task`` turns its logits into probabilities.

    Raises:
        ValueError: the head is not a classification, multilabel or segmentation head (a
            detection head's output is not a probability map).
    """
    specs = getattr(model, "task_specs", None) or {}
    if task not in specs:
        raise ValueError(f"head_activation: the model has no head for task {task!r} "
                         f"(heads: {', '.join(sorted(specs)) or 'none'})")
    kind = str(getattr(specs[task].kind, "value", specs[task].kind))
    if kind in _SOFTMAX_KINDS:
        return "softmax"
    if kind in _SIGMOID_KINDS:
        return "sigmoid"
    raise ValueError(f"task {task!r} is a {kind} head; test-time methods and ensembles take classification, "
                     "multilabel and segmentation heads only")


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Probabilities of raw head output ``(B, K, ...)``: softmax over axis 1, or sigmoid."""
    return torch.softmax(logits.float(), 1) if activation == "softmax" else torch.sigmoid(logits.float())


def deactivate(probabilities: torch.Tensor, activation: str) -> torch.Tensor:
    """Logits whose activation gives ``probabilities`` back: log p (softmax: softmax(log p) = p
    when p sums to 1) or log(p / (1 - p)) (sigmoid); clamped so a certain 0 or 1 stays finite."""
    p = probabilities.float().clamp(1e-7, 1 - 1e-7)
    return torch.log(p) if activation == "softmax" else torch.log(p) - torch.log1p(-p)


Transform = tuple[int, tuple[int, ...]]  # (quarter turns in the plane, flipped tensor dims)


def tta_transforms(spatial_dims: int, rotate: bool = True, plane: tuple[int, int] = (-2, -1)) -> list[Transform]:
    """The distinct flips and quarter turns of a ``(B, C, *spatial)`` batch, identity first.

    Without ``rotate``: every subset of the spatial axes flipped (2**spatial_dims). With
    ``rotate``: the quarter turns k = 0..3 in ``plane`` (two tensor dims, default the last
    two: (H, W) of an image, the in-plane axes of a (D, H, W) volume) combined with flips of
    the plane's second axis and of every axis outside the plane: the 8 symmetries of the
    square in 2D, 16 in 3D (flipping the plane's first axis too would repeat one of them).
    """
    ndim = 2 + spatial_dims
    axes = list(range(2, ndim))
    if not rotate:
        import itertools

        return [(0, c) for k in range(spatial_dims + 1) for c in itertools.combinations(axes, k)]
    a, b = sorted(d % ndim for d in plane)
    if a < 2 or a == b:
        raise ValueError(f"tta_transforms: plane {plane} must name two different spatial dims of a "
                         f"(B, C, *spatial) batch with {spatial_dims} spatial axes")
    free = [b] + [d for d in axes if d not in (a, b)]
    flips = [tuple(d for j, d in enumerate(free) if mask >> j & 1) for mask in range(2 ** len(free))]
    return [(k, f) for k in range(4) for f in flips]


def apply_transform(x: torch.Tensor, t: Transform, plane: tuple[int, int]) -> torch.Tensor:
    """``x`` turned ``k`` quarter turns in ``plane``, then flipped (one of :func:`tta_transforms`)."""
    k, flips = t
    x = torch.rot90(x, k, plane) if k else x
    return torch.flip(x, flips) if flips else x


def invert_transform(y: torch.Tensor, t: Transform, plane: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`apply_transform` on a dense map of the same layout."""
    k, flips = t
    y = torch.flip(y, flips) if flips else y
    return torch.rot90(y, -k, plane) if k else y


def tta(rotate: bool = True, plane: tuple[int, int] = (-2, -1), activation: str | None = None
        ) -> Callable[[Predictor], Predictor]:
    """Predictor wrapper: mean of the probabilities over :func:`tta_transforms` of the batch.

    Dense outputs ``(B, K, *spatial)`` are turned back (inverse transform) before averaging;
    pooled outputs ``(B, K)`` (classification, multilabel) are averaged as they are. The mean
    is returned as logits (:func:`deactivate`) so the head decodes it as usual.

    Args:
        rotate: add the quarter turns in ``plane`` to the flips (8 passes in 2D, 16 in 3D;
            without: 4 in 2D, 8 in 3D).
        plane: the two tensor dims of the in-plane rotation.
        activation: ``softmax`` / ``sigmoid``; default from the task's head
            (:func:`head_activation`).
    """
    def wrap(inner: Predictor) -> Predictor:
        def run(model: nn.Module, task: str, image: torch.Tensor) -> Any:
            act = activation or head_activation(model, task)
            total = None
            transforms = tta_transforms(image.ndim - 2, rotate, plane)
            for t in transforms:
                out = inner(model, task, apply_transform(image, t, plane))
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"tta: task {task!r} gives a {type(out).__name__}, not a tensor of logits")
                p = activate(out, act)
                if p.ndim == image.ndim:  # dense: undo the transform on the map
                    p = invert_transform(p, t, plane)
                total = p if total is None else total + p
            return deactivate(total / len(transforms), act)

        return run

    return wrap
