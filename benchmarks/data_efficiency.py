"""The bench-scale data-efficiency benchmark (issue 9), one resumable command.

    python benchmarks/data_efficiency.py --out bench_out/data_efficiency            # ~2 h, 2 cores
    python benchmarks/data_efficiency.py --out bench_out/de_quick --quick           # smoke run, minutes

Stages (each skipped when ``OUT/stages.json`` says it finished with the same settings; a
killed stage resumes: pretraining from its last checkpoint, the sweep from its stored runs):

1. the bench database (``make-synthetic --scale bench``; ``--quick``: ``small``), or ``--database``;
2. pretraining (:func:`medfoundry.training.pretrain`) of the multi-task encoder on every
   pretraining task, and of one single-task encoder per chosen pretraining task with the
   *same budget*: the same rounds and the same per-task batch (so the same optimizer steps
   and the same images per task seen). Default single tasks, one per modality family that a
   downstream task shares, because those are the strongest single rivals on goal C:
   ``mri_lesion_seg`` (tomographic; ``mri_lesion_size_cls``), ``stain_nuclei_seg``
   (microscopic; ``stain_atypia_cls``). Each single-task run costs about 1/11 of a
   multi-task round; ``--single-tasks`` adds more (e.g. ``xray_finding_cls``, the only
   classification-pretrained rival), at the cost of fine-tuning steps in the plan;
3. the sweep (fractions 1-100 %, 3 seeds, frozen and fine-tune; encoders multi-task, every
   single-task, random init, classical) in a pool of worker processes;
4. the report (HTML, SVG/PDF plots), goals A/B/C printed as the report states them, and
   ``OUT/summary.json`` with the plan, the timings, the verdicts and the training-image counts.

``--hours`` plans the rounds and step caps with a cost model (:func:`plan`) and prints the
plan and its estimate before anything starts. The model's unit costs come from the demo's
measurement (1.9 s per 11-task round of batch 16 at 64 px on one thread of a lightly loaded
2-core machine, :func:`medfoundry.training.pretrain.pretrain_demo`): about 11 ms per image
forward + backward, a forward pass a third of that. They are estimates for CPU; on CUDA the
run is faster than planned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medfoundry.utils import atomic_write_json

STAGES_FILE = "stages.json"
SUMMARY_FILE = "summary.json"
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
SINGLE_TASKS = ("mri_lesion_seg", "stain_nuclei_seg")
# Unit costs of the plan (seconds, one thread; see the module docstring for their source).
TRAIN_S_PER_IMAGE = 1.9 / (11 * 16)
FORWARD_S_PER_IMAGE = TRAIN_S_PER_IMAGE / 3
BUILD_S = {"bench": 900.0, "small": 30.0}  # issue 9 item 1: the bench database builds in <= 15 min
PRETRAIN_SHARE = 0.35  # of the wall time left after the database; the sweep gets the rest
REFERENCE_SHARE = 0.25  # of the sweep's core-seconds: the converged random-init reference runs


@dataclass
class Plan:
    """What the benchmark will run, and what the cost model expects it to take."""

    scale: str
    rounds: int
    batch_size: int
    fractions: tuple[float, ...]
    seeds: int
    finetune_max_steps: int
    max_steps: int
    workers: int
    pretrain_tasks: list[str] | None = None  # None: every task of group "pretrain"
    single_tasks: list[str] = field(default_factory=lambda: list(SINGLE_TASKS))
    downstream_tasks: list[str] | None = None  # None: every task of group "downstream"
    # chosen on the bench val split (benchmarks/recipe_study.py): light augmentation in pretraining,
    # frozen probes on every encoder stage pooled
    augment: str = "light"
    probe_multiscale: bool = True
    # fine-tuning, chosen on the bench val split at 50 % (benchmarks/recipe_study.py --setting):
    # light augmentation, and pretrained encoders at the head's learning rate
    finetune_augment: str = "light"
    encoder_lr_ratio: float = 1.0
    estimate_s: dict[str, float] = field(default_factory=dict)

    def settings(self, stage: str) -> dict[str, Any]:
        """The fields that define a stage's results (its resume fingerprint)."""
        d = asdict(self)
        keep = {"database": ["scale"],
                "pretrain": ["scale", "rounds", "batch_size", "pretrain_tasks", "single_tasks", "augment"],
                "sweep": ["scale", "rounds", "batch_size", "pretrain_tasks", "single_tasks", "downstream_tasks",
                          "fractions", "seeds", "finetune_max_steps", "max_steps", "augment", "probe_multiscale",
                          "finetune_augment", "encoder_lr_ratio"]}[stage]
        d = {k: d[k] for k in keep}
        d["fractions"] = list(d.get("fractions", []))
        return d


def plan(hours: float, cores: int, quick: bool = False, n_pretrain_tasks: int = 11, n_downstream: int = 3,
         train_images: int = 10_008, eval_images: int = 3_336, database_exists: bool = False,
         single_tasks: Sequence[str] = SINGLE_TASKS) -> Plan:
    """Rounds and step caps that fit ``hours`` on ``cores`` (one thread per worker), with the estimate.

    The multi-task encoder pretrains in this process while the single-task encoders (each
    round 1/``n_pretrain_tasks`` of the cost) pretrain in a second one; then the sweep spreads
    over ``cores`` workers. Fine-tuning dominates the sweep: every pretrained and random
    encoder, fraction and seed is a run capped at ``finetune_max_steps``; the random-init
    reference at 100 % gets ``max_steps`` (a share of the sweep) to converge.
    """
    if hours <= 0 or cores < 1:
        raise ValueError(f"--hours {hours}: expected > 0 (and at least one core)")
    scale = "small" if quick else "bench"
    if quick:
        train_images, eval_images = 216, 72
    batch, seeds, fractions = 16, (2 if quick else 3), ((0.01, 0.1, 1.0) if quick else FRACTIONS)
    wall = hours * 3600 - (0.0 if database_exists else BUILD_S[scale])
    if wall <= 0:
        raise ValueError(f"--hours {hours}: leaves no time after building the database (~{BUILD_S[scale]:.0f} s)")
    round_s = n_pretrain_tasks * batch * TRAIN_S_PER_IMAGE
    rounds = max(2, int(PRETRAIN_SHARE * wall / round_s))
    sweep_core_s = (1 - PRETRAIN_SHARE) * wall * cores
    n_ft_encoders = 2 + len(single_tasks)  # multi-task, random, singles (classical is frozen only)
    step_s = 32 * TRAIN_S_PER_IMAGE
    # frozen mode: one feature extraction of train + val + test per (task, encoder[, random seed])
    n_extract = n_downstream * (1 + len(single_tasks) + seeds)
    extract_s = n_extract * (train_images + 2 * eval_images) * FORWARD_S_PER_IMAGE
    left = max(0.0, sweep_core_s - extract_s)

    def run_s(f: float, steps: int) -> float:
        # validation on the fraction's share of the val split, once per epoch, at most every 10 steps
        evals = 1 + steps / max(10.0, f * train_images / 32)
        return steps * step_s + evals * f * eval_images * FORWARD_S_PER_IMAGE

    max_steps = max(30, int(REFERENCE_SHARE * left / (n_downstream * seeds) / (step_s + 1.0 / 30)))
    ref_s = n_downstream * seeds * run_s(1.0, max_steps)
    runs = n_downstream * n_ft_encoders * seeds
    ft_steps = 20
    while ft_steps < 5000 and runs * sum(run_s(f, ft_steps + 5) for f in fractions) + ref_s <= left:
        ft_steps += 5
    if quick:
        rounds, ft_steps, max_steps = min(rounds, 60), min(ft_steps, 20), min(max_steps, 60)
    ft_s = runs * sum(run_s(f, ft_steps) for f in fractions) + n_downstream * seeds * run_s(1.0, max_steps)
    pre_s = rounds * round_s
    estimate = {"database_s": 0.0 if database_exists else BUILD_S[scale],
                "pretrain_s": max(pre_s, rounds * len(single_tasks) * batch * TRAIN_S_PER_IMAGE),
                "sweep_s": (extract_s + ft_s) / cores}
    estimate["total_s"] = sum(estimate.values())
    return Plan(scale, rounds, batch, tuple(fractions), seeds, ft_steps, max_steps, cores,
                single_tasks=list(single_tasks), estimate_s={k: round(v) for k, v in estimate.items()})


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Stages:
    """``OUT/stages.json``: the stages finished, each with the fingerprint of its settings."""

    def __init__(self, out: Path):
        self.path = out / STAGES_FILE
        try:
            self.done: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.done = {}

    def finished(self, name: str, settings: dict[str, Any]) -> bool:
        return self.done.get(name, {}).get("fingerprint") == _fingerprint(settings)

    def mark(self, name: str, settings: dict[str, Any], seconds: float) -> None:
        self.done[name] = {"fingerprint": _fingerprint(settings), "seconds": round(seconds, 1)}
        atomic_write_json(self.path, self.done)


def say(msg: str) -> None:
    """A plain progress line (visible in logs, where progress bars stay silent)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _pretrain_one(db_root: str, out: str, rounds: int, batch: int, tasks: list[str] | None, device: str,
                  threads: int, seed: int = 0, augment: str = "none") -> str:
    """One pretraining run (resumed from its checkpoint if it has one); module level so a spawn pool can run it."""
    import torch

    from medfoundry.training.config import PretrainConfig
    from medfoundry.training.pretrain import pretrain

    torch.set_num_threads(threads)
    cfg = PretrainConfig(database=db_root, out=out, rounds=rounds, tasks=tasks, batch_size=batch, seed=seed,
                         warmup_rounds=max(1, rounds // 10), checkpoint_every=max(1, rounds // 20),
                         eval_every=0, eval_max_samples=256, progress=False, lr=2e-3, device=device,
                         augment=augment)
    return str(pretrain(cfg))


def _pretrain_singles(db_root: str, out: str, rounds: int, batch: int, tasks: list[str], device: str,
                      threads: int, augment: str = "none") -> list[str]:
    return [_pretrain_one(db_root, str(Path(out) / f"pretrain_single_{t}"), rounds, batch, [t], device, threads,
                          augment=augment) for t in tasks]


def _finished_run(run: Path, rounds: int) -> bool:
    try:
        return json.loads((run / "final_metrics.json").read_text(encoding="utf-8"))["round"] >= rounds
    except (OSError, ValueError, KeyError, TypeError):
        return False


def image_counts(db_root: Path, tasks: Sequence[str], fractions: Sequence[float]) -> dict[str, dict[str, int]]:
    """Training images per task and fraction (seed 0's subset, as the report counts them)."""
    from medfoundry.data.database import MultiTaskDatabase

    db = MultiTaskDatabase.open(db_root)
    return {t: {f"{100 * f:g}%": int(len(db.fraction_indices(t, f, seed=0))) for f in fractions} for t in tasks}


def run_benchmark(out: str | Path, p: Plan, database: str | Path | None = None, device: str = "auto",
                  threads: int = 1) -> dict[str, Any]:
    """Run (or resume) every stage into ``out``; returns the summary also written to ``OUT/summary.json``."""
    import torch

    from medfoundry.data.database import MultiTaskDatabase
    from medfoundry.reports.html import _load_json, _sweep_config, build_report, summarise
    from medfoundry.reports.verdicts import goal_status, goal_verdicts
    from medfoundry.transfer.config import TransferConfig
    from medfoundry.transfer.efficiency import run_sweep
    from medfoundry.transfer.results import ResultStore

    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    timings: dict[str, Any] = {}
    db_root = Path(database) if database else out / "db"

    t0 = time.perf_counter()
    if database or stages.finished("database", p.settings("database")) and (db_root / "database.yaml").is_file():
        say(f"1/4 database: using {db_root} (skipped)")
    else:
        from medfoundry.data.synthetic import make_synthetic_database

        say(f"1/4 database: building the {p.scale} synthetic database in {db_root} ...")
        make_synthetic_database(db_root, seed=0, scale=p.scale, overwrite=True, progress=False)
        stages.mark("database", p.settings("database"), time.perf_counter() - t0)
        timings["database_s"] = round(time.perf_counter() - t0, 1)
    db = MultiTaskDatabase.open(db_root)
    downstream = p.downstream_tasks or db.task_names(group="downstream")
    pretrain_tasks = p.pretrain_tasks or db.task_names(group="pretrain")
    multi_run = out / "pretrain_multitask"
    singles = [out / f"pretrain_single_{t}" for t in p.single_tasks]

    t0 = time.perf_counter()
    if stages.finished("pretrain", p.settings("pretrain")):
        say("2/4 pretraining: done before (skipped)")
    else:
        say(f"2/4 pretraining: multi-task on {len(pretrain_tasks)} tasks and single-task on "
            f"{', '.join(p.single_tasks)}, {p.rounds} rounds x batch {p.batch_size} each (resumes from checkpoints)")
        side = None
        todo = [t for t, run in zip(p.single_tasks, singles) if not _finished_run(run, p.rounds)]
        if p.workers > 1 and todo:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
            side = pool.submit(_pretrain_singles, str(db_root), str(out), p.rounds, p.batch_size, todo, device, 1,
                               p.augment)
            pool.shutdown(wait=False)
        if not _finished_run(multi_run, p.rounds):
            _pretrain_one(str(db_root), str(multi_run), p.rounds, p.batch_size, pretrain_tasks, device, threads,
                          augment=p.augment)
        say("   multi-task encoder done")
        if side is not None:
            side.result()
        elif todo:
            _pretrain_singles(str(db_root), str(out), p.rounds, p.batch_size, todo, device, threads, p.augment)
        say("   single-task encoders done")
        stages.mark("pretrain", p.settings("pretrain"), time.perf_counter() - t0)
        timings["pretrain_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    sweep = out / "transfer"
    encoders = [f"multitask={multi_run}", *(f"single_{t}={r}" for t, r in zip(p.single_tasks, singles)),
                "random", "classical"]
    if stages.finished("sweep", p.settings("sweep")):
        say("3/4 sweep: done before (skipped)")
    else:
        say(f"3/4 sweep: {len(downstream)} tasks x {len(encoders)} encoders x 2 modes x {p.seeds} seeds x "
            f"{len(p.fractions)} fractions, {p.workers} worker(s) (resumes from {sweep / 'results.json'})")
        run_sweep(db_root, encoders=encoders, out=sweep, tasks=downstream, workers=p.workers,
                  fractions=p.fractions, seeds=p.seeds, modes=("frozen", "finetune"),
                  finetune_max_steps=p.finetune_max_steps, max_steps=p.max_steps, device=device, progress=False,
                  probe_multiscale=p.probe_multiscale, augment=p.finetune_augment,
                  encoder_lr_ratio=p.encoder_lr_ratio,
                  # the config refuses min_steps above a cap; the default (30) stays wherever it fits
                  min_steps=min(30, p.finetune_max_steps, p.max_steps),
                  on_run=lambda r: say(f"   {r.get('task')} {r.get('encoder')} {r.get('mode')} "
                                       f"{100 * float(r.get('fraction', 0)):g} % seed {r.get('seed')}: "
                                       f"{r.get('status')}"))
        stages.mark("sweep", p.settings("sweep"), time.perf_counter() - t0)
        timings["sweep_s"] = round(time.perf_counter() - t0, 1)

    say("4/4 report")
    report = build_report(sweep, title="medfoundry data-efficiency benchmark" + (" (quick smoke run)"
                                                                                if p.scale == "small" else ""),
                          smoke=True if p.scale == "small" else None)
    summaries = summarise(ResultStore(sweep).records)
    verdicts = goal_verdicts(summaries, _sweep_config(_load_json(sweep / "config.json")))
    goals = {g: {"status": goal_status(v.status for v in verdicts if v.goal == g),
                 "checks": [{"task": v.task, "encoder": v.encoder, "status": v.status, "text": v.text}
                            for v in verdicts if v.goal == g]} for g in ("A", "B", "C")}
    goal_fracs = {TransferConfig().goal_in_domain_fraction, TransferConfig().goal_out_of_domain_fraction}
    counts = image_counts(db_root, downstream, sorted(set(p.fractions) | goal_fracs))  # the goals' runs too
    summary = {"plan": asdict(p), "timings": timings, "stages": stages.done, "report": str(report),
               "plots": sorted(str(x) for x in (sweep / "plots").glob("*.*")),
               "training_images": counts, "goals": goals}
    atomic_write_json(out / SUMMARY_FILE, summary)
    _print_summary(summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    counts = summary["training_images"]
    fracs = list(next(iter(counts.values())).keys()) if counts else []
    print("\ntraining images per fraction")
    print(f"{'task':<24}" + "".join(f"{f:>8}" for f in fracs))
    for task, row in counts.items():
        print(f"{task:<24}" + "".join(f"{row[f]:>8}" for f in fracs))
    for g, d in summary["goals"].items():
        print(f"goal {g}: {d['status']}")
        for c in d["checks"]:
            print(f"  - {c['status']}: {c['text']}")
    print(f"report: {summary['report']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/data_efficiency", help="output folder (resumed if it exists)")
    parser.add_argument("--hours", type=float, default=2.0, help="wall-time budget the plan fits (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run on the small database (minutes)")
    parser.add_argument("--database", default=None, help="use this database instead of building one")
    parser.add_argument("--single-tasks", default=",".join(SINGLE_TASKS),
                        help="pretraining tasks of the single-task encoders (comma-separated, at least 2)")
    parser.add_argument("--workers", type=int, default=None, help="sweep processes (default: the cores, at most 8)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--augment", default="light", choices=("none", "light", "standard"),
                        help="pretraining augmentation (default light, chosen on the val split by "
                             "benchmarks/recipe_study.py; the first bench run used none)")
    parser.add_argument("--finetune-augment", default="light", choices=("none", "light", "standard"),
                        help="fine-tuning augmentation (default light, chosen on the val split; the first two "
                             "bench runs used none)")
    parser.add_argument("--encoder-lr-ratio", type=float, default=1.0,
                        help="encoder lr / head lr when fine-tuning a pretrained encoder (default 1.0, chosen on "
                             "the val split at 50 %%; the first two bench runs used 0.1)")
    parser.add_argument("--probe", default="multiscale", choices=("multiscale", "last"),
                        help="frozen probe on every encoder stage pooled (default) or the last stage only")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and its estimate, run nothing")
    args = parser.parse_args(argv)
    from medfoundry.transfer.efficiency import available_cores

    cores = args.workers or max(1, min(available_cores(), 8))
    singles = [t.strip() for t in args.single_tasks.split(",") if t.strip()]
    if len(singles) < 2:
        print(f"error: --single-tasks {args.single_tasks!r}: expected at least 2 pretraining tasks", file=sys.stderr)
        return 2
    out = Path(args.out)
    exists = bool(args.database) or (out / "db" / "database.yaml").is_file()
    try:
        p = plan(args.hours, cores, quick=args.quick, database_exists=exists, single_tasks=singles)
        p.augment, p.probe_multiscale = args.augment, args.probe == "multiscale"
        p.finetune_augment, p.encoder_lr_ratio = args.finetune_augment, args.encoder_lr_ratio
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    est = p.estimate_s
    say(f"plan ({'quick, ' if args.quick else ''}{args.hours:g} h on {cores} core(s)): database {p.scale}; "
        f"pretraining {p.rounds} rounds x batch {p.batch_size}, augment {p.augment} (multi-task and "
        f"{len(singles)} single-task); frozen probe {'multiscale' if p.probe_multiscale else 'last stage'}; "
        f"fine-tuning augment {p.finetune_augment}, encoder lr ratio {p.encoder_lr_ratio:g}; "
        f"sweep fractions {', '.join(f'{100 * f:g}%' for f in p.fractions)}, {p.seeds} seeds, fine-tune cap "
        f"{p.finetune_max_steps} steps, reference cap {p.max_steps} steps")
    say("estimate: " + ", ".join(f"{k[:-2]} {v / 60:.0f} min" for k, v in est.items())
        + " (CPU cost model; see the module docstring)")
    if args.plan_only:
        return 0
    from medfoundry.errors import MedfoundryError

    try:
        run_benchmark(out, p, database=args.database, device=args.device)
    except MedfoundryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
