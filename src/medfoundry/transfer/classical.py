"""The classical baseline of a transfer sweep (``--encoder classical``): hand-crafted intensity
and texture statistics instead of a learned encoder.

Per channel of a 2D image (:data:`FEATURE_NAMES`, 51 values):

* intensity: mean, standard deviation, percentiles 1/5/25/50/75/95/99, skewness, excess
  kurtosis, and a 16-bin histogram over [0, 1] (the range databases scale images to; values
  outside fall into the end bins) as fractions of the pixels;
* gradient magnitude (central differences, per pixel): mean, standard deviation, median, 90th
  percentile;
* grey-level co-occurrence (``skimage.feature.graycomatrix``, 16 levels between the image's
  own minimum and maximum, symmetric, distances 1 and 2 px, averaged over 0/45/90/135
  degrees): contrast, dissimilarity, homogeneity, energy and correlation at each distance;
* local binary patterns (``skimage.feature.local_binary_pattern``, 8 neighbours at radius 1,
  rotation-invariant uniform): the 10-bin histogram.

:class:`ClassicalEncoder` exposes them through ``embed`` like a frozen encoder, so the sweep
trains the very probe every encoder gets (:class:`~medfoundry.transfer.probe.Probe`: features
standardised with the training subset's statistics, a linear layer, cross-entropy for
classification or per-label binary cross-entropy for multilabel, AdamW with weight decay as
the L2 penalty, early stopping on the validation split). With a linear probe that is an
L2-regularised multinomial (or per-label) logistic regression, tuned on val and scored on
test like every other encoder. Only the pooled kinds (classification, multilabel) and frozen
mode apply: there is nothing to fine-tune and no feature map for a dense head
(:func:`medfoundry.transfer.sources.not_applicable` says so in the sweep's config.json).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.tasks import TaskSpec
from ..errors import ConfigError

__all__ = ["FEATURE_NAMES", "classical_features", "ClassicalEncoder"]

_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
_HIST_BINS = 16
_GLCM_LEVELS = 16
_GLCM_DISTANCES = (1, 2)
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
_LBP_POINTS = 8
_LBP_BINS = _LBP_POINTS + 2  # "uniform" codes 0..P plus one for every non-uniform pattern

#: Names of the features of one channel, in order (channel c's block starts at c * len).
FEATURE_NAMES: tuple[str, ...] = (
    ("mean", "std", *(f"p{q}" for q in _PERCENTILES), "skewness", "kurtosis",
     *(f"hist{b}" for b in range(_HIST_BINS)), "grad_mean", "grad_std", "grad_p50", "grad_p90",
     *(f"glcm_{p}_d{d}" for d in _GLCM_DISTANCES for p in _GLCM_PROPS),
     *(f"lbp{b}" for b in range(_LBP_BINS))))


def classical_features(images: np.ndarray) -> np.ndarray:
    """Features ``(N, C * len(FEATURE_NAMES))`` float32 of 2D images ``(N, C, H, W)``.

    Deterministic (no randomness); every value is finite, constant images included.

    Raises:
        ConfigError: not a 4-D batch, or an image side below 3 pixels.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ConfigError(f"classical features: expected 2D images (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if min(h, w) < 3:
        raise ConfigError(f"classical features: images must be at least 3 x 3 pixels, got {h} x {w}")
    flat = x.reshape(n * c, h * w)
    parts = [_intensity(flat), _gradient(x.reshape(n * c, h, w)),
             np.stack([_texture(img) for img in x.reshape(n * c, h, w)]) if n * c else np.zeros((0, 20))]
    per_channel = np.concatenate(parts, axis=1)
    return np.nan_to_num(per_channel, nan=0.0, posinf=0.0, neginf=0.0).reshape(n, -1).astype(np.float32)


def _intensity(flat: np.ndarray) -> np.ndarray:
    mean = flat.mean(1, keepdims=True)
    std = flat.std(1, keepdims=True)
    z = (flat - mean) / np.where(std > 1e-12, std, 1.0)
    skew = (z ** 3).mean(1, keepdims=True)
    kurt = (z ** 4).mean(1, keepdims=True) - 3.0
    kurt[std[:, 0] <= 1e-12] = 0.0  # a constant image: no shape to describe
    pct = np.percentile(flat, _PERCENTILES, axis=1).T
    bins = np.clip((flat * _HIST_BINS).astype(np.int64), 0, _HIST_BINS - 1)
    rows = np.repeat(np.arange(len(flat)), flat.shape[1])
    hist = np.bincount(rows * _HIST_BINS + bins.ravel(), minlength=len(flat) * _HIST_BINS)
    hist = hist.reshape(len(flat), _HIST_BINS) / flat.shape[1]
    return np.concatenate([mean, std, pct, skew, kurt, hist], axis=1)


def _gradient(stack: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(stack, axis=(1, 2))
    mag = np.hypot(gy, gx).reshape(len(stack), -1)
    return np.concatenate([mag.mean(1, keepdims=True), mag.std(1, keepdims=True),
                           np.percentile(mag, (50, 90), axis=1).T], axis=1)


def _texture(img: np.ndarray) -> np.ndarray:
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    lo, hi = float(img.min()), float(img.max())
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    q = np.minimum((scaled * _GLCM_LEVELS).astype(np.uint8), _GLCM_LEVELS - 1)
    glcm = graycomatrix(q, list(_GLCM_DISTANCES), list(_GLCM_ANGLES), levels=_GLCM_LEVELS, symmetric=True,
                        normed=True)
    # (distances, angles) per property -> mean over angles; grouped by distance like FEATURE_NAMES.
    props = np.stack([graycoprops(glcm, p).mean(axis=1) for p in _GLCM_PROPS], axis=1)  # (distances, props)
    # 8-bit codes: LBP compares neighbours, so a finer grid than the GLCM's keeps more edges.
    codes = local_binary_pattern(np.round(scaled * 255).astype(np.uint8), _LBP_POINTS, 1, method="uniform")
    lbp = np.bincount(codes.astype(np.int64).ravel(), minlength=_LBP_BINS)[:_LBP_BINS] / codes.size
    return np.concatenate([props.ravel(), lbp])


class ClassicalEncoder(nn.Module):
    """Hand-crafted features behind the interface the frozen-transfer probe uses
    (``embed``, ``heads``, ``add_task``); it has no trainable parameters of its own.

    Example:
        >>> enc = ClassicalEncoder()
        >>> head = enc.add_task(spec)          # a classification or multilabel TaskSpec
        >>> enc.embed(images, spec.modality).shape
        torch.Size([N, 51 * C])
    """

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict()
        self.task_specs: dict[str, TaskSpec] = {}

    def embed(self, image: torch.Tensor, modality: Any = None, multiscale: bool = False) -> torch.Tensor:
        """Features ``(B, C * 51)`` of a batch ``(B, C, H, W)``; ``modality`` and ``multiscale``
        change nothing (accepted for the encoder interface)."""
        feats = classical_features(image.detach().float().cpu().numpy())
        return torch.from_numpy(feats).to(image.device)

    def add_task(self, spec: TaskSpec) -> nn.Module:
        """Add the task's head (its ``loss`` and ``decode`` serve the probe).

        Raises:
            ConfigError: a dense kind (segmentation, detection) or a 3D task.
        """
        from ..tasks import get_kind

        kind = get_kind(spec.kind)
        if not kind.pooled or spec.spatial_dims != 2:
            raise ConfigError(f"encoder 'classical': task {spec.name!r} is {spec.spatial_dims}D {kind.name}; the "
                              "classical baseline predicts one output per 2D image (classification, multilabel)")
        if spec.name not in self.heads:
            self.heads[spec.name] = kind.create_head(spec, [len(FEATURE_NAMES) * spec.channels], 1, stride=1)
            self.task_specs[spec.name] = spec
        return self.heads[spec.name]
