"""Choose a pretraining / probing recipe on the val split (issue 9, item 3), never reading test.

    python benchmarks/recipe_study.py --database bench_out/data_efficiency/db --out bench_out/recipe/study \
        -e none=bench_out/data_efficiency/pretrain_multitask \
        -e light=bench_out/recipe/pretrain_aug_light -e standard=bench_out/recipe/pretrain_aug_standard \
        --probes last,multiscale --fractions 0.01,1.0

Every encoder (same pretraining budget, one setting changed) is transferred with
``score_split="val"``: early stopping on one stratified half of the val split, scores on the
other half (:mod:`medfoundry.transfer.splits`). One sweep folder per probe setting
(``OUT/probe_<setting>``, resumable). The table gives each variant's mean [95 % CI over seeds x
scored cases] and its paired difference to the baseline variant (the first encoder with the
first probe setting) with a verdict: better / worse / no clear difference (the interval holds 0).
``OUT/recipe_study.{json,md}`` hold the table (``--baseline V --compare-only`` tabulates the
stored sweeps against another variant, into ``OUT/recipe_study_vs_<V>.*``).

Fine-tuning settings are compared the same way with ``--setting NAME:FIELD=VALUE[,FIELD=VALUE]``
(any :class:`~medfoundry.transfer.TransferConfig` fields; one sweep folder ``OUT/setting_<NAME>``
each, the first setting is the baseline), e.g. fine-tuning augmentation, or the learning rate of
random-init encoders::

    python benchmarks/recipe_study.py --database DB --out bench_out/recipe/finetune_aug -e mt=RUN \
        --modes finetune --setting none:augment=none --setting light:augment=light
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from medfoundry.utils import atomic_write_json, atomic_write_text

PROBES = {"last": False, "multiscale": True}


def _sweep(args: argparse.Namespace, folder: str, overrides: dict[str, Any]) -> Path:
    from medfoundry.transfer import TransferConfig, run_sweep

    out = Path(args.out) / folder
    cfg = TransferConfig(fractions=tuple(args.fractions), seeds=args.seeds, modes=tuple(args.modes),
                         score_split="val", device=args.device,
                         progress=False, max_steps=args.max_steps, min_steps=min(30, args.max_steps),
                         finetune_max_steps=args.finetune_max_steps,
                         augment=args.finetune_augment,
                         goal_fractions=False).replace(**overrides)  # only the fractions asked for
    run_sweep(args.database, args.encoder, out, tasks=args.tasks or None, config=cfg, baseline=False,
              workers=args.workers)
    return out


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:FIELD=VALUE[,FIELD=VALUE]`` -> (NAME, overrides); values read as YAML scalars."""
    import yaml

    from medfoundry.transfer import TransferConfig

    name, sep, body = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or not body:
        raise ValueError(f"--setting {text!r}: expected NAME:FIELD=VALUE[,FIELD=VALUE], NAME of letters, "
                         "digits and _.+-")
    known = set(TransferConfig().to_dict())
    overrides: dict[str, Any] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in known:
            raise ValueError(f"--setting {text!r}: {key.strip()!r} is not a transfer config field "
                             f"(expected one of {sorted(known)})")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def _row(p: Any) -> dict[str, float]:
    return {"mean": p.mean, "low": p.low, "high": p.high, "seeds": p.seeds}


def variant_name(label: str, probe: str, mode: str) -> str:
    """``probe`` is a probe setting (``last``) or, from ``--setting``, ``setting NAME``."""
    if probe.startswith("setting "):
        return f"{label} / {probe[len('setting '):]}"
    return f"{label} / probe {probe}" if mode == "frozen" else f"{label} / finetune"


def compare(folders: dict[str, Path], labels: list[str], baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per (task, mode, fraction, variant): val score and paired difference to ``baseline``
    (a variant name; default: the first label with the first probe setting), variants in the
    order of ``labels`` and of ``folders``."""
    from medfoundry.evaluation.stats import paired_seed_difference
    from medfoundry.reports.html import summarise
    from medfoundry.transfer.results import ResultStore

    curves: dict[tuple[str, str, float], dict[str, Any]] = {}
    for probe, folder in folders.items():
        for task, s in sorted(summarise(ResultStore(folder).records).items()):
            for (enc, mode), pts in s.curves.items():
                for frac, p in pts.items():
                    curves.setdefault((task, mode, frac), {})[variant_name(enc, probe, mode)] = p
    # dict.fromkeys: a --setting variant has one name in both modes
    order = list(dict.fromkeys(variant_name(label, probe, mode) for mode in ("frozen", "finetune")
                               for probe in folders for label in labels))
    rows = []
    for (task, mode, frac), by_variant in sorted(curves.items()):
        wanted = baseline or variant_name(labels[0], next(iter(folders)), mode)
        base_name = wanted if wanted in by_variant else next(v for v in order if v in by_variant)
        base = by_variant[base_name]
        for variant in (v for v in order if v in by_variant):
            p = by_variant[variant]
            row = {"task": task, "mode": mode, "fraction": frac, "variant": variant, **_row(p),
                   "baseline": base_name}
            if variant != base_name:
                d = paired_seed_difference(p.seed_ids, p.values, p.replicates, base.seed_ids, base.values,
                                           base.replicates)
                verdict = ("not comparable" if d.n == 0 or not math.isfinite(d.difference) else
                           "better" if d.low > 0 else "worse" if d.high < 0 else "no clear difference")
                row.update(difference=d.difference, diff_low=d.low, diff_high=d.high, verdict=verdict)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | mode | fraction | variant | val score [95 % CI] | vs baseline [95 % CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = (f"{r['difference']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]" if "difference" in r
                else "(baseline)")
        lines.append(f"| {r['task']} | {r['mode']} | {100 * r['fraction']:g} % | {r['variant']} | "
                     f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {diff} | {r.get('verdict', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("-e", "--encoder", action="append", required=True, help="LABEL=RUN; the first is the baseline")
    ap.add_argument("--tasks", default="", help="comma-separated downstream tasks (default: all)")
    ap.add_argument("--probes", default="last,multiscale", help="frozen probe settings: last, multiscale")
    ap.add_argument("--baseline", default=None, help="variant the others are compared with, e.g. "
                    "'none / probe multiscale' (default: the first encoder with the first probe setting)")
    ap.add_argument("--compare-only", action="store_true", help="tabulate the stored sweeps, run nothing")
    ap.add_argument("--modes", default="frozen")
    ap.add_argument("--fractions", default="0.01,1.0")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--finetune-max-steps", type=int, default=None)
    ap.add_argument("--finetune-augment", default="none")
    ap.add_argument("--setting", action="append", default=[],
                    help="NAME:FIELD=VALUE[,FIELD=VALUE]: compare these transfer settings instead of probes")
    ap.add_argument("--device", default="auto")
    ap.add_argument("-j", "--workers", type=int, default=1)
    args = ap.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.modes = [m for m in args.modes.split(",") if m]
    args.fractions = [float(f) for f in args.fractions.split(",") if f]
    probes = [p for p in args.probes.split(",") if p]
    bad = [p for p in probes if p not in PROBES]
    if bad:
        ap.error(f"--probes: unknown {bad}; expected some of {sorted(PROBES)}")
    if "frozen" not in args.modes:
        probes = probes[:1]  # the probe setting only matters to frozen runs
    # axis of the study: name -> (folder, config overrides); the first is the baseline
    axis: dict[str, tuple[str, dict[str, Any]]] = {}
    if args.setting:
        for text in args.setting:
            try:
                name, overrides = parse_setting(text)
            except ValueError as exc:
                ap.error(str(exc))
            axis[f"setting {name}"] = (f"setting_{name}", {"probe_multiscale": PROBES[probes[0]], **overrides})
    else:
        axis = {p: (f"probe_{p}", {"probe_multiscale": PROBES[p]}) for p in probes}
    t0 = time.perf_counter()
    folders = {}
    for name, (folder, overrides) in axis.items():
        if not args.compare_only:
            print(f"[{time.strftime('%H:%M:%S')}] sweep on val, {name} ...", flush=True)
        folders[name] = Path(args.out) / folder if args.compare_only else _sweep(args, folder, overrides)
    from medfoundry.transfer import parse_encoder

    rows = compare(folders, [parse_encoder(e).label for e in args.encoder], args.baseline)
    out = Path(args.out)
    stem = "recipe_study" + (f"_vs_{re.sub(r'[^A-Za-z0-9]+', '_', args.baseline).strip('_')}" if args.baseline else "")
    atomic_write_json(out / f"{stem}.json", {"rows": rows, "seconds": round(time.perf_counter() - t0, 1),
                                                  "argv": sys.argv[1:] if argv is None else argv})
    table = markdown(rows)
    atomic_write_text(out / f"{stem}.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
