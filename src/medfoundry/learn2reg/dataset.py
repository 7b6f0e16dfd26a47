"""Synthetic Learn2Reg-layout registration data made from the MNI152 template (no download).

A pair is made so that its true displacement is known exactly:

1. a *subject* anatomy S: the MNI152 template (``nilearn``'s built-in copy) and its GM/WM/brain
   probability maps, warped by a seeded smooth field (anatomical variation between pairs);
2. the moving image is S; the fixed image is S warped by a second smooth field u
   (``fixed(x) = S(x + u(x))``), so u is exactly the Learn2Reg fixed -> moving field;
3. each image then gets its own multiplicative bias field, contrast change (gamma) and Gaussian
   noise.

Labels are 1 CSF, 2 GM, 3 WM (the largest probability inside the brain mask); with
``split_hemispheres`` they are 1-3 left, 4-6 right (by the sign of the MNI x coordinate).
Landmarks are corner-like voxels of the fixed image (largest Förstner response inside the
brain, at least ``landmark_spacing`` voxels apart); their moving partners are p + u(p),
exact because p lies on the grid. Distances and fields are in voxels unless said otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from ..randomfields import random_bias_field, random_displacement, random_gamma, warp_array
from ..utils import atomic_path, atomic_write_json
from .files import save_displacement, write_points_csv

__all__ = ["make_pair", "make_dataset", "TASK_NAME", "LABEL_NAMES"]

TASK_NAME = "SynthMNI"
LABEL_NAMES = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
LABEL_NAMES_LR = {0: "background", 1: "left CSF", 2: "left GM", 3: "left WM",
                  4: "right CSF", 5: "right GM", 6: "right WM"}


@functools.lru_cache(maxsize=4)
def _template(resolution: int) -> dict[str, Any]:
    import warnings

    from nilearn import datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1 = datasets.load_mni152_template(resolution=resolution)
        gm = datasets.load_mni152_gm_template(resolution=resolution)
        wm = datasets.load_mni152_wm_template(resolution=resolution)
        brain = datasets.load_mni152_brain_mask(resolution=resolution)
    image = np.asarray(t1.get_fdata(), dtype=np.float32)
    image /= max(float(image.max()), 1e-6)
    out = {
        "image": image,
        "gm": np.asarray(gm.get_fdata(), dtype=np.float32),
        "wm": np.asarray(wm.get_fdata(), dtype=np.float32),
        "brain": np.asarray(brain.get_fdata(), dtype=np.float32),
        "affine": np.asarray(t1.affine, dtype=np.float64),
        "spacing": tuple(float(z) for z in t1.header.get_zooms()[:3]),
    }
    for value in out.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return out


def _labels(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray, affine: np.ndarray, split_hemispheres: bool
            ) -> np.ndarray:
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    tissue = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
    labels = np.where(brain > 0.5, tissue, 0).astype(np.uint8)
    if split_hemispheres:
        # World x of every voxel (RAS: x > 0 is the right hemisphere).
        idx = np.indices(labels.shape, dtype=np.float64)
        x = sum(affine[0, a] * idx[a] for a in range(3)) + affine[0, 3]
        labels = np.where((labels > 0) & (x > 0), labels + 3, labels).astype(np.uint8)
    return labels


def _corner_points(image: np.ndarray, mask: np.ndarray, count: int, min_distance: float, border: int) -> np.ndarray:
    """Up to ``count`` grid points with the largest Förstner response, ``min_distance`` apart."""
    grads = [ndimage.sobel(ndimage.gaussian_filter(image, 1.0), axis=a) for a in range(image.ndim)]
    tensor = [[ndimage.gaussian_filter(grads[i] * grads[j], 1.5) for j in range(image.ndim)] for i in range(image.ndim)]
    mat = np.stack([np.stack(row, -1) for row in tensor], -2)
    response = np.linalg.det(mat) / (np.trace(mat, axis1=-2, axis2=-1) + 1e-6)
    valid = ndimage.binary_erosion(mask, iterations=2)
    inner = np.zeros_like(valid)
    inner[tuple(slice(border, s - border) for s in image.shape)] = True
    valid &= inner
    # Local maxima only, then greedy selection with a minimum distance.
    peaks = valid & (response == ndimage.maximum_filter(response, size=3)) & (response > 0)
    candidates = np.argwhere(peaks)
    order = np.argsort(-response[peaks], kind="stable")
    chosen: list[np.ndarray] = []
    for idx in candidates[order]:
        if all(np.sum((idx - c) ** 2) >= min_distance ** 2 for c in chosen):
            chosen.append(idx)
            if len(chosen) == count:
                break
    return np.array(chosen, dtype=np.float64).reshape(-1, image.ndim)


def _appearance(image: np.ndarray, rng: np.random.Generator, bias: float, gamma: float, noise: float) -> np.ndarray:
    out = image * random_bias_field(image.shape, bias, rng) if bias > 0 else image.copy()
    out = random_gamma(out, rng, gamma) if gamma > 0 else np.clip(out, 0.0, 1.0)
    if noise > 0:
        out = out + noise * rng.standard_normal(out.shape).astype(np.float32)
    return np.clip(out, 0.0, None).astype(np.float32)


def _make_pair(rng: np.random.Generator, resolution: int, magnitude_mm: float, sigma_mm: float,
               subject_magnitude_mm: float, bias: float, gamma: float, noise: float, split_hemispheres: bool,
               n_landmarks: int, n_keypoints: int, landmark_spacing: float) -> dict[str, Any]:
    tpl = _template(resolution)
    shape = tpl["image"].shape
    spacing = tpl["spacing"]
    vox = float(np.mean(spacing))
    # Subject variation: a smooth warp of the template and its probability maps.
    v = random_displacement(shape, subject_magnitude_mm / vox, 2 * sigma_mm / vox, rng) if subject_magnitude_mm > 0 \
        else np.zeros((3,) + shape, np.float32)
    subject = warp_array(tpl["image"], v, order=1)
    gm = warp_array(tpl["gm"], v, order=1)
    wm = warp_array(tpl["wm"], v, order=1)
    brain = warp_array(tpl["brain"], v, order=1)
    moving_labels = _labels(gm, wm, brain, tpl["affine"], split_hemispheres)
    moving_mask = brain > 0.5
    # The true field, fixed -> moving, in voxels.
    u = random_displacement(shape, magnitude_mm / vox, sigma_mm / vox, rng)
    fixed_clean = warp_array(subject, u, order=1)
    fixed_labels = warp_array(moving_labels, u, order=0).astype(np.uint8)
    fixed_mask = warp_array(moving_mask.astype(np.uint8), u, order=0).astype(bool)
    true_disp = np.moveaxis(u, 0, -1).astype(np.float32)
    border = 3
    points = _corner_points(fixed_clean, fixed_mask, n_landmarks + n_keypoints, landmark_spacing, border)
    idx = points.astype(np.int64)
    moved = points + true_disp[tuple(idx.T)].astype(np.float64)
    fixed = _appearance(fixed_clean, rng, bias, gamma, noise)
    moving = _appearance(subject, rng, bias, gamma, noise)
    return {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": fixed_labels,
        "moving_labels": moving_labels,
        "fixed_landmarks": points[:n_landmarks],
        "moving_landmarks": moved[:n_landmarks],
        "fixed_keypoints": points,
        "moving_keypoints": moved,
        "true_disp": true_disp,
        "spacing": spacing,
        "mask": fixed_mask,
        "moving_mask": moving_mask,
        "affine": tpl["affine"],
        "label_names": dict(LABEL_NAMES_LR if split_hemispheres else LABEL_NAMES),
    }


def make_pair(resolution: int = 2, seed: int = 0, *, magnitude_mm: float = 15.0, sigma_mm: float = 20.0,
              subject_magnitude_mm: float = 4.0, bias: float = 0.3, gamma: float = 0.3, noise: float = 0.02,
              split_hemispheres: bool = True, n_landmarks: int = 40, n_keypoints: int = 160,
              landmark_spacing: float = 4.0) -> dict[str, Any]:
    """One synthetic MNI152 pair with its exact ground truth.

    Args:
        resolution: template resolution in mm (2 = 99 x 117 x 95 voxels; 4 is a fast 50 x 59 x 48).
        seed: the same seed gives the same arrays.
        magnitude_mm: largest displacement per axis of the true field (mm).
        sigma_mm: smoothness of the true field (Gaussian width, mm).
        subject_magnitude_mm: anatomical variation of the subject drawn from the template (mm).
        bias: strength of the multiplicative bias fields (0 = none).
        gamma: range of log-gamma of the contrast change (0 = none).
        noise: standard deviation of the Gaussian noise (intensities in [0, 1]).
        split_hemispheres: labels 1-3 left and 4-6 right instead of 1-3.
        n_landmarks: number of landmarks (fewer if the image has fewer corners).
        n_keypoints: further points; ``*_keypoints`` hold landmarks and these.
        landmark_spacing: minimum distance between points (voxels).

    Returns:
        dict with ``fixed``, ``moving`` (float32 (H, W, D)), ``fixed_labels``, ``moving_labels``
        (uint8), ``fixed_landmarks``, ``moving_landmarks``, ``fixed_keypoints``,
        ``moving_keypoints`` ((N, 3) float64 voxel coordinates), ``true_disp`` ((H, W, D, 3)
        float32 voxels, fixed -> moving), ``spacing`` (mm), ``mask`` (fixed brain mask, bool),
        ``moving_mask``, ``affine`` and ``label_names``.
    """
    if resolution < 1:
        raise ConfigError(f"make_pair: 'resolution' must be a positive number of mm, got {resolution}")
    return _make_pair(np.random.default_rng(seed), int(resolution), magnitude_mm, sigma_mm, subject_magnitude_mm,
                      bias, gamma, noise, split_hemispheres, n_landmarks, n_keypoints, landmark_spacing)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    with atomic_path(path) as tmp:
        real = tmp.with_name(tmp.name + ".nii.gz")
        nib.save(nib.Nifti1Image(array, affine), str(real))
        real.replace(tmp)


def make_dataset(out: str | Path, resolution: int = 2, pairs: int = 3, seed: int = 0, *, test_pairs: int = 0,
                 progress: bool = False, **pair_kwargs: Any) -> Path:
    """Write a small Learn2Reg-layout dataset made from the MNI152 template.

    Case ``i`` (from 1) holds the fixed image ``SynthMNI_iiii_0000`` and the moving image
    ``SynthMNI_iiii_0001``; the first ``pairs`` cases form ``registration_val``, the next
    ``test_pairs`` ``registration_test``. Written: ``SynthMNI_dataset.json``, ``imagesTr``,
    ``labelsTr``, ``masksTr``, ``landmarksTr``, ``keypointsTr``, the true fields in
    ``ground_truth/disp_iiii_iiii.nii.gz`` and the validation split's evaluation config in the
    official schema (``SynthMNI_VAL_evaluation_config.json``).

    Args:
        out: destination folder (created).
        resolution: template resolution (mm).
        pairs: number of validation pairs.
        seed: pair ``i`` uses the seed sequence ``(seed, i)``.
        test_pairs: number of test pairs.
        progress: show a rich progress bar.
        **pair_kwargs: passed to :func:`make_pair` (magnitude_mm, noise, ...).

    Returns:
        The dataset folder.
    """
    if pairs < 1 or test_pairs < 0:
        raise ConfigError(f"make_dataset: need pairs >= 1 and test_pairs >= 0, got {pairs} and {test_pairs}")
    out = Path(out)
    for sub in ("imagesTr", "labelsTr", "masksTr", "landmarksTr", "keypointsTr", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    total = pairs + test_pairs
    training, val, test = [], [], []
    label_names: dict[int, str] = {}
    shape = None
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("making pairs", total=total)
    try:
        for i in range(total):
            rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
            pair = _make_pair(rng, int(resolution), **_pair_defaults(pair_kwargs))
            case = f"{i + 1:04d}"
            affine = pair["affine"]
            shape = pair["fixed"].shape
            label_names = pair["label_names"]
            for mod, image, labels, mask, lms, kps in (
                ("0000", pair["fixed"], pair["fixed_labels"], pair["mask"], pair["fixed_landmarks"],
                 pair["fixed_keypoints"]),
                ("0001", pair["moving"], pair["moving_labels"], pair["moving_mask"], pair["moving_landmarks"],
                 pair["moving_keypoints"]),
            ):
                stem = f"{TASK_NAME}_{case}_{mod}"
                _save_nifti(out / "imagesTr" / f"{stem}.nii.gz", image, affine)
                _save_nifti(out / "labelsTr" / f"{stem}.nii.gz", labels, affine)
                _save_nifti(out / "masksTr" / f"{stem}.nii.gz", mask.astype(np.uint8), affine)
                write_points_csv(out / "landmarksTr" / f"{stem}.csv", lms)
                write_points_csv(out / "keypointsTr" / f"{stem}.csv", kps)
                training.append({"image": f"./imagesTr/{stem}.nii.gz", "label": f"./labelsTr/{stem}.nii.gz",
                                 "mask": f"./masksTr/{stem}.nii.gz", "landmarks": f"./landmarksTr/{stem}.csv",
                                 "keypoints": f"./keypointsTr/{stem}.csv"})
            save_displacement(out / "ground_truth" / f"disp_{case}_{case}.nii.gz", pair["true_disp"], affine)
            entry = {"fixed": f"./imagesTr/{TASK_NAME}_{case}_0000.nii.gz",
                     "moving": f"./imagesTr/{TASK_NAME}_{case}_0001.nii.gz"}
            (val if i < pairs else test).append(entry)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    meta = {
        "name": TASK_NAME,
        "description": "Synthetic pairs from the MNI152 template with known smooth deformations "
                       "(medfoundry.learn2reg.dataset); fixed = moving warped by ground_truth/disp_*.",
        "licence": "MNI152 template: see nilearn / MNI licence",
        "release": "1.0",
        "seed": seed,
        "resolution_mm": resolution,
        "pairings": "paired",
        "provided_data": {"0": ["image", "label", "mask", "landmarks", "keypoints"],
                          "1": ["image", "label", "mask", "landmarks", "keypoints"]},
        "registration_direction": {"fixed": 0, "moving": 1},
        "modality": {"0": "MR", "1": "MR"},
        "labels": {"0": {str(k): v for k, v in label_names.items()}},
        "tensorImageSize": {"0": "3D", "1": "3D"},
        "tensorImageShape": {"0": list(shape), "1": list(shape)},
        "masked_evaluation": True,
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "numPairedTraining": 0,
        "training_paired_images": [],
        "registration_val": val,
        "registration_test": test,
    }
    atomic_write_json(out / f"{TASK_NAME}_dataset.json", meta)
    labels = [k for k in sorted(label_names) if k != 0]
    config = {
        "task_name": TASK_NAME,
        "evaluation_methods": [
            {"name": "LogJacDetStd", "metric": "sdlogj"},
            {"name": "DSC", "metric": "dice", "labels": labels},
            {"name": "HD95", "metric": "hd95", "labels": labels},
            {"name": "TRE_lm", "metric": "tre", "dest": "landmarks"},
        ],
        "expected_shape": list(shape) + [3],
        "eval_pairs": val,
        "eval_config_version": 0.2,
        "masked_evaluation": True,
    }
    atomic_write_json(out / f"{TASK_NAME}_VAL_evaluation_config.json", config)
    return out


def _pair_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    defaults = {"magnitude_mm": 15.0, "sigma_mm": 20.0, "subject_magnitude_mm": 4.0, "bias": 0.3, "gamma": 0.3,
                "noise": 0.02, "split_hemispheres": True, "n_landmarks": 40, "n_keypoints": 160,
                "landmark_spacing": 4.0}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise ConfigError(f"make_dataset: unknown pair option(s) {', '.join(sorted(unknown))} "
                          f"(valid: {', '.join(sorted(defaults))})")
    return defaults | kwargs
