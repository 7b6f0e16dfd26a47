"""``make demo``: the whole product on the embedded database, end to end, on CPU.

build the synthetic database -> inspect it -> multi-task pretraining (+ a single-task baseline)
-> data-efficiency sweep on the held-out tasks (frozen and fine-tuned) -> HTML report.

Every step resumes: re-running the demo skips what is already in ``--out``. The timings of
the first complete run stay in ``demo_timings.json`` (``"resumed": true`` when that run
itself continued an interrupted one); a later rerun writes ``demo_timings_resume.json``.
When stdout is not a terminal (``make demo > log``, CI) the rich bars show nothing until
they end, so every stage prints plain progress lines instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import MedfoundryError
from .utils import atomic_write_json

__all__ = ["run_demo", "main", "TIMINGS_FILE", "RESUME_TIMINGS_FILE"]

# Pretraining task of the single-task baseline: the tomographic lesion segmentation task is the
# closest single source for the in-domain downstream tasks, so it is the strongest single rival.
SINGLE_TASK = "mri_lesion_seg"
TIMINGS_FILE = "demo_timings.json"
RESUME_TIMINGS_FILE = "demo_timings_resume.json"


def run_demo(out: str | Path, seed: int = 0, rounds: int = 200, single_rounds: int = 200,
             fractions: tuple[float, ...] = (0.01, 0.1, 1.0), seeds: int = 1, device: str = "auto",
             console: Console | None = None) -> Path:
    """Run the demo into ``out``; returns the path of the HTML report."""
    from .data.inspect import contact_sheet, summarize, summary_table
    from .data.synthetic import make_synthetic_database
    from .reports.html import build_report
    from .training.pretrain import FINAL_METRICS_FILE, pretrain_demo
    from .transfer.efficiency import run_sweep

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    db_root = out / "db"
    timings: dict[str, float] = {}
    first = out / TIMINGS_FILE
    complete_before = _complete_timings(first)
    resumed = (db_root / "database.yaml").is_file()
    plain = not sys.stdout.isatty()

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
    run = pretrain_demo(db_root, out / "pretrain_multitask", rounds=rounds, seed=seed, device=device)
    _print_metrics(console, run / FINAL_METRICS_FILE, "multi-task encoder: validation metrics per task")
    console.rule(f"   single-task baseline ({single_rounds} rounds on {SINGLE_TASK})")
    single = pretrain_demo(db_root, out / f"pretrain_single_{SINGLE_TASK}", rounds=single_rounds,
                           tasks=[SINGLE_TASK], seed=seed, device=device)
    timings["pretraining_s"] = time.perf_counter() - t0
    stage_done("pretraining")

    t0 = time.perf_counter()
    console.rule("3/4 transfer: data-efficiency sweep on the held-out tasks")
    run_sweep(db_root, encoders=[f"multitask={run / 'model'}", f"single_task={single / 'model'}"],
              out=out / "transfer", fractions=fractions, seeds=seeds, modes=("frozen", "finetune"),
              finetune_max_steps=60, patience=3, device=device)
    timings["transfer_s"] = time.perf_counter() - t0
    stage_done("transfer")

    console.rule("4/4 report")
    report = build_report(out / "transfer", title="medfoundry demo: transfer of the multi-task encoder")
    timings["total_s"] = sum(timings.values())
    record = {**timings, "resumed": resumed}
    # a rerun skips finished steps, so its timings say nothing about a run from scratch
    target = out / RESUME_TIMINGS_FILE if complete_before else first
    atomic_write_json(target, record)
    console.print(" ".join(f"{k}={v:.0f}" for k, v in timings.items())
                  + (f" (resumed: {target.name}; the first complete run's timings stay in {first.name})"
                     if complete_before else ""), highlight=False)
    console.print(f"[bold green]report:[/] {report.resolve()}")
    return report


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
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: one core fewer than available, at least 1)")
    args = parser.parse_args(argv)
    import os

    import torch

    # OpenMP threads that outnumber the free cores spin-wait on each other: measured 1.5 s per
    # round with 1 thread vs up to 50 s with 2 threads when a second process held one of 2 cores.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(args.threads or max(1, cores - 1))
    try:
        run_demo(args.out, seed=args.seed, rounds=args.rounds, device=args.device)
    except MedfoundryError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
