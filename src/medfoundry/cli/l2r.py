"""``medfoundry l2r``: Learn2Reg evaluation, ranking and a synthetic dataset (thin layer over the API)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError

__all__ = ["app"]

app = typer.Typer(
    help="Learn2Reg: evaluate displacement fields, rank methods, make a synthetic dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_console = Console()
_ALLOW_FAILURES_HELP = "Exit 0 even when pairs failed (they stay listed in the results)."

_SUMMARY_KEYS = [
    ("dice", "Dice"), ("dice_initial", "Dice initial"), ("hd95", "HD95 (vox)"), ("hd95_mm", "HD95 (mm)"),
    ("tre_lm", "TRE lm (mm)"), ("tre_lm_initial", "TRE lm initial"), ("tre_kp", "TRE kp (mm)"),
    ("tre_kp_initial", "TRE kp initial"), ("sdlogj_official", "SDlogJ (official)"), ("sdlogj", "SDlogJ (J>0)"),
    ("folding_percent", "folding %"), ("ndv_percent", "NDV %"), ("runtime_s", "runtime (s)"),
]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


def _summary_table(results: dict) -> Table:
    agg = results["aggregates"]
    table = Table(title=f"{results['task']} / {results['split']} / {results['method']}: "
                        f"{results['n_pairs'] - results['n_failed']} of {results['n_pairs']} pairs evaluated")
    table.add_column("figure")
    table.add_column("mean", justify="right")
    table.add_column("std", justify="right")
    for key, label in _SUMMARY_KEYS:
        if key in agg:
            table.add_row(label, _fmt(agg[key]["mean"]), _fmt(agg[key]["std"]))
    for key, label in (("dsc30", "DSC30"), ("tre_lm30", "TRE30 lm (mm)"), ("tre_kp30", "TRE30 kp (mm)")):
        if key in agg:
            table.add_row(label, _fmt(agg[key]), "")
    return table


@app.command("evaluate")
def evaluate_cmd(
    dataset: Annotated[Path, typer.Option("--dataset", help="Learn2Reg dataset folder (dataset JSON, imagesTr, ...).")],
    fields: Annotated[Path, typer.Option("--fields", help="Folder of disp_FFFF_MMMM.nii.gz/.npz fields (voxels, fixed -> moving).")],
    out: Annotated[Path, typer.Option("--out", help="Results JSON to write.")],
    split: Annotated[str, typer.Option("--split", help="val or test.")] = "val",
    method_name: Annotated[Optional[str], typer.Option("--method-name", help="Method name in the results (default: the fields folder's name).")] = None,
    official_only: Annotated[bool, typer.Option("--official-only", help="Only the challenge's figures (Dice, HD95 in voxels, TRE, official SDlogJ).")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="Official evaluation config JSON (pairs, metrics, labels, shape, masking).")] = None,
    runtimes: Annotated[Optional[Path], typer.Option("--runtimes", help="JSON {pair id: seconds} of the method's runtimes.")] = None,
    allow_failures: Annotated[bool, typer.Option("--allow-failures", help=_ALLOW_FAILURES_HELP)] = False,
) -> None:
    """Evaluate a folder of displacement fields; pairs that fail are listed, the others still count."""
    from ..learn2reg import evaluate_fields

    if split not in ("val", "test"):
        raise ConfigError(f"--split {split!r}: expected val or test")
    results = evaluate_fields(dataset, fields, split, config=config, method_name=method_name,
                              official_only=official_only, runtimes=runtimes, out=out, progress=True)
    _console.print(_summary_table(results))
    for fail in results["failed"]:
        _console.print(f"[red]failed[/] {fail['pair_id']} ({fail['fixed']} -> {fail['moving']}): {fail['error']}",
                       highlight=False, soft_wrap=True)
    _console.print(f"results: {out}")
    _exit_on_failures(len(results["failed"]), results["n_pairs"], allow_failures)


def _exit_on_failures(failed: int, total: int, allowed: bool) -> None:
    """Exit 1 when a pair failed (the results still list it) unless failures are allowed."""
    if failed and not allowed:
        Console(stderr=True).print(f"[bold red]error:[/] {failed} of {total} pairs failed (listed above); "
                                   "pass --allow-failures to exit 0 anyway", highlight=False, soft_wrap=True)
        raise typer.Exit(1)



@app.command("run")
def run_cmd(
    dataset: Annotated[Path, typer.Option("--dataset", help="Learn2Reg dataset folder (dataset JSON, imagesTr, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for disp_FFFF_MMMM.nii.gz fields, runtimes.json and failures.json.")],
    split: Annotated[str, typer.Option("--split", help="val or test.")] = "val",
    method: Annotated[Optional[str], typer.Option("--method", help="Registration method (default: the preset's); see `medfoundry register --help`.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="brain_mr, abdomen_ct, lung_ct, ... (sets the method; default: the method's defaults, brain_mr for hybrid; see docs/registration.md).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML of method parameters applied on top of the preset.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override one parameter, key=value (repeatable).")] = None,
    use_masks: Annotated[bool, typer.Option("--use-masks/--no-masks", help="Use masks*/ files when they exist.")] = True,
    use_labels: Annotated[bool, typer.Option("--use-labels", help="Label-driven mode: register the labels*/ segmentations.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute fields that already exist.")] = False,
    allow_failures: Annotated[bool, typer.Option("--allow-failures", help=_ALLOW_FAILURES_HELP)] = False,
) -> None:
    """Register every pair of a Learn2Reg split; writes fields in the official naming and runtimes.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..learn2reg import Learn2RegDataset
    from ..learn2reg.runner import run_split
    from ..registration.presets import parse_overrides

    overrides = dict(parse_overrides(set_))
    if use_labels:
        overrides["features"] = "labels"
    total = len(Learn2RegDataset(dataset).pairs(split)) if split in ("val", "test") else 0
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}")]
    with Progress(*columns, console=_console) as bar:
        task = bar.add_task(f"{dataset.name} {split}", total=total, last="")

        def advance(pair_id: str, seconds: float | None) -> None:
            bar.update(task, advance=1, last="" if seconds is None else f"{pair_id}: {seconds:.1f} s")

        run = run_split(dataset, out, split, method=method, preset=preset, config_file=config, overrides=overrides,
                        device=device, use_masks=use_masks, overwrite=overwrite, progress=advance)
    for pair_id, error in run.failures.items():
        _console.print(f"[red]failed[/] {pair_id}: {error}", highlight=False, soft_wrap=True)
    done = len(run.runtimes)
    mean = sum(run.runtimes.values()) / max(done, 1)
    _console.print(f"{done} fields in {out} (mean {mean:.1f} s/pair); evaluate with "
                   f"`medfoundry l2r evaluate --dataset {dataset} --fields {out} --runtimes {run.runtimes_path} "
                   "--out RESULTS.json`", highlight=False, soft_wrap=True)
    _exit_on_failures(len(run.failures), total, allow_failures)


@app.command("rank")
def rank_cmd(
    results: Annotated[list[Path], typer.Argument(help="Results JSON files (one per method and task).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for ranking.csv, ranking.json, ranking.md and ranking.png.")],
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level of the Wilcoxon rank-sum tests.")] = 0.05,
    runtime_max: Annotated[float, typer.Option("--runtime-max", help="Runtime (s) of pairs without one; also the cap.")] = 600.0,
    sdlogj: Annotated[str, typer.Option("--sdlogj", help="sdlogj_official (challenge) or sdlogj (log J over J > 0).")] = "sdlogj_official",
) -> None:
    """Rank methods per task the Learn2Reg way (significance wins -> scores -> geometric mean)."""
    from ..learn2reg.ranking import rank_results
    from ..utils import atomic_write_json, atomic_write_text

    table = rank_results(results, alpha=alpha, runtime_max_s=runtime_max, sdlogj_key=sdlogj)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ranking.csv")
    atomic_write_json(out / "ranking.json", table.to_dict())
    atomic_write_text(out / "ranking.md", table.to_markdown())
    table.plot(out / "ranking.png")
    _console.print(table.to_rich())
    _console.print(f"written: {out / 'ranking.csv'}, ranking.json, ranking.md, ranking.png")


@app.command("make-dataset")
def make_dataset_cmd(
    out: Annotated[Path, typer.Argument(help="Destination folder.")],
    resolution: Annotated[int, typer.Option("--resolution", help="MNI152 template resolution in mm (2 = 99x117x95).")] = 2,
    pairs: Annotated[int, typer.Option("--pairs", help="Number of validation pairs.")] = 3,
    test_pairs: Annotated[int, typer.Option("--test-pairs", help="Number of test pairs.")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 0,
    magnitude: Annotated[float, typer.Option("--magnitude-mm", help="Largest displacement per axis of the true fields (mm).")] = 15.0,
    split_hemispheres: Annotated[bool, typer.Option("--split-hemispheres/--no-split-hemispheres", help="Labels 1-3 left and 4-6 right, or CSF/GM/WM 1-3 only.")] = True,
) -> None:
    """Write a Learn2Reg-layout dataset from the MNI152 template with known deformations."""
    from ..learn2reg.dataset import make_dataset

    path = make_dataset(out, resolution=resolution, pairs=pairs, seed=seed, test_pairs=test_pairs,
                        progress=True, magnitude_mm=magnitude, split_hemispheres=split_hemispheres)
    _console.print(f"dataset: {path} ({pairs} val + {test_pairs} test pairs); true fields in {path / 'ground_truth'}")


@app.command("check-config")
def check_config_cmd(
    configs: Annotated[list[Path], typer.Argument(help="Official evaluation config JSON files.")],
) -> None:
    """Parse official evaluation configs and print what each asks for."""
    from ..learn2reg import load_evaluation_config

    table = Table(title="Learn2Reg evaluation configs")
    for col in ("task", "metrics", "labels", "expected shape", "pairs", "masked"):
        table.add_column(col)
    for path in configs:
        cfg = load_evaluation_config(path)
        labels = cfg.labels_for("dice") or cfg.labels_for("hd95")
        table.add_row(cfg.task_name, ", ".join(cfg.metrics), str(len(labels)) if labels else "-",
                      "x".join(map(str, cfg.expected_shape or ())), str(len(cfg.pairs)), str(cfg.masked))
    _console.print(table)
