"""``make demo``: the whole product on the embedded database, end to end, on CPU.

build the synthetic database -> inspect it -> multi-task pretraining (+ a single-task baseline)
-> data-efficiency sweep on the held-out tasks (frozen and fine-tuned) -> HTML report.

With two or more cores the stages overlap where they are independent: while this process
pretrains the multi-task encoder (one core), a second process pretrains the single-task
baseline and runs the sweep's random-init and single-task runs, which need no multi-task
encoder; the rest of the sweep then runs in a pool of worker processes
(:func:`medfoundry.transfer.run_sweep`, ``workers``). The runs and their settings are the same
as one process would do.

The demo is a smoke run (one seed, about 200 training images per task): its report and its
printed summary say so, and no goal is called MET from one seed.

Every step resumes: re-running the demo skips what is already in ``--out``. The timings of
the first complete run stay in ``demo_timings.json`` (``"resumed": true`` when that run
itself continued an interrupted one); a later rerun writes ``demo_timings_resume.json``.
When stdout is not a terminal (``make demo > log``, CI) the rich bars show nothing until
they end, so every stage prints plain progress lines instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import MedfoundryError
from .utils import atomic_write_json

__all__ = ["run_demo", "main", "print_summary", "TIMINGS_FILE", "RESUME_TIMINGS_FILE"]

# Pretraining task of the single-task baseline: the tomographic lesion segmentation task is the
# closest single source for the in-domain downstream tasks, so it is the strongest single rival.
SINGLE_TASK = "mri_lesion_seg"
TIMINGS_FILE = "demo_timings.json"
RESUME_TIMINGS_FILE = "demo_timings_resume.json"


def _sweep_settings(fractions: tuple[float, ...], seeds: int, device: str) -> dict[str, Any]:
    """The demo sweep's settings: the same for the early random-init runs and the rest."""
    return dict(fractions=fractions, seeds=seeds, modes=("frozen", "finetune"), finetune_max_steps=60, patience=3,
                device=device)


def _side_work(db_root: str, out: str, single_rounds: int, seed: int, device: str, threads: int,
               settings: dict[str, Any]) -> dict[str, float]:
    """The second core's share of stage 2: the single-task baseline, then the sweep runs that do
    not need the multi-task encoder (random init and the single-task baseline)."""
    import torch

    from .training.pretrain import pretrain_demo
    from .transfer.efficiency import run_sweep

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    single = Path(out) / f"pretrain_single_{SINGLE_TASK}"
    pretrain_demo(db_root, single, rounds=single_rounds, tasks=[SINGLE_TASK], seed=seed, device=device,
                  progress=False)
    t1 = time.perf_counter()
    # the same encoder strings as stage 3's sweep, which then finds these runs done and skips them
    run_sweep(db_root, encoders=["random", f"single_task={single / 'model'}"], out=Path(out) / "transfer",
              progress=False, **settings)
    return {"pretrain_single_s": t1 - t0, "transfer_random_and_single_s": time.perf_counter() - t1}


def run_demo(out: str | Path, seed: int = 0, rounds: int = 200, single_rounds: int = 200,
             fractions: tuple[float, ...] = (0.01, 0.1, 1.0), seeds: int = 1, device: str = "auto",
             console: Console | None = None, workers: int = 1) -> Path:
    """Run the demo into ``out``; returns the path of the HTML report.

    ``workers`` > 1 overlaps the single-task baseline and its sweep runs and the random-init
    runs with the multi-task pretraining (in a second process) and runs the rest of the sweep in that many
    worker processes; 1 runs everything in this process, one stage after another.
    """
    from .data.inspect import contact_sheet, summarize, summary_table
    from .data.synthetic import make_synthetic_database
    from .reports.html import build_report
    from .training.pretrain import FINAL_METRICS_FILE, pretrain_demo
    from .transfer.efficiency import run_sweep, threads_per_worker

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    db_root = out / "db"
    timings: dict[str, float] = {}
    detail: dict[str, Any] = {"workers": workers, "load_1min_at_start": _load()}
    first = out / TIMINGS_FILE
    complete_before = _complete_timings(first)
    resumed = (db_root / "database.yaml").is_file()
    plain = not sys.stdout.isatty()
    settings = _sweep_settings(fractions, seeds, device)
    start = time.perf_counter()

    def stage_done(name: str) -> None:
        if plain:  # a visible heartbeat in logs, where rich bars stay silent until they end
            console.print(f"{name} done in {timings[name + '_s']:.0f} s", highlight=False)

    t0 = time.perf_counter()
    console.rule("1/4 embedded synthetic database")
    if not (db_root / "database.yaml").is_file():
        if plain:
            console.print(f"building the synthetic database in {db_root} ...", highlight=False)
        make_synthetic_database(db_root, seed=seed, scale="small", progress=True)
    console.print(summary_table(summarize(db_root)))
    sheet = contact_sheet(db_root, out / "db_contact_sheet.png", per_task=4, seed=seed)
    console.print(f"contact sheet: {sheet}")
    timings["database_s"] = time.perf_counter() - t0
    stage_done("database")

    t0 = time.perf_counter()
    console.rule(f"2/4 multi-task pretraining ({rounds} rounds, all pretraining tasks)")
    side = None
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        console.print(f"meanwhile, in a second process: the single-task baseline ({single_rounds} rounds on "
                      f"{SINGLE_TASK}) and the sweep's random-init and single-task runs", highlight=False)
        pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
        side = pool.submit(_side_work, str(db_root), str(out), single_rounds, seed, device,
                           threads_per_worker(2), settings)
        pool.shutdown(wait=False)
    tm = time.perf_counter()
    run = pretrain_demo(db_root, out / "pretrain_multitask", rounds=rounds, seed=seed, device=device)
    detail["pretrain_multitask_s"] = time.perf_counter() - tm
    _print_metrics(console, run / FINAL_METRICS_FILE, "multi-task encoder: validation metrics per task")
    single = out / f"pretrain_single_{SINGLE_TASK}"
    if side is not None:
        if plain:
            console.print("waiting for the single-task baseline and its sweep runs ...", highlight=False)
        detail.update(side.result())
    else:
        console.rule(f"   single-task baseline ({single_rounds} rounds on {SINGLE_TASK})")
        ts = time.perf_counter()
        single = pretrain_demo(db_root, single, rounds=single_rounds, tasks=[SINGLE_TASK], seed=seed, device=device)
        detail["pretrain_single_s"] = time.perf_counter() - ts
    timings["pretraining_s"] = time.perf_counter() - t0
    stage_done("pretraining")

    t0 = time.perf_counter()
    console.rule("3/4 transfer: data-efficiency sweep on the held-out tasks")
    run_sweep(db_root, encoders=[f"multitask={run / 'model'}", f"single_task={single / 'model'}"],
              out=out / "transfer", workers=workers, **settings)
    timings["transfer_s"] = time.perf_counter() - t0
    stage_done("transfer")

    t0 = time.perf_counter()
    console.rule("4/4 report")
    report = build_report(out / "transfer", title="medfoundry demo: transfer of the multi-task encoder", smoke=True)
    timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start
    record = {**timings, "resumed": resumed, "detail": {k: round(v, 1) if isinstance(v, float) else v
                                                        for k, v in detail.items()}}
    # a rerun skips finished steps, so its timings say nothing about a run from scratch
    target = out / RESUME_TIMINGS_FILE if complete_before else first
    atomic_write_json(target, record)
    console.print(" ".join(f"{k}={v:.0f}" for k, v in timings.items())
                  + (f" (resumed: {target.name}; the first complete run's timings stay in {first.name})"
                     if complete_before else ""), highlight=False)
    print_summary(console, out / "transfer")
    console.print(f"[bold green]report:[/] {report.resolve()}")
    return report


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def print_summary(console: Console, folder: str | Path) -> None:
    """The goal verdicts of a sweep folder, under the smoke-run caveat when it applies.

    Uses the report's own verdicts (:mod:`medfoundry.reports.verdicts`), so a one-seed run
    prints INCONCLUSIVE, never MET, and cannot contradict the benchmark in the README.
    """
    from .reports.html import BENCHMARK_HINT, _load_json, _sweep_config, smoke_reasons, summarise
    from .reports.verdicts import goal_status, goal_verdicts
    from .transfer.results import ResultStore

    folder = Path(folder)
    store = ResultStore(folder)
    summaries = summarise(store.records)
    if not summaries:
        return
    verdicts = goal_verdicts(summaries, _sweep_config(_load_json(folder / "config.json")))
    reasons = smoke_reasons(store.records, summaries) or ["the demo's settings"]
    console.print(f"[bold yellow]smoke run[/] ({'; '.join(reasons)}): the figures show that the pipeline runs, "
                  f"they are not evidence for or against the goals; {BENCHMARK_HINT}.", highlight=False)
    for goal in ("A", "B", "C"):
        vs = [v for v in verdicts if v.goal == goal]
        if vs:
            checks = ", ".join(f"{v.task}{'' if goal != 'C' else ' mode'}: {v.status}" for v in vs)
            console.print(f"goal {goal}: {goal_status(v.status for v in vs)} ({checks})", highlight=False)


def _complete_timings(path: Path) -> bool:
    """``True`` when ``path`` holds the timings of a demo run that reached its end."""
    try:
        return "total_s" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _print_metrics(console: Console, path: Path, title: str) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    table = Table(title=title)
    for col in ("task", "metric", "value", "chance"):
        table.add_column(col)
    for task, metrics in data["metrics"].items():
        primary = next((k for k in metrics if f"{k}_chance" in metrics), None)
        if primary is None:
            continue
        table.add_row(task, primary, f"{metrics[primary]:.3f}", f"{metrics[primary + '_chance']:.3f}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medfoundry.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (resumed if it exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=200, help="multi-task pretraining rounds")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for the overlapped stages and the sweep (default: the cores, at most 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of this process (default: the cores divided among the workers)")
    args = parser.parse_args(argv)
    import torch

    from .transfer.efficiency import available_cores, threads_per_worker

    cores = available_cores()
    workers = args.workers or max(1, min(cores, 8))
    if workers < 1:
        Console(stderr=True).print(f"[bold red]error:[/] --workers {workers}: expected an integer >= 1")
        return 2
    # One thread per worker on 2 cores: OpenMP threads that outnumber the free cores spin-wait
    # on each other (1.5 s per round with 1 thread vs up to 50 s with 2 when another process
    # held one of 2 cores), so this process never takes more than its share.
    torch.set_num_threads(args.threads or threads_per_worker(min(workers, 2), cores))
    try:
        run_demo(args.out, seed=args.seed, rounds=args.rounds, device=args.device, workers=workers)
    except MedfoundryError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
