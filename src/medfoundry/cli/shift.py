"""``medfoundry shift``: graded scanner shifts of image folders and database tasks (robustness benchmarks).

A thin layer over :mod:`medfoundry.robustness.shifts` (numpy/scipy; no torch) and
:mod:`medfoundry.robustness.shifts_db`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console

__all__ = ["app"]

app = typer.Typer(help="Scanner shifts: seeded, graded corruptions of image folders (labels untouched).",
                  no_args_is_help=True, add_completion=False)


@app.command("make-volumes")
def make_volumes_cmd(
    images: Annotated[Path, typer.Argument(help="nnU-Net-style folder of CASE_0000.nii.gz ... files.")],
    out: Annotated[Path, typer.Argument(help="Output folder: one <corruption>_s<severity>/ folder per pair.")],
    corruptions: Annotated[str, typer.Option(
        "--corruptions", help="Comma-separated: bias, gamma, gaussian, rician, blur, lowres, ghosting, motion, ct; "
                              "or all.")] = "all",
    severities: Annotated[str, typer.Option("--severities", help="Comma-separated severities 1..5.")] = "1,3,5",
    labels: Annotated[Optional[Path], typer.Option(
        "--labels", help="Reference label folder, copied unchanged into each shifted folder.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same bytes.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write shifted copies of a 3D image folder with a provenance JSON per case."""
    from ..robustness.shifts import make_shift_volumes, parse_corruptions, parse_severities
    from .segment import _run_with_bar

    names, levels = parse_corruptions(corruptions), parse_severities(severities)
    folders = _run_with_bar("shift", lambda cb: make_shift_volumes(images, out, names, levels, seed=seed,
                                                                   labels=labels, progress=cb), progress)
    Console().print(f"wrote {len(folders)} shifted folders ({', '.join(names)} at severities "
                    f"{', '.join(map(str, levels))}) to {out}")


@app.command("make")
def make_cmd(
    database: Annotated[Path, typer.Argument(help="Source database folder.")],
    task: Annotated[List[str], typer.Option("--task", help="Task whose test split is shifted (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="New database: T__none_s0 and T__<corruption>_s<severity> "
                                                    "per task.")],
    corruptions: Annotated[str, typer.Option(
        "--corruptions", help="Comma-separated: bias, gamma, gaussian, blur, lowres (any image); rician, ghosting, "
                              "motion (MR); ct (CT); stain (RGB microscopy); or all (every one that fits the task)."
    )] = "all",
    severities: Annotated[str, typer.Option("--severities", help="Comma-separated severities 1..5.")] = "1,3,5",
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same bytes.")] = 0,
    scanner: Annotated[Optional[str], typer.Option(
        "--scanner", help="ct or mr, for tomographic tasks whose spec does not say which they are.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    test_samples: Annotated[Optional[int], typer.Option(
        "--test-samples", help="Keep only the first N samples of each split of each task (test shifted, train "
                               "and val copied); for large sources.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write graded corruptions of database tasks' test splits as tasks of a new database (labels untouched)."""
    from ..robustness.shifts import parse_severities
    from ..robustness.shifts_db import make_shift_database, parse_db_corruptions
    from .segment import _run_with_bar

    names, levels = parse_db_corruptions(corruptions), parse_severities(severities)
    shifted = _run_with_bar("shift", lambda cb: make_shift_database(
        database, task, out, names, levels, seed=seed, scanner=scanner, overwrite=overwrite,
        test_samples=test_samples, progress=cb), progress)
    by_task: dict[str, list[str]] = {}
    for name in shifted.task_names():
        spec = shifted.task(name).extra["shift"]
        if spec["severity"] == levels[0]:
            by_task.setdefault(spec["source_task"], []).append(spec["corruption"])
    console = Console()
    console.print(f"wrote {len(shifted.tasks)} tasks to {out}: per source task T, T__none_s0 (in distribution) and "
                  f"T__<corruption>_s<severity> at severities {', '.join(map(str, levels))}; only test splits shifted")
    for source, names_of in by_task.items():
        console.print(f"  {source}: {', '.join(names_of)}", soft_wrap=True)


# ``shift evaluate`` lives in its own module (torch only once the command runs)
from .shift_evaluate import evaluate_command as _evaluate_command  # noqa: E402

app.command("evaluate")(_evaluate_command)
