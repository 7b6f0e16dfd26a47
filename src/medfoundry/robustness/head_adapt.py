"""Test-time methods for any classification, multilabel or segmentation head of a
:class:`~medfoundry.models.FoundationModel`, as one predictor wrapper of the inference seam
(:mod:`medfoundry.inference.predictors`), so 2D and 3D heads share it.

``none``     the inner predictor as it is.
``tta``      :func:`~medfoundry.inference.predictors.tta`: mean of the probabilities over flips
             and in-plane quarter turns (8 passes in 2D, 16 in 3D), dense maps turned back
             before averaging.
``entropy``  TENT-style, per case: Adam on the affine weight and bias of the normalisation
             layers only (:func:`~medfoundry.robustness.adapt.norm_affine_parameters`),
             ``steps`` steps minimising the mean normalised entropy of the head's probabilities
             on that one image (pixels of a segmentation map, the class distribution of a
             classification), minus ``diversity`` times the normalised entropy of the mean
             prediction of a segmentation map (class-marginal term, see
             :class:`~medfoundry.robustness.adapt.AdaptConfig`); then the image is predicted with
             the adapted weights. Defaults (1 step, lr 1e-3, diversity 1) were chosen on
             validation data: 3 steps at lr 1e-2 of plain TENT moved a weak head's uncertain
             pixels to the majority classes (docs/robustness.md, section 6).
``etta``     as on the 3D path (:mod:`medfoundry.robustness.adapt`): the loss is the entropy of
             the consensus of the image and its copy flipped over every spatial axis (flipped
             back for dense heads), counted only where it is below ``threshold``; the output
             fuses the unadapted and adapted probabilities weighted by ``1 / (entropy + 0.05)``.

Normalisation layers stay in eval mode (BatchNorm keeps its running statistics: one image is
too few to estimate new ones); only their affine parameters move. ``mode="reset"`` restores
them after every image, ``"continual"`` carries them on. Nothing is written to disk.

Example:
    >>> adapter = HeadAdapter(AdaptConfig(method="entropy"))
    >>> probs = predict(model, "toy_cls", images, predictor=compose(adapter))
    >>> adapter.records[0]    # {"method", "seconds", "peak_memory_mb", "loss_before", "loss_after"}
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..inference.predictors import Predictor, activate, deactivate, head_activation, tta
from .adapt import AdaptConfig, _entropy, adaptation_objective, norm_affine_parameters, peak_memory_mb

__all__ = ["HeadAdapter"]


class HeadAdapter:
    """Predictor wrapper running one test-time method per image; see the module docstring.

    Args:
        config: :class:`~medfoundry.robustness.adapt.AdaptConfig` (``method``, ``steps``,
            ``lr``, ``mode``, ``threshold``, ``diversity``; ``patches`` does not apply: the whole
            image is used).
        rotate: ``tta`` also averages over in-plane quarter turns.
        plane: the two tensor dims of that rotation (default the last two).

    Attributes:
        records: one dict per image predicted: ``method``, ``seconds``, ``peak_memory_mb``
            and, for ``entropy`` / ``etta``, ``loss_before`` / ``loss_after`` (normalised
            entropy, in [0, 1]). For ``none`` / ``tta`` a batch's time is shared by its images.
    """

    def __init__(self, config: AdaptConfig | None = None, rotate: bool = True, plane: tuple[int, int] = (-2, -1)):
        self.config = config or AdaptConfig()
        self.config.validate()
        self.rotate, self.plane = bool(rotate), plane
        self.records: list[dict[str, Any]] = []
        self._bound: dict[int, tuple[list[nn.Parameter], list[torch.Tensor]]] = {}

    # ------------------------------------------------------------------ weights
    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        if id(model) not in self._bound:
            params = norm_affine_parameters(model)
            if not params:
                raise ConfigError(f"--adapt {self.config.method}: the model has no normalisation layer with affine "
                                  "parameters to adapt")
            self._bound[id(model)] = (params, [p.detach().clone() for p in params])
        return self._bound[id(model)][0]

    def reset(self) -> None:
        """Restore the normalisation parameters of every model seen to what they were first."""
        with torch.no_grad():
            for params, initial in self._bound.values():
                for p, v in zip(params, initial):
                    p.copy_(v)

    # ------------------------------------------------------------------ the wrapper
    def __call__(self, inner: Predictor) -> Predictor:
        method = self.config.method
        wrapped = tta(self.rotate, self.plane)(inner) if method == "tta" else inner

        def run(model: nn.Module, task: str, image: torch.Tensor) -> Any:
            if method in ("none", "tta"):
                self._start(image.device)
                out = wrapped(model, task, image)
                seconds, memory = time.perf_counter() - self._t0, peak_memory_mb(image.device)
                self.records += [{"method": method, "seconds": seconds / len(image), "peak_memory_mb": memory}
                                 for _ in range(len(image))]
                return out
            act = head_activation(model, task)
            return torch.cat([self._adapt_one(inner, model, task, image[i:i + 1], act) for i in range(len(image))])

        return run

    def _start(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self._t0 = time.perf_counter()

    def _probabilities(self, inner: Predictor, model: nn.Module, task: str, x: torch.Tensor, act: str
                       ) -> torch.Tensor:
        return activate(inner(model, task, x), act)

    def _loss(self, inner: Predictor, model: nn.Module, task: str, x: torch.Tensor, act: str
              ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._probabilities(inner, model, task, x, act)
        q = None
        if self.config.method == "etta":
            axes = tuple(range(2, x.ndim))
            q = self._probabilities(inner, model, task, torch.flip(x, axes), act)
            if q.ndim == x.ndim:  # dense: the flipped copy's map is flipped back
                q = torch.flip(q, axes)
        return adaptation_objective(p, act, self.config.method, float(self.config.threshold),
                                    self.config.diversity_weight(whole_image=True), q)

    def _adapt_one(self, inner: Predictor, model: nn.Module, task: str, x: torch.Tensor, act: str) -> torch.Tensor:
        self._start(x.device)
        params = self._params(model)
        before = None
        if self.config.method == "etta":
            with torch.no_grad():
                before = self._probabilities(inner, model, task, x, act)
        flags = [p.requires_grad for p in model.parameters()]
        chosen = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        optimiser = torch.optim.Adam(params, lr=float(self.config.lr))
        losses = []
        try:
            with torch.enable_grad():
                for _ in range(int(self.config.steps)):
                    optimiser.zero_grad(set_to_none=True)
                    loss, term = self._loss(inner, model, task, x, act)
                    loss.backward()
                    optimiser.step()
                    losses.append(float(term.detach()))
            optimiser.zero_grad(set_to_none=True)
            with torch.no_grad():
                after_loss = float(self._loss(inner, model, task, x, act)[1])
                out = inner(model, task, x)
                if before is not None:
                    after = activate(out, act)
                    w0 = 1.0 / (_entropy(before, act) + 0.05).unsqueeze(1)
                    w1 = 1.0 / (_entropy(after, act) + 0.05).unsqueeze(1)
                    out = deactivate((before * w0 + after * w1) / (w0 + w1), act)
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)
            if self.config.mode == "reset":
                self.reset()
        self.records.append({"method": self.config.method, "seconds": time.perf_counter() - self._t0,
                             "peak_memory_mb": peak_memory_mb(x.device),
                             "loss_before": losses[0] if losses else after_loss, "loss_after": after_loss})
        return out
