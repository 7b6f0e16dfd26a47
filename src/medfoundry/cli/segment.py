"""``medfoundry segment``: 3D segmentation (make phantoms, train, predict, validate, inspect),
and ``medfoundry data import volumes3d``.

A thin layer over :mod:`medfoundry.segmentation`, :mod:`medfoundry.data.volumes3d` and
:mod:`medfoundry.data.adapters.nnunet_folder`; torch is imported inside the commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

__all__ = ["app", "register", "volumes3d_cmd"]

app = typer.Typer(help="3D segmentation: nnU-Net-style folders in, NIfTI label maps out.", no_args_is_help=True,
                  add_completion=False)


def register(root: typer.Typer) -> None:
    """Mount ``segment`` on the root app and ``volumes3d`` under ``data import``."""
    from .data import import_app

    root.add_typer(app, name="segment")
    import_app.command("volumes3d")(volumes3d_cmd)


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _bar(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=_console())


def _run_with_bar(description: str, fn, show: bool = True):
    if not show:
        return fn(None)
    with _bar(description) as bar:
        job = bar.add_task(description, total=None)
        return fn(lambda done, total: bar.update(job, completed=done, total=total))


def volumes3d_cmd(
    images: Annotated[Path, typer.Argument(help="Folder of CASE_0000.nii.gz ... CASE_000K.nii.gz (or 4D) volumes.")],
    labels: Annotated[Path, typer.Argument(help="Folder of CASE.nii.gz label maps (class indices 0..K-1).")],
    db: Annotated[Path, typer.Option("--db", help="Database folder (created if missing).")],
    task: Annotated[str, typer.Option("--task", help="Name of the new task: lower-case letters, digits, '_'.")],
    modality: Annotated[str, typer.Option("--modality", help="tomographic, microscopic, x-ray or other.")],
    classes: Annotated[Optional[str], typer.Option(
        "--classes", help="Comma-separated class names, background first (default: dataset.json, else generic).")
    ] = None,
    spacing: Annotated[Optional[tuple[float, float, float]], typer.Option(
        "--spacing", help="Resample every case to this voxel size, mm per axis (NIfTI i j k order).")] = None,
    intensity: Annotated[str, typer.Option("--intensity", help="zscore (per case and channel) or none.")] = "zscore",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of cases for validation.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/val split.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Store an nnU-Net-style folder as a 3D segmentation task (whole volumes, memory-mapped)."""
    from ..data.adapters.nnunet_folder import import_volumes3d
    from ..data.tasks import parse_modality

    modality = parse_modality(modality, where="--modality").value
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    stored = _run_with_bar("import", lambda cb: import_volumes3d(
        images, labels, db, task, modality=modality, classes=names, spacing=spacing, intensity=intensity,
        val_fraction=val_fraction, seed=seed, progress=cb), progress)
    s = stored.summary()
    _console().print(f"added 3D task [bold]{task}[/] to {db}: {s['cases']} cases ({s['splits']['train']} train, "
                     f"{s['splits']['val']} val), channels {', '.join(s['channels'])}, classes "
                     f"{', '.join(s['classes'])}, shapes {s['shape_min']}..{s['shape_max']} voxels")


@app.command("make-phantoms")
def make_phantoms_cmd(
    out: Annotated[Path, typer.Argument(help="New folder (nnU-Net layout: imagesTr, labelsTr, imagesTs, labelsTs).")],
    cases: Annotated[int, typer.Option("--cases", help="Training cases.")] = 16,
    test_cases: Annotated[int, typer.Option("--test-cases", help="Held-out cases.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same bytes.")] = 0,
    spacing: Annotated[float, typer.Option("--spacing", help="Voxel size in mm (kidney: in-plane).")] = 3.0,
    family: Annotated[str, typer.Option(
        "--family", help="brain_tumour (T1, T1c, T2, FLAIR; BraTS labels) or kidney (CT; KiTS labels).")
    ] = "brain_tumour",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write 3D phantoms as an nnU-Net folder: brain tumours (4 MR sequences) or kidneys (CT)."""
    import json

    from ..data.synthetic.phantoms3d import make_phantoms

    _run_with_bar("phantoms", lambda cb: make_phantoms(
        out, family, cases=cases, test_cases=test_cases, seed=seed, spacing=spacing, progress=cb), progress)
    regions = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["regions"]
    _console().print(f"wrote {cases} training and {test_cases} held-out {family} phantoms to {out} "
                     f"(regions: --regions \"{regions}\")")


@app.command("train")
def train_cmd(
    database: Annotated[Path, typer.Option("--database", help="Database folder holding the 3D task.")],
    task: Annotated[str, typer.Option("--task", help="The 3D segmentation task.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder; resumed when it holds a checkpoint.")],
    encoder: Annotated[str, typer.Option(
        "--encoder", help="random, a checkpoint folder (pretrain RUN/final) or a .safetensors/.pt state dict.")
    ] = "random",
    encoder_name: Annotated[Optional[str], typer.Option("--encoder-name", help="Registered architecture.")] = None,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Wall-clock budget of the command (default 4).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (instead of --minutes).")] = None,
    regions: Annotated[Optional[str], typer.Option(
        "--regions", help='Sigmoid regions, e.g. "WT=1,2,3;TC=1,3;ET=3" (default: softmax classes).')] = None,
    patch: Annotated[Optional[tuple[int, int, int]], typer.Option("--patch", help="Patch size, voxels.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Patches per step.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", help="CPU threads (default 0: the cores not already busy).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="SegmentConfig YAML; flags override it.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train a 3D segmentation network on patches (Dice + CE, or region losses)."""
    from ..segmentation import SegmentConfig, train_segmentation

    base = SegmentConfig.from_yaml(config).to_dict() if config else {}
    base.update({"database": str(database), "task": task, "encoder": encoder})
    if steps is not None or minutes is not None:  # a budget flag replaces the file's budget
        base["steps"], base["minutes"] = steps, minutes
    for key, value in (("encoder_name", encoder_name), ("regions", regions), ("patch", patch),
                       ("batch_size", batch_size), ("device", device), ("seed", seed), ("threads", threads)):
        if value is not None:
            base[key] = list(value) if isinstance(value, tuple) else value
    cfg = SegmentConfig.from_dict(base, source=str(config or "flags"))
    summary = train_segmentation(cfg, out, progress=progress)
    scores = ", ".join(f"{k} {v:.3f}" for k, v in summary["val_dice"].items())
    _console().print(f"{summary['steps']} steps in {summary['seconds']:.0f} s; validation Dice: {scores or '-'}; "
                     f"model in {out / 'model'}")


@app.command("predict")
def predict_cmd(
    run: Annotated[list[Path], typer.Argument(help="Run folder(s) of `segment train`; several form an ensemble.")],
    images: Annotated[Path, typer.Option("--images", help="Folder of CASE_0000.nii.gz ... files.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for CASE.nii.gz label maps.")],
    tta: Annotated[bool, typer.Option("--tta", help="Average over the 8 flips of the three axes.")] = False,
    adapt: Annotated[str, typer.Option(
        "--adapt", help="Test-time method: none, tta (flips), entropy (norm-layer entropy minimisation) or etta.")
    ] = "none",
    adapt_steps: Annotated[int, typer.Option("--adapt-steps", help="Adam steps per case (entropy, etta).")] = 3,
    adapt_lr: Annotated[float, typer.Option("--adapt-lr", help="Learning rate of the adaptation.")] = 1e-2,
    adapt_mode: Annotated[str, typer.Option(
        "--adapt-mode", help="reset (weights restored after each case) or continual.")] = "reset",
    tta_rotate: Annotated[bool, typer.Option(
        "--tta-rotate", help="With --adapt tta: also the quarter turns in the plane of voxel axes X, Y "
                             "(the axial plane of axial scans); 16 passes instead of 8.")] = False,
    ensemble: Annotated[str, typer.Option(
        "--ensemble", help="With several runs: mean (probabilities), vote or staple (label maps).")] = "mean",
    labels: Annotated[Optional[Path], typer.Option(
        "--labels", help="Reference label folder: print Dice and ECE, write OUT/summary.json and reliability.png.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[int, typer.Option("--threads", help="CPU threads (0: the cores not already busy).")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Predict label maps with the shape and affine of each CASE_0000 file."""
    from ..robustness.adapt import AdaptConfig
    from ..segmentation import predict_folder

    cfg = AdaptConfig(method=adapt, steps=adapt_steps, lr=adapt_lr, mode=adapt_mode, rotate=tta_rotate)
    runs = run if len(run) > 1 else run[0]
    report = _run_with_bar("predict", lambda cb: predict_folder(runs, images, out, tta=tta, device=device,
                                                                 labels=labels, threads=threads, progress=cb,
                                                                 adapt=cfg, ensemble=ensemble),
                           progress)
    line = f"wrote {len(report['cases'])} label maps to {out}"
    if "mean" in report:
        line += "; mean Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in report["mean"].items())
    if "ece" in report:
        line += f"; ECE {report['ece']:.3f}"
    seconds = [c["seconds"] for c in report["cases"]]
    if seconds:
        line += (f"; {sum(seconds) / len(seconds):.1f} s per case, peak memory "
                 f"{max(c['peak_memory_mb'] for c in report['cases']):.0f} MiB")
    _console().print(line)


@app.command("validate")
def validate_cmd(
    db: Annotated[Path, typer.Argument(help="Database folder.")],
    task: Annotated[Optional[list[str]], typer.Option("--task", help="Only this 3D task (repeatable).")] = None,
) -> None:
    """Check the stored 3D tasks (index, array sizes, label range); exit 1 on problems."""
    from ..data.volumes3d import list_volume_tasks, validate_volume_task

    names = task or list_volume_tasks(db)
    problems = [p for name in names for p in validate_volume_task(db, name)]
    for p in problems:
        _console().print(f"[red]problem:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    _console().print(f"{len(names)} 3D task(s) valid: {', '.join(names) or '-'}")


@app.command("inspect")
def inspect_cmd(
    db: Annotated[Path, typer.Argument(help="Database folder.")],
    task: Annotated[str, typer.Option("--task", help="The 3D task.")],
    sheet: Annotated[Optional[Path], typer.Option("--sheet", help="Write a mid-slice PNG sheet here.")] = None,
    cases: Annotated[int, typer.Option("--cases", help="Cases on the sheet.")] = 6,
) -> None:
    """Summarise a 3D task; with --sheet, a mid-slice per case with the label overlaid."""
    import json

    from ..data.volumes3d import VolumeTask
    from ..segmentation.figures import mid_slice_sheet

    stored = VolumeTask.open(db, task)
    _console().print_json(json.dumps(stored.summary()))
    if sheet is not None:
        mid_slice_sheet(stored, sheet, cases=cases)
        _console().print(f"sheet written to {sheet}")
