"""``medfoundry data``: validate, inspect, build the synthetic database, import user data.

A thin layer: every command parses its options, calls the public API in
``medfoundry.data.{validate,inspect,adapters,synthetic}`` and prints the result.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..data.tasks import Modality

__all__ = ["app", "import_app"]

app = typer.Typer(help="Create, import, validate and inspect multi-task databases.", no_args_is_help=True,
                  add_completion=False)
import_app = typer.Typer(help="Convert user data into a task of a database (created if missing).",
                         no_args_is_help=True)
app.add_typer(import_app, name="import")


class Scale(str, Enum):
    small = "small"
    bench = "bench"
    full = "full"


class Normalize(str, Enum):
    none = "none"
    dtype = "dtype"
    minmax = "minmax"
    percentile = "percentile"


class ImageDtype(str, Enum):
    float16 = "float16"
    float32 = "float32"
    uint8 = "uint8"


class Intensity(str, Enum):
    auto = "auto"
    ct = "ct"
    mr = "mr"
    minmax = "minmax"


class FitMode(str, Enum):
    stretch = "stretch"
    pad = "pad"


class Keep(str, Enum):
    foreground = "foreground"
    all = "all"


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Piped into a file or a log: 80 columns would fold paths and messages mid-word.
        console = Console(width=200)
    return console


def _split_list(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _int_list(text: Optional[str], option: str) -> Optional[list[int]]:
    from ..errors import ConfigError

    items = _split_list(text)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError as err:
        raise ConfigError(f"{option} expects comma-separated integers, got {text!r}") from err


# ----------------------------------------------------------------------------- options
DbOpt = Annotated[Path, typer.Option("--db", help="Database folder (created if missing, else the task is added).")]
TaskOpt = Annotated[str, typer.Option("--task", help="Name of the new task: lower-case letters, digits, underscores.")]
ModalityOpt = Annotated[Modality, typer.Option("--modality", help="Modality group of the images.")]
SizeOpt = Annotated[tuple[int, int], typer.Option("--size", help="Stored image size H W in pixels.")]
ChannelsOpt = Annotated[Optional[int], typer.Option("--channels", help="Stored channels (default: first image's).")]
RatiosOpt = Annotated[tuple[float, float, float],
                      typer.Option("--split-ratios", help="train val test ratios of the random split.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random split.")]
NormOpt = Annotated[Normalize, typer.Option("--normalize", help="Intensity scaling of 2D images.")]
DtypeOpt = Annotated[ImageDtype, typer.Option("--image-dtype", help="Storage dtype of the images.")]
DescOpt = Annotated[str, typer.Option("--description", help="One-line task description.")]
GroupOpt = Annotated[str, typer.Option("--group", help="Task group tag (pretrain, downstream, ...).")]
FitOpt = Annotated[FitMode, typer.Option("--fit", help="stretch to --size, or pad (keep the aspect ratio).")]
ClassesOpt = Annotated[Optional[str], typer.Option("--classes", help="Comma-separated class names in index order.")]


def _report(result, db: Path) -> None:
    from ..data import MultiTaskDatabase
    from ..data.inspect import summarize, summary_table

    console = _console()
    database = MultiTaskDatabase.open(db)
    console.print(summary_table(summarize(database, [result.spec.name]), title=f"added to {db}"))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


# ----------------------------------------------------------------------------- commands
@app.command("validate")
def validate_cmd(
    db: Annotated[Path, typer.Argument(help="Database folder.")],
    task: Annotated[Optional[list[str]], typer.Option("--task", help="Only this task (repeatable).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as a JSON list (for CI).")] = False,
) -> None:
    """Check a database and list every problem; exit code 1 if any is an error."""
    import dataclasses
    import json

    from ..data.validate import validate_database

    console = _console()
    problems = validate_database(db, progress=progress and not as_json, tasks=task)
    errors = sum(p.severity == "error" for p in problems)
    if as_json:
        print(json.dumps([dataclasses.asdict(p) for p in problems], indent=2))
        if errors:
            raise typer.Exit(1)
        return
    if not problems:
        console.print(f"[green]OK[/]: {db} has no problems")
        return
    table = Table(title=f"{len(problems)} problem(s) in {db}", show_lines=False)
    for col in ("severity", "file", "field", "problem"):
        table.add_column(col, overflow="fold")
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        table.add_row(f"[{colour}]{p.severity}[/]", p.path, p.field, p.message)
    console.print(table)
    console.print(f"{errors} error(s), {len(problems) - errors} warning(s)")
    if errors:
        raise typer.Exit(1)


@app.command("inspect")
def inspect_cmd(
    db: Annotated[Path, typer.Argument(help="Database folder.")],
    task: Annotated[Optional[list[str]], typer.Option("--task", help="Only this task (repeatable).")] = None,
    sheet: Annotated[Optional[Path], typer.Option("--sheet", help="Write a contact sheet PNG here.")] = None,
    per_task: Annotated[int, typer.Option("--per-task", help="Samples per task on the sheet.")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seed choosing the sheet's samples.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summaries as JSON instead of a table.")] = False,
) -> None:
    """Summarise tasks (kind, classes, splits, class balance) and optionally draw samples."""
    import json

    from ..data.inspect import contact_sheet, database_title, summarize, summary_table

    console = _console()
    names = list(task) if task else None
    summaries = summarize(db, names)  # 3D tasks (volumes3d.json) included
    if as_json:
        print(json.dumps(summaries, indent=2))
    else:
        console.print(summary_table(summaries, title=f"{database_title(db)} ({db})"))
    if sheet is not None:
        out = contact_sheet(db, sheet, tasks=names, per_task=per_task, seed=seed)
        console.print(f"contact sheet: {out}")
    # A summary that shows broken targets must not look like success to a script or to CI.
    if any(s.get("problems") for s in summaries):
        raise typer.Exit(1)


@app.command("make-synthetic")
def make_synthetic_cmd(
    out: Annotated[Path, typer.Argument(help="Folder of the new database.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same bytes.")] = 0,
    scale: Annotated[Scale, typer.Option("--scale", help=(
        "small (tests, demo), bench (data-efficiency benchmark: 10,008 train / 3,336 test images "
        "per downstream task) or full."))] = Scale.small,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False,
    with_3d: Annotated[bool, typer.Option("--with-3d", help=(
        "Also store held-out 3D segmentation tasks (brain-tumour and kidney phantoms; "
        "about 13 s of CPU and 105 MB more at --scale small)."))] = False,
    tasks: Annotated[Optional[str], typer.Option("--tasks", help=(
        "Comma-separated task names: build only these (each task's bytes do not depend on which "
        "others are built)."))] = None,
) -> None:
    """Generate the seeded synthetic multi-task database."""
    from ..data import MultiTaskDatabase
    from ..data.inspect import summarize, summary_table
    from ..data.synthetic import make_synthetic_database  # heavy generators: import only when asked

    result = make_synthetic_database(out, seed=seed, scale=scale.value, overwrite=overwrite, progress=True,
                                     with_3d=with_3d, tasks=_split_list(tasks))
    database = result if isinstance(result, MultiTaskDatabase) else MultiTaskDatabase.open(out)
    _console().print(summary_table(summarize(database), title=f"{database.name} ({out})"))


@import_app.command("image-folder")
def import_image_folder_cmd(
    src: Annotated[Path, typer.Argument(help="Root with one sub-folder per class (or per split, then class).")],
    db: DbOpt, task: TaskOpt, modality: ModalityOpt, size: SizeOpt = (64, 64), channels: ChannelsOpt = None,
    classes: ClassesOpt = None, split_ratios: RatiosOpt = (0.7, 0.15, 0.15), seed: SeedOpt = 0,
    normalize: NormOpt = Normalize.dtype, fit: FitOpt = FitMode.stretch, image_dtype: DtypeOpt = ImageDtype.float16,
    description: DescOpt = "", group: GroupOpt = "pretrain",
) -> None:
    """Classification from SRC/<class>/<image> (PNG, JPEG, TIFF, NIfTI, DICOM)."""
    from ..data.adapters import import_image_folder

    res = import_image_folder(src, db, task, modality=modality.value, image_size=size, channels=channels,
                              classes=_split_list(classes), split_ratios=split_ratios, seed=seed,
                              normalize=normalize.value, fit=fit.value, image_dtype=image_dtype.value,
                              description=description, group=group, progress=True)
    _report(res, db)


@import_app.command("csv")
def import_csv_cmd(
    csv_file: Annotated[Path, typer.Argument(help="CSV with a header row.")],
    db: DbOpt, task: TaskOpt, modality: ModalityOpt, size: SizeOpt = (64, 64),
    image_column: Annotated[str, typer.Option("--image-column", help="Column of image paths.")] = "path",
    label_columns: Annotated[Optional[str], typer.Option(
        "--label-columns", help="Comma-separated label column(s); several = multilabel 0/1.")] = None,
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="classification or multilabel (default: infer).")] = None,
    separator: Annotated[str, typer.Option("--separator", help="Separator of several labels in a cell.")] = "|",
    split_column: Annotated[str, typer.Option("--split-column", help="Split column, used if present.")] = "split",
    group_column: Annotated[Optional[str], typer.Option(
        "--group-column", help="Patient column: the random split keeps each patient in one split.")] = None,
    images_root: Annotated[Optional[Path], typer.Option("--images-root", help="Paths are relative to this.")] = None,
    uncertain_as: Annotated[Optional[int], typer.Option("--uncertain-as", help="Value for -1 cells (0 or 1).")] = None,
    channels: ChannelsOpt = None, classes: ClassesOpt = None, split_ratios: RatiosOpt = (0.7, 0.15, 0.15),
    seed: SeedOpt = 0, normalize: NormOpt = Normalize.dtype, fit: FitOpt = FitMode.stretch,
    image_dtype: DtypeOpt = ImageDtype.float16, description: DescOpt = "", group: GroupOpt = "pretrain",
) -> None:
    """Classification or multilabel from a CSV of image paths and labels."""
    from ..data.adapters import import_csv

    res = import_csv(csv_file, db, task, modality=modality.value, image_size=size, image_column=image_column,
                     label_columns=_split_list(label_columns), kind=kind, separator=separator,
                     classes=_split_list(classes), split_column=split_column, group_column=group_column,
                     images_root=images_root, uncertain_as=uncertain_as, channels=channels,
                     split_ratios=split_ratios, seed=seed, normalize=normalize.value, fit=fit.value,
                     image_dtype=image_dtype.value, description=description, group=group, progress=True)
    _report(res, db)


@import_app.command("segmentation")
def import_segmentation_cmd(
    images: Annotated[Path, typer.Argument(help="Folder of images.")],
    masks: Annotated[Path, typer.Argument(help="Folder of masks with matching file stems.")],
    db: DbOpt, task: TaskOpt, modality: ModalityOpt, size: SizeOpt = (64, 64), classes: ClassesOpt = None,
    mask_values: Annotated[Optional[str], typer.Option(
        "--mask-values", help="Comma-separated raw mask value of each class, e.g. 0,255.")] = None,
    mask_suffix: Annotated[Optional[str], typer.Option(
        "--mask-suffix", help="Suffix of mask stems, e.g. _mask.")] = None,
    channels: ChannelsOpt = None, split_ratios: RatiosOpt = (0.7, 0.15, 0.15), seed: SeedOpt = 0,
    normalize: NormOpt = Normalize.dtype, fit: FitOpt = FitMode.stretch, image_dtype: DtypeOpt = ImageDtype.float16,
    description: DescOpt = "", group: GroupOpt = "pretrain",
) -> None:
    """Segmentation from an image folder and a mask folder (PNG, TIFF, NIfTI, DICOM)."""
    from ..data.adapters import import_segmentation_folders

    res = import_segmentation_folders(images, masks, db, task, modality=modality.value, image_size=size,
                                      classes=_split_list(classes), mask_values=_int_list(mask_values, "--mask-values"),
                                      mask_suffix=mask_suffix, channels=channels, split_ratios=split_ratios, seed=seed,
                                      normalize=normalize.value, fit=fit.value, image_dtype=image_dtype.value,
                                      description=description, group=group, progress=True)
    _report(res, db)


@import_app.command("coco")
def import_coco_cmd(
    annotations: Annotated[Path, typer.Argument(help="COCO JSON (the training split if --val-json is given).")],
    db: DbOpt, task: TaskOpt, modality: ModalityOpt, size: SizeOpt = (64, 64),
    val_json: Annotated[Optional[Path], typer.Option("--val-json", help="COCO JSON of the validation split.")] = None,
    test_json: Annotated[Optional[Path], typer.Option("--test-json", help="COCO JSON of the test split.")] = None,
    images_root: Annotated[Optional[Path], typer.Option("--images-root", help="file_name is relative to this.")] = None,
    include_crowd: Annotated[bool, typer.Option("--include-crowd", help="Keep iscrowd boxes.")] = False,
    channels: ChannelsOpt = None, split_ratios: RatiosOpt = (0.7, 0.15, 0.15), seed: SeedOpt = 0,
    normalize: NormOpt = Normalize.dtype, fit: FitOpt = FitMode.stretch, image_dtype: DtypeOpt = ImageDtype.float16,
    description: DescOpt = "", group: GroupOpt = "pretrain",
) -> None:
    """Detection from COCO-style JSON (bbox [x, y, w, h] -> x0 y0 x1 y1 pixels)."""
    from ..data.adapters import import_coco

    source = annotations
    if val_json is not None or test_json is not None:
        source = {"train": annotations, **({"val": val_json} if val_json else {}),
                  **({"test": test_json} if test_json else {})}
    res = import_coco(source, db, task, modality=modality.value, image_size=size, images_root=images_root,
                      include_crowd=include_crowd, channels=channels, split_ratios=split_ratios, seed=seed,
                      normalize=normalize.value, fit=fit.value, image_dtype=image_dtype.value,
                      description=description, group=group, progress=True)
    _report(res, db)


@import_app.command("volumes")
def import_volumes_cmd(
    images: Annotated[Path, typer.Argument(help="Folder of image volumes (NIfTI, DICOM series folders).")],
    labels: Annotated[Path, typer.Argument(help="Folder of label volumes with matching stems.")],
    db: DbOpt, task: TaskOpt, size: SizeOpt = (128, 128),
    depth: Annotated[Optional[int], typer.Option(
        "--depth", help="Store whole volumes (3D task) of DEPTH x H x W, depth along --axis.")] = None,
    classes: ClassesOpt = None,
    label_values: Annotated[Optional[str], typer.Option(
        "--label-values", help="Comma-separated raw label value of each class.")] = None,
    axis: Annotated[int, typer.Option("--axis", help="On-disk axis to slice along (0, 1, 2).")] = 2,
    keep: Annotated[Keep, typer.Option("--keep", help="Keep foreground slices or all slices.")] = Keep.foreground,
    background_fraction: Annotated[float, typer.Option(
        "--background-fraction", help="Share of background-only slices kept with --keep foreground.")] = 0.0,
    min_foreground: Annotated[int, typer.Option("--min-foreground", help="Pixels for a foreground slice.")] = 1,
    intensity: Annotated[Intensity, typer.Option("--intensity", help="Per-volume intensity scaling.")] = Intensity.auto,
    window: Annotated[tuple[float, float], typer.Option(
        "--window", help="CT window level width (HU).")] = (40.0, 400.0),
    percentiles: Annotated[tuple[float, float], typer.Option(
        "--percentiles", help="MR clipping percentiles of non-zero voxels.")] = (0.5, 99.5),
    group_pattern: Annotated[Optional[str], typer.Option(
        "--group-pattern", help="Regex; its first group is the patient id in the case name.")] = None,
    modality: Annotated[Modality, typer.Option("--modality", help="Modality group.")] = Modality.TOMOGRAPHIC,
    fit: FitOpt = FitMode.stretch,
    split_ratios: RatiosOpt = (0.7, 0.15, 0.15), seed: SeedOpt = 0, image_dtype: DtypeOpt = ImageDtype.float16,
    description: DescOpt = "", group: GroupOpt = "pretrain",
) -> None:
    """Slice CT/MR volumes and label volumes into a 2D segmentation task (split by volume);
    with --depth, store whole volumes as a 3D task."""
    from ..data.adapters import import_volumes

    image_size = size if depth is None else (depth, *size)
    res = import_volumes(images, labels, db, task, image_size=image_size, classes=_split_list(classes),
                         label_values=_int_list(label_values, "--label-values"), axis=axis, keep=keep.value,
                         background_fraction=background_fraction, min_foreground=min_foreground,
                         intensity=intensity.value, window=window, percentiles=percentiles,
                         group_pattern=group_pattern, modality=modality.value, fit=fit.value,
                         split_ratios=split_ratios, seed=seed,
                         image_dtype=image_dtype.value, description=description, group=group, progress=True)
    _report(res, db)


@import_app.command("medmnist")
def import_medmnist_cmd(
    npz: Annotated[Path, typer.Argument(help="MedMNIST-layout .npz (train/val/test _images/_labels).")],
    db: DbOpt, task: TaskOpt, modality: ModalityOpt,
    size: Annotated[Optional[tuple[int, int]], typer.Option("--size", help="Stored H W (default: the file's).")] = None,
    classes: ClassesOpt = None,
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="classification or multilabel (default: infer).")] = None,
    channels: ChannelsOpt = None, image_dtype: DtypeOpt = ImageDtype.uint8, description: DescOpt = "",
    group: GroupOpt = "pretrain",
) -> None:
    """Classification/multilabel from a MedMNIST npz, keeping its splits."""
    from ..data.adapters import import_medmnist

    res = import_medmnist(npz, db, task, modality=modality.value, image_size=size, classes=_split_list(classes),
                          kind=kind, channels=channels, image_dtype=image_dtype.value, description=description,
                          group=group, progress=True)
    _report(res, db)
