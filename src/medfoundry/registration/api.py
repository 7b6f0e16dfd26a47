"""Public registration API: :func:`register` on files, nibabel images or arrays, on any two grids.

``register(fixed, moving)`` brings the moving image onto the fixed grid through both affines
(world space, RAS mm; see :mod:`medfoundry.registration.world`), runs a registered method
(:mod:`medfoundry.registration.methods`) there, and returns the Learn2Reg field ``(H, W, D, 3)``
float32 in fixed voxels, fixed -> moving, relative to the moving image resampled onto the
fixed grid (on one grid, simply the moving image). Warps of the moving image and labels go
back to their own grids, so each is interpolated once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import RegistrationError
from ..utils import atomic_write_json, resolve_device
from .configs import MethodConfig
from .convex_adam import StageTimes
from .fields import field_to_numpy, identity_grid
from .methods import MethodInput, get_method
from .presets import resolve_config
from .world import (FIELD_COMPRESSLEVEL, Volume, as_volume, save_itk_displacement, save_nifti, voxel_map,
                    warp_points, world_displacement)

__all__ = ["RegistrationResult", "register", "register_images", "warp_volume"]


@dataclass
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes:
        disp: ``(H, W, D, 3)`` float32 displacement on the fixed grid, voxels, fixed -> moving
            (relative to the moving image resampled onto the fixed grid).
        runtime_s: wall time of the registration (arrays in, field out, resampling included), s.
        affine: ``(S, S+1)`` voxel matrix of the linear part on the fixed grid (fixed voxel ->
            voxel of the resampled moving image), or None.
        stage_times: seconds per stage (``resample``, ``affine``, ``features``, ``coarse``, ...).
        config: the parameters used, as a dict (save it beside the field to reproduce the run).
        device: the torch device used.
        method: the registration method's name.
        fixed_affine, moving_affine: voxel -> world (RAS mm) matrices of both grids.
        moving_shape: shape of the moving image's own grid.
    """

    disp: np.ndarray
    runtime_s: float
    affine: np.ndarray | None = None
    stage_times: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    method: str = "hybrid"
    fixed_affine: np.ndarray | None = None
    moving_affine: np.ndarray | None = None
    moving_shape: tuple[int, ...] | None = None
    moving: Volume | None = field(default=None, repr=False)
    moving_labels: Volume | None = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The fixed grid's shape."""
        return tuple(self.disp.shape[:-1])

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage plus ``total``."""
        return {**self.stage_times, "total": round(self.runtime_s, 4)}

    @property
    def fixed_grid_affine(self) -> np.ndarray:
        """The fixed grid's voxel -> world matrix (identity for bare arrays): the affine of every output."""
        return self.fixed_affine if self.fixed_affine is not None else np.eye(self.disp.shape[-1] + 1)

    def warp(self, volume: Any, order: int = 1, name: str = "volume to warp") -> np.ndarray:
        """Warp an image or label map of the moving subject onto the fixed grid.

        Args:
            volume: path, nibabel image, ``(array, affine)`` or an array on the moving grid.
            order: 1 linear (intensities), 0 nearest neighbour (labels).

        Returns:
            ``(H, W, D)`` on the fixed grid: float32 (``order=1``) or the input dtype (``order=0``).
        """
        vol = as_volume(volume, name, labels=order == 0, what="RegistrationResult.warp()")
        if not vol.has_affine:
            if self.moving_shape is not None and vol.shape != tuple(self.moving_shape):
                raise RegistrationError(f"RegistrationResult.warp(): {name} has shape {vol.shape}, expected the "
                                        f"moving grid's {tuple(self.moving_shape)} (or pass (array, affine))")
            affine = self.moving_affine if self.moving_affine is not None else self.fixed_grid_affine
            vol = Volume(vol.array, affine, vol.name)
        return warp_volume(vol.array, self.disp, order=order, fixed_affine=self.fixed_grid_affine,
                           moving_affine=vol.affine, device="cpu")

    @property
    def warped_image(self) -> np.ndarray:
        """The moving image on the fixed grid (linear), computed on first use."""
        if "image" not in self._cache:
            if self.moving is None:
                raise RegistrationError("RegistrationResult: the moving image was not kept")
            self._cache["image"] = self.warp(self.moving, order=1)
        return self._cache["image"]

    @property
    def warped_labels(self) -> np.ndarray | None:
        """The moving labels on the fixed grid (nearest neighbour), or None without moving labels."""
        if self.moving_labels is None:
            return None
        if "labels" not in self._cache:
            self._cache["labels"] = self.warp(self.moving_labels, order=0)
        return self._cache["labels"]

    def world_disp(self, lps: bool = False) -> np.ndarray:
        """The field in millimetres, ``(H, W, D, 3)``, fixed point -> moving point (RAS, or LPS for ITK)."""
        return world_displacement(self.disp, self.fixed_grid_affine, lps=lps)

    def metadata(self) -> dict[str, Any]:
        return {"method": self.method, "runtime_s": self.runtime_s, "device": self.device,
                "stage_times": self.stage_times, "affine_voxel": self.affine, "fixed_affine": self.fixed_affine,
                "moving_affine": self.moving_affine, "config": self.config}

    def save(self, target: str | Path | Mapping[str, str | Path], *, world: bool = False) -> dict[str, Path]:
        """Write the results; every write is atomic.

        Args:
            target: a folder (gets ``disp.nii.gz``, ``registration.json``, ``warped.nii.gz``,
                ``warped_labels.nii.gz`` with moving labels, ``disp_world_lps.nii.gz`` with
                ``world``) or a mapping naming some of the keys ``field``, ``meta``,
                ``warped_image``, ``warped_labels``, ``world_field`` -> path.
            world: in folder mode, also write the ITK/ANTs world-space field.

        Returns:
            ``{key: path}`` of what was written.
        """
        if isinstance(target, Mapping):
            paths = {k: Path(v) for k, v in target.items() if v is not None}
            allowed = {"field", "meta", "warped_image", "warped_labels", "world_field"}
            unknown = sorted(set(paths) - allowed)
            if unknown:
                raise RegistrationError(f"RegistrationResult.save(): unknown key {unknown[0]!r} "
                                        f"(valid: {', '.join(sorted(allowed))})")
        else:
            folder = Path(target)
            paths = {"field": folder / "disp.nii.gz", "meta": folder / "registration.json",
                     "warped_image": folder / "warped.nii.gz"}
            if self.moving_labels is not None:
                paths["warped_labels"] = folder / "warped_labels.nii.gz"
            if world:
                paths["world_field"] = folder / "disp_world_lps.nii.gz"
        affine = self.fixed_grid_affine
        if "field" in paths:
            save_nifti(paths["field"], self.disp.astype(np.float32), affine, compresslevel=FIELD_COMPRESSLEVEL)
        if "meta" in paths:
            paths["meta"].parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(paths["meta"], self.metadata())
        if "warped_image" in paths:
            save_nifti(paths["warped_image"], self.warped_image, affine)
        if "warped_labels" in paths:
            if self.warped_labels is None:
                raise RegistrationError("RegistrationResult.save(): warped_labels asked for, but register() "
                                        "got no moving labels")
            save_nifti(paths["warped_labels"], self.warped_labels, affine)
        if "world_field" in paths:
            save_itk_displacement(paths["world_field"], self.disp, affine)
        return paths


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    if value is None:
        return None, None
    if isinstance(value, Mapping):
        unknown = set(value) - {"fixed", "moving"}
        if unknown:
            raise RegistrationError(f"register(): {what} keys must be 'fixed' and 'moving', found {sorted(unknown)}")
        return value.get("fixed"), value.get("moving")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    raise RegistrationError(f"register(): {what} must be (fixed, moving) or {{'fixed': ..., 'moving': ...}}")


def _on_grid(obj: Any, name: str, grid: Volume, labels: bool) -> Volume | None:
    """``obj`` as a Volume on the grid of ``grid`` (a bare array must have its shape)."""
    if obj is None:
        return None
    vol = as_volume(obj, name, labels=labels)
    if not vol.has_affine:
        if vol.shape != grid.shape:
            raise RegistrationError(f"register(): {name} has shape {vol.shape}, expected the {grid.name}'s "
                                    f"shape {grid.shape} (or pass (array, affine) on its own grid)")
        return Volume(vol.array, grid.affine, name, has_affine=grid.has_affine)
    return vol


def _same_grid(a: Volume, b: Volume) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-5)


def _onto_fixed(vol: Volume | None, fixed: Volume, order: int, device: torch.device) -> torch.Tensor | None:
    """``vol`` as a ``(1, 1, *fixed.shape)`` float32 tensor on the fixed grid (resampled if needed)."""
    if vol is None:
        return None
    array = vol.array
    if not _same_grid(vol, fixed):
        from .world import resample

        array = resample(array, fixed.shape, voxel_map(fixed.affine, vol.affine), order=order,
                         fill=0.0 if order == 0 else None, device=device)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)[None, None]


def register(fixed: Any, moving: Any, *, method: str | None = None, preset: str | None = None,
             masks: Any = None, labels: Any = None, config: MethodConfig | None = None,
             config_file: str | Path | None = None, device: str = "auto", **overrides: Any) -> RegistrationResult:
    """Register ``moving`` to ``fixed``; the two may lie on different grids.

    Args:
        fixed, moving: a NIfTI/DICOM path, a nibabel image, ``(array, affine)`` (voxel -> RAS mm)
            or an array (then both must share one grid: same shape, no affines).
        method: a registered method (``hybrid``, ``affine``, ``rigid``, see ``list_methods()``);
            default: the preset's method, else ``hybrid``.
        preset: ``brain_mr``, ``abdomen_ct``, ``lung_ct`` or ``multiseq_rigid`` (see
            ``list_presets()``); default: the method's defaults (``hybrid``'s are ``brain_mr``).
        masks: ``(fixed_mask, moving_mask)`` or ``{"fixed": ..., "moving": ...}``; entries may be
            None. Each on its own image's grid (an array) or with its own affine.
        labels: ``(fixed_labels, moving_labels)`` likewise; the label-driven mode needs both;
            moving labels are also warped into ``result.warped_labels``.
        config: an explicit method config instead of the preset.
        config_file: YAML of parameters (may name ``preset:``) applied on top.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        **overrides: parameters of the method's config, e.g. ``regularisation=2.0``.

    Returns:
        :class:`RegistrationResult`: ``disp`` ``(H, W, D, 3)`` float32 fixed voxels, fixed ->
        moving, on the fixed grid; ``warped_image``, ``warped_labels``, ``timings``, ``save()``.

    Raises:
        RegistrationError: unreadable inputs, wrong ranks, grids that cannot be related,
            missing labels.
        ConfigError: unknown method, preset or parameter, or an invalid value.
    """
    name, cfg = resolve_config(method, preset, config, config_file, **overrides)
    spec = get_method(name)
    fixed_v = as_volume(fixed, "fixed image")
    moving_v = as_volume(moving, "moving image")
    if fixed_v.array.ndim != moving_v.array.ndim:
        raise RegistrationError(f"register(): fixed is {fixed_v.array.ndim}D and moving {moving_v.array.ndim}D")
    if fixed_v.has_affine != moving_v.has_affine:
        raise RegistrationError("register(): give affines for both images or for neither "
                                "(a bare array has no place in world space)")
    if not fixed_v.has_affine and fixed_v.shape != moving_v.shape:
        raise RegistrationError(f"register(): moving has shape {moving_v.shape}, expected the fixed image's shape "
                                f"{fixed_v.shape} (arrays without affines must share one grid; pass (array, affine) "
                                "or files to register across grids)")
    fixed_mask, moving_mask = _pair(masks, "masks")
    fixed_labels, moving_labels = _pair(labels, "labels")
    extras = [_on_grid(fixed_mask, "fixed mask", fixed_v, True), _on_grid(moving_mask, "moving mask", moving_v, True),
              _on_grid(fixed_labels, "fixed labels", fixed_v, True),
              _on_grid(moving_labels, "moving labels", moving_v, True)]
    if spec.requires_labels(cfg) and (extras[2] is None or extras[3] is None):
        raise RegistrationError(f"register(): method {name!r} with features='labels' needs fixed_labels and "
                                "moving_labels (labels=(fixed, moving))")
    dev = resolve_device(device)
    torch.manual_seed(int(getattr(cfg, "seed", 0)))
    times = StageTimes()
    with torch.no_grad():
        begin = time.perf_counter()
        fixed_t = _onto_fixed(fixed_v, fixed_v, 1, dev)
        moving_t = _onto_fixed(moving_v, fixed_v, 1, dev)
        fmask, mmask = ((None if t is None else (t > 0).float()) for t in
                        (_onto_fixed(v, fixed_v, 0, dev) for v in extras[:2]))
        flabels, mlabels = ((None if t is None else t.round()) for t in
                            (_onto_fixed(v, fixed_v, 0, dev) for v in extras[2:]))
        if not _same_grid(moving_v, fixed_v):
            times.add("resample", begin, dev)
        pair = MethodInput(fixed_t, moving_t, fmask, mmask, flabels, mlabels, fixed_v.spacing, times)
        out = spec.run(pair, cfg)
        disp = field_to_numpy(out.disp)
    runtime = time.perf_counter() - begin
    matrix = out.matrix
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    return RegistrationResult(
        disp=disp.astype(np.float32),
        runtime_s=runtime,
        affine=None if matrix is None else np.asarray(matrix, dtype=np.float32),
        stage_times={k: round(v, 4) for k, v in times.times.items()},
        config={"method": name, **cfg.to_dict()},
        device=str(dev),
        method=name,
        fixed_affine=fixed_v.affine if fixed_v.has_affine else None,
        moving_affine=moving_v.affine if moving_v.has_affine else None,
        moving_shape=moving_v.shape,
        moving=moving_v,
        moving_labels=extras[3],
    )


def register_images(fixed: np.ndarray, moving: np.ndarray, fixed_mask: np.ndarray | None = None,
                    moving_mask: np.ndarray | None = None, preset: str = "brain_mr", device: str = "auto",
                    fixed_labels: np.ndarray | None = None, moving_labels: np.ndarray | None = None,
                    config: MethodConfig | None = None, **overrides: Any) -> RegistrationResult:
    """The array form of :func:`register` (kept for existing code): same-grid arrays, hybrid method.

    Equivalent to ``register(fixed, moving, preset=preset, masks=(fixed_mask, moving_mask),
    labels=(fixed_labels, moving_labels), config=config, device=device, **overrides)``, with
    ``preset`` ignored when ``config`` is given.
    """
    return register(fixed, moving, preset=None if config is not None else preset,
                    method="hybrid" if config is not None else None,
                    masks=(fixed_mask, moving_mask), labels=(fixed_labels, moving_labels), config=config,
                    device=device, **overrides)


def warp_volume(moving: np.ndarray, disp: np.ndarray, order: int = 1, device: str = "cpu", *,
                fixed_affine: np.ndarray | None = None, moving_affine: np.ndarray | None = None) -> np.ndarray:
    """Warp a moving volume into the fixed space with a Learn2Reg field.

    Args:
        moving: ``(H', W', D')`` intensities or labels, on the moving grid.
        disp: ``(H, W, D, 3)`` voxels of the fixed grid, fixed -> moving (relative to the moving
            image resampled onto the fixed grid; on one grid, the moving image itself).
        order: 1 for linear interpolation (intensities), 0 for nearest neighbour (labels).
        device: torch device string.
        fixed_affine, moving_affine: voxel -> world (RAS mm) matrices when the grids differ;
            both or neither.

    Returns:
        ``(H, W, D)`` volume, float32 for ``order=1``, the input dtype for ``order=0``; voxels
        that map outside the moving grid get 0 (labels) or the moving minimum (intensities).
    """
    if order not in (0, 1):
        raise RegistrationError(f"warp_volume(): order must be 0 (labels) or 1 (linear), found {order}")
    if (fixed_affine is None) != (moving_affine is None):
        raise RegistrationError("warp_volume(): give fixed_affine and moving_affine together, or neither")
    moving = np.asarray(moving)
    disp = np.asarray(disp, dtype=np.float32)
    spatial = disp.shape[-1]
    shape = tuple(disp.shape[:-1])
    if moving.ndim != spatial or disp.ndim != spatial + 1:
        raise RegistrationError(f"warp_volume(): moving {moving.shape} and displacement {disp.shape} do not match; "
                                "expected moving (*spatial) and displacement (*spatial, S)")
    dev = resolve_device(device)
    with torch.no_grad():
        points = identity_grid(shape, dev).reshape(spatial, -1) + torch.from_numpy(
            np.ascontiguousarray(np.moveaxis(disp, -1, 0))).to(dev).reshape(spatial, -1)
        if fixed_affine is not None:
            m = torch.as_tensor(voxel_map(np.asarray(fixed_affine, np.float64), np.asarray(moving_affine, np.float64)),
                                dtype=torch.float32, device=dev)
            points = m[:spatial, :spatial] @ points + m[:spatial, spatial:]
        return warp_points(moving, points, shape, order=order, fill=0.0 if order == 0 else None, device=dev)
