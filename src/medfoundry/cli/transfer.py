"""``medfoundry transfer`` (data-efficiency sweep) and ``medfoundry report`` (HTML from results)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ..errors import ConfigError

__all__ = ["register"]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise ConfigError(f"--fractions {text!r}: expected comma-separated numbers in (0, 1], e.g. 0.01,0.1,1") from err
    if not values:
        raise ConfigError("--fractions: give at least one fraction")
    return values


def transfer(
    encoder: List[str] = typer.Option(..., "--encoder", "-e", help="random | random:<arch> | classical | single:<task> | RUN | "
                                      "checkpoint DIR | FILE@<arch>, optionally LABEL=...; repeat for several."),
    database: Path = typer.Option(..., "--database", "-d", help="Database folder."),
    task: Optional[List[str]] = typer.Option(None, "--task", "-t", help="Downstream task; repeat. Default: every "
                                             "task with group 'downstream'."),
    mode: Optional[List[str]] = typer.Option(None, "--mode", "-m", help="frozen | finetune; repeat. Default: both."),
    fractions: str = typer.Option("0.01,0.05,0.1,0.25,0.5,1.0", help="Training-data fractions, comma-separated."),
    seeds: int = typer.Option(3, help="Seeds per fraction (subset, head init, batch order)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (rerun the same command to resume)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs per run (default 100)."),
    max_steps: Optional[int] = typer.Option(None, help="Maximum optimizer steps per run (default 5000)."),
    min_steps: Optional[int] = typer.Option(None, help="Minimum optimizer steps per run (default 30)."),
    finetune_max_steps: Optional[int] = typer.Option(None, help="Lower step cap for fine-tuning runs (default: "
                                                     "--max-steps)."),
    goal_fractions: Optional[bool] = typer.Option(
        None, "--goal-fractions/--no-goal-fractions",
        help="Also run 1 % on in-domain and 50 % on out-of-domain tasks, where the report's goals are judged "
             "(default: yes)."),
    reference_full_budget: Optional[bool] = typer.Option(
        None, "--reference-full-budget/--reference-capped",
        help="Let the random-init 100 % reference run use --max-steps even when --finetune-max-steps is lower "
             "(default: yes, so a tight budget cannot under-train the baseline)."),
    patience: Optional[int] = typer.Option(None, help="Validations without improvement before stopping (default 5)."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size (default 32)."),
    augment: Optional[str] = typer.Option(None, help="Fine-tuning augmentation: none | light | standard "
                                          "(modality-aware flips/rotations, affine, intensity; default none)."),
    lr: Optional[float] = typer.Option(None, help="Head / decoder learning rate (default 1e-3)."),
    probe_lr: Optional[float] = typer.Option(None, help="Frozen linear-probe learning rate (default 1e-2)."),
    encoder_lr_ratio: Optional[float] = typer.Option(None, help="Encoder lr = lr x this when fine-tuning a "
                                                     "pretrained encoder (default 0.1)."),
    scratch_encoder_lr_ratio: Optional[float] = typer.Option(
        None, help="The same ratio for random-init encoders (default 1.0: trained from scratch at the full rate)."),
    val_policy: Optional[str] = typer.Option(None, help="scaled (val subset = same fraction) | full (default scaled)."),
    score_split: Optional[str] = typer.Option(None, help="test | val: val scores on half of the val split and "
                                              "early-stops on the other half, for choosing a recipe without "
                                              "reading test (default test)."),
    probe: Optional[str] = typer.Option(None, help="linear | mlp probe for frozen classification (default linear)."),
    probe_multiscale: Optional[bool] = typer.Option(None, "--probe-multiscale/--probe-last-stage",
                                                    help="Frozen probe on every encoder stage pooled (default) "
                                                    "or on the last stage only."),
    single_task_rounds: Optional[int] = typer.Option(None, help="Pretraining rounds of single:<task> baselines."),
    baseline: bool = typer.Option(True, help="Add the random-init baseline if no random encoder is given."),
    report: bool = typer.Option(True, help="Write report.html when the sweep ends."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes for the independent runs (each with "
                                "cores / N torch threads); the results do not depend on N."),
) -> None:
    """Transfer encoders to downstream tasks over training-data fractions (frozen probe and/or
    fine-tuning), early-stopped on the validation split, scored on the test split."""
    from ..reports import build_report
    from ..transfer import TransferConfig, run_sweep

    if max_steps is not None and min_steps is None:
        # A cap below the default floor lowers the floor with it (validation would refuse min > max).
        min_steps = min(TransferConfig().min_steps, max_steps)
    cfg = TransferConfig().replace(
        fractions=_fractions(fractions), seeds=seeds, modes=tuple(mode) if mode else None, device=device,
        max_epochs=epochs, max_steps=max_steps, min_steps=min_steps,
        finetune_max_steps=finetune_max_steps, reference_full_budget=reference_full_budget,
        goal_fractions=goal_fractions, patience=patience, batch_size=batch_size,
        lr=lr, probe_lr=probe_lr, encoder_lr_ratio=encoder_lr_ratio,
        scratch_encoder_lr_ratio=scratch_encoder_lr_ratio, val_policy=val_policy, probe=probe,
        score_split=score_split, probe_multiscale=probe_multiscale,
        single_task_rounds=single_task_rounds, progress=progress, augment=augment)
    console = Console()
    store = run_sweep(database, list(encoder), out, tasks=list(task) if task else None, config=cfg, baseline=baseline,
                      workers=workers)
    failed = [r for r in store.records if r.get("status") != "ok"]
    console.print(f"{len(store.records) - len(failed)} runs in {out / 'results.csv'}"
                  + (f" ([red]{len(failed)} failed[/]: rerun to retry)" if failed else ""))
    if report and len(store.records) > len(failed):
        console.print(f"report: {build_report(out)}")


def report(folder: Path = typer.Argument(..., help="A transfer output folder (holds results.json).")) -> None:
    """Rebuild plots/*.png and report.html of a transfer sweep from its results."""
    from ..reports import build_report

    Console().print(f"report: {build_report(folder)}")


def register(app: typer.Typer) -> None:
    """Add the ``transfer`` and ``report`` commands to the top-level app."""
    app.command("transfer")(transfer)
    app.command("report")(report)
