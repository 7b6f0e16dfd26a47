"""Test-time methods for a dense (segmentation) network: flip TTA, entropy minimisation, ETTA.

``none``     plain sliding-window probabilities.
``tta``      the mean of the probabilities over every flip of the spatial axes
             (:class:`~medfoundry.inference.sliding_window.SlidingWindowPredictor` ``tta``); with
             ``rotate`` also over the quarter turns in the (X, Y) plane (16 transforms).
``entropy``  TENT-style entropy minimisation (Wang et al., ICLR 2021) on one case: only the affine
             weight and bias of the normalisation layers (InstanceNorm, GroupNorm, LayerNorm,
             BatchNorm) are trained, ``steps`` Adam steps (learning rate ``lr``), each on
             ``patches`` windows of the case drawn (seeded) from the sliding-window grid; the
             loss is the mean voxel entropy divided by its maximum (ln K for softmax, ln 2 per
             sigmoid region), so it lies in [0, 1] (minus ``diversity`` times the normalised
             entropy of the windows' mean prediction for softmax outputs when ``diversity`` is
             set: off by default here, see :class:`AdaptConfig`). Then the whole case is
             predicted with the adapted weights.
``etta``     entropy test-time adaptation after UKBOB (Bourigault et al., 2025), as this package
             reads the paper's short description ("refine the segmentation output based on the
             model's confidence"; see docs/robustness.md for what was unclear): the loss is the
             entropy of the flip-consensus (mean of the window's probabilities and those of its
             flipped copy, flipped back), counted only on voxels whose consensus entropy is below
             ``threshold`` of the maximum (confident voxels, so errors are not reinforced); the
             output is a voxel-wise fusion of the unadapted and adapted probabilities, each
             weighted by ``1 / (entropy + 0.05)`` (normalised entropy).

``mode="reset"`` (default) restores the normalisation parameters after every case;
``"continual"`` carries them to the next case. The network object is adapted in memory only;
nothing is written to the run folder.

Example:
    >>> adapter = TestTimeAdapter(net, window_predictor, AdaptConfig(method="entropy"))
    >>> probabilities = adapter(image)      # (C, X, Y, Z) normalised -> (K, X, Y, Z)
    >>> adapter.last                         # {"entropy_before": .., "entropy_after": .., "seconds": ..}
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import ConfigBase

__all__ = ["ADAPT_METHODS", "VOLUME_STEPS", "VOLUME_LR", "AdaptConfig", "TestTimeAdapter", "norm_affine_parameters", "mean_entropy",
           "adaptation_objective", "peak_memory_mb"]

ADAPT_METHODS = ("none", "tta", "entropy", "etta")
# Steps and step size of the volume path (`segment predict`, `VolumePredictor`), measured safe
# there (docs/robustness.md section 5); the AdaptConfig defaults are the 2D heads', chosen on
# validation data (section 6). cli/segment.py repeats them as option defaults (it may not import torch).
VOLUME_STEPS = 3
VOLUME_LR = 1e-2
_NORMS = (torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm,
          torch.nn.modules.batchnorm._BatchNorm)


@dataclass
class AdaptConfig(ConfigBase):
    """Test-time method and its settings (defaults documented in docs/robustness.md).

    Attributes:
        method: ``none``, ``tta``, ``entropy`` or ``etta``.
        steps: Adam steps per case (entropy, etta).
        lr: Adam learning rate of the normalisation affine parameters.
        patches: windows per step, drawn from the sliding-window grid of the case.
        mode: ``reset`` (restore the weights after each case) or ``continual``.
        threshold: ETTA's confident-voxel cut, a fraction of the maximum entropy.
        seed: seed of the window draws.
        rotate: volume path (:class:`TestTimeAdapter`): ``tta`` also averages over the quarter
            turns in the plane of the first two spatial axes (X, Y of the NIfTI grid: the axial
            plane of an axial acquisition): 16 distinct flips and turns instead of 8 flips, twice
            the time. Off by default there; the 2D heads (:mod:`.head_adapt`) take their own
            ``rotate`` (on by default).
        diversity: weight of the class-marginal term of dense softmax (segmentation) outputs:
            the objective is the mean voxel entropy minus ``diversity`` times the normalised
            entropy of the mean prediction (information maximisation). Entropy alone has a
            trivial minimum, every voxel the majority class, that a weak model drifts towards in
            a few steps; the marginal term makes that drift cost as much as it gains. 0 is plain
            TENT. Left out where a class marginal means nothing: pooled outputs (classification:
            one prediction per case, its own marginal) and sigmoid regions (not exclusive
            classes; BraTS regions are nested). ``None`` (default): 1 on the 2D heads, whose
            marginal is the whole image's (:mod:`.head_adapt`), 0 on the volume path, whose
            steps see a few random windows whose class mix is not the case's (a background
            window would be pushed towards foreground).
    """

    method: str = "none"
    steps: int = 1
    lr: float = 1e-3
    patches: int = 2
    mode: str = "reset"
    threshold: float = 0.4
    seed: int = 0
    rotate: bool = False
    diversity: float | None = None

    def validate(self) -> None:
        if self.method not in ADAPT_METHODS:
            raise self.bad("method", " | ".join(ADAPT_METHODS))
        if self.mode not in ("reset", "continual"):
            raise self.bad("mode", "reset | continual")
        if int(self.steps) < 0:
            raise self.bad("steps", "an integer >= 0")
        if int(self.patches) < 1:
            raise self.bad("patches", "an integer >= 1")
        if not float(self.lr) > 0:
            raise self.bad("lr", "a positive learning rate")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise self.bad("threshold", "a fraction in (0, 1]")
        if self.diversity is not None:
            try:
                ok = float(self.diversity) >= 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise self.bad("diversity", "a weight >= 0 (or null: 1 on 2D heads, 0 on volumes)")

    def diversity_weight(self, whole_image: bool) -> float:
        """``diversity``, or its default where it is ``None``: 1 on whole images, 0 on windows."""
        if self.diversity is not None:
            return float(self.diversity)
        return 1.0 if whole_image else 0.0


def norm_affine_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The affine weight and bias of every normalisation layer of ``net`` (those that have one):
    torch's InstanceNorm, GroupNorm, LayerNorm, BatchNorm, and any module whose class name holds
    ``Norm`` with its own ``weight`` / ``bias`` parameters."""
    params = []
    for module in net.modules():
        # custom channel norms (LayerNormChannels of the encoders, timm's LayerNorm2d) count too
        if isinstance(module, _NORMS) or "Norm" in type(module).__name__:
            params += [p for p in (getattr(module, "weight", None), getattr(module, "bias", None))
                       if isinstance(p, torch.nn.Parameter) and all(p is not q for q in params)]
    return params


def _entropy(p: torch.Tensor, activation: str) -> torch.Tensor:
    """Voxel entropy (B, *S) of probabilities (B, K, *S), divided by its maximum (values in [0, 1])."""
    eps = 1e-6
    if activation == "softmax":
        return -(p * torch.log(p + eps)).sum(1) / math.log(max(p.shape[1], 2))
    h = -(p * torch.log(p + eps) + (1 - p) * torch.log(1 - p + eps)) / math.log(2)
    return h.mean(1)


def _marginal_entropy(p: torch.Tensor, activation: str) -> torch.Tensor:
    """Normalised entropy (scalar, in [0, 1]) of the mean prediction over the batch and every voxel
    of dense probabilities (B, K, *S): high when the case's voxels spread over the classes."""
    m = p.transpose(0, 1).reshape(p.shape[1], -1).mean(1)
    return _entropy(m[None, :, None], activation).mean()


def adaptation_objective(p: torch.Tensor, activation: str, method: str, threshold: float, diversity: float,
                         flipped: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``entropy`` / ``etta`` minimise on probabilities ``p`` (B, K, *S) or (B, K).

    ``entropy``: the mean normalised voxel entropy. ``etta``: the same of the consensus of ``p``
    and ``flipped`` (the flipped copy's probabilities, already flipped back), over the elements
    whose consensus entropy is below ``threshold`` only. Dense softmax outputs then subtract
    ``diversity`` times the normalised entropy of the case's mean prediction (of ``p``), so that
    moving every voxel onto one class is not a minimum (:class:`AdaptConfig`).

    Returns:
        ``(objective, entropy_term)``: the objective to minimise and its entropy part (in [0, 1]),
        the figure reported as ``loss_before`` / ``loss_after``.
    """
    if method == "etta":
        h = _entropy((p + flipped) / 2 if flipped is not None else p, activation)
        keep = (h < threshold).float()
        term = (h * keep).sum() / keep.sum().clamp_min(1.0)
    else:
        term = _entropy(p, activation).mean()
    if diversity > 0 and p.ndim > 2 and activation == "softmax":
        return term - float(diversity) * _marginal_entropy(p, activation), term
    return term, term


def mean_entropy(probabilities: np.ndarray | torch.Tensor, activation: str = "softmax") -> float:
    """Mean normalised voxel entropy of probabilities (K, *S), in [0, 1]."""
    p = torch.as_tensor(probabilities, dtype=torch.float32)[None]
    return float(_entropy(p, activation).mean())


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: allocated on a CUDA device since the last reset, else the process's
    peak resident set (which never decreases: on CPU it bounds the case from above)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TestTimeAdapter:
    """Probabilities of one normalised case with a test-time method.

    Args:
        net: the network (B, C, *window) -> logits (B, K, *window); adapted in memory only.
        window: the :class:`~medfoundry.inference.sliding_window.SlidingWindowPredictor` of ``net``
            (its ``tta`` is used as given; ``method="tta"`` switches it on).
        config: :class:`AdaptConfig`.
    """

    def __init__(self, net: torch.nn.Module, window, config: AdaptConfig):
        self.net, self.window, self.config = net, window, config
        if config.method == "tta":
            # with rotations the adapter runs the 16 flips and turns itself, the window none
            window.tta = not config.rotate
        self.params = norm_affine_parameters(net) if config.method in ("entropy", "etta") else []
        if config.method in ("entropy", "etta") and not self.params:
            from ..errors import ConfigError

            raise ConfigError(f"--adapt {config.method}: the network has no normalisation layer with affine "
                              "parameters to adapt")
        self._initial = [p.detach().clone() for p in self.params]
        self._rng = np.random.default_rng(config.seed)
        self.last: dict[str, Any] = {}

    def reset(self) -> None:
        """Restore the normalisation parameters the adapter started from."""
        with torch.no_grad():
            for p, v in zip(self.params, self._initial):
                p.copy_(v)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """``patches`` windows (B, C, *window) drawn from the sliding-window grid of ``x`` (1, C, *S)."""
        from monai.data.utils import dense_patch_slices

        size = tuple(self.window.window)
        pad = [max(w - s, 0) for w, s in zip(size, x.shape[2:])]
        if any(pad):
            x = torch.nn.functional.pad(x, [v for p in reversed(pad) for v in (p // 2, p - p // 2)])
        scan = tuple(max(1, int(w * (1 - self.window.overlap))) for w in size)
        slices = dense_patch_slices(tuple(x.shape[2:]), size, scan)
        pick = self._rng.choice(len(slices), size=min(self.config.patches, len(slices)), replace=False)
        return torch.cat([x[(slice(None), slice(None), *slices[i])] for i in pick]).to(self.window.device)

    def _loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = self.window.activation
        p = self.window.probabilities(batch)
        q = None
        if self.config.method == "etta":  # consensus of the window and its flip over the spatial axes
            axes = tuple(range(2, batch.ndim))
            q = torch.flip(self.window.probabilities(torch.flip(batch, axes)), axes)
        return adaptation_objective(p, act, self.config.method, float(self.config.threshold),
                                    self.config.diversity_weight(whole_image=False), q)

    def adapt(self, image: torch.Tensor) -> dict[str, float]:
        """Run the Adam steps on windows of ``image`` (C, *S); returns the loss before and after."""
        x = torch.as_tensor(image, dtype=torch.float32)[None]
        batch = self._windows(x)
        flags = [p.requires_grad for p in self.net.parameters()]
        chosen = {id(p) for p in self.params}
        for p in self.net.parameters():
            p.requires_grad_(id(p) in chosen)
        optimiser = torch.optim.Adam(self.params, lr=float(self.config.lr))
        losses = []
        try:
            with torch.enable_grad():
                for _ in range(int(self.config.steps)):
                    optimiser.zero_grad(set_to_none=True)
                    loss, term = self._loss(batch)
                    loss.backward()
                    optimiser.step()
                    losses.append(float(term.detach()))
            with torch.no_grad():
                after = float(self._loss(batch)[1])
        finally:
            for p, flag in zip(self.net.parameters(), flags):
                p.requires_grad_(flag)
        return {"loss_before": losses[0] if losses else after, "loss_after": after}

    def __call__(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Probabilities (K, *S) float32 on the CPU of one normalised case ``image`` (C, *S)."""
        device = self.window.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        stats: dict[str, Any] = {"method": self.config.method}
        if self.config.method in ("entropy", "etta"):
            before = self.window(image) if self.config.method == "etta" else None
            stats.update(self.adapt(torch.as_tensor(image)))
            probabilities = self.window(image)
            if before is not None:
                probabilities = self._fuse(before, probabilities)
            if self.config.mode == "reset":
                self.reset()
        elif self.config.method == "tta" and self.config.rotate:
            probabilities = self._rotated_tta(torch.as_tensor(image, dtype=torch.float32))
        else:
            probabilities = self.window(image)
        stats["entropy"] = mean_entropy(probabilities, self.window.activation)
        stats["seconds"] = time.perf_counter() - start
        stats["peak_memory_mb"] = peak_memory_mb(device)
        self.last = stats
        return probabilities

    def _rotated_tta(self, image: torch.Tensor) -> torch.Tensor:
        """Mean probabilities (K, *S) over the flips and axial quarter turns of ``image`` (C, *S)."""
        from ..inference.predictors import apply_transform, invert_transform, tta_transforms

        plane = (2, 3)  # X, Y of a (1, C, X, Y, Z) batch
        transforms = tta_transforms(image.ndim - 1, rotate=True, plane=plane)
        total = None
        for t in transforms:
            p = invert_transform(self.window(apply_transform(image[None], t, plane)[0])[None], t, plane)[0]
            total = p if total is None else total + p
        return total / len(transforms)

    def _fuse(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        act = self.window.activation
        w0 = 1.0 / (_entropy(before[None], act)[0] + 0.05)
        w1 = 1.0 / (_entropy(after[None], act)[0] + 0.05)
        return (before * w0 + after * w1) / (w0 + w1)
