"""Evaluate a folder of Learn2Reg displacement fields, pair by pair, as the challenge does.

Every pair is read, scored with :mod:`medfoundry.learn2reg.metrics` and recorded; a pair that
cannot be read is listed with its error while the others go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import RegistrationError
from ..io.volumes import read_nifti_header
from ..utils import atomic_write_json
from .config import EvaluationConfig, EvaluationMethod, load_evaluation_config
from .files import (Learn2RegDataset, Pair, find_field, load_displacement, load_spacing, load_volume, read_json,
                    read_points_csv, related_path)
from .metrics import (HARD_FRACTION, RESULTS_FORMAT, _check_field, dice_per_label, displacement_at,
                      hardest_fraction_mean, hd95_per_label, jacobian_statistics, sdlogj_official,
                      target_registration_error, warp_labels)

__all__ = [
    "config_from_dataset",
    "evaluate_pair_arrays",
    "evaluate_fields",
    "load_runtimes",
]


# --------------------------------------------------------------------------------------------
# Evaluation of one pair (arrays) and of a folder of fields
# --------------------------------------------------------------------------------------------


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _mean_present(values: Mapping[int, float]) -> float:
    arr = np.array([v for v in values.values() if not math.isnan(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def evaluate_pair_arrays(disp: np.ndarray, *, fixed_labels: np.ndarray | None = None,
                         moving_labels: np.ndarray | None = None, labels: Sequence[int] | None = None,
                         fixed_points: np.ndarray | None = None, moving_points: np.ndarray | None = None,
                         spacing: Sequence[float] | None = None, moving_spacing: Sequence[float] | None = None,
                         mask: np.ndarray | None = None, official_only: bool = False,
                         hd95: bool = True, hd95_penalty: float | None = None,
                         points_key: str = "tre_lm", jacobian: bool = True) -> dict[str, Any]:
    """All metrics of one pair held in memory (what :func:`evaluate_fields` computes per file).

    Args:
        disp: (H, W[, D], ndim) voxels, fixed -> moving.
        fixed_labels, moving_labels: label maps (fixed grid / moving grid) for Dice and HD95.
        labels: labels to score; default all nonzero labels of the fixed map.
        fixed_points, moving_points: (N, ndim) voxel coordinates for TRE.
        spacing: fixed voxel size in mm (HD95 in mm); default 1.
        moving_spacing: voxel size scaling TRE (officially the moving image's); default ``spacing``.
        mask: fixed mask for the Jacobian figures.
        official_only: only the challenge's figures (Dice, HD95 in voxels, TRE, sdlogj_official).
        hd95: compute HD95 (the slowest metric).
        hd95_penalty: HD95 (voxels) of a label the warp loses; mm mode scales it by the largest
            spacing. Default: the image diagonal.
        points_key: results key of the TRE (``tre_lm`` or ``tre_kp``).
        jacobian: compute the Jacobian figures.

    Returns:
        A case record: ``dice``, ``dice_per_label``, ``dice_initial_per_label``, ``hd95`` ...,
        ``{points_key}``, ``{points_key}_per_point`` ..., Jacobian figures. NaN -> ``None``.
    """
    disp = np.asarray(disp, dtype=np.float32)
    shape = disp.shape[:-1]
    ndim = len(shape)
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * ndim))
    record: dict[str, Any] = {}
    if fixed_labels is not None and moving_labels is not None:
        fixed_labels = np.asarray(fixed_labels)
        moving_labels = np.asarray(moving_labels)
        _check_field(disp, fixed_labels.shape, "evaluate_pair_arrays")
        if labels is None:
            labels = [int(v) for v in np.unique(fixed_labels) if v != 0]
        warped = warp_labels(moving_labels, disp)
        dice = dice_per_label(fixed_labels, moving_labels, warped, labels)
        initial = dice_per_label(fixed_labels, moving_labels, moving_labels if moving_labels.shape == fixed_labels.shape
                                 else warp_labels(moving_labels, np.zeros_like(disp)), labels)
        record["dice"] = _nan_to_none(_mean_present(dice))
        record["dice_per_label"] = {str(k): _nan_to_none(v) for k, v in dice.items()}
        record["dice_initial"] = _nan_to_none(_mean_present(initial))
        record["dice_initial_per_label"] = {str(k): _nan_to_none(v) for k, v in initial.items()}
        if hd95:
            penalty = hd95_penalty if hd95_penalty is not None else float(np.linalg.norm(shape))
            hd = hd95_per_label(fixed_labels, moving_labels, warped, labels, None, penalty)
            record["hd95"] = _nan_to_none(_mean_present(hd))
            record["hd95_per_label"] = {str(k): _nan_to_none(v) for k, v in hd.items()}
            if not official_only:
                hd_mm = hd95_per_label(fixed_labels, moving_labels, warped, labels, spacing, penalty * max(spacing))
                record["hd95_mm"] = _nan_to_none(_mean_present(hd_mm))
                record["hd95_mm_per_label"] = {str(k): _nan_to_none(v) for k, v in hd_mm.items()}
    if fixed_points is not None and moving_points is not None:
        scale = moving_spacing if moving_spacing is not None else spacing
        tre = target_registration_error(fixed_points, moving_points, disp, scale)
        tre0 = target_registration_error(fixed_points, moving_points, None, scale)
        record[points_key] = float(tre.mean()) if tre.size else None
        record[f"{points_key}_per_point"] = [float(v) for v in tre]
        record[f"{points_key}_initial"] = float(tre0.mean()) if tre0.size else None
        record[f"{points_key}_initial_per_point"] = [float(v) for v in tre0]
    if not jacobian:
        return record
    if official_only:
        record["sdlogj_official"] = _nan_to_none(sdlogj_official(disp, mask))
    else:
        stats = jacobian_statistics(disp, mask)
        record.update({k: _nan_to_none(v) for k, v in stats.items()})
    return record


def config_from_dataset(dataset: Learn2RegDataset, split: str) -> EvaluationConfig:
    """An evaluation config for a dataset without an official one.

    Metrics follow the files that exist for the first pair: Dice and HD95 over the labels of the
    dataset JSON's ``labels`` entry (else 1..max found later) when ``labelsTr`` holds the fixed
    label, TRE when ``landmarksTr``/``keypointsTr`` hold the fixed points; SDlogJ always.
    ``masked_evaluation`` is read from the dataset JSON (default false).
    """
    pairs = dataset.pairs(split)
    if not pairs:
        raise RegistrationError(f"{dataset.json_path}: [registration_{split}] holds no pairs")
    first = pairs[0]
    methods = [EvaluationMethod("LogJacDetStd", "sdlogj")]
    if dataset.label_path(first.fixed).is_file():
        label_names = dataset.meta.get("labels", {})
        if isinstance(label_names, dict) and "0" in label_names and isinstance(label_names["0"], dict):
            label_names = label_names["0"]
        labels = tuple(sorted(int(k) for k in label_names if str(k).isdigit() and int(k) != 0)) if isinstance(
            label_names, dict) else ()
        methods.append(EvaluationMethod("DSC", "dice", labels))
        methods.append(EvaluationMethod("HD95", "hd95", labels))
    for dest, name in (("landmarks", "TRE_lm"), ("keypoints", "TRE_kp")):
        if dataset.points_path(first.fixed, dest).is_file():
            methods.append(EvaluationMethod(name, "tre", (), dest))
    shape = dataset.image_shape
    return EvaluationConfig(
        task_name=dataset.name,
        methods=methods,
        expected_shape=None if shape is None else tuple(shape) + (len(shape),),
        pairs=pairs,
        masked=bool(dataset.meta.get("masked_evaluation", False)),
        version=None,
        source=str(dataset.json_path),
    )


def load_runtimes(runtimes: str | Path | Mapping[str, float] | None) -> dict[str, float]:
    """Per-pair runtimes (seconds) from a dict or a JSON file ``{pair_id or field stem: seconds}``.

    Keys may be ``FFFF_MMMM`` or ``disp_FFFF_MMMM`` (long names alike); they are normalised to
    the pair id without ``disp_``.
    """
    if runtimes is None:
        return {}
    if not isinstance(runtimes, Mapping):
        path = Path(runtimes)
        runtimes = read_json(path, "runtime file")
        if not isinstance(runtimes, Mapping):
            raise RegistrationError(f"{path}: expected an object {{pair id: seconds}}")
    out = {}
    for key, value in runtimes.items():
        key = str(key)
        for suffix in (".nii.gz", ".npz", ".nii"):
            key = key[: -len(suffix)] if key.endswith(suffix) else key
        key = key[len("disp_"):] if key.startswith("disp_") else key
        try:
            out[key] = float(value)
        except (TypeError, ValueError) as err:
            raise RegistrationError(f"runtimes: [{key}] expected seconds as a number, got {value!r}") from err
    return out


def _label_map(path: Path, what: str) -> tuple[np.ndarray, tuple[float, ...]]:
    data, spacing = load_volume(path, what)
    return np.rint(np.asarray(data, dtype=np.float64)).astype(np.int32), spacing


def _spacing_for(dataset_root: Path, image_rel: str, candidates: Sequence[Path]) -> tuple[tuple[float, ...], str]:
    """Voxel size from the image, else from its mask or label (images may be absent)."""
    for path in [dataset_root / image_rel, *candidates]:
        if path.is_file():
            return load_spacing(path), str(path)
    raise RegistrationError(f"{dataset_root / image_rel}: cannot find the voxel size (no image, mask or label file)")


def _header_shape(root: Path, pair: Pair) -> tuple[int, ...] | None:
    """Spatial shape of the fixed image (or its mask) from the NIfTI header, if either exists."""
    for path in (root / pair.fixed, related_path(root, pair.fixed, "masks")):
        if path.is_file():
            return read_nifti_header(path, "fixed image", RegistrationError)[0][:3]
    return None


@dataclass
class _PairInputs:
    fixed_labels: np.ndarray | None = None
    moving_labels: np.ndarray | None = None
    points: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    mask: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    moving_spacing: tuple[float, ...] | None = None
    notes: list[str] | None = None


def _load_pair_inputs(root: Path, pair: Pair, config: EvaluationConfig) -> _PairInputs:
    inputs = _PairInputs(points={}, notes=[])
    keys = set(config.metrics)
    fixed_label_path = related_path(root, pair.fixed, "labels")
    moving_label_path = related_path(root, pair.moving, "labels")
    fixed_mask_path = related_path(root, pair.fixed, "masks")
    if keys & {"dice", "hd95"}:
        inputs.fixed_labels, inputs.spacing = _label_map(fixed_label_path, f"fixed label map of pair {pair.pair_id}")
        inputs.moving_labels, _ = _label_map(moving_label_path, f"moving label map of pair {pair.pair_id}")
    if inputs.spacing is None:
        inputs.spacing, _ = _spacing_for(root, pair.fixed, [fixed_mask_path, fixed_label_path])
    for method in config.methods:
        if method.metric != "tre":
            continue
        fixed_pts = read_points_csv(related_path(root, pair.fixed, method.dest, ".csv"))
        moving_pts = read_points_csv(related_path(root, pair.moving, method.dest, ".csv"))
        if fixed_pts.shape != moving_pts.shape:
            raise RegistrationError(f"pair {pair.pair_id}: {method.dest} files hold {fixed_pts.shape[0]} fixed and "
                                    f"{moving_pts.shape[0]} moving points")
        inputs.points[method.key] = (fixed_pts, moving_pts)
    if inputs.points:
        moving_mask = related_path(root, pair.moving, "masks")
        moving_label = related_path(root, pair.moving, "labels")
        if any(p.is_file() for p in (root / pair.moving, moving_mask, moving_label)):
            inputs.moving_spacing, _ = _spacing_for(root, pair.moving, [moving_mask, moving_label])
        else:
            inputs.moving_spacing = inputs.spacing
            inputs.notes.append("moving voxel size unknown (no moving image, mask or label): used the fixed one")
    if config.masked:
        if fixed_mask_path.is_file():
            inputs.mask = np.asarray(load_volume(fixed_mask_path, "fixed mask")[0]) > 0
        else:
            inputs.notes.append(f"masked evaluation but {fixed_mask_path} is missing: Jacobian over the whole field")
    return inputs


def _initial_record(inputs: _PairInputs, config: EvaluationConfig) -> dict[str, Any]:
    """Figures of the unregistered pair (used for DSC30/TRE30 and to fill failed pairs)."""
    rec: dict[str, Any] = {}
    labels = config.labels_for("dice") or config.labels_for("hd95")
    if inputs.fixed_labels is not None and inputs.fixed_labels.shape == inputs.moving_labels.shape:
        labels = labels or tuple(int(v) for v in np.unique(inputs.fixed_labels) if v != 0)
        initial = dice_per_label(inputs.fixed_labels, inputs.moving_labels, inputs.moving_labels, labels)
        rec["dice_initial"] = _nan_to_none(_mean_present(initial))
        rec["dice_initial_per_label"] = {str(k): _nan_to_none(v) for k, v in initial.items()}
    for key, (fp, mp) in (inputs.points or {}).items():
        tre0 = target_registration_error(fp, mp, None, inputs.moving_spacing or inputs.spacing)
        rec[f"{key}_initial"] = float(tre0.mean()) if tre0.size else None
        rec[f"{key}_initial_per_point"] = [float(v) for v in tre0]
    return rec


def _aggregate(cases: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [c for c in cases if c.get("status") == "ok"]
    agg: dict[str, Any] = {}
    scalar_keys = ["dice", "dice_initial", "hd95", "hd95_mm", "tre_lm", "tre_lm_initial", "tre_kp", "tre_kp_initial",
                   "sdlogj_official", "sdlogj", "folding_percent", "ndv_percent", "jacobian_min", "runtime_s"]
    for key in scalar_keys:
        vals = np.array([c[key] for c in ok if c.get(key) is not None], dtype=np.float64)
        if vals.size:
            agg[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size)}
    dice, dice0 = [], []
    for c in ok:
        for label, value in (c.get("dice_per_label") or {}).items():
            dice.append(np.nan if value is None else value)
            init = (c.get("dice_initial_per_label") or {}).get(label)
            dice0.append(np.nan if init is None else init)
    if dice:
        agg["dsc30"] = _nan_to_none(hardest_fraction_mean(dice, dice0, HARD_FRACTION, "low"))
    for key in ("tre_lm", "tre_kp"):
        tre, tre0 = [], []
        for c in ok:
            tre.extend(c.get(f"{key}_per_point") or [])
            tre0.extend(c.get(f"{key}_initial_per_point") or [])
        if tre:
            agg[f"{key}30"] = _nan_to_none(hardest_fraction_mean(tre, tre0, HARD_FRACTION, "high"))
    return agg


def evaluate_fields(dataset_dir: str | Path, fields_dir: str | Path, split: str = "val", *,
                    config: str | Path | EvaluationConfig | None = None, method_name: str | None = None,
                    official_only: bool = False, runtimes: str | Path | Mapping[str, float] | None = None,
                    out: str | Path | None = None, progress: bool = False,
                    on_pair: Callable[[Pair, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate a folder of displacement fields against a Learn2Reg-layout dataset.

    Args:
        dataset_dir: dataset root (dataset JSON, imagesTr, labelsTr, masksTr, landmarksTr ...).
            With an official ``config`` the dataset JSON is optional.
        fields_dir: folder of ``disp_*.nii.gz`` / ``.npz`` fields.
        split: ``val`` or ``test`` (ignored when ``config`` lists the pairs).
        config: an official evaluation config (path or object): its pairs, metrics, labels,
            expected shape and masking are used exactly. Default: derived from the dataset.
        method_name: name of the method in the results (default: the fields folder's name).
        official_only: compute only the challenge's figures.
        runtimes: per-pair runtimes in seconds (dict or JSON file, see :func:`load_runtimes`).
        out: write the results JSON here (atomically).
        progress: show a rich progress bar.
        on_pair: called after every pair with the pair and its record.

    Returns:
        The results dict (``format`` = ``medfoundry.l2r.results/1``): ``method``, ``task``,
        ``split``, ``metrics``, ``cases`` (one record per pair, ``status`` ok or failed),
        ``failed`` (pair, file, error), ``aggregates`` (mean/std/n per figure, ``dsc30``,
        ``tre_lm30``/``tre_kp30``) and ``hd95_penalty``. A pair whose field is missing or bad
        fails on its own; the others are still evaluated.

    Raises:
        RegistrationError: the dataset, config or split cannot be used at all.
    """
    root = Path(dataset_dir)
    fields_dir = Path(fields_dir)
    if not root.is_dir():
        raise RegistrationError(f"{root}: dataset folder not found")
    if not fields_dir.is_dir():
        raise RegistrationError(f"{fields_dir}: fields folder not found")
    if config is None:
        cfg = config_from_dataset(Learn2RegDataset(root), split)
    elif isinstance(config, EvaluationConfig):
        cfg = config
    else:
        cfg = load_evaluation_config(config)
    times = load_runtimes(runtimes)
    label_list = cfg.labels_for("dice") or cfg.labels_for("hd95") or None
    want_hd95 = "hd95" in cfg.metrics
    want_labels = bool({"dice", "hd95"} & set(cfg.metrics))
    hd95_penalty = None
    if cfg.expected_shape is not None:
        hd95_penalty = float(np.linalg.norm(cfg.expected_shape[:-1]))
    cases: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []

    iterator: Any = cfg.pairs
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task(f"evaluating {cfg.task_name}", total=len(cfg.pairs))
    try:
        for pair in iterator:
            record: dict[str, Any] = {"pair_id": pair.pair_id, "fixed": pair.fixed, "moving": pair.moving,
                                      "field": None, "status": "failed"}
            t0 = time.perf_counter()
            inputs = None
            try:
                inputs = _load_pair_inputs(root, pair, cfg)
                record.update(_initial_record(inputs, cfg))
                path = find_field(fields_dir, pair)
                record["field"] = str(path)
                shape = cfg.expected_shape
                if shape is None and inputs.fixed_labels is not None:
                    shape = inputs.fixed_labels.shape
                if shape is None:
                    shape = _header_shape(root, pair)
                disp = load_displacement(path, shape, pair)
                if hd95_penalty is None:
                    hd95_penalty = float(np.linalg.norm(disp.shape[:-1]))
                record.update(evaluate_pair_arrays(
                    disp,
                    fixed_labels=inputs.fixed_labels if want_labels else None,
                    moving_labels=inputs.moving_labels if want_labels else None,
                    labels=label_list, spacing=inputs.spacing, mask=inputs.mask,
                    official_only=official_only, hd95=want_hd95, hd95_penalty=hd95_penalty,
                ))
                if "dice" not in cfg.metrics:
                    for k in ("dice", "dice_per_label", "dice_initial", "dice_initial_per_label"):
                        record.pop(k, None)
                if inputs.points:
                    keys = list(inputs.points)
                    sampled = displacement_at(disp, [inputs.points[k][0] for k in keys])
                    scale = inputs.moving_spacing or inputs.spacing
                    for key, u_at in zip(keys, sampled):
                        fixed_points, moving_points = inputs.points[key]
                        tre = np.linalg.norm((fixed_points + u_at - moving_points) * np.asarray(scale), axis=1)
                        record[key] = float(tre.mean()) if tre.size else None
                        record[f"{key}_per_point"] = [float(v) for v in tre]
                if pair.pair_id in times:
                    record["runtime_s"] = times[pair.pair_id]
                if inputs.notes:
                    record["notes"] = inputs.notes
                record["status"] = "ok"
            except (RegistrationError, ValueError, OSError) as err:
                record["error"] = str(err)
                failed.append({"pair_id": pair.pair_id, "fixed": pair.fixed, "moving": pair.moving,
                               "field": record.get("field"), "error": str(err)})
            record["eval_seconds"] = round(time.perf_counter() - t0, 3)
            cases.append(record)
            if on_pair is not None:
                on_pair(pair, record)
            if bar is not None:
                bar.advance(task_id)
    finally:
        if bar is not None:
            bar.stop()

    metrics = list(cfg.metrics)
    if not official_only:
        extra = ["sdlogj", "folding_percent", "ndv_percent"]
        if want_hd95:
            extra.insert(0, "hd95_mm")
        metrics += [m for m in extra if m not in metrics]
    if times:
        metrics.append("runtime_s")
    results = {
        "format": RESULTS_FORMAT,
        "method": method_name or fields_dir.resolve().name,
        "task": cfg.task_name,
        "split": split,
        "dataset": str(root),
        "fields": str(fields_dir),
        "config": cfg.source,
        "official_only": official_only,
        "masked_evaluation": cfg.masked,
        "metrics": metrics,
        "official_names": {m.name: m.key for m in cfg.methods},
        "labels": None if label_list is None else list(label_list),
        "hd95_penalty": hd95_penalty,
        "n_pairs": len(cfg.pairs),
        "n_failed": len(failed),
        "cases": cases,
        "failed": failed,
        "aggregates": _aggregate(cases),
    }
    if out is not None:
        atomic_write_json(out, results)
    return results
