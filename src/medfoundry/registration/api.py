"""Public registration API: ``register_images`` and ``warp_volume``.

Arrays are NumPy ``(H, W, D)`` volumes on the same voxel grid; the displacement returned is the
Learn2Reg field ``(H, W, D, 3)`` float32 in voxels, fixed -> moving (the fixed voxel ``x``
corresponds to ``x + u(x)`` in the moving image).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import RegistrationError
from ..utils import resolve_device
from .affine import affine_align
from .convex_adam import StageTimes, convex_adam, feature_levels
from .features import label_features, mind_ssc
from .fields import affine_to_field, field_to_numpy, field_to_torch, identity_grid, warp
from .presets import RegistrationConfig, get_preset

__all__ = ["RegistrationResult", "register_images", "warp_volume", "resolve_config"]


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_images`.

    Attributes:
        disp: ``(H, W, D, 3)`` float32 displacement, voxels, fixed -> moving.
        runtime_s: wall time of the registration (tensors in, field out), seconds.
        affine: ``(3, 4)`` voxel-space matrix fixed -> moving of the pre-alignment, or None.
        stage_times: seconds per stage (``affine``, ``features``, ``coarse``, ``adam``, ``upsample``).
        config: the parameters used, as a dict (save it beside the field to reproduce the run).
        device: the torch device used.
    """

    disp: np.ndarray
    runtime_s: float
    affine: np.ndarray | None = None
    stage_times: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def resolve_config(preset: str | None = "brain_mr", config: RegistrationConfig | None = None,
                   **overrides: Any) -> RegistrationConfig:
    """Preset (or an explicit config) with keyword overrides applied and validated."""
    base = config if config is not None else get_preset(preset or "brain_mr")
    return base.replace(**overrides) if overrides else base


def _as_volume(array: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise RegistrationError(f"register_images(): {name} must be a 2D or 3D volume, found shape {array.shape}")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise RegistrationError(
            f"register_images(): {name} has shape {array.shape}, expected the fixed image's shape {tuple(shape)} "
            "(resample both images to one grid first, as in Learn2Reg)"
        )
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise RegistrationError(f"register_images(): {name} must be numeric, found dtype {array.dtype}")
    return array


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)[None, None]


def register_images(fixed: np.ndarray, moving: np.ndarray, fixed_mask: np.ndarray | None = None,
                    moving_mask: np.ndarray | None = None, preset: str = "brain_mr", device: str = "auto",
                    fixed_labels: np.ndarray | None = None, moving_labels: np.ndarray | None = None,
                    config: RegistrationConfig | None = None, **overrides: Any) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with the hybrid convex + Adam method.

    Args:
        fixed, moving: ``(H, W, D)`` intensity volumes on the same voxel grid (any units).
        fixed_mask, moving_mask: optional ``(H, W, D)`` masks; descriptors are zeroed outside
            them and the fine-stage similarity is restricted to the fixed mask.
        preset: ``brain_mr``, ``abdomen_ct`` or ``lung_ct`` (ignored when ``config`` is given).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        fixed_labels, moving_labels: integer segmentations; required (both) when
            ``features="labels"`` (label-driven mode), ignored otherwise.
        config: an explicit :class:`RegistrationConfig` instead of a preset.
        **overrides: any ``RegistrationConfig`` field, e.g. ``regularisation=2.0``.

    Returns:
        :class:`RegistrationResult` with ``disp`` ``(H, W, D, 3)`` float32 voxels, fixed -> moving.

    Raises:
        RegistrationError: shapes differ, volumes are not 2D/3D, or labels are missing.
        ConfigError: unknown preset or parameter, or an invalid value.
    """
    cfg = resolve_config(preset, config, **overrides)
    fixed_np = _as_volume(fixed, "fixed")
    shape = tuple(fixed_np.shape)
    moving_np = _as_volume(moving, "moving", shape)
    masks = [None if m is None else _as_volume(m, n, shape) for m, n in
             ((fixed_mask, "fixed_mask"), (moving_mask, "moving_mask"))]
    if cfg.features == "labels":
        if fixed_labels is None or moving_labels is None:
            raise RegistrationError("register_images(): features='labels' needs fixed_labels and moving_labels")
        fixed_labels = _as_volume(fixed_labels, "fixed_labels", shape)
        moving_labels = _as_volume(moving_labels, "moving_labels", shape)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    times = StageTimes()
    with torch.no_grad():
        start = time.perf_counter()
        begin = start
        fixed_t = _tensor(fixed_np, dev)
        moving_t = _tensor(moving_np, dev)
        fmask = None if masks[0] is None else (_tensor(masks[0], dev) > 0).float()
        mmask = None if masks[1] is None else (_tensor(masks[1], dev) > 0).float()
        flabels = mlabels = None
        if cfg.features == "labels":
            flabels = _tensor(fixed_labels, dev).round()
            mlabels = _tensor(moving_labels, dev).round()

        matrix = None
        affine_disp = None
        if cfg.affine:
            matrix = affine_align(fixed_t, moving_t, cfg.affine_iterations, cfg.affine_lr, fmask, mmask,
                                  cfg.mind_radius, cfg.mind_dilation)
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
            fixed_levels = feature_levels(mind_ssc(fixed_t, cfg.mind_radius, cfg.mind_dilation, fmask), cfg)
            moving_levels = feature_levels(mind_ssc(moving_t, cfg.mind_radius, cfg.mind_dilation, mmask), cfg)
        del moving_t
        start = times.add("features", start, dev)

        deform = convex_adam(fixed_levels, moving_levels, cfg, fmask, times, shape=shape)
        del fixed_levels, moving_levels
        start = time.perf_counter()
        if matrix is not None:
            # x -> y = x + u(x) in the affinely aligned moving image -> M y in the moving image;
            # computed exactly rather than by interpolating the affine field.
            spatial = len(shape)
            points = identity_grid(shape, dev) + deform
            flat = points.reshape(spatial, -1)
            moved = matrix[:, :spatial] @ flat + matrix[:, spatial:]
            total = moved.reshape(1, spatial, *shape) - identity_grid(shape, dev)
        else:
            total = deform
        disp = field_to_numpy(total)
        times.add("compose", start, dev)
    runtime = time.perf_counter() - begin
    return RegistrationResult(
        disp=disp.astype(np.float32),
        runtime_s=runtime,
        affine=None if matrix is None else matrix.cpu().numpy().astype(np.float32),
        stage_times={k: round(v, 4) for k, v in times.times.items()},
        config=cfg.to_dict(),
        device=str(dev),
    )


def warp_volume(moving: np.ndarray, disp: np.ndarray, order: int = 1, device: str = "cpu") -> np.ndarray:
    """Warp a moving volume into the fixed space with a Learn2Reg field.

    Args:
        moving: ``(H', W', D')`` intensities or labels.
        disp: ``(H, W, D, 3)`` voxels, fixed -> moving.
        order: 1 for linear interpolation (intensities), 0 for nearest neighbour (labels).
        device: torch device string.

    Returns:
        ``(H, W, D)`` volume, float32 for ``order=1``, the input dtype for ``order=0``.
    """
    if order not in (0, 1):
        raise RegistrationError(f"warp_volume(): order must be 0 (labels) or 1 (linear), found {order}")
    dev = resolve_device(device)
    with torch.no_grad():
        image = _tensor(np.asarray(moving), dev)
        field_t = field_to_torch(np.asarray(disp), dev)
        out = warp(image, field_t, mode="nearest" if order == 0 else "bilinear")[0, 0].cpu().numpy()
    if order == 0:
        return out.astype(np.asarray(moving).dtype)
    return out.astype(np.float32)
