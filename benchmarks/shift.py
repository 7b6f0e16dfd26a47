"""Robustness to scanner shifts on brain-tumour phantoms: Dice per corruption and severity for
each test-time method, with 95 % intervals, and the goal verdicts.

Steps (each skipped when its output exists, so a cut run resumes): phantoms (nnU-Net folder) ->
short patch training per seed (``--minutes``) -> shifted copies of the held-out cases
(``medfoundry.robustness.shifts``) -> ``predict_folder`` for none / tta / entropy / etta (first
seed) and the mean ensemble of all seeds -> ``OUT/shift.json``, a table on stdout,
``OUT/shift_vs_severity.{png,svg}`` and reliability diagrams per method at the middle severity.

Score: mean Dice over the regions (WT, TC, ET) per case; the interval is
``medfoundry.evaluation.stats.mean_ci`` over cases. Goals (issue 11): at the middle severity,
averaged over corruptions, the best method recovers at least 50 % of the Dice lost to the shift
(``(method - none) / (in-distribution none - none)``); in distribution each method changes Dice
by at most 0.01; any method that lowers Dice (beyond the interval) is listed as hurting.

Usage::

    python benchmarks/shift.py --out bench_out/shift --minutes 3 --seeds 3 \\
        --corruptions bias,gamma,gaussian,blur,motion --severities 1,3,5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medfoundry.evaluation.stats import mean_ci
from medfoundry.utils import atomic_write_json


def _score(report) -> np.ndarray:
    return np.array([np.nanmean(list(c["dice"].values())) for c in report["cases"]], dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/shift")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per seed")
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--test-cases", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=1, help="training seeds; >1 adds the mean ensemble")
    ap.add_argument("--corruptions", default="bias,gamma,gaussian,blur,motion")
    ap.add_argument("--severities", default="1,3,5")
    ap.add_argument("--methods", default="none,tta,entropy,etta")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    from medfoundry.data.adapters.nnunet_folder import import_volumes3d
    from medfoundry.data.synthetic.phantoms3d import BRATS_REGIONS, make_phantoms
    from medfoundry.robustness.adapt import VOLUME_LR, VOLUME_STEPS, AdaptConfig
    from medfoundry.robustness.calibration import reliability_diagram
    from medfoundry.robustness.shifts import make_shift_volumes, parse_corruptions, parse_severities
    from medfoundry.segmentation import SegmentConfig, predict_folder, train_segmentation

    out = Path(args.out)
    corruptions, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    raw, db = out / "raw", out / "db"
    t0 = time.perf_counter()
    if not (raw / "dataset.json").is_file():
        make_phantoms(raw, "brain_tumour", cases=args.cases, test_cases=args.test_cases, seed=0)
    if not (db / "tasks" / "brats").is_dir():
        import_volumes3d(raw / "imagesTr", raw / "labelsTr", db, "brats", seed=0)
    runs = []
    for seed in range(args.seeds):
        run = out / f"run{seed}"
        if not (run / "model" / "config.json").is_file():
            cfg = SegmentConfig(database=str(db), task="brats", minutes=args.minutes, regions=BRATS_REGIONS, seed=seed,
                                device=args.device, checkpoint_every=0, threads=args.threads)
            train_segmentation(cfg, run, progress=True)
        runs.append(run)
    shifted = out / "shifted"
    if not shifted.is_dir():
        make_shift_volumes(raw / "imagesTs", shifted, corruptions, severities, seed=0, labels=raw / "labelsTs")
    conditions = {"in-distribution": (raw / "imagesTs", raw / "labelsTs")}
    conditions.update({f"{c}_s{s}": (shifted / f"{c}_s{s}" / "imagesTs", shifted / f"{c}_s{s}" / "labelsTs")
                       for c in corruptions for s in severities})
    variants = {m: (runs[0], m) for m in methods}
    if len(runs) > 1:
        variants[f"ensemble{len(runs)}"] = (runs, "none")
    results: dict[str, dict[str, dict]] = {}
    middle = severities[len(severities) // 2]
    bins = {}
    for name, (run, method) in variants.items():
        for cond, (images, labels) in conditions.items():
            report = predict_folder(run, images, out / "preds" / name / cond, labels=labels, device=args.device,
                                    threads=args.threads,
                                    adapt=AdaptConfig(method=method, steps=VOLUME_STEPS, lr=VOLUME_LR))
            values = _score(report)
            mean, lo, hi = mean_ci(values, n_boot=1000, seed=0)
            results.setdefault(name, {})[cond] = {
                "dice": mean, "ci": [lo, hi], "per_case": values.tolist(), "ece": report.get("ece"),
                "seconds_per_case": float(np.mean([c["seconds"] for c in report["cases"]])),
                "peak_memory_mb": float(max(c["peak_memory_mb"] for c in report["cases"]))}
            if cond.endswith(f"_s{middle}") and "reliability_bins" in report:
                bins.setdefault(name, []).append(np.array(report["reliability_bins"]))
            ece = report.get("ece", float("nan"))
            print(f"{name:>10} {cond:>16}: Dice {mean:.3f} [{lo:.3f}, {hi:.3f}]  ECE {ece:.3f}", flush=True)
    if bins:
        reliability_diagram({k: np.sum(v, axis=0) for k, v in bins.items()}, out / "reliability_middle.png",
                            title=f"severity {middle}, all corruptions")
    verdicts = _verdicts(results, corruptions, middle)
    _plot(results, corruptions, severities, out / "shift_vs_severity.png")
    atomic_write_json(out / "shift.json", {"results": results, "verdicts": verdicts,
                                           "seconds": time.perf_counter() - t0, "args": vars(args)})
    for line in verdicts["lines"]:
        print(line)


def _verdicts(results, corruptions, middle):
    base = results["none"]
    ind = base["in-distribution"]["dice"]
    lost = np.mean([ind - base[f"{c}_s{middle}"]["dice"] for c in corruptions])
    lines, recovered = [], {}
    for name, res in results.items():
        if name == "none":
            continue
        gain = np.mean([res[f"{c}_s{middle}"]["dice"] - base[f"{c}_s{middle}"]["dice"] for c in corruptions])
        recovered[name] = float(gain / lost) if lost > 0 else float("nan")
        change = res["in-distribution"]["dice"] - ind
        share = f"recovers {100 * recovered[name]:.0f} % of the {lost:.3f}" if lost > 0 else \
            f"changes by {gain:+.3f} the {lost:+.3f} (no loss to recover)"
        lines.append(f"{name}: {share} Dice lost at severity {middle}; in-distribution change {change:+.3f} "
                     f"({'ok' if abs(change) <= 0.01 else 'NOT met'})")
        hurt = [c for c, v in res.items() if v["ci"][1] < base[c]["ci"][0]]
        if hurt:
            lines.append(f"  {name} HURTS on: {', '.join(hurt)}")
    finite = {k: v for k, v in recovered.items() if np.isfinite(v)}
    best = max(finite, key=lambda k: finite[k]) if finite else None
    if best is not None:
        ok = recovered[best] >= 0.5
        lines.append(f"goal (best method recovers >= 50 %): {best} {100 * recovered[best]:.0f} % -> "
                     f"{'met' if ok else 'NOT met'}")
    return {"lost": float(lost), "recovered": recovered, "best": best, "lines": lines}


def _plot(results, corruptions, severities, target):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(corruptions), figsize=(3 * len(corruptions), 3), sharey=True, squeeze=False)
    for ax, c in zip(axes[0], corruptions):
        for name, res in results.items():
            xs = [0] + list(severities)
            ys = [res["in-distribution"]["dice"]] + [res[f"{c}_s{s}"]["dice"] for s in severities]
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.set(title=c, xlabel="severity", xticks=[0] + list(severities))
    axes[0][0].set_ylabel("mean Dice (WT, TC, ET)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(Path(target).with_suffix(suffix), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
