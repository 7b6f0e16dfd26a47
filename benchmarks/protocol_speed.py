"""Speed of the ``brats-gli`` protocol against the official brats-evaluation 0.0.10, same process.

Makes ``--cases`` synthetic BraTS-like glioma cases (240 x 240 x 155, 1 mm, labels NETC 1,
SNFH 2, ET 3; seeded): an irregular tumour (oedema around an enhancing rim around a necrotic
core) with 0-3 satellite lesions, and a prediction that is shifted, has voxels dropped, a
satellite missed, part of the rim called necrosis and a false-positive lesion added. Writes
them as NIfTI, then times, in this process and on one thread, both sides from the files:

* medfoundry: ``evaluate_segmentation(pred_dir, ref_dir, "brats-gli")`` (reads the files,
  scores every case);
* official: brats-evaluation's ``evaluate_single_exam`` per case with the ``gli`` config (on
  panoptica), then its ``parse_seg_results`` (the figures of the leaderboard).

The files are read once beforehand so that both sides find them in the page cache. Prints the
times, their ratio, and whether every figure (``protocol.official_columns()`` against the CSV,
``pq_dice``/``n_ref``/``n_pred`` against panoptica's dict) agrees within ``--tol``; exits 1 if
one does not. brats-evaluation (AGPL-3.0) is a test-only dependency (``dev`` extra).

Usage::

    python benchmarks/protocol_speed.py --cases 3 --seed 0 --out speed.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread on both sides: the ratio is the algorithms'

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from medfoundry.evaluation.protocols import evaluate_segmentation, get_protocol  # noqa: E402
from medfoundry.utils import atomic_write_json  # noqa: E402

SHAPE = (240, 240, 155)


def _ellipsoid(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray, rng: np.random.Generator
               ) -> np.ndarray:
    """An ellipsoid whose radius wobbles with direction (a few random low-order harmonics)."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    rel = [(g - c) / r for g, c, r in zip(grids, centre, radii)]
    dist = np.sqrt(sum(r**2 for r in rel))
    wobble = sum(a * np.cos(f * r + p) for a, f, p, r in
                 zip(rng.uniform(0.03, 0.12, 3), rng.uniform(2, 6, 3), rng.uniform(0, 6.3, 3), rel))
    return dist < 1.0 + wobble


def make_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) label maps of one synthetic glioma case."""
    ref = np.zeros(SHAPE, np.uint8)
    centre = rng.uniform([70, 70, 45], [170, 170, 110])
    radii = rng.uniform(18, 34, 3)
    ref[_ellipsoid(SHAPE, centre, radii, rng)] = 2
    ref[_ellipsoid(SHAPE, centre, radii * rng.uniform(0.45, 0.6), rng)] = 3
    ref[_ellipsoid(SHAPE, centre, radii * rng.uniform(0.25, 0.35), rng)] = 1
    satellites = []
    for _ in range(int(rng.integers(0, 4))):
        mask = _ellipsoid(SHAPE, rng.uniform([30, 30, 20], [210, 210, 135]), rng.uniform(3, 7, 3), rng)
        ref[mask & (ref == 0)] = rng.choice([2, 3])
        satellites.append(mask)
    shift = tuple(int(s) for s in rng.integers(-2, 3, 3))
    pred = np.roll(ref, shift, axis=(0, 1, 2))
    if satellites:  # one satellite missed
        pred[np.roll(satellites[0], shift, axis=(0, 1, 2))] = 0
    rim_to_core = _ellipsoid(SHAPE, centre + rng.normal(0, 4, 3), radii * 0.4, rng) & (pred == 3)
    pred[rim_to_core] = 1
    pred[(rng.random(SHAPE) < 0.01) & (pred > 0)] = 0
    fp = _ellipsoid(SHAPE, rng.uniform([30, 30, 20], [210, 210, 135]), rng.uniform(3, 6, 3), rng)
    pred[fp & (pred == 0)] = 2
    return pred, ref


def write_cases(folder: Path, n: int, seed: int) -> tuple[Path, Path, list[str]]:
    import nibabel as nib

    pred_dir, ref_dir = folder / "pred", folder / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        pred, ref = make_case(rng)
        name = f"BraTS-GLI-{i:05d}-000"
        nib.save(nib.Nifti1Image(ref, np.eye(4)), str(ref_dir / f"{name}-seg.nii.gz"))
        nib.save(nib.Nifti1Image(pred, np.eye(4)), str(pred_dir / f"{name}.nii.gz"))
        names.append(name)
    return pred_dir, ref_dir, names


def run_official(pred_dir: Path, ref_dir: Path, names: list[str], work: Path) -> tuple[list[dict], dict[str, dict]]:
    """brats-evaluation on every case: panoptica's dicts and the parsed CSV rows by case."""
    import pandas as pd
    from importlib.resources import files

    from brats_evaluation import evaluate_single_exam, parse_seg_results
    from panoptica import Panoptica_Evaluator

    raws = []
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = Panoptica_Evaluator.load_from_config(
            str(files("brats_evaluation").joinpath("configs", "config_gli.yaml")))
        for name in names:
            raw = evaluate_single_exam(str(pred_dir / f"{name}.nii.gz"), str(ref_dir / f"{name}-seg.nii.gz"),
                                       name, evaluator)
            if "error" in raw:
                raise RuntimeError(f"brats-evaluation failed on {name}: {raw['error']}")
            raws.append(raw)
        (work / "official.json").write_text(json.dumps({"metrics": raws, "missings": []}, default=float))
        parse_seg_results(str(work / "official.json"), str(work / "official.csv"))
    table = pd.read_csv(work / "official.csv")
    rows = {str(r["subject_id"]): r for r in table.to_dict("records") if str(r["subject_id"]) in names}
    return raws, rows


def _same(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol


def compare(ours: dict, raws: list[dict], rows: dict[str, dict], tol: float) -> tuple[int, list[str], float]:
    """Number of figures compared, the mismatches (one line each), and the largest finite gap."""
    protocol = get_protocol("brats-gli")
    by_case = {c["case"]: c for c in ours["cases"]}
    checked, bad, gap = 0, [], 0.0
    for raw in raws:
        name = raw["subject_name"]
        figures = by_case[name]["figures"]
        for region, values in figures.items():
            pairs = [(key, float(rows[name][f"{stem}_{region}"])) for key, stem in protocol.official_columns().items()]
            pairs += [(key, float(raw[region][official])) for key, official in
                      (("pq_dice", "pq_dsc"), ("n_ref", "n_ref_instances"), ("n_pred", "n_pred_instances"))]
            for key, want in pairs:
                got = float(values[key])
                checked += 1
                if math.isfinite(got) and math.isfinite(want):
                    gap = max(gap, abs(got - want))
                if not _same(got, want, tol):
                    bad.append(f"{name} {region} {key}: medfoundry {got!r}, official {want!r}")
    return checked, bad, gap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3, help="synthetic 240x240x155 cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-6, help="largest accepted gap of a figure")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.cases < 1:
        parser.error(f"--cases must be >= 1, got {args.cases}")
    try:
        import brats_evaluation  # noqa: F401
    except ImportError:
        print("protocol_speed.py: brats-evaluation is not installed (test-only dependency, see "
              "docs/evaluation_protocols.md)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        pred_dir, ref_dir, names = write_cases(work, args.cases, args.seed)
        made = time.perf_counter() - t0
        for path in [*pred_dir.iterdir(), *ref_dir.iterdir()]:
            path.read_bytes()  # into the page cache for both sides
        t0, c0 = time.perf_counter(), time.process_time()
        raws, rows = run_official(pred_dir, ref_dir, names, work)
        official_s, official_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        ours = evaluate_segmentation(pred_dir, ref_dir, "brats-gli")
        ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    failed = [c["case"] for c in ours["cases"] if c["status"] != "ok"]
    checked, bad, gap = compare(ours, raws, rows, args.tol)
    print(f"brats-gli, {args.cases} synthetic {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} cases (seed {args.seed}, made in "
          f"{made:.1f} s), one thread, NIfTI reading included")
    print(f"  brats-evaluation 0.0.10 (panoptica): {official_s:7.2f} s wall, {official_cpu:7.2f} s CPU "
          f"({official_cpu / args.cases:.2f} s CPU/case)")
    print(f"  medfoundry brats-gli:               {ours_s:7.2f} s wall, {ours_cpu:7.2f} s CPU "
          f"({ours_cpu / args.cases:.2f} s CPU/case)")
    print(f"  ratio medfoundry / official: CPU {ours_cpu / official_cpu:.2f}, wall {ours_s / official_s:.2f} "
          "(CPU time is the figure on a shared machine; the process is single-threaded)")
    print(f"  figures compared: {checked}, differing by more than {args.tol:g}: {len(bad)}, "
          f"largest finite gap {gap:.2e}; failed cases: {failed or 'none'}")
    for line in bad[:20]:
        print("   ", line)
    if args.out:
        atomic_write_json(args.out, {"cases": args.cases, "seed": args.seed, "official_s": official_s,
                                     "medfoundry_s": ours_s, "official_cpu_s": official_cpu,
                                     "medfoundry_cpu_s": ours_cpu, "ratio_cpu": ours_cpu / official_cpu,
                                     "ratio_wall": ours_s / official_s,
                                     "figures_compared": checked, "mismatches": bad, "largest_gap": gap,
                                     "tol": args.tol})
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
