"""World space: volumes with their affines, grid-to-grid voxel maps, resampling, world-space fields.

Convention: an affine is nibabel's ``(S+1, S+1)`` voxel -> world matrix in **RAS+ millimetres**
(+x towards the subject's right, +y anterior, +z superior), voxel indices in the array's
(H, W, D) order. ITK, SimpleITK and ANTs use LPS+: the same points with x and y negated. Two images on different grids meet through
``moving_voxel = inv(A_moving) @ A_fixed @ fixed_voxel``.

A Learn2Reg field ``u`` ``(H, W, D, 3)`` in fixed voxels maps the fixed voxel ``x`` to ``x + u(x)``
*in the moving image resampled onto the fixed grid*; :func:`world_displacement` turns it into
millimetres, as ITK's ``DisplacementFieldTransform`` expects (fixed point -> moving point).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RegistrationError
from ..utils import atomic_path

__all__ = ["Volume", "as_volume", "voxel_map", "resample", "warp_points", "world_displacement", "save_nifti",
           "save_itk_displacement", "RAS_TO_LPS"]

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """An image or label map ``(H, W[, D])`` with its voxel -> world (RAS mm) affine.

    ``has_affine`` is False when the affine was not given (bare array: identity assumed); such a
    volume can only be paired with one on the same grid.
    """

    array: np.ndarray
    affine: np.ndarray
    name: str = "image"
    has_affine: bool = True

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along each array axis, mm (column norms of the affine)."""
        spatial = self.array.ndim
        return tuple(float(v) for v in np.linalg.norm(self.affine[:spatial, :spatial], axis=0))


def _check_array(array: np.ndarray, name: str, what: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise RegistrationError(f"{what}: {name} must be a 2D or 3D volume, found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise RegistrationError(f"{what}: {name} must be numeric, found dtype {array.dtype}")
    return array


def _check_affine(affine: Any, spatial: int, name: str, what: str) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if spatial == 3 and affine.shape == (4, 4) or spatial == 2 and affine.shape in ((3, 3), (4, 4)):
        if affine.shape == (4, 4) and spatial == 2:
            affine = affine[[0, 1, 3]][:, [0, 1, 3]]
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:spatial, :spatial])) < 1e-12:
            raise RegistrationError(f"{what}: the affine of {name} is singular or not finite")
        return affine
    raise RegistrationError(f"{what}: the affine of {name} must be {spatial + 1}x{spatial + 1}, found "
                            f"shape {affine.shape}")


def as_volume(obj: Any, name: str, *, labels: bool = False, what: str = "register()") -> Volume:
    """A :class:`Volume` from a path (NIfTI or DICOM), a nibabel image, ``(array, affine)``, an array or a Volume.

    Args:
        obj: the input; a bare array gets the identity affine (``has_affine=False``).
        name: used in messages (``fixed``, ``moving labels``...).
        labels: read integer label values (no float rounding surprises).
        what: the calling function, for messages.

    Raises:
        RegistrationError: missing file, wrong rank, non-numeric data, bad affine.
    """
    if isinstance(obj, Volume):
        return obj
    if isinstance(obj, (str, Path)):
        from ..errors import DataError
        from ..io.volumes import read_volume

        path = Path(obj)
        if not path.exists():
            raise RegistrationError(f"{path}: {name} not found")
        try:
            read = read_volume(path, dtype=np.int64 if labels else np.float32)
        except DataError as err:
            raise RegistrationError(f"{name}: {err}") from err
        array = _check_array(read.array, name, str(path))
        return Volume(array, _check_affine(read.affine, array.ndim, name, str(path)), name)
    if hasattr(obj, "affine") and hasattr(obj, "dataobj"):  # a nibabel image, read lazily
        array = _check_array(np.asarray(obj.dataobj), name, what)
        return Volume(array, _check_affine(obj.affine, array.ndim, name, what), name)
    if isinstance(obj, tuple) and len(obj) == 2:
        array = _check_array(np.asarray(obj[0]), name, what)
        return Volume(array, _check_affine(obj[1], array.ndim, name, what), name)
    array = np.asarray(obj)
    if array.dtype == object or array.ndim == 0:
        raise RegistrationError(f"{what}: {name} must be a path, a nibabel image, (array, affine) or an array, "
                                f"found {type(obj).__name__}")
    array = _check_array(array, name, what)
    return Volume(array, np.eye(array.ndim + 1), name, has_affine=False)


def voxel_map(fixed_affine: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """``(S+1, S+1)`` matrix mapping fixed voxel indices to moving voxel indices through world space."""
    return np.linalg.inv(moving_affine) @ fixed_affine


def resample(array: np.ndarray, shape: tuple[int, ...], matrix: np.ndarray, order: int = 1,
             fill: float | None = None, device: Any = "cpu") -> np.ndarray:
    """Sample ``array`` at ``matrix @ [x, 1]`` for every voxel ``x`` of a grid of ``shape``.

    Args:
        array: ``(H', W'[, D'])`` source volume.
        shape: target grid shape.
        matrix: ``(S+1, S+1)`` target voxel -> source voxel (see :func:`voxel_map`).
        order: 1 linear (intensities), 0 nearest (labels, masks).
        fill: value outside the source grid; default the source minimum (background).
        device: torch device.

    Returns:
        ``shape`` float32 for ``order=1``, the source dtype for ``order=0``.
    """
    import torch

    from .fields import identity_grid

    spatial = len(shape)
    fill = float(np.min(array)) if fill is None else float(fill)
    with torch.no_grad():
        grid = identity_grid(tuple(shape), device, torch.float64).reshape(spatial, -1)
        m = torch.as_tensor(matrix, dtype=torch.float64, device=device)
        points = (m[:spatial, :spatial] @ grid + m[:spatial, spatial:]).float()
        return _sample_points(array, points, shape, order, fill, device)


def _sample_points(array: np.ndarray, points: Any, shape: tuple[int, ...], order: int, fill: float,
                   device: Any) -> np.ndarray:
    """``array`` at source voxel coordinates ``points`` ``(S, N)`` (a torch tensor), reshaped to ``shape``."""
    import torch
    import torch.nn.functional as F

    spatial = points.shape[0]
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)[None, None]
    sizes = torch.tensor(array.shape, device=points.device, dtype=points.dtype).view(spatial, 1)
    norm = points * 2.0 / (sizes - 1).clamp_min(1) - 1.0
    grid = norm.flip(0).t().reshape(1, *shape, spatial)
    out = F.grid_sample(source, grid.to(source.dtype), mode="nearest" if order == 0 else "bilinear",
                        padding_mode="border", align_corners=True)[0, 0]
    # As ITK: a point is inside when within half a voxel of the grid (edge values extend that far).
    outside = ((points < -0.5) | (points > sizes - 0.5)).any(0).reshape(shape)
    out = out.masked_fill(outside, fill).cpu().numpy()
    return out.astype(array.dtype) if order == 0 else out.astype(np.float32)


def warp_points(array: np.ndarray, points: Any, shape: tuple[int, ...], order: int = 1,
                fill: float | None = None, device: Any = "cpu") -> np.ndarray:
    """``array`` sampled at source voxel coordinates ``points`` ``(S, N)`` (torch), as a ``shape`` volume."""
    fill = float(np.min(array)) if fill is None else float(fill)
    return _sample_points(array, points, shape, order, fill, device)


def world_displacement(disp: np.ndarray, fixed_affine: np.ndarray, lps: bool = False) -> np.ndarray:
    """Learn2Reg field (fixed voxels, relative to the moving image on the fixed grid) -> mm.

    The fixed voxel ``x`` sits at the world point ``A x`` and its partner at ``A (x + u(x))``,
    so the world displacement is ``A[:3, :3] @ u(x)``, in RAS (or LPS with ``lps``) mm.

    Returns:
        ``(H, W, D, 3)`` float32 millimetres, fixed point -> moving point.
    """
    spatial = disp.shape[-1]
    linear = np.asarray(fixed_affine, dtype=np.float64)[:spatial, :spatial]
    if lps:
        if spatial != 3:
            raise RegistrationError("world_displacement(): the LPS (ITK) form needs 3D fields")
        linear = RAS_TO_LPS @ linear
    return np.einsum("ij,...j->...i", linear, disp.astype(np.float64)).astype(np.float32)


# Float32 displacement fields shrink by only ~9 % under gzip level 1, which cost 0.4 CPU s per
# 2 mm brain field (7 % of a whole 'medfoundry register' process): they are written as stored
# gzip blocks (same .nii.gz format, ~10 % larger files). Images and label maps keep level 1.
FIELD_COMPRESSLEVEL = 0


def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, intent: str | None = None,
               compresslevel: int = 1) -> Path:
    """Write ``array`` as NIfTI (``.nii`` or ``.nii.gz``) with ``affine``, atomically.

    ``compresslevel`` (0-9) applies to ``.nii.gz``; 0 writes stored (uncompressed) gzip blocks,
    still a valid ``.nii.gz`` for every reader.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith((".nii.gz", ".nii")):
        raise RegistrationError(f"{path}: output must end in .nii.gz or .nii")
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype in (np.int64, np.uint64, bool):
        # label maps: the smallest integer type that holds them (nibabel refuses int64 without a header)
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        array = array.astype(next(t for t in (np.uint8, np.int16, np.int32)
                                  if np.iinfo(t).min <= low and high <= np.iinfo(t).max))
    image = nib.Nifti1Image(array, affine)
    if intent is not None:
        image.header.set_intent(intent)
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            import gzip

            # No name or time stamp in the gzip header: the same field gives the same bytes.
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                       compresslevel=int(compresslevel)) as handle:
                handle.write(image.to_bytes())
        else:
            # nibabel picks the format from the suffix, so write under a name that keeps it.
            real = tmp.with_name(tmp.name + ".nii")
            nib.save(image, str(real))
            real.replace(tmp)
    return path


def save_itk_displacement(path: str | Path, disp: np.ndarray, fixed_affine: np.ndarray) -> Path:
    """Write the field as a world-space displacement SimpleITK, ITK and ANTs can apply.

    The file is a NIfTI vector image ``(H, W, D, 1, 3)`` (intent ``vector``, ANTs' warp layout)
    on the fixed grid with LPS millimetre components: ITK reads the grid's RAS affine as LPS
    geometry itself but leaves vector values untouched, so they must already be LPS.
    ``sitk.DisplacementFieldTransform(sitk.ReadImage(path, sitk.sitkVectorFloat64))`` then maps
    fixed points to moving points.
    """
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise RegistrationError(f"{path}: a world-space field needs a 3D field (H, W, D, 3), found {disp.shape}")
    lps = world_displacement(disp, fixed_affine, lps=True)
    return save_nifti(path, lps[:, :, :, None, :], fixed_affine, intent="vector", compresslevel=FIELD_COMPRESSLEVEL)
