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

Test-time methods (``adapt``: ``none``, ``tta``, ``entropy``, ``etta``, see
:mod:`medfoundry.robustness.adapt`) and ensembles of several runs (``ensemble``: ``mean``,
``vote``, ``staple``, see :mod:`medfoundry.robustness.ensemble`) plug in here; with labels the
report also holds the voxel-wise calibration (:mod:`medfoundry.robustness.calibration`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

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
        adapt: test-time method, a name (``none``, ``tta``, ``entropy``, ``etta``) or an
            :class:`~medfoundry.robustness.adapt.AdaptConfig`; the weights on disk are never changed.
    """

    def __init__(self, run: str | Path, tta: bool = False, device: str = "auto", overlap: float = 0.5,
                 threads: int = 0, adapt: Any = "none"):
        from ..inference.sliding_window import SlidingWindowPredictor
        from ..robustness.adapt import VOLUME_LR, VOLUME_STEPS, AdaptConfig, TestTimeAdapter
        from ..utils import resolve_device
        from .model import load_network, set_cpu_threads

        self.device = resolve_device(device)
        if self.device.type == "cpu":
            set_cpu_threads(threads)
        self.net, self.config = load_network(run, self.device)
        self.regions = parse_regions(self.config["regions"]) if self.config.get("regions") else None
        self.classes = list(self.config["classes"])
        self.target_spacing = self.config.get("target_spacing")
        self.activation = "sigmoid" if self.regions else "softmax"
        self.window = SlidingWindowPredictor(self.net, self.config["window"], self.activation, overlap=overlap,
                                             tta=tta, device=self.device)
        if not isinstance(adapt, AdaptConfig):  # a method name: the volume path's measured settings
            adapt = AdaptConfig(method=str(adapt), steps=VOLUME_STEPS, lr=VOLUME_LR)
        cfg = adapt
        self.adapter = TestTimeAdapter(self.net, self.window, cfg)

    def predict_probabilities(self, image: np.ndarray,
                              spacing: tuple[float, float, float] | None = None) -> np.ndarray:
        """Probabilities (K, X, Y, Z) float32 on the grid of one raw image (C, X, Y, Z) whose
        voxels are ``spacing`` mm (needed only when the run resampled to a target spacing);
        statistics of the test-time method are left in ``self.adapter.last``."""
        from ..data.adapters.nnunet_folder import normalize_case, resample_case, resampled_shape

        if image.ndim != 4 or image.shape[0] != int(self.config["channels"]):
            raise DataError(f"expected an image (C={self.config['channels']}, X, Y, Z), got shape {image.shape}")
        shape = image.shape[1:]
        work = image
        if self.target_spacing is not None:
            if spacing is None:
                raise DataError("the run resampled its cases to a target spacing: pass the image spacing (mm)")
            work = resample_case(image, resampled_shape(shape, spacing, self.target_spacing), order=1)
        probabilities = self.adapter(normalize_case(work, self.config["intensity"])).numpy()
        return resample_case(probabilities, shape, order=1)

    def labels_from(self, probabilities: np.ndarray) -> np.ndarray:
        """Label map (uint8, the run's label values) decoded from probabilities (K, *S)."""
        label = decode(probabilities, self.regions)
        values = np.asarray(self.config.get("label_values") or range(len(self.classes)), dtype=np.uint8)
        return label if self.regions else values[label]

    def predict_array(self, image: np.ndarray, spacing: tuple[float, float, float] | None = None) -> np.ndarray:
        """Label map (X, Y, Z) uint8 of one raw image (C, X, Y, Z) whose voxels are ``spacing``
        mm (needed only when the run resampled to a target spacing)."""
        return self.labels_from(self.predict_probabilities(image, spacing))


def _check_compatible(predictors: Sequence[VolumePredictor], runs: Sequence[Any]) -> None:
    first = predictors[0].config
    for run, p in zip(runs[1:], predictors[1:]):
        for key in ("channels", "classes", "regions", "label_values"):
            if p.config.get(key) != first.get(key):
                raise DataError(f"cannot ensemble: {key} {p.config.get(key)!r} differs from {first.get(key)!r} of "
                                f"{runs[0]}", path=run, field=key)


def predict_folder(run: str | Path | Sequence[str | Path], images: str | Path, out: str | Path, *,
                   tta: bool = False, device: str = "auto", labels: str | Path | None = None, threads: int = 0,
                   progress: Callable[[int, int], Any] | None = None, adapt: Any = "none",
                   ensemble: str = "mean") -> dict[str, Any]:
    """Predict every case of ``images`` into ``out/CASE.nii.gz``.

    Args:
        run: run folder of ``segment train``, or several (an ensemble).
        images: nnU-Net-style folder (``CASE_0000.nii.gz``...); the channels must be those the
            run was trained on.
        out: output folder (created).
        tta: flip test-time augmentation.
        device: ``auto``, ``cpu``, ``cuda``...
        labels: optional folder of reference ``CASE.nii.gz``: Dice and calibration per case and
            pooled go to the returned report and ``out/summary.json``, and a reliability diagram
            to ``out/reliability.{png,svg}``.
        threads: torch CPU threads (0: the cores not already busy).
        progress: called as ``progress(done, total)`` after each case.
        adapt: test-time method (name or :class:`~medfoundry.robustness.adapt.AdaptConfig`).
        ensemble: how several runs combine: ``mean`` (probabilities), ``vote`` or ``staple``
            (label maps).

    Returns:
        ``{"cases": [{"case", "file", "seconds", "peak_memory_mb", "methods", "dice"?, "ece"?}],
        "mean"?: {structure: Dice}, "ece"?: pooled ECE}``.
    """
    import nibabel as nib

    from ..data.adapters.nnunet_folder import check_case_grids, find_nnunet_cases, read_case_image, read_case_label
    from ..io.volumes import write_nifti
    from ..errors import ConfigError
    from ..robustness.ensemble import ENSEMBLES, majority_vote, mean_probabilities, staple
    from .regions import labels_to_region_masks
    from .scores import dice_scores, mean_scores

    runs = [run] if isinstance(run, (str, Path)) else list(run)
    if not runs:
        raise ConfigError("predict_folder: give at least one run folder")
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"--ensemble: expected one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    predictors = [VolumePredictor(r, tta=tta, device=device, threads=threads, adapt=adapt) for r in runs]
    _check_compatible(predictors, runs)
    predictor = predictors[0]
    cases = find_nnunet_cases(images, labels)
    out = Path(out)
    report: dict[str, Any] = {"run": str(runs[0]) if len(runs) == 1 else [str(r) for r in runs], "tta": tta,
                              "adapt": predictor.adapter.config.to_dict(),
                              "ensemble": ensemble if len(runs) > 1 else None, "cases": []}
    tables = []
    for n, case in enumerate(cases):
        shape, affine, channels = check_case_grids(case)
        if channels != int(predictor.config["channels"]):
            raise DataError(f"case {case.name!r} has {channels} channels; the run was trained on "
                            f"{predictor.config['channels']} ({', '.join(predictor.config['channel_names'])})",
                            path=case.images[0])
        spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
        image = read_case_image(case)
        start = time.perf_counter()
        probs, methods = [], []
        for p in predictors:
            probs.append(p.predict_probabilities(image, spacing))
            methods.append(dict(p.adapter.last))
        probabilities = None
        if len(probs) == 1:
            probabilities = probs[0]
            label = predictor.labels_from(probabilities)
        elif ensemble == "mean":
            probabilities = mean_probabilities(probs)
            label = predictor.labels_from(probabilities)
        else:
            maps = [predictor.labels_from(q) for q in probs]
            label = majority_vote(maps) if ensemble == "vote" else staple(maps)
        target = out / f"{case.name}.nii.gz"
        write_nifti(target, label, affine, header=nib.load(str(case.images[0])).header)
        entry: dict[str, Any] = {"case": case.name, "file": str(target),
                                 "seconds": time.perf_counter() - start,
                                 "peak_memory_mb": max(m["peak_memory_mb"] for m in methods), "methods": methods}
        if case.label is not None:
            ref = read_case_label(case.label, len(predictor.classes))
            entry["dice"] = dice_scores(label, ref, predictor.classes, predictor.regions)
            if probabilities is not None:
                from ..robustness.calibration import calibration_bins, ece_from_bins

                reference = labels_to_region_masks(ref, predictor.regions) if predictor.regions else ref
                table = calibration_bins(probabilities, reference, activation=predictor.activation)
                tables.append(table)
                entry["ece"] = ece_from_bins(table)
        report["cases"].append(entry)
        if progress is not None:
            progress(n + 1, len(cases))
    if labels is not None:
        report["mean"] = mean_scores([c["dice"] for c in report["cases"]])
        if tables:
            from ..robustness.calibration import ece_from_bins, merge_bins, reliability_diagram

            pooled = merge_bins(tables)
            report["ece"] = ece_from_bins(pooled)
            report["reliability_bins"] = pooled.tolist()
            reliability_diagram({predictor.adapter.config.method: pooled}, out / "reliability.png",
                                title=f"reliability ({Path(images).name})")
        atomic_write_json(out / "summary.json", report)
    return report
