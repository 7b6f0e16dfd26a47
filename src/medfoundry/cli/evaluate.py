"""``medfoundry evaluate``: challenge protocols on folders of label maps (thin layer over the API).

Torch-free: the protocols are numpy/scipy, so the command starts fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(
    help="Score predictions against references with a challenge protocol (BraTS, ISLES'22, KiTS21, default).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_console = Console()
_MAX_LISTED_FAILURES = 10


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _summary_table(results: dict, headline: tuple[str, ...]) -> Table:
    table = Table(title=f"{results['protocol']['name']}: {results['n_cases'] - results['n_failed']} of "
                        f"{results['n_cases']} cases scored without failure")
    for column, justify in (("region", "left"), ("figure", "left"), ("mean", "right"), ("median", "right"),
                            ("std", "right"), ("NaN", "right"), ("inf", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for region, figures in results["aggregates"].items():
        for figure, agg in figures.items():
            if headline and figure not in headline:
                continue
            table.add_row(region, figure, _fmt(agg["mean"]), _fmt(agg["median"]), _fmt(agg["std"]),
                          str(agg["n_nan"]), str(agg["n_inf"]))
    return table


@app.command("segmentation")
def segmentation_cmd(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predicted label maps (.nii.gz/.nii).")],
    ref: Annotated[Path, typer.Option("--ref", help="Folder of reference label maps; paired by case name.")],
    out: Annotated[Path, typer.Option("--out", help="Results JSON to write (per case and aggregates).")],
    protocol: Annotated[str, typer.Option("--protocol", help="Protocol name; see `medfoundry evaluate protocols`.")] = "default",
    allow_failures: Annotated[bool, typer.Option(
        "--allow-failures", help="Exit 0 even when cases failed (missing or unreadable predictions).")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Processes scoring cases in parallel.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar and no summary table.")] = False,
) -> None:
    """Score every reference against its prediction; write results.json; exit 1 if a case failed."""
    from ..evaluation.protocols import evaluate_segmentation, get_protocol

    chosen = get_protocol(protocol)
    results = evaluate_segmentation(pred, ref, chosen, out=out, workers=workers, progress=not quiet)
    if not quiet:
        _console.print(_summary_table(results, chosen.headline()))
        _console.print("every figure per case and region is in the results file", highlight=False)
    failed = [case for case in results["cases"] if case["status"] != "ok"]
    for case in failed[:_MAX_LISTED_FAILURES]:
        Console(stderr=True).print(f"failed: {case['case']}: {case['error']}", highlight=False, soft_wrap=True)
    if len(failed) > _MAX_LISTED_FAILURES:
        Console(stderr=True).print(f"... and {len(failed) - _MAX_LISTED_FAILURES} more failed cases (see {out})")
    if results["unmatched_predictions"]:
        Console(stderr=True).print(f"note: {len(results['unmatched_predictions'])} prediction file(s) match no "
                                   f"reference, e.g. {results['unmatched_predictions'][0]}", highlight=False)
    _console.print(f"results: {out}", highlight=False)
    if failed and not allow_failures:
        Console(stderr=True).print(f"[bold red]error:[/] {len(failed)} of {results['n_cases']} cases failed; "
                                   "pass --allow-failures to accept them", highlight=False)
        raise typer.Exit(1)


@app.command("protocols")
def protocols_cmd() -> None:
    """List the registered protocols with what they compute and their official source."""
    from ..evaluation.protocols import get_protocol, list_protocols

    table = Table(title="segmentation protocols")
    table.add_column("name")
    table.add_column("computes")
    table.add_column("checked against")
    for name in list_protocols():
        info = get_protocol(name).info()
        table.add_row(name, info["description"], info["source"])
    _console.print(table)
