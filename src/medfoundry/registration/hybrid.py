"""The ``hybrid`` method: optional linear pre-alignment, MIND-SSC (or one-hot labels), convex + Adam.

Stages and their parameters are described in docs/registration.md and
:class:`~medfoundry.registration.configs.HybridConfig`; the deformable stages live in
:mod:`medfoundry.registration.convex_adam`. Displacements are in fixed-grid voxels.
"""

from __future__ import annotations

import time

import torch

from ..errors import RegistrationError
from .affine import affine_align
from .configs import HybridConfig
from .convex_adam import StageTimes, convex_adam, feature_levels
from .features import label_features, mind_ssc
from .fields import affine_to_field, identity_grid, warp
from .methods import MethodInput, MethodOutput, register_method

__all__ = ["run_hybrid"]


def _uses_labels(config: HybridConfig) -> bool:
    return config.features == "labels"


@register_method("hybrid", HybridConfig, needs_labels=_uses_labels,
                 description="MIND-SSC (or labels), coupled convex discrete search, then Adam; optional linear "
                             "pre-alignment (affine=true)")
def run_hybrid(pair: MethodInput, config: HybridConfig) -> MethodOutput:
    """Deformable registration of two images on the fixed grid (see the module docstring)."""
    cfg = config
    shape = pair.shape
    dev = pair.fixed.device
    times = pair.times if pair.times is not None else StageTimes()
    start = time.perf_counter()
    moving_t, mmask, mlabels = pair.moving, pair.moving_mask, pair.moving_labels
    fmask, flabels = pair.fixed_mask, pair.fixed_labels
    if cfg.features == "labels" and (flabels is None or mlabels is None):
        raise RegistrationError("register(): features='labels' needs fixed_labels and moving_labels")

    matrix = None
    if cfg.affine:
        matrix = affine_align(pair.fixed, moving_t, cfg.affine_iterations, cfg.affine_lr, fmask, mmask,
                              cfg.mind_radius, cfg.mind_dilation, model=cfg.affine_model, spacing=pair.spacing,
                              refinements=cfg.affine_refinements)
        affine_disp = affine_to_field(matrix.to(dev), shape)
        moving_t = warp(moving_t, affine_disp)
        if mmask is not None:
            mmask = warp(mmask, affine_disp, mode="nearest")
        if mlabels is not None:
            mlabels = warp(mlabels, affine_disp, mode="nearest")
        start = times.add("affine", start, dev)

    # One image at a time, pooled right away: only one full-resolution descriptor volume
    # is alive at any moment.
    if cfg.features == "labels":
        classes = sorted(set(torch.unique(flabels).tolist()) | set(torch.unique(mlabels).tolist()))
        fixed_levels = feature_levels(label_features(flabels, [int(c) for c in classes]), cfg)
        moving_levels = feature_levels(label_features(mlabels, [int(c) for c in classes]), cfg)
    else:
        fixed_levels = feature_levels(mind_ssc(pair.fixed, cfg.mind_radius, cfg.mind_dilation, fmask), cfg)
        moving_levels = feature_levels(mind_ssc(moving_t, cfg.mind_radius, cfg.mind_dilation, mmask), cfg)
    del moving_t
    start = times.add("features", start, dev)

    deform = convex_adam(fixed_levels, moving_levels, cfg, fmask, times, shape=shape)
    del fixed_levels, moving_levels
    start = time.perf_counter()
    if matrix is not None:
        # x -> y = x + u(x) in the linearly aligned moving image -> M y in the moving image;
        # computed exactly rather than by interpolating the affine field.
        spatial = len(shape)
        points = identity_grid(shape, dev) + deform
        flat = points.reshape(spatial, -1)
        moved = matrix[:, :spatial] @ flat + matrix[:, spatial:]
        total = moved.reshape(1, spatial, *shape) - identity_grid(shape, dev)
    else:
        total = deform
    times.add("compose", start, dev)
    return MethodOutput(total, matrix)
