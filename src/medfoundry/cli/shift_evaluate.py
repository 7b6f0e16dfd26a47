"""``medfoundry shift evaluate``: score a classification, multilabel or 2D segmentation head of one
or several runs on a database task under test-time methods and ensembles.

Thin layer over :func:`medfoundry.robustness.head_eval.evaluate_heads`; torch is imported only
when the command runs (the CLI starts without it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["evaluate_command"]


def _fmt(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def evaluate_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s) (RUN/model) or save_pretrained folder(s); "
                                                    "several make an ensemble.")],
    database: Annotated[Path, typer.Option("--database", help="Database root holding the task.")],
    task: Annotated[str, typer.Option("--task", help="Task whose head is scored (classification, multilabel, "
                                                     "2D segmentation).")],
    out: Annotated[Path, typer.Option("--out", help="Results JSON; <stem>_reliability.{png,svg} go beside it.")],
    split: Annotated[str, typer.Option("--split", help="Split scored: train, val or test.")] = "test",
    adapt: Annotated[str, typer.Option(
        "--adapt", help="Comma-separated test-time methods, each scored: none, tta, entropy, etta.")] = "none",
    ensemble: Annotated[str, typer.Option(
        "--ensemble", help="How several runs combine: mean (probabilities), vote, staple (segmentation).")] = "mean",
    adapt_steps: Annotated[Optional[int], typer.Option("--adapt-steps", help="Adam steps per image (default 1).")
                           ] = None,
    adapt_lr: Annotated[Optional[float], typer.Option("--adapt-lr", help="Learning rate of the norm affines "
                                                                         "(default 1e-3).")] = None,
    adapt_mode: Annotated[Optional[str], typer.Option("--adapt-mode", help="reset (per image, default) or "
                                                                           "continual.")] = None,
    rotate: Annotated[bool, typer.Option("--rotate/--no-rotate", help="tta: add in-plane quarter turns to the "
                                                                      "flips.")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 16,
    max_samples: Annotated[Optional[int], typer.Option("--max-samples", help="Score the first N samples.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed set before each method.")] = 0,
    head: Annotated[Optional[str], typer.Option(
        "--head", help="The runs' head for --task (default: the task's name, or T for a shifted task "
                       "T__<corruption>_s<severity>).")] = None,
) -> None:
    """Score a task head per test-time method: primary metric, ECE, time and memory per case."""
    from ..robustness.adapt import AdaptConfig
    from ..robustness.head_eval import evaluate_heads

    methods = [m.strip() for m in adapt.split(",") if m.strip()]
    settings = AdaptConfig().replace(steps=adapt_steps, lr=adapt_lr, mode=adapt_mode)
    report = evaluate_heads(runs, database, task, split=split, methods=methods, ensemble=ensemble, adapt=settings,
                            rotate=rotate, batch_size=batch_size, max_samples=max_samples, device=device,
                            seed=seed, head=head, out=out)
    first = next(iter(report["methods"].values()))
    label = f"{len(runs)} runs, {report['ensemble']}" if report["ensemble"] else str(runs[0])
    table = Table(title=f"{task} ({report['kind']}, {split}, n={report['n']}): {label}")
    for column in ("method", first["primary_metric"], "ECE", "s / case", "peak MiB"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, entry in report["methods"].items():
        table.add_row(method, _fmt(entry["score"]), _fmt(entry["ece"]), _fmt(entry["seconds_per_case"], 4),
                      _fmt(entry["peak_memory_mb"], 0))
    console = Console()
    console.print(table)
    console.print(f"results: {out}", highlight=False)
