"""Robustness to scanner shifts on brain-tumour phantoms: Dice per corruption and severity for
each test-time method, with 95 % intervals, and the goal verdicts.

Steps (each skipped when its output exists, so a cut run resumes): phantoms (nnU-Net folder) ->
patch training per seed (``--steps``, or a ``--minutes`` budget) -> shifted copies of the
held-out cases (``medfoundry.robustness.shifts``) -> ``predict_folder`` for none / tta / entropy /
etta (first seed), the mean ensemble of all seeds (and with ``--members`` every other seed
alone, to compare the ensemble with its average member) -> ``OUT/shift.json``, ``OUT/shift.md``,
``OUT/shift_vs_severity.{png,svg}`` and reliability diagrams per method at the middle severity.
``--runs R0,R1,R2 --images imagesTs --labels labelsTs`` scores your own runs on your own folder.

Score: mean Dice over the regions (WT, TC, ET) per case, averaged over cases. Intervals are 95 %
percentile intervals over case resamples shared by every method and condition (the shifted
folders hold the same cases), so each method is compared with ``none`` paired, case by case; the
goals and their rules are those of the 2D benchmark (``medfoundry.robustness.shift_report``): at
the middle severity, averaged over corruptions, the best method recovers at least 50 % of the
Dice lost to the shift; in distribution each method changes Dice by at most 0.01; a method whose
paired interval lies below 0 is listed as hurting.

Usage::

    python benchmarks/shift.py --out bench_out/shift3d --steps 800 --seeds 3 --cases 16 \\
        --test-cases 10 --corruptions bias,gamma,gaussian,blur,motion --severities 1,3,5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medfoundry.robustness.shift_report import (IN_DIST, add_paired_changes, markdown, per_case_replicates,
                                              percentile_ci, plot, recovery_verdicts)
from medfoundry.utils import atomic_write_json, atomic_write_text

METRIC = "mean Dice over the regions or foreground classes"


def _score(report) -> np.ndarray:
    return np.array([np.nanmean(list(c["dice"].values())) for c in report["cases"]], dtype=np.float64)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/shift3d")
    ap.add_argument("--runs", default=None, help="comma-separated `segment train` runs to score instead of training "
                                                 "(the first is the single model, all make the ensemble); "
                                                 "needs --images and --labels")
    ap.add_argument("--images", default=None, help="held-out images folder (nnU-Net imagesTs) for --runs")
    ap.add_argument("--labels", default=None, help="its labels folder (labelsTs)")
    ap.add_argument("--steps", type=int, default=800, help="optimizer steps per seed")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock training budget per seed instead")
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--test-cases", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds; >1 adds the mean ensemble")
    ap.add_argument("--corruptions", default="bias,gamma,gaussian,blur,motion")
    ap.add_argument("--severities", default="1,3,5")
    ap.add_argument("--methods", default="none,tta,entropy,etta")
    ap.add_argument("--members", action="store_true",
                    help="also predict every other seed alone, to compare the ensemble with its average member "
                         "(two more passes per case and condition)")
    ap.add_argument("--ensemble-adapt", default="",
                    help="comma-separated methods also run on the ensemble's members (variants "
                         "'ensemble+<method>', e.g. entropy)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.runs and not (args.images and args.labels):
        ap.error("--runs needs --images and --labels (the held-out folder to shift)")
    from medfoundry.robustness.adapt import ADAPT_METHODS

    # checked here, not after 30 minutes of training
    for option, text in (("--methods", args.methods), ("--ensemble-adapt", args.ensemble_adapt)):
        bad = [m for m in (x.strip() for x in text.split(",")) if m and m not in ADAPT_METHODS]
        if bad:
            ap.error(f"{option}: unknown {bad}; expected some of {', '.join(ADAPT_METHODS)}")
    if "none" not in [m.strip() for m in args.methods.split(",")]:
        ap.error("--methods: 'none' is the reference of every comparison and must be listed")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from medfoundry.data.adapters.nnunet_folder import import_volumes3d
    from medfoundry.data.synthetic.phantoms3d import BRATS_REGIONS, make_phantoms
    from medfoundry.segmentation import SegmentConfig, train_segmentation

    out = Path(args.out)
    t0 = time.perf_counter()
    if args.runs:
        runs = [Path(r.strip()) for r in args.runs.split(",") if r.strip()]
        images, labels = Path(args.images), Path(args.labels)
    else:
        raw, db = out / "raw", out / "db"
        if not (raw / "dataset.json").is_file():
            make_phantoms(raw, "brain_tumour", cases=args.cases, test_cases=args.test_cases, seed=0)
        if not (db / "tasks" / "brats").is_dir():
            import_volumes3d(raw / "imagesTr", raw / "labelsTr", db, "brats", seed=0)
        budget = {"minutes": args.minutes} if args.minutes else {"steps": args.steps}
        runs = []
        for seed in range(args.seeds):
            run = out / f"run{seed}"
            if not (run / "model" / "config.json").is_file():
                cfg = SegmentConfig(database=str(db), task="brats", regions=BRATS_REGIONS, seed=seed,
                                    device=args.device, checkpoint_every=0, threads=args.threads, **budget)
                train_segmentation(cfg, run, progress=True)
            runs.append(run)
        images, labels = raw / "imagesTs", raw / "labelsTs"
    report = evaluate(runs, images, labels, out, args)
    report.update(seconds=time.perf_counter() - t0, args=vars(args))
    atomic_write_json(out / "shift.json", report)
    text = markdown(report)
    atomic_write_text(out / "shift.md", text)
    print(text, flush=True)
    return report


def evaluate(runs: list[Path], images: Path, labels: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Shift the held-out folder, predict it per method and condition (resumable), score, plot."""
    from medfoundry.evaluation.stats import bootstrap_indices
    from medfoundry.robustness.adapt import VOLUME_LR, VOLUME_STEPS, AdaptConfig
    from medfoundry.robustness.calibration import ece_from_bins, reliability_diagram
    from medfoundry.robustness.shifts import make_shift_volumes, parse_corruptions, parse_severities
    from medfoundry.segmentation import predict_folder

    corruptions, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    shifted = out / "shifted"
    if not shifted.is_dir():
        make_shift_volumes(images, shifted, corruptions, severities, seed=0, labels=labels)
    conditions = {IN_DIST: (images, labels)}
    conditions.update({f"{c}_s{s}": (shifted / f"{c}_s{s}" / "imagesTs", shifted / f"{c}_s{s}" / "labelsTs")
                       for c in corruptions for s in severities})
    missing = [str(i) for i, _ in conditions.values() if not i.is_dir()]
    if missing:
        raise SystemExit(f"{shifted}: {missing[0]} missing (an older suite with other --corruptions or "
                         "--severities: delete that folder)")
    variants = {m: ([runs[0]], m) for m in methods}
    members = [f"seed{k}" for k in range(1, len(runs))] if args.members else []
    variants.update({name: ([runs[k + 1]], "none") for k, name in enumerate(members)})
    if len(runs) > 1:
        variants["ensemble"] = (runs, "none")
        for m in [m.strip() for m in args.ensemble_adapt.split(",") if m.strip()]:
            variants[f"ensemble+{m}"] = (runs, m)
    middle = severities[len(severities) // 2]
    per_case: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, dict[str, dict]] = {}
    bins: dict[str, list] = {}
    case_names: list[str] | None = None
    for name, (chosen, method) in variants.items():
        for cond, (cond_images, cond_labels) in conditions.items():
            target = out / "preds" / name / cond
            if (target / "summary.json").is_file():  # a cut run resumes here
                report = json.loads((target / "summary.json").read_text())
            else:
                report = predict_folder(chosen if len(chosen) > 1 else chosen[0], cond_images, target,
                                        labels=cond_labels, device=args.device, threads=args.threads,
                                        adapt=AdaptConfig(method=method, steps=VOLUME_STEPS, lr=VOLUME_LR))
            names = [c["case"] for c in report["cases"]]
            if case_names is None:
                case_names = names
            elif names != case_names:  # paired comparisons need the same cases in the same order
                raise SystemExit(f"{target}: cases {names} differ from {case_names}; delete {out / 'preds'}")
            per_case.setdefault(name, {})[cond] = _score(report)
            rows.setdefault(name, {})[cond] = {
                "ece": report.get("ece"), "per_case": _score(report).tolist(),
                "seconds_per_case": float(np.mean([c["seconds"] for c in report["cases"]])),
                "peak_memory_mb": float(max(c["peak_memory_mb"] for c in report["cases"]))}
            if cond.endswith(f"_s{middle}") and "reliability_bins" in report and name not in members:
                bins.setdefault(name, []).append(np.array(report["reliability_bins"]))
            print(f"{name:>9} {cond:>16}: Dice {np.mean(per_case[name][cond]):.3f}  ECE "
                  f"{report.get('ece', float('nan')):.3f}  {rows[name][cond]['seconds_per_case']:.1f} s/case",
                  flush=True)
    n = len(next(iter(per_case["none"].values())))
    resamples = bootstrap_indices(n, args.n_boot, seed=0)
    points = {m: {c: float(np.mean(v)) for c, v in conds.items()} for m, conds in per_case.items()}
    reps = {m: {c: per_case_replicates(v, resamples) for c, v in conds.items()} for m, conds in per_case.items()}
    for m, conds in rows.items():
        for c, row in conds.items():
            row.update(score=points[m][c], ci=percentile_ci(reps[m][c]))
    if members:
        for c, row in rows["ensemble"].items():
            row["members"] = [points["none"][c]] + [points[k][c] for k in members]
    scored = [m for m in variants if m not in members]
    results = {m: rows[m] for m in scored}
    add_paired_changes(results, points, reps)
    verdicts = recovery_verdicts(points, reps, results, corruptions, severities, scored)
    report = {"methods": scored, "severities": severities, "n_boot": args.n_boot,
              "tasks": {"volumes": {"kind": "segmentation3d", "metric": METRIC, "n": n, "corruptions": corruptions,
                                    "results": results, "verdicts": verdicts}},
              "members": {k: rows[k] for k in members}, "runs": [str(r) for r in runs],
              "adapt_settings": AdaptConfig(steps=VOLUME_STEPS, lr=VOLUME_LR).to_dict()}
    if bins:
        pooled = {k: np.sum(v, axis=0) for k, v in bins.items()}
        reliability_diagram(pooled, out / "reliability_middle.png", title=f"severity {middle}, all corruptions")
        report["ece_middle"] = {k: ece_from_bins(v) for k, v in pooled.items()}
    plot(report, out / "shift_vs_severity.png")
    return report


if __name__ == "__main__":
    main()
