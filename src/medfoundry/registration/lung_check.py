"""CT-like lung pairs moved by real Learn2Reg LungCT keypoint motion: the check behind the ``lung_ct`` preset.

LungCT_val ships landmarks, keypoints and fixed lung masks but no images. A pair is made from one
case (voxels of the grid subsampled by ``factor``):

1. the true field u (fixed -> moving, voxels) is a thin-plate-spline interpolation of the
   keypoint displacements, evaluated every 4 voxels and upsampled linearly;
2. the moving image is a made CT: air -1000 HU, body 40 HU around the lungs, parenchyma
   -850 HU with random vessel-like structures, Gaussian noise; its lungs are the fixed mask
   pulled back by -u (an approximation of the inverse, good enough for texture);
3. the fixed image is the moving image warped by u (so u is exact), plus its own noise.

The motion is smooth and has no sliding at the lung boundary. Run
``python -m medfoundry.registration.lung_check ../shared/learn2reg/LungCT_val 0001,0002`` to
print the figures of docs/registration.md (minutes on 2 CPU cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["make_lung_pair", "landmark_tre_mm", "field_error_mm"]


def make_lung_pair(root: str | Path, case: str, factor: int = 2, seed: int = 0) -> dict[str, Any]:
    """One made pair from the LungCT_val case ``case`` (e.g. ``"0001"``).

    Returns:
        dict with ``fixed``, ``moving`` (float32 HU), ``mask`` (fixed lungs), ``true_disp``
        ``(H, W, D, 3)`` voxels, fixed -> moving, ``spacing`` (mm), and the real point pairs
        ``fixed_landmarks``/``moving_landmarks``, ``fixed_keypoints``/``moving_keypoints``
        ((N, 3) voxels of the subsampled grid).
    """
    from scipy.interpolate import RBFInterpolator

    from ..io.volumes import read_nifti

    root = Path(root)
    mask_data, _, mask_spacing = read_nifti(root / "masksTr" / f"LungCT_{case}_0000.nii.gz", "lung mask")
    points = {kind: [np.loadtxt(root / f"{kind}Tr" / f"LungCT_{case}_{m}.csv", delimiter=",") / factor
                     for m in ("0000", "0001")] for kind in ("keypoints", "landmarks")}
    mask = (np.asarray(mask_data) > 0)[::factor, ::factor, ::factor]
    shape = mask.shape
    kf, km = points["keypoints"]
    rbf = RBFInterpolator(kf, km - kf, kernel="thin_plate_spline", smoothing=10.0, neighbors=64)
    coarse_axes = [np.arange(0, s, 4) for s in shape]
    nodes = np.stack(np.meshgrid(*coarse_axes, indexing="ij"), -1).reshape(-1, 3)
    coarse = rbf(nodes).reshape(*[len(a) for a in coarse_axes], 3)
    u = np.stack([ndimage.zoom(coarse[..., a], [s / c for s, c in zip(shape, coarse.shape[:3])], order=1)
                  [:shape[0], :shape[1], :shape[2]] for a in range(3)], 0)
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    lungs = ndimage.map_coordinates(mask.astype(np.float32), grid - u, order=1) > 0.5
    body = ndimage.binary_dilation(ndimage.binary_closing(lungs, iterations=6), iterations=8)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    vessels = (noise > 1.35 * noise.std()).astype(np.float32)
    image = np.where(body, 40.0, -1000.0)
    image = np.where(lungs, -850.0 + 900.0 * ndimage.gaussian_filter(vessels, 0.7), image)
    moving = ndimage.gaussian_filter(image, 0.6).astype(np.float32) + rng.normal(0, 20, shape).astype(np.float32)
    fixed = ndimage.map_coordinates(moving, grid + u, order=1, mode="nearest").astype(np.float32)
    fixed += rng.normal(0, 20, shape).astype(np.float32)
    spacing = tuple(z * factor for z in mask_spacing)
    return {"fixed": fixed, "moving": moving, "mask": mask, "true_disp": np.moveaxis(u, 0, -1).astype(np.float32),
            "spacing": spacing, "fixed_landmarks": points["landmarks"][0], "moving_landmarks": points["landmarks"][1],
            "fixed_keypoints": kf, "moving_keypoints": km}


def landmark_tre_mm(disp: np.ndarray, fixed_points: np.ndarray, moving_points: np.ndarray,
                    spacing: tuple[float, ...]) -> float:
    """Mean distance (mm) between ``p + u(p)`` (u linearly interpolated, voxels) and the partner points."""
    moved = fixed_points + np.stack([ndimage.map_coordinates(disp[..., a], fixed_points.T, order=1)
                                     for a in range(disp.shape[-1])], 1)
    return float(np.linalg.norm((moved - moving_points) * np.asarray(spacing), axis=1).mean())


def field_error_mm(disp: np.ndarray, pair: dict[str, Any]) -> float:
    """Mean distance (mm) between the estimated and the true field inside the fixed lungs."""
    error = np.linalg.norm((disp - pair["true_disp"]) * np.asarray(pair["spacing"]), axis=-1)
    return float(error[pair["mask"]].mean())


def _main(argv: list[str]) -> None:
    from .api import register

    root, cases = argv[0], argv[1].split(",")
    settings = {"lung_ct": {}, "regularisation=0.25": {"regularisation": 0.25},
                "regularisation=0.5": {"regularisation": 0.5}, "regularisation=1.0": {"regularisation": 1.0},
                "brain_mr preset": None}
    for case in cases:
        pair = make_lung_pair(root, case)
        lm = (pair["fixed_landmarks"], pair["moving_landmarks"], pair["spacing"])
        print(f"{case}: landmark TRE zero field {landmark_tre_mm(0 * pair['true_disp'], *lm):.2f} mm, "
              f"true field {landmark_tre_mm(pair['true_disp'], *lm):.2f} mm", flush=True)
        for name, overrides in settings.items():
            start = time.perf_counter()
            kwargs = {"preset": "brain_mr"} if overrides is None else {"preset": "lung_ct", **overrides}
            result = register(pair["fixed"], pair["moving"], masks=(pair["mask"], None), device="cpu", **kwargs)
            print(f"  {name}: field error {field_error_mm(result.disp, pair):.2f} mm, landmark TRE "
                  f"{landmark_tre_mm(result.disp, *lm):.2f} mm ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
