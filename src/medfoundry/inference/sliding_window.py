"""Sliding-window prediction of whole volumes (or large images) with flip test-time augmentation.

A dense model trained on patches predicts a whole case window by window; overlapping
windows are blended with a Gaussian weight (MONAI's ``sliding_window_inference``, nnU-Net's
scheme: the centre of a window, which saw the most context, counts most). With ``tta`` the
prediction is averaged over every combination of flips of the spatial axes (2**spatial_dims
passes, each flipped back before averaging), as nnU-Net's mirroring.

Works for any ``spatial_dims``: the window has one size per spatial axis of the input.

Two ways in: :class:`SlidingWindowPredictor` turns a patch model into a whole-case
probability map (3D segmentation, ``medfoundry segment predict``); :func:`sliding_window`
wraps a predictor of the inference seam (:mod:`medfoundry.inference.predictors`), so a
dense head of the multi-task model predicts images larger than its training size
(``predict(model, task, images, predictor=compose(sliding_window((64, 64))))``).
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

__all__ = ["SlidingWindowPredictor", "flip_sets", "sliding_window"]


def flip_sets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes (as tensor dims of a (B, C, *S) batch), empty first."""
    axes = range(2, 2 + spatial_dims)
    return [c for k in range(spatial_dims + 1) for c in itertools.combinations(axes, k)]


class SlidingWindowPredictor:
    """Turn a patch model into a whole-volume predictor.

    Args:
        model: maps (B, C, *window) to logits (B, K, *window).
        window: window size per spatial axis (voxels); inputs smaller than it are padded.
        activation: ``softmax`` (classes) or ``sigmoid`` (independent regions), applied per
            window before blending, so the blended values are probabilities.
        overlap: fraction of the window shared by neighbours (0.5 = nnU-Net's default).
        tta: average over all flips of the spatial axes.
        sw_batch_size: windows per forward pass.
        device: where the model runs (the input is moved there window by window).

    Example:
        >>> predictor = SlidingWindowPredictor(model, (48, 48, 48), "sigmoid", tta=True)
        >>> probabilities = predictor(image)   # (C, X, Y, Z) -> (K, X, Y, Z) float32
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], window: Sequence[int],
                 activation: str = "softmax", overlap: float = 0.5, tta: bool = False, sw_batch_size: int = 2,
                 device: torch.device | str = "cpu"):
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"SlidingWindowPredictor: activation must be softmax or sigmoid, got {activation!r}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"SlidingWindowPredictor: overlap must be in [0, 1), got {overlap}")
        self.model, self.window = model, tuple(int(w) for w in window)
        self.activation, self.overlap, self.tta = activation, float(overlap), bool(tta)
        self.sw_batch_size, self.device = int(sw_batch_size), torch.device(device)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Activated model output (B, K, *window) of a batch of windows, with gradients when
        enabled (test-time adaptation trains through it)."""
        logits = self.model(batch)
        return torch.softmax(logits, 1) if self.activation == "softmax" else torch.sigmoid(logits)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities (K, *S) float32 on the CPU for one case ``image`` (C, *S) (array or
        tensor)."""
        from monai.inferers import sliding_window_inference

        x = torch.as_tensor(image, dtype=torch.float32)[None]
        if x.ndim != 2 + len(self.window):
            raise ValueError(f"SlidingWindowPredictor: expected (C, *spatial) with {len(self.window)} spatial axes, "
                             f"got {tuple(x.shape[1:])}")
        flips = flip_sets(len(self.window)) if self.tta else [()]
        total = None
        for axes in flips:
            xi = torch.flip(x, axes) if axes else x
            p = sliding_window_inference(xi, self.window, self.sw_batch_size, self.probabilities,
                                         overlap=self.overlap, mode="gaussian", sw_device=self.device,
                                         device=torch.device("cpu"))
            p = torch.as_tensor(p)
            p = torch.flip(p, axes) if axes else p
            total = p if total is None else total + p
        return (total / len(flips))[0].float()


def sliding_window(window: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 4):
    """Predictor wrapper for :func:`medfoundry.inference.predictors.compose`: run the inner
    predictor window by window and blend the windows' raw outputs (logits, Gaussian weights).

    Only for dense heads (output ``(B, K, *spatial)`` at input resolution); a head whose
    output is not a tensor of the input's spatial size (classification, detection) is refused.
    """
    window = tuple(int(w) for w in window)

    def wrap(inner):
        def run(model, task, image):
            from monai.inferers import sliding_window_inference

            if image.ndim != 2 + len(window):
                raise ValueError(f"sliding_window: expected (B, C, *spatial) with {len(window)} spatial axes, got "
                                 f"{tuple(image.shape)}")

            def step(patch):
                out = inner(model, task, patch)
                if not isinstance(out, torch.Tensor) or out.shape[2:] != patch.shape[2:]:
                    raise ValueError(f"sliding_window: task {task!r} does not give a dense output at input "
                                     "resolution; wrap only segmentation-like heads")
                return out

            return sliding_window_inference(image, window, sw_batch_size, step, overlap=overlap, mode="gaussian")

        return run

    return wrap
