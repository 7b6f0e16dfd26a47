"""Robustness of the 2D heads of the multi-task model to scanner shifts: a segmentation and a
classification head, scored in distribution and on shifted test splits for each test-time method
(``none`` / ``tta`` / ``entropy`` / ``etta``) and the mean ensemble of the seeds, with paired
intervals, the goal verdicts of issue 11, plots of score vs severity, a JSON and a Markdown table.

Steps, each skipped when its output exists (a cut run resumes where it stopped):

1. source database: ``--database``, else the embedded synthetic one (``--scale small``) in
   ``OUT/source_db``;
2. ``--seeds`` short multi-task pretrainings (``medfoundry pretrain`` on the two tasks only,
   ``--rounds`` rounds) in ``OUT/run<seed>``; each saves ``model/``;
3. shifted copies of both tasks' test splits (``medfoundry shift make``: ``T__none_s0`` and
   ``T__<corruption>_s<severity>``) in ``OUT/shift_db``; ``--corruptions all`` takes every
   corruption that fits each task;
4. one *cell* per (task, condition, method): predictions of the test split, saved as
   ``OUT/cells/<task>/<condition>/<method>.npz`` (label maps or class probabilities, the
   calibration bin table, time and memory per case). The single-model methods use the first
   seed's run; ``ensemble`` averages the probabilities of every seed's run (no adaptation);
5. scoring (cheap, always redone): ``OUT/shift_heads.json``, ``OUT/shift_heads.md``,
   ``OUT/shift_heads_vs_severity.{png,svg}``.

Scores: Dice (mean over the foreground classes per image, then over images) or balanced accuracy,
on the test split. Every interval is a 95 % percentile interval over the same case resamples
(``medfoundry.evaluation.stats.bootstrap_indices``): the shifted tasks hold the same test cases in
the same order, so a method and ``none`` are compared paired, case by case
(``paired_bootstrap_difference``). Goals, computed per task: at the middle severity, averaged over
corruptions, the recovered fraction ``mean_c(method - none) / mean_c(none in-distribution - none)``
with its interval (the same resamples in numerator and denominator) for each method, and the best;
in distribution the change against ``none`` (goal: |change| <= 0.01); a method whose paired
interval lies below 0 on a condition is listed as hurting there.

Usage::

    # README figures: three converged runs on a bench-scale source (configs/shift_heads_bench.yaml
    # says how they were made), the first 200 test images of each task
    python benchmarks/shift_heads.py --out bench_out/shift_heads_bench \
        --database bench_out/shift_heads_bench/source_db --max-samples 200 \
        --runs bench_out/shift_heads_bench/run0,bench_out/shift_heads_bench/run1,bench_out/shift_heads_bench/run2
    python benchmarks/shift_heads.py --out bench_out/shift_heads                    # 150-round runs, small source
    python benchmarks/shift_heads.py --out /tmp/shift_quick --quick                 # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medfoundry.robustness.shift_report import (IN_DIST, add_paired_changes, markdown, percentile_ci, plot,
                                              recovery_verdicts)

METHODS = ("none", "tta", "entropy", "etta")
QUICK = {"rounds": 6, "seeds": 2, "corruptions": "gaussian,blur", "severities": "3", "max_samples": 12,
         "n_boot": 200}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/shift_heads")
    ap.add_argument("--database", default=None, help="source database (default: synthetic small in OUT/source_db)")
    ap.add_argument("--seg-task", default="mri_tissue_seg")
    ap.add_argument("--cls-task", default="stain_atypia_cls",
                    help="mri_lesion_type_cls and xray_finding_cls stay at chance after 150 rounds")
    ap.add_argument("--runs", default=None, help="comma-separated trained runs to score instead of pretraining "
                                                 "(run folders or save_pretrained folders; the first is the "
                                                 "single model, all make the ensemble)")
    ap.add_argument("--seeds", type=int, default=3, help="pretraining seeds; the ensemble averages them all")
    ap.add_argument("--rounds", type=int, default=150, help="pretraining rounds (optimizer steps) per seed")
    ap.add_argument("--batch-size", type=int, default=8, help="pretraining samples per task per round")
    ap.add_argument("--decoder-channels", type=int, default=32, help="width of the shared decoder")
    ap.add_argument("--corruptions", default="all", help="'all' (every corruption fitting each task) or a list")
    ap.add_argument("--severities", default="1,3,5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--max-samples", type=int, default=None, help="score the first N test samples of each task")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="smoke settings: " + json.dumps(QUICK))
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from medfoundry.data.database import MultiTaskDatabase
    from medfoundry.errors import ConfigError
    from medfoundry.robustness.shifts import parse_severities
    from medfoundry.robustness.shifts_db import (make_shift_database, parse_db_corruptions, shifted_task_name,
                                                 valid_corruptions)

    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or "none" not in methods:
        raise ConfigError(f"--methods: expected 'none' and any of {', '.join(METHODS)}, got {methods}")
    given = [Path(r.strip()) for r in (args.runs or "").split(",") if r.strip()]
    if (len(given) if given else args.seeds) > 1:
        methods.append("ensemble")
    severities = parse_severities(args.severities)
    requested = parse_db_corruptions(args.corruptions)
    tasks = [args.seg_task, args.cls_task]

    source = Path(args.database) if args.database else out / "source_db"
    if not (source / "database.yaml").is_file():
        from medfoundry.data.synthetic.build import make_synthetic_database

        _say(f"source database: synthetic small -> {source}")
        make_synthetic_database(source, seed=0, scale="small", overwrite=True)
    src = MultiTaskDatabase.open(source)
    corruptions = {t: list(requested) if requested else valid_corruptions(src.task(t)) for t in tasks}

    runs = given or [_train(source, tasks, out / f"run{seed}", seed, args) for seed in range(args.seeds)]

    shift_db = out / "shift_db"
    if not (shift_db / "database.yaml").is_file():
        _say(f"shift suite: {', '.join(tasks)} x {args.corruptions} x severities {severities} -> {shift_db}")
        make_shift_database(source, tasks, shift_db, requested, severities, seed=0, overwrite=True,
                            test_samples=args.max_samples)
    sdb = MultiTaskDatabase.open(shift_db)
    conditions = {t: {IN_DIST: shifted_task_name(t, "none", 0),
                      **{f"{c}_s{s}": shifted_task_name(t, c, s) for c in corruptions[t] for s in severities}}
                  for t in tasks}
    for t, conds in conditions.items():
        missing = [name for name in conds.values() if name not in sdb.tasks]
        if missing:
            raise ConfigError(f"{shift_db}: tasks {missing} missing (an older suite with other --corruptions or "
                              "--severities: delete that folder)")
        wanted = len(_test_indices(src, t, args.max_samples))
        if len(sdb.split_indices(conds[IN_DIST], "test")) < wanted:
            raise ConfigError(f"{shift_db}: holds fewer than the {wanted} test samples of {t} asked for (an older "
                              "suite made with a smaller --max-samples: delete that folder)")

    total = sum(len(c) for c in conditions.values()) * len(methods)
    done, started = 0, time.perf_counter()
    models: dict[int, Any] = {}
    # in distribution first, then the middle severity, so a cut run already answers the goals
    order = [IN_DIST] + [f"_s{s}" for s in sorted(severities, key=lambda s: s != severities[len(severities) // 2])]
    todo = sorted(((t, c, n) for t, conds in conditions.items() for c, n in conds.items()),
                  key=lambda x: next(i for i, key in enumerate(order) if x[1].endswith(key)))
    for task, cond, name in todo:
        for method in methods:
            done += 1
            cell = out / "cells" / task / cond / f"{method}.npz"
            if cell.is_file():
                continue
            _compute_cell(cell, sdb, name, method, runs, models, args)
            info = np.load(cell)
            elapsed = time.perf_counter() - started
            _say(f"[{done}/{total}] {task} {cond:<14} {method:<8} {float(info['seconds_per_case']):.3f} s/case  "
                 f"elapsed {elapsed / 60:.1f} min")
    report = score(out, sdb, conditions, corruptions, severities, methods, args.n_boot, args.max_samples)
    from medfoundry.robustness.adapt import AdaptConfig

    report.update({"seconds": time.perf_counter() - t0, "args": vars(args),
                   "adapt_settings": {**AdaptConfig().to_dict(),
                                      "diversity": AdaptConfig().diversity_weight(whole_image=True)},
                   "runs": {str(r): _final_metrics(r) for r in runs}})
    from medfoundry.utils import atomic_write_json, atomic_write_text

    atomic_write_json(out / "shift_heads.json", report)
    atomic_write_text(out / "shift_heads.md", markdown(report))
    plot(report, out / "shift_heads_vs_severity.png")
    for task in tasks:
        for line in report["tasks"][task]["verdicts"]["lines"]:
            _say(f"{task}: {line}")
    _say(f"results: {out / 'shift_heads.json'}, {out / 'shift_heads.md'}, {out / 'shift_heads_vs_severity.png'}")
    return report


def _say(text: str) -> None:
    print(text, flush=True)


def _final_metrics(run: Path) -> Any:
    path = run / "final_metrics.json"
    return json.loads(path.read_text()).get("metrics") if path.is_file() else None


def _train(source: Path, tasks: list[str], run: Path, seed: int, args: argparse.Namespace) -> Path:
    if (run / "model" / "config.json").is_file():
        return run
    from medfoundry.training import PretrainConfig
    from medfoundry.training.pretrain import pretrain

    _say(f"pretraining seed {seed}: {args.rounds} rounds on {', '.join(tasks)} -> {run}")
    start = time.perf_counter()
    config = PretrainConfig(database=str(source), out=str(run), tasks=tasks, rounds=args.rounds,
                            batch_size=args.batch_size, lr=2e-3, warmup_rounds=max(1, args.rounds // 10),
                            checkpoint_every=max(1, args.rounds // 2), eval_every=0, eval_max_samples=64,
                            progress=False, seed=seed, device=args.device,
                            decoder_channels=args.decoder_channels)
    pretrain(config)
    _say(f"  seed {seed} trained in {time.perf_counter() - start:.0f} s")
    return run


def _compute_cell(cell: Path, sdb: Any, task: str, method: str, runs: list[Path], models: dict[int, Any],
                  args: argparse.Namespace) -> None:
    """Predict the test split of ``task`` with one method and save what scoring needs."""
    import torch

    from medfoundry.inference import compose
    from medfoundry.inference.predictors import activate, head_activation
    from medfoundry.robustness.adapt import AdaptConfig
    from medfoundry.robustness.calibration import calibration_bins, classification_bins, merge_bins
    from medfoundry.robustness.ensemble import mean_probabilities
    from medfoundry.robustness.head_adapt import HeadAdapter
    from medfoundry.robustness.head_eval import load_run_model, resolve_head
    from medfoundry.utils import resolve_device, seed_everything

    dev = resolve_device(args.device)
    members = list(range(len(runs))) if method == "ensemble" else [0]
    for m in members:
        if m not in models:
            models[m] = load_run_model(runs[m], dev)
    spec = sdb.task(task)
    head = resolve_head(models[0], runs[0], spec)
    act = head_activation(models[0], head)
    segmentation = str(getattr(spec.kind, "value", spec.kind)) == "segmentation"
    indices = _test_indices(sdb, task, args.max_samples)
    images = np.stack([sdb.image(task, int(i)) for i in indices]).astype(np.float32)
    seed_everything(0)
    config = AdaptConfig(method="none" if method == "ensemble" else method)
    adapters = [HeadAdapter(config) for _ in members]
    batch = 32 if config.method in ("none", "tta") else 8
    probs = []
    for m, adapter in zip(members, adapters):
        predictor = compose(adapter)
        parts = []
        for a in range(0, len(images), batch):
            x = torch.from_numpy(images[a:a + batch]).to(dev)
            with torch.no_grad():
                parts.append(activate(predictor(models[m], head, x), act).float().cpu().numpy())
        probs.append(np.concatenate(parts))
    p = probs[0] if len(probs) == 1 else mean_probabilities(probs)
    targets = [np.asarray(sdb.target(task, int(i))) for i in indices]
    extra: dict[str, Any] = {}
    if len(probs) > 1:  # each member's own predictions: is the ensemble better than its average member?
        extra["member_preds"] = np.stack([q.argmax(1).astype(np.uint8) if segmentation else q for q in probs])
    if segmentation:
        preds = p.argmax(1).astype(np.uint8)
        bins = merge_bins([calibration_bins(q, t, activation="softmax") for q, t in zip(p, targets)])
    else:
        preds = p.astype(np.float32)
        bins = classification_bins(p, np.asarray([int(t) for t in targets]), activation=act)
    per_case = np.sum([[r["seconds"] for r in ad.records] for ad in adapters], axis=0)
    records = [r for ad in adapters for r in ad.records]
    if config.method in ("entropy", "etta"):
        extra.update(loss_before=np.mean([r["loss_before"] for r in records]),
                     loss_after=np.mean([r["loss_after"] for r in records]))
    cell.parent.mkdir(parents=True, exist_ok=True)
    tmp = cell.with_name(cell.stem + ".tmp.npz")
    np.savez_compressed(tmp, preds=preds, bins=bins, indices=indices, seconds_per_case=float(per_case.mean()),
                        peak_memory_mb=float(max(r["peak_memory_mb"] for r in records)), **extra)
    tmp.replace(cell)


def _test_indices(db: Any, task: str, max_samples: int | None) -> np.ndarray:
    chosen = np.asarray(db.split_indices(task, "test"), dtype=np.int64)
    return chosen[:max_samples] if max_samples is not None else chosen


def score(out: Path, sdb: Any, conditions: dict[str, dict[str, str]], corruptions: dict[str, list[str]],
          severities: list[int], methods: list[str], n_boot: int, max_samples: int | None) -> dict[str, Any]:
    """Scores, paired differences against ``none`` and verdicts from the saved cells."""
    from medfoundry.evaluation.stats import bootstrap_indices
    from medfoundry.errors import DataError
    from medfoundry.robustness.calibration import ece_from_bins
    from medfoundry.tasks import get_kind

    report: dict[str, Any] = {"methods": methods, "severities": severities, "n_boot": n_boot, "tasks": {}}
    for task, conds in conditions.items():
        spec = sdb.task(conds[IN_DIST])
        kind = get_kind(spec.kind)
        indices = _test_indices(sdb, conds[IN_DIST], max_samples)
        targets = [np.asarray(sdb.target(conds[IN_DIST], int(i))) for i in indices]
        resamples = bootstrap_indices(len(indices), n_boot, seed=0)
        points: dict[str, dict[str, float]] = {m: {} for m in methods}
        reps: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
        rows: dict[str, dict[str, Any]] = {m: {} for m in methods}
        for cond, name in conds.items():
            shifted_targets = [np.asarray(sdb.target(name, int(i))) for i in indices[:3]]
            if any(not np.array_equal(a, b) for a, b in zip(shifted_targets, targets)):
                raise DataError(f"task {name!r}: test targets differ from {conds[IN_DIST]!r}; not a shifted copy")
            for method in methods:
                cell = np.load(out / "cells" / task / cond / f"{method}.npz")
                if not np.array_equal(cell["indices"], indices):
                    raise DataError(f"{out / 'cells' / task / cond}: {method} scored other samples (another "
                                    "--max-samples); delete the cells folder")
                preds = list(cell["preds"])
                points[method][cond] = float(kind.primary_score(spec, preds, targets))
                reps[method][cond] = np.asarray(kind.bootstrap(spec, preds, targets, resamples), dtype=float)
                rows[method][cond] = {"score": points[method][cond], "ci": percentile_ci(reps[method][cond]),
                                      "ece": ece_from_bins(cell["bins"]),
                                      "seconds_per_case": float(cell["seconds_per_case"]),
                                      "peak_memory_mb": float(cell["peak_memory_mb"])}
                if "member_preds" in cell:
                    rows[method][cond]["members"] = [float(kind.primary_score(spec, list(mp), targets))
                                                     for mp in cell["member_preds"]]
                if "loss_before" in cell:
                    rows[method][cond]["entropy_before_after"] = [float(cell["loss_before"]),
                                                                  float(cell["loss_after"])]
        add_paired_changes(rows, points, reps)
        verdicts = recovery_verdicts(points, reps, rows, corruptions[task], severities, methods)
        report["tasks"][task] = {"kind": str(getattr(spec.kind, "value", spec.kind)),
                                 "metric": kind.primary_metric, "n": int(len(indices)),
                                 "corruptions": corruptions[task], "results": rows, "verdicts": verdicts}
    return report


if __name__ == "__main__":
    main()
