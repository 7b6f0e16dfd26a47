"""MNI152-derived volumes on arbitrary (oblique, anisotropic) grids for the world-space tests.

The truth is made with scipy (``map_coordinates``), independently of the code under test.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation


@functools.lru_cache(maxsize=1)
def mni_2mm() -> dict[str, np.ndarray]:
    """MNI152 T1 (scaled to [0, 1]), GM (1) / WM (2) labels and the RAS affine at 2 mm, read from
    nilearn's bundled 1 mm files without importing nilearn (slow to import)."""
    import nibabel as nib

    root = Path(importlib.util.find_spec("nilearn").submodule_search_locations[0]) / "datasets" / "data"
    out = {}
    for key in ("t1", "gm", "wm"):
        img = nib.load(root / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz")
        out[key] = np.asarray(img.dataobj)[::2, ::2, ::2].astype(np.float32)
        affine = img.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.where(out["gm"] + out["wm"] > 0.3 * 255, np.where(out["gm"] >= out["wm"], 1, 2), 0).astype(np.uint8)
    return {"image": out["t1"] / out["t1"].max(), "labels": labels, "affine": affine}


def grid_affine(shape, spacing, angles_deg=(0.0, 0.0, 0.0), centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS affine of a grid of ``shape`` with voxel size ``spacing`` (mm), rotated by ``angles_deg``
    (xyz Euler) and centred on ``centre_mm``."""
    rot = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = np.asarray(centre_mm) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def sample_world(array, affine, shape, target_affine, order=1, world_map=None) -> np.ndarray:
    """``array`` (with ``affine``) sampled on the grid (``shape``, ``target_affine``); optionally each
    target world point p is first moved by ``world_map(p)`` ((N, 3) -> (N, 3), mm)."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ target_affine[:3, :3].T + target_affine[:3, 3]
    if world_map is not None:
        world = world_map(world)
    src = (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    out = ndimage.map_coordinates(array.astype(np.float32), src.T, order=order, mode="constant", cval=0.0)
    return out.reshape(shape).astype(array.dtype if order == 0 else np.float32)


def rigid_world_map(angles_deg, translation_mm, centre_mm):
    """``p -> R (p - c) + c + t`` (mm) and its 4x4 matrix."""
    rot = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3] = rot
    matrix[:3, 3] = np.asarray(centre_mm) - rot @ np.asarray(centre_mm) + np.asarray(translation_mm)
    return (lambda p: p @ matrix[:3, :3].T + matrix[:3, 3]), matrix
