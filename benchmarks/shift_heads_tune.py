"""Choose the settings of ``entropy`` / ``etta`` for the 2D heads on the **validation** split
only: the val images of a task, in distribution and corrupted (seeded) by every corruption that
fits the task at one severity, scored per setting of the test-time method (the test split is
never read). What docs/robustness.md's defaults rest on.

Two stages, so that unsafe settings cost little: every setting in distribution first; those
whose Dice moves by at most ``--safe`` (the issue's 0.01) are then scored on the shifted copies,
and the gain over ``none`` averaged over corruptions is reported with a paired 95 % interval.

Usage::

    python benchmarks/shift_heads_tune.py --run bench_out/shift_heads/run0 \\
        --database bench_out/shift_heads/shift_db --task mri_tissue_seg__none_s0 \\
        --out bench_out/shift_heads_tune.json --max-samples 24
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# method, lr, steps, diversity: the former defaults (plain TENT) first, then smaller steps, then the
# class-marginal term
GRID = [("entropy", 1e-2, 3, 0.0), ("entropy", 1e-3, 1, 0.0), ("entropy", 1e-3, 3, 0.0),
        ("entropy", 1e-2, 3, 1.0), ("entropy", 3e-3, 3, 1.0), ("entropy", 1e-3, 3, 1.0), ("entropy", 1e-3, 1, 1.0),
        ("etta", 1e-2, 3, 0.0), ("etta", 1e-3, 3, 0.0), ("etta", 1e-2, 3, 1.0), ("etta", 1e-3, 3, 1.0),
        ("etta", 1e-3, 1, 1.0)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="trained run (or save_pretrained folder)")
    ap.add_argument("--database", required=True)
    ap.add_argument("--task", required=True, help="segmentation task whose val split is used")
    ap.add_argument("--out", required=True, help="results JSON (written atomically)")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--max-samples", type=int, default=24, help="first N val images")
    ap.add_argument("--safe", type=float, default=0.01, help="largest in-distribution change kept for stage 2")
    ap.add_argument("--seed", type=int, default=1, help="corruption seed (the benchmark's test copies use 0)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", default=None, help="settings to score instead of the built-in grid: "
                                                 "method:lr:steps:diversity,... (e.g. entropy:1e-3:1:0.5)")
    return ap.parse_args(argv)


def _parse_grid(text: str | None) -> list[tuple[str, float, int, float]]:
    if not text:
        return GRID
    from medfoundry.errors import ConfigError

    grid = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 4 or parts[0] not in ("entropy", "etta"):
            raise ConfigError(f"--grid: expected method:lr:steps:diversity with method entropy or etta, got {item!r}")
        grid.append((parts[0], float(parts[1]), int(parts[2]), float(parts[3])))
    return grid


def _predict(model: Any, head: str, images: np.ndarray, config: Any) -> tuple[list[np.ndarray], dict[str, float]]:
    import torch

    from medfoundry.inference import compose
    from medfoundry.inference.predictors import activate, head_activation
    from medfoundry.robustness.head_adapt import HeadAdapter
    from medfoundry.utils import seed_everything

    seed_everything(0)
    adapter = HeadAdapter(config)
    predictor, act = compose(adapter), head_activation(model, head)
    preds = []
    for a in range(0, len(images), 8):
        with torch.no_grad():
            p = activate(predictor(model, head, torch.from_numpy(images[a:a + 8])), act)
        preds.extend(p.argmax(1).numpy().astype(np.uint8))
    records = adapter.records
    info = {"seconds": float(np.mean([r["seconds"] for r in records]))}
    if "loss_before" in records[0]:  # the entropy term before and after the steps, mean over images
        info.update(entropy_before=float(np.mean([r["loss_before"] for r in records])),
                    entropy_after=float(np.mean([r["loss_after"] for r in records])))
    return preds, info


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from medfoundry.data.database import MultiTaskDatabase
    from medfoundry.evaluation.stats import bootstrap_indices
    from medfoundry.robustness.adapt import AdaptConfig
    from medfoundry.robustness.head_eval import load_run_model, resolve_head
    from medfoundry.robustness.shifts import corrupt
    from medfoundry.robustness.shifts_db import parse_db_corruptions, valid_corruptions
    from medfoundry.tasks import get_kind
    from medfoundry.utils import atomic_write_json

    torch.set_num_threads(max(1, args.threads))
    db = MultiTaskDatabase.open(args.database)
    spec = db.task(args.task)
    kind = get_kind(spec.kind)
    model = load_run_model(args.run, "cpu")
    head = resolve_head(model, Path(args.run), spec)
    val = np.asarray(db.split_indices(args.task, "val"), dtype=np.int64)[:args.max_samples]
    clean = np.stack([db.image(args.task, int(i)) for i in val]).astype(np.float32)
    targets = [np.asarray(db.target(args.task, int(i))) for i in val]
    lo, hi = float(clean.min()), float(clean.max())
    names = parse_db_corruptions(args.corruptions) or valid_corruptions(spec)
    shifted = {c: np.stack([np.clip(corrupt(x, c, args.severity, seed=args.seed, case=f"{args.task}/val/{i}"), lo, hi)
                            for x, i in zip(clean, val)]).astype(np.float32) for c in names}
    resamples = bootstrap_indices(len(val), args.n_boot, seed=0)

    def scored(preds: list[np.ndarray]) -> tuple[float, np.ndarray]:
        return (float(kind.primary_score(spec, preds, targets)),
                np.asarray(kind.bootstrap(spec, preds, targets, resamples), dtype=float))

    start = time.perf_counter()
    base_in, base_in_r = scored(_predict(model, head, clean, AdaptConfig(method="none"))[0])
    base_sh = {c: scored(_predict(model, head, x, AdaptConfig(method="none"))[0]) for c, x in shifted.items()}
    lost = base_in - float(np.mean([v[0] for v in base_sh.values()]))
    rows = []
    for method, lr, steps, diversity in _parse_grid(args.grid):
        config = AdaptConfig(method=method, lr=lr, steps=steps, diversity=diversity)
        preds, info = _predict(model, head, clean, config)
        score, reps = scored(preds)
        change_r = reps - base_in_r
        row: dict[str, Any] = {"method": method, "lr": lr, "steps": steps, "diversity": diversity,
                               "in_distribution": score, "change": score - base_in,
                               "change_ci": [float(np.percentile(change_r, 2.5)), float(np.percentile(change_r, 97.5))],
                               "seconds_per_image": info["seconds"],
                               "entropy_before_after": [info["entropy_before"], info["entropy_after"]],
                               "foreground_share": float(np.mean([np.mean(p > 0) for p in preds]))}
        if abs(row["change"]) <= args.safe:
            gains, gain_r = [], []
            for c, x in shifted.items():
                s, r = scored(_predict(model, head, x, config)[0])
                gains.append(s - base_sh[c][0])
                gain_r.append(r - base_sh[c][1])
            g_r = np.mean(gain_r, axis=0)
            row.update(shifted_gain=float(np.mean(gains)),
                       shifted_gain_ci=[float(np.percentile(g_r, 2.5)), float(np.percentile(g_r, 97.5))],
                       recovered=float(np.mean(gains)) / lost if lost > 0 else None)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"task": args.task, "run": args.run, "split": "val", "n": int(len(val)), "severity": args.severity,
              "corruptions": names, "corruption_seed": args.seed, "none_in_distribution": base_in,
              "none_shifted": {c: v[0] for c, v in base_sh.items()}, "lost": lost,
              "foreground_share_reference": float(np.mean([np.mean(t > 0) for t in targets])),
              "settings": rows, "seconds": time.perf_counter() - start}
    atomic_write_json(Path(args.out), report)
    print(f"none: in distribution {base_in:.3f}, lost at severity {args.severity}: {lost:.3f}; -> {args.out}")
    return report


if __name__ == "__main__":
    main()
