"""Predict NIfTI label maps for an nnU-Net-style image folder with a trained run.

Per case: read the channel files (same checks as the importer), resample to the run's target
spacing if it had one, normalise as at import, sliding-window probabilities (Gaussian
blending, optional flip TTA), resample the probabilities back to the original grid, decode
(argmax, or regions painted supersets first), and write ``OUT/CASE.nii.gz`` (uint8) with the
shape, affine and header geometry of ``CASE_0000``.

Example:
    >>> from medfoundry.segmentation import predict_folder
    >>> report = predict_folder("runs/seg", "data/imagesTs", "preds", tta=True, labels="data/labelsTs")
    >>> report["mean"]          # {"WT": 0.95, "TC": ..., "ET": ...} when labels are given
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from ..utils import atomic_write_json
from .regions import Region, parse_regions

__all__ = ["decode", "VolumePredictor", "predict_folder"]


def decode(probabilities: np.ndarray, regions: list[Region] | None) -> np.ndarray:
    """Label map (uint8) from probabilities (K, *S): argmax over classes, or regions decoded
    supersets first (:func:`~medfoundry.segmentation.regions.decode_regions`)."""
    from .regions import decode_regions

    if regions:
        return decode_regions(probabilities, regions)
    return np.argmax(probabilities, axis=0).astype(np.uint8)


class VolumePredictor:
    """A trained run, ready to predict cases.

    Args:
        run: run folder of ``segment train`` (or its ``model/`` folder).
        tta: average over all flips of the three axes (8 passes).
        device: ``auto``, ``cpu``, ``cuda``...
        overlap: sliding-window overlap (fraction of the window).
        threads: torch CPU threads (0: the cores not already busy, see
            :func:`~medfoundry.segmentation.model.set_cpu_threads`).
    """

    def __init__(self, run: str | Path, tta: bool = False, device: str = "auto", overlap: float = 0.5,
                 threads: int = 0):
        from ..inference.sliding_window import SlidingWindowPredictor
        from ..utils import resolve_device
        from .model import load_network, set_cpu_threads

        self.device = resolve_device(device)
        if self.device.type == "cpu":
            set_cpu_threads(threads)
        self.net, self.config = load_network(run, self.device)
        self.regions = parse_regions(self.config["regions"]) if self.config.get("regions") else None
        self.classes = list(self.config["classes"])
        self.target_spacing = self.config.get("target_spacing")
        self.window = SlidingWindowPredictor(self.net, self.config["window"],
                                             "sigmoid" if self.regions else "softmax", overlap=overlap, tta=tta,
                                             device=self.device)

    def predict_array(self, image: np.ndarray, spacing: tuple[float, float, float] | None = None) -> np.ndarray:
        """Label map (X, Y, Z) uint8 of one raw image (C, X, Y, Z) whose voxels are ``spacing``
        mm (needed only when the run resampled to a target spacing)."""
        from ..data.adapters.nnunet_folder import normalize_case, resample_case, resampled_shape

        if image.ndim != 4 or image.shape[0] != int(self.config["channels"]):
            raise DataError(f"expected an image (C={self.config['channels']}, X, Y, Z), got shape {image.shape}")
        shape = image.shape[1:]
        work = image
        if self.target_spacing is not None:
            if spacing is None:
                raise DataError("the run resampled its cases to a target spacing: pass the image spacing (mm)")
            work = resample_case(image, resampled_shape(shape, spacing, self.target_spacing), order=1)
        probabilities = self.window(normalize_case(work, self.config["intensity"])).numpy()
        probabilities = resample_case(probabilities, shape, order=1)
        label = decode(probabilities, self.regions)
        values = np.asarray(self.config.get("label_values") or range(len(self.classes)), dtype=np.uint8)
        return label if self.regions else values[label]


def predict_folder(run: str | Path, images: str | Path, out: str | Path, *, tta: bool = False,
                   device: str = "auto", labels: str | Path | None = None, threads: int = 0,
                   progress: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    """Predict every case of ``images`` into ``out/CASE.nii.gz``.

    Args:
        run: run folder of ``segment train``.
        images: nnU-Net-style folder (``CASE_0000.nii.gz``...); the channels must be those the
            run was trained on.
        out: output folder (created).
        tta: flip test-time augmentation.
        device: ``auto``, ``cpu``, ``cuda``...
        labels: optional folder of reference ``CASE.nii.gz``: Dice per case and the mean go to
            the returned report and ``out/summary.json``.
        threads: torch CPU threads (0: the cores not already busy).
        progress: called as ``progress(done, total)`` after each case.

    Returns:
        ``{"cases": [{"case", "file", "dice"?}], "mean"?: {structure: Dice}}``.
    """
    import nibabel as nib

    from ..data.adapters.nnunet_folder import check_case_grids, find_nnunet_cases, read_case_image, read_case_label
    from ..data.volumes3d import write_nifti
    from .scores import dice_scores, mean_scores

    predictor = VolumePredictor(run, tta=tta, device=device, threads=threads)
    cases = find_nnunet_cases(images, labels)
    out = Path(out)
    report: dict[str, Any] = {"run": str(run), "tta": tta, "cases": []}
    for n, case in enumerate(cases):
        shape, affine, channels = check_case_grids(case)
        if channels != int(predictor.config["channels"]):
            raise DataError(f"case {case.name!r} has {channels} channels; the run was trained on "
                            f"{predictor.config['channels']} ({', '.join(predictor.config['channel_names'])})",
                            path=case.images[0])
        spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
        label = predictor.predict_array(read_case_image(case), spacing)
        target = out / f"{case.name}.nii.gz"
        write_nifti(target, label, affine, header=nib.load(str(case.images[0])).header)
        entry: dict[str, Any] = {"case": case.name, "file": str(target)}
        if case.label is not None:
            ref = read_case_label(case.label, len(predictor.classes))
            entry["dice"] = dice_scores(label, ref, predictor.classes, predictor.regions)
        report["cases"].append(entry)
        if progress is not None:
            progress(n + 1, len(cases))
    if labels is not None:
        report["mean"] = mean_scores([c["dice"] for c in report["cases"]])
        atomic_write_json(out / "summary.json", report)
    return report
