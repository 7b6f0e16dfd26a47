"""Peer benchmark of deformable registration, every method run as a fresh process, as a user runs it.

Methods, side by side in one run on the same pairs and the same thread count (``--threads``):

* ``medfoundry``: the ``medfoundry register`` command (CLI start-up included), default
  settings or ``--preset``;
* ``medfoundry_fast``: the same command with ``--preset brain_mr_fast`` (``--fast-preset``);
* ``convexadam``: the PyPI package's own entry, ``python -m convexAdam.convex_adam_MIND``
  (default settings);
* ``ants_syn``: ANTsPy ``ants.registration(type_of_transform="SyN")`` in a process that reads
  both NIfTI files and writes the transforms.

Peers live in a separate virtual environment (``--peers-python``, default ``.venv-peers``;
create it with ``python3.11 -m venv .venv-peers`` and
``.venv-peers/bin/pip install -c constraints.txt convexadam antspyx``); a missing peer is
reported and the others still run.

Pairs are a Learn2Reg-layout dataset made from the MNI152 template
(:func:`medfoundry.learn2reg.dataset.make_dataset`, the same as ``medfoundry l2r
make-dataset``) with known fields. Per process: wall time, CPU time (user + system of the child
and its children, from ``os.wait4``) and peak RSS. Accuracy from :mod:`medfoundry.learn2reg`:
Dice (mean over labels), DSC30, HD95 (mm), TRE (landmarks, mm), ``err_mm`` (mean distance to
the true field inside the brain, mm), sdlogj, folding. ANTs' transforms become a voxel field
afterwards, outside the timed process, by warping the moving grid's coordinate images (linear
interpolation is exact for a linear function).

The machine's load average is printed with every run: on a shared machine absolute times are
inflated, so compare the same-run ratios (ours / convexadam wall, ours / ANTs CPU; ``fast_*`` for
``medfoundry_fast``).

Example::

    python benchmarks/registration_peers.py --resolution 2 --pairs 3 --threads 2 --out reg_peers_2mm.json
    python benchmarks/registration_peers.py --scaling --methods medfoundry,convexadam --threads 2
    python benchmarks/registration_peers.py --dataset synth --pairs 3 --threads 2 \
        --methods medfoundry,medfoundry_fast,ants_syn
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("medfoundry", "medfoundry_fast", "convexadam", "ants_syn")
OURS = ("medfoundry", "medfoundry_fast")

# The timed ANTs process: read both files, register, record the transform files.
_ANTS_RUN = """
import json, sys
import ants
fixed, moving, prefix = sys.argv[1:4]
out = ants.registration(ants.image_read(fixed), ants.image_read(moving), type_of_transform="SyN",
                        outprefix=prefix, random_seed=0)
json.dump(out["fwdtransforms"], open(prefix + "transforms.json", "w"))
"""

# Untimed: the transforms as a fixed -> moving voxel field, by warping the moving grid's
# coordinate images (outside the moving image: the nearest valid vector).
_ANTS_FIELD = """
import json, sys
import ants, numpy as np
from scipy import ndimage
fixed_path, moving_path, prefix, out = sys.argv[1:5]
fixed, moving = ants.image_read(fixed_path), ants.image_read(moving_path)
transforms = json.load(open(prefix + "transforms.json"))
coords = []
for axis in range(3):
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in moving.shape], indexing="ij")[axis]
    image = ants.from_numpy(grid, origin=moving.origin, spacing=moving.spacing, direction=moving.direction)
    coords.append(ants.apply_transforms(fixed, image, transforms, interpolator="linear",
                                        defaultvalue=-1e6).numpy())
coords = np.stack(coords, -1)
valid = (coords > -1e5).all(-1)
disp = coords - np.stack(np.meshgrid(*[np.arange(s) for s in fixed.shape], indexing="ij"), -1)
if not valid.all():
    _, index = ndimage.distance_transform_edt(~valid, return_indices=True)
    disp = disp[tuple(index)]
np.save(out, disp.astype(np.float32))
"""


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        env[name] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run_process(cmd: list[str], log: Path, threads: int) -> dict[str, Any]:
    """Run ``cmd`` as a fresh process; wall s, CPU s (user + system) and peak RSS (MB) of that child."""
    with open(log, "wb") as out:
        wall = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_thread_env(threads))
        # wait4 reports this child's own resource usage (RUSAGE_CHILDREN would mix all children).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - wall
    proc.returncode = os.waitstatus_to_exitcode(status)
    record = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
              "returncode": proc.returncode, "loadavg": _loadavg()}
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        record["error"] = " | ".join(tail) or f"exit code {proc.returncode}"
    return record


def peer_status(peers_python: Path) -> dict[str, str | None]:
    """``{method: None if it can run, else the reason}``."""
    status: dict[str, str | None] = {name: None for name in OURS}
    modules = {"convexadam": "convexAdam.convex_adam_MIND", "ants_syn": "ants"}
    for method, module in modules.items():
        if not peers_python.exists():
            status[method] = f"no peers interpreter at {peers_python} (see the module docstring)"
            continue
        check = subprocess.run([str(peers_python), "-c", f"import {module}"], capture_output=True, text=True)
        status[method] = None if check.returncode == 0 else (check.stderr.strip().splitlines() or ["?"])[-1]
    return status


def command(method: str, fixed: Path, moving: Path, work: Path, peers_python: Path,
            overrides: list[str], preset: str | None = None) -> tuple[list[str], Path]:
    """The command line of ``method`` and the file its result will be in (``preset``: ours only)."""
    if method in OURS:
        exe = Path(sys.executable).with_name("medfoundry")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "medfoundry"]
        out = work / "disp.nii.gz"
        cmd += ["register", str(fixed), str(moving), "--out", str(out), "--device", "cpu"]
        if preset:
            cmd += ["--preset", preset]
        for item in overrides:
            cmd += ["--set", item]
        return cmd, out
    if method == "convexadam":
        return ([str(peers_python), "-m", "convexAdam.convex_adam_MIND", "-f", str(fixed), "-m", str(moving),
                 "--result_path", str(work)], work / "disp.nii.gz")
    if method == "ants_syn":
        return [str(peers_python), "-c", _ANTS_RUN, str(fixed), str(moving), str(work / "ants_")], work / "ants_"
    raise ValueError(method)


def read_field(method: str, result: Path, fixed: Path, moving: Path, peers_python: Path) -> np.ndarray:
    """The method's output as a (H, W, D, 3) voxel field, fixed -> moving."""
    if method == "ants_syn":
        out = result.with_name("ants_field.npy")
        subprocess.run([str(peers_python), "-c", _ANTS_FIELD, str(fixed), str(moving), str(result), str(out)],
                       check=True, capture_output=True)
        return np.load(out)
    from medfoundry.learn2reg.files import load_displacement

    return load_displacement(result)


def load_truth(root: Path, case: str) -> dict[str, Any]:
    from medfoundry.learn2reg.files import load_displacement, load_volume, read_points_csv

    fixed_labels, spacing = load_volume(root / "labelsTr" / f"SynthMNI_{case}_0000.nii.gz", "labels")
    moving_labels, _ = load_volume(root / "labelsTr" / f"SynthMNI_{case}_0001.nii.gz", "labels")
    mask, _ = load_volume(root / "masksTr" / f"SynthMNI_{case}_0000.nii.gz", "mask")
    return {"fixed_labels": fixed_labels.astype(np.int64), "moving_labels": moving_labels.astype(np.int64),
            "fixed_landmarks": read_points_csv(root / "landmarksTr" / f"SynthMNI_{case}_0000.csv"),
            "moving_landmarks": read_points_csv(root / "landmarksTr" / f"SynthMNI_{case}_0001.csv"),
            "mask": mask > 0, "spacing": tuple(float(s) for s in spacing),
            "true_disp": load_displacement(root / "ground_truth" / f"disp_{case}_{case}.nii.gz")}


def evaluate(truth: dict[str, Any], disp: np.ndarray) -> dict[str, Any]:
    from medfoundry.learn2reg import evaluate_pair_arrays

    record = evaluate_pair_arrays(disp, fixed_labels=truth["fixed_labels"], moving_labels=truth["moving_labels"],
                                  fixed_points=truth["fixed_landmarks"], moving_points=truth["moving_landmarks"],
                                  spacing=truth["spacing"], mask=truth["mask"])
    error = np.linalg.norm((disp - truth["true_disp"]) * np.asarray(truth["spacing"], np.float32), axis=-1)
    keep = {k: record.get(k) for k in ("dice", "hd95_mm", "tre_lm", "sdlogj", "folding_percent")}
    keep["dice_per_label"] = record.get("dice_per_label")
    keep["err_mm"] = float(error[truth["mask"]].mean())
    return keep


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [c[key] for c in cases if c.get(key) is not None]
        return float(np.mean(values)) if values else None

    out = {k: mean(k) for k in ("dice", "hd95_mm", "tre_lm", "err_mm", "sdlogj", "folding_percent",
                                "wall_s", "cpu_s", "peak_rss_mb")}
    # DSC30: mean of the lowest 30 % of all (pair, label) Dice values, as in Learn2Reg.
    per_label = np.sort([v for c in cases for v in (c.get("dice_per_label") or {}).values() if v is not None])
    out["dsc30"] = float(per_label[: max(1, int(np.ceil(0.3 * len(per_label))))].mean()) if len(per_label) else None
    return out


COLUMNS = [("dice", "Dice ↑"), ("dsc30", "DSC30 ↑"), ("hd95_mm", "HD95 mm ↓"), ("tre_lm", "TRE mm ↓"),
           ("err_mm", "field err mm ↓"), ("sdlogj", "sdlogj ↓"), ("folding_percent", "folding % ↓"),
           ("wall_s", "wall s"), ("cpu_s", "CPU s"), ("peak_rss_mb", "peak RSS MB")]


def markdown(results: dict[str, Any], title: str) -> str:
    lines = [f"| {title} | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, entry in results.items():
        if entry.get("missing"):
            lines.append(f"| {name} | missing: {entry['missing']} |" + " |" * (len(COLUMNS) - 1))
            continue
        summary = entry.get("summary", {})
        cells = ["–" if summary.get(k) is None else (f"{summary[k]:.4f}" if k == "folding_percent"
                                                      else f"{summary[k]:.3f}") for k, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def get(method: str, key: str) -> float | None:
        return results.get(method, {}).get("summary", {}).get(key)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    out: dict[str, float | None] = {}
    for ours, prefix in (("medfoundry", "ours"), ("medfoundry_fast", "fast")):
        out.update({f"{prefix}_over_convexadam_wall": ratio(get(ours, "wall_s"), get("convexadam", "wall_s")),
                    f"{prefix}_over_convexadam_cpu": ratio(get(ours, "cpu_s"), get("convexadam", "cpu_s")),
                    f"{prefix}_over_ants_cpu": ratio(get(ours, "cpu_s"), get("ants_syn", "cpu_s")),
                    f"{prefix}_over_ants_wall": ratio(get(ours, "wall_s"), get("ants_syn", "wall_s"))})
    # Accuracy beside speed: a ratio only counts at equal or better Dice than the peer's.
    for ours, prefix in (("medfoundry", "ours"), ("medfoundry_fast", "fast")):
        for peer in ("convexadam", "ants_syn"):
            a, b = get(ours, "dice"), get(peer, "dice")
            out[f"{prefix}_minus_{peer}_dice"] = None if a is None or b is None else a - b
    return out


def run_pairs(pairs: list[tuple[str, Path, Path, dict[str, Any] | None]], names: list[str], peers_python: Path,
              threads: int, overrides: list[str], work: Path, label: str,
              presets: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Every method on every pair, each run a fresh process; methods interleaved within a pair."""
    status = peer_status(peers_python)
    results: dict[str, Any] = {}
    for name in names:
        results[name] = {"missing": status[name]} if status.get(name) else {"cases": []}
        if status.get(name):
            print(f"{name}: missing ({status[name]}); the other methods still run", file=sys.stderr)
    for case, fixed, moving, truth in pairs:
        for name in names:
            if results[name].get("missing"):
                continue
            folder = work / f"{name}_{case}"
            folder.mkdir(parents=True, exist_ok=True)
            cmd, result = command(name, fixed, moving, folder, peers_python, overrides if name in OURS else [],
                                  (presets or {}).get(name))
            record = {"case": case, **run_process(cmd, folder / "log.txt", threads)}
            if "error" not in record and truth is not None:
                record.update(evaluate(truth, read_field(name, result, fixed, moving, peers_python)))
            results[name]["cases"].append(record)
            shown = {k: round(v, 3) for k, v in record.items() if isinstance(v, float)}
            print(f"[{label}] {case} {name}: {record.get('error') or shown} load {record['loadavg']}",
                  file=sys.stderr, flush=True)
    for entry in results.values():
        done = [c for c in entry.get("cases", []) if "error" not in c]
        if "cases" in entry:
            entry["summary"] = summarise(done) if done else {}
    return results


def make_scaling_pair(folder: Path) -> tuple[Path, Path]:
    """A 160 x 224 x 192 pair at 1 mm: an MNI152 crop and its warp by a smooth field (up to 6 voxels)."""
    import importlib.util

    import nibabel as nib

    from medfoundry.randomfields import random_displacement, warp_array

    root = Path(importlib.util.find_spec("nilearn").submodule_search_locations[0]) / "datasets" / "data"
    t1 = np.asarray(nib.load(root / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").dataobj).astype(np.float32)
    t1 = np.pad(t1, ((0, 0), (0, 0), (2, 1)))[18:178, 4:228, :192] / 255.0
    rng = np.random.default_rng(0)
    fixed = warp_array(t1, random_displacement(t1.shape, 6.0, 16.0, rng))
    moving = t1 + 0.01 * rng.standard_normal(t1.shape).astype(np.float32)
    paths = folder / "scaling_fixed.nii.gz", folder / "scaling_moving.nii.gz"
    for path, array in zip(paths, (fixed, moving)):
        nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(path))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=2, help="MNI152 template resolution, mm (1 or 2)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the made dataset")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="an existing dataset from 'medfoundry l2r make-dataset' (default: make one)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every method")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--peers-python", type=Path, default=ROOT / ".venv-peers" / "bin" / "python",
                        help="interpreter of the peers' virtual environment")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a medfoundry registration parameter (passed to 'medfoundry register', "
                             "both medfoundry methods)")
    parser.add_argument("--preset", default=None, help="preset of the 'medfoundry' method (default: its defaults)")
    parser.add_argument("--fast-preset", default="brain_mr_fast", help="preset of the 'medfoundry_fast' method")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (atomically)")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: time and peak RSS on a 160x224x192 1 mm pair, one fresh process per method")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "none"]
    for name in names:
        if name not in METHODS:
            parser.error(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    from medfoundry.utils import atomic_write_json

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.scaling:
            fixed, moving = make_scaling_pair(work)
            pairs = [("scaling", fixed, moving, None)]
            title = "method (160x224x192, 1 mm)"
        else:
            root = args.dataset
            if root is None:
                from medfoundry.learn2reg.dataset import make_dataset

                root = make_dataset(work / "dataset", args.resolution, args.pairs, args.seed)
            cases = [f"{i + 1:04d}" for i in range(args.pairs)]
            pairs = [(c, root / "imagesTr" / f"SynthMNI_{c}_0000.nii.gz", root / "imagesTr" / f"SynthMNI_{c}_0001.nii.gz",
                      load_truth(root, c)) for c in cases]
            title = f"method ({args.resolution} mm, {args.pairs} pairs)"
        presets = {"medfoundry": args.preset, "medfoundry_fast": args.fast_preset}
        results = run_pairs(pairs, names, args.peers_python, args.threads, args.set, work, title, presets)
    report = {"mode": "scaling" if args.scaling else "pairs", "resolution_mm": args.resolution, "pairs": args.pairs,
              "seed": args.seed, "threads": args.threads, "overrides": args.set, "presets": presets,
              "results": results,
              "ratios": ratios(results), "markdown": markdown(results, title)}
    if args.out is not None:
        atomic_write_json(args.out, report)
    print(report["markdown"])
    print(json.dumps(report["ratios"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
