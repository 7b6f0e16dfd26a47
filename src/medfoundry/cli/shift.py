"""``medfoundry shift``: graded scanner shifts of image folders (robustness benchmarks).

A thin layer over :mod:`medfoundry.robustness.shifts` (numpy/scipy; no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
