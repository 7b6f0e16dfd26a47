"""Peer benchmark of deformable registration on synthetic MNI152 pairs with a known deformation.

Runs, in one process and one table: no registration, medfoundry's hybrid convex + Adam method,
the ``convexadam`` package (PyPI, default settings), ANTsPy SyN (``type_of_transform="SyN"``)
and itk-elastix B-spline (elastix's default ``bspline`` parameter map). Peers are optional
(``pip install medfoundry[peers]``); a peer that does not import is reported as unavailable.

Pairs come from :func:`medfoundry.learn2reg.dataset.make_pair` (MNI152 template, random
smooth deformation, bias fields, contrast change, noise, CSF/GM/WM labels per hemisphere,
landmarks). Metrics come from :mod:`medfoundry.learn2reg`: Dice (mean over
labels), DSC30 (mean of the 30 % lowest per-pair Dice), HD95 (mm), TRE (landmarks, mm),
``err_mm`` (mean displacement error against the true field inside the brain, mm), sdlogj,
folding_percent and runtime (wall seconds per pair, and CPU seconds of the process).

Every method runs with the same thread count (``--threads``, default 1) so the CPU runtimes
compare. Peers' fields are read out convention-free: the method warps the three voxel-coordinate
images of the moving grid (linear interpolation is exact for a linear function), so
``coord(x) - x`` is the fixed -> moving field in voxels whatever the peer's internal frame.

Example::

    python benchmarks/registration_peers.py --resolution 2 --pairs 3 --out reg_peers_2mm.json
    python benchmarks/registration_peers.py --scaling --methods medfoundry,convexadam
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _set_threads(threads: int) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[name] = str(threads)


def _fill_outside(disp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace field vectors where the peer sampled outside the moving image by the nearest valid one."""
    if valid.all():
        return disp
    from scipy import ndimage

    _, index = ndimage.distance_transform_edt(~valid, return_indices=True)
    return disp[tuple(index)]


def _coordinate_images(shape: tuple[int, ...]) -> list[np.ndarray]:
    return [g.astype(np.float32) for g in np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")]


# ---------------------------------------------------------------------------------------------
# Methods: each takes a pair dict and returns a (H, W, D, 3) voxel field, fixed -> moving.
# ---------------------------------------------------------------------------------------------

def run_none(pair: dict[str, Any], threads: int) -> np.ndarray:
    return np.zeros(pair["fixed"].shape + (3,), np.float32)


def run_ours(pair: dict[str, Any], threads: int, **overrides: Any) -> np.ndarray:
    import torch

    from medfoundry.registration.api import register_images

    torch.set_num_threads(threads)
    return register_images(pair["fixed"], pair["moving"], preset="brain_mr", device="cpu", **overrides).disp


def run_convexadam(pair: dict[str, Any], threads: int) -> np.ndarray:
    import torch
    from convexAdam.convex_adam_MIND import convex_adam_pt

    torch.set_num_threads(threads)
    disp = convex_adam_pt(pair["fixed"], pair["moving"], device=torch.device("cpu"))
    return np.asarray(disp, dtype=np.float32)


def run_ants(pair: dict[str, Any], threads: int) -> np.ndarray:
    import ants

    spacing = tuple(float(s) for s in pair["spacing"])
    fixed = ants.from_numpy(pair["fixed"].astype(np.float32), spacing=spacing)
    moving = ants.from_numpy(pair["moving"].astype(np.float32), spacing=spacing)
    result = ants.registration(fixed, moving, type_of_transform="SyN", random_seed=0)
    shape = pair["fixed"].shape
    coords = []
    for grid in _coordinate_images(shape):
        image = ants.from_numpy(grid, spacing=spacing)
        warped = ants.apply_transforms(fixed, image, result["fwdtransforms"], interpolator="linear",
                                       defaultvalue=-1e6)
        coords.append(warped.numpy())
    return _field_from_coords(coords, shape)


def _field_from_coords(coords: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    stacked = np.stack(coords, axis=-1).astype(np.float32)
    valid = (stacked > -1e5).all(axis=-1)
    disp = stacked - np.stack(_coordinate_images(shape), axis=-1)
    return _fill_outside(disp, valid).astype(np.float32)


def run_elastix(pair: dict[str, Any], threads: int) -> np.ndarray:
    import itk

    spacing = [float(s) for s in pair["spacing"]]

    def to_itk(array: np.ndarray):
        # ITK's array view is (z, y, x); transpose so ITK index i follows our axis 0.
        image = itk.image_from_array(np.ascontiguousarray(array.astype(np.float32).transpose(2, 1, 0)))
        image.SetSpacing(spacing)
        return image

    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("bspline"))
    with tempfile.TemporaryDirectory() as tmp:
        _, result_params = itk.elastix_registration_method(
            to_itk(pair["fixed"]), to_itk(pair["moving"]), parameter_object=params, log_to_console=False,
            output_directory=tmp, number_of_threads=threads)
    result_params.SetParameter("DefaultPixelValue", "-1000000")
    result_params.SetParameter("FinalBSplineInterpolationOrder", "1")
    shape = pair["fixed"].shape
    coords = []
    for grid in _coordinate_images(shape):
        warped = itk.transformix_filter(to_itk(grid), result_params)
        coords.append(itk.array_from_image(warped).transpose(2, 1, 0))
    return _field_from_coords(coords, shape)


METHODS: dict[str, tuple[Callable[..., np.ndarray], str | None]] = {
    "none": (run_none, None),
    "medfoundry": (run_ours, "medfoundry.registration.api"),
    "convexadam": (run_convexadam, "convexAdam.convex_adam_MIND"),
    "ants_syn": (run_ants, "ants"),
    "elastix_bspline": (run_elastix, "itk"),
}


def available(module: str | None) -> tuple[bool, str]:
    """Import the method's module now, so import time never counts as runtime."""
    if module is None:
        return True, ""
    try:
        importlib.import_module(module)
        if module == "itk":
            import itk

            itk.ParameterObject  # noqa: B018  (the elastix wrapping is a separate wheel)
    except Exception as err:  # noqa: BLE001  (any import failure makes the peer unavailable)
        return False, f"{type(err).__name__}: {err}"
    return True, ""


# ---------------------------------------------------------------------------------------------

def evaluate(pair: dict[str, Any], disp: np.ndarray) -> dict[str, Any]:
    from medfoundry.learn2reg import evaluate_pair_arrays

    record = evaluate_pair_arrays(disp, fixed_labels=pair["fixed_labels"], moving_labels=pair["moving_labels"],
                                  fixed_points=pair["fixed_landmarks"], moving_points=pair["moving_landmarks"],
                                  spacing=pair["spacing"], mask=pair["mask"])
    error = np.linalg.norm((disp - pair["true_disp"]) * np.asarray(pair["spacing"], np.float32), axis=-1)
    keep = {k: record.get(k) for k in ("dice", "hd95_mm", "tre_lm", "sdlogj", "folding_percent")}
    keep["dice_per_label"] = record.get("dice_per_label")
    keep["err_mm"] = float(error[pair["mask"]].mean())
    return keep


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [c[key] for c in cases if c.get(key) is not None]
        return float(np.mean(values)) if values else None

    out = {k: mean(k) for k in ("dice", "hd95_mm", "tre_lm", "err_mm", "sdlogj", "folding_percent",
                                "runtime_s", "cpu_s")}
    # DSC30: mean of the lowest 30 % of all (pair, label) Dice values, as in Learn2Reg.
    per_label = [v for c in cases for v in (c.get("dice_per_label") or {}).values() if v is not None]
    if per_label:
        per_label = np.sort(per_label)
        out["dsc30"] = float(per_label[: max(1, int(np.ceil(0.3 * len(per_label))))].mean())
    else:
        out["dsc30"] = None
    return out


def markdown(results: dict[str, Any], resolution: int) -> str:
    cols = [("dice", "Dice ↑"), ("dsc30", "DSC30 ↑"), ("hd95_mm", "HD95 mm ↓"), ("tre_lm", "TRE mm ↓"),
            ("err_mm", "field err mm ↓"), ("sdlogj", "sdlogj ↓"), ("folding_percent", "folding % ↓"),
            ("runtime_s", "wall s/pair"), ("cpu_s", "CPU s/pair")]
    lines = [f"| method ({resolution} mm) | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, entry in results.items():
        if not entry.get("available", True):
            lines.append(f"| {name} | unavailable: {entry.get('reason', '')} |" + " |" * (len(cols) - 1))
            continue
        summary = entry["summary"]
        cells = []
        for key, _ in cols:
            value = summary.get(key)
            cells.append("–" if value is None else (f"{value:.4f}" if key == "folding_percent" else f"{value:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scaling_pair(path: Path) -> None:
    """A 160 x 224 x 192 pair: MNI152 1 mm crop and its warp by a smooth field (up to 6 voxels)."""
    import importlib.util

    import nibabel as nib

    from medfoundry.randomfields import random_displacement, warp_array

    root = Path(importlib.util.find_spec("nilearn").submodule_search_locations[0]) / "datasets" / "data"
    t1 = np.asarray(nib.load(root / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").dataobj).astype(np.float32)
    t1 = np.pad(t1, ((0, 0), (0, 0), (2, 1)))[18:178, 4:228, :192] / 255.0
    rng = np.random.default_rng(0)
    fixed = warp_array(t1, random_displacement(t1.shape, 6.0, 16.0, rng))
    moving = t1 + 0.01 * rng.standard_normal(t1.shape).astype(np.float32)
    np.savez(path, fixed=fixed.astype(np.float32), moving=moving.astype(np.float32))


def _scaling_worker(method: str, path: str, threads: int) -> dict[str, Any]:
    """Run one method on the saved pair in this (fresh) process; peak RSS covers only this run."""
    import resource

    _set_threads(threads)
    data = np.load(path)
    pair = {"fixed": data["fixed"], "moving": data["moving"], "spacing": (1.0, 1.0, 1.0)}
    fn, module = METHODS[method]
    if module:
        importlib.import_module(module)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    fn(pair, threads)
    return {"method": method, "shape": list(pair["fixed"].shape), "threads": threads,
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": before,
            "loadavg": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None}


def scaling(methods: list[str], threads: int) -> list[dict[str, Any]]:
    """Time and peak memory of each method on a 160 x 224 x 192 pair, each in a fresh process."""
    import multiprocessing

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pair.npz")
        _scaling_pair(Path(path))
        context = multiprocessing.get_context("spawn")
        for method in methods:
            ok, reason = available(METHODS[method][1])
            if not ok:
                out.append({"method": method, "available": False, "reason": reason})
                continue
            with context.Pool(1) as pool:
                out.append(pool.apply(_scaling_worker, (method, path, threads)))
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=2, help="MNI152 template resolution, mm (1 or 2)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="first pair seed (pairs use seed, seed+1, ...)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every method")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a medfoundry registration parameter")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (atomically)")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: time and peak RSS on a 160x224x192 pair, one fresh process per method")
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    if args.scaling:
        names = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "none"]
        rows = scaling(names, args.threads)
        if args.out is not None:
            from medfoundry.utils import atomic_write_json

            atomic_write_json(args.out, {"scaling": rows})
        print(json.dumps(rows, indent=1))
        return 0

    from medfoundry.registration.presets import parse_overrides
    from medfoundry.learn2reg.dataset import make_pair
    from medfoundry.utils import atomic_write_json

    overrides = parse_overrides(args.set)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    results: dict[str, Any] = {}
    for name in names:
        if name not in METHODS:
            parser.error(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        ok, reason = available(METHODS[name][1])
        results[name] = {"available": ok, "cases": []} if ok else {"available": False, "reason": reason}
    for index in range(args.pairs):
        seed = args.seed + index
        pair = make_pair(args.resolution, seed)
        for name in names:
            if not results[name]["available"]:
                continue
            fn = METHODS[name][0]
            kwargs = overrides if name == "medfoundry" else {}
            wall = time.perf_counter()
            cpu = time.process_time()
            try:
                disp = fn(pair, args.threads, **kwargs)
            except Exception as err:  # noqa: BLE001  (a failing peer is reported, not fatal)
                results[name]["cases"].append({"seed": seed, "error": f"{type(err).__name__}: {err}"})
                print(f"[{args.resolution} mm] pair {seed} {name}: FAILED {err}", file=sys.stderr)
                continue
            record = {"seed": seed, "runtime_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
            record.update(evaluate(pair, disp))
            results[name]["cases"].append(record)
            print(f"[{args.resolution} mm] pair {seed} {name}: dice {record['dice']:.3f} tre {record['tre_lm']:.3f} "
                  f"fold% {record['folding_percent']:.4f} wall {record['runtime_s']:.1f}s cpu {record['cpu_s']:.1f}s",
                  file=sys.stderr, flush=True)
    for name, entry in results.items():
        if entry.get("available"):
            done = [c for c in entry["cases"] if "error" not in c]
            entry["summary"] = summarise(done) if done else {}
    report = {"resolution_mm": args.resolution, "pairs": args.pairs, "seed": args.seed, "threads": args.threads,
              "overrides": overrides, "results": results, "markdown": markdown(results, args.resolution)}
    if args.out is not None:
        atomic_write_json(args.out, report)
    print(report["markdown"])
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "cases"} for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
