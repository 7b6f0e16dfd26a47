"""``medfoundry register`` and ``medfoundry l2r run``: registration of NIfTI/DICOM files.

Thin layer over :func:`medfoundry.registration.api.register` (any method, any two grids). Fields
are written as Learn2Reg expects: ``(H, W, D, 3)`` float32 fixed voxels, fixed -> moving, with
the fixed image's affine; ``--world-out`` adds the world-space (LPS mm) form for ITK/ANTs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console

from ..errors import RegistrationError

__all__ = ["register", "register_command", "run_command"]

_console = Console()

PresetOpt = Annotated[str, typer.Option("--preset", help="brain_mr, abdomen_ct or lung_ct.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a parameter, e.g. --set regularisation=2 (repeatable; see docs/registration.md).")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="YAML file of parameters (may name 'preset:'); --set overrides it.")]
LabelsModeOpt = Annotated[bool, typer.Option(
    "--use-labels", help="Label-driven mode: register the one-hot segmentations (needs labels for both images).")]


def _read_nifti(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Volume and 4x4 affine of a NIfTI file; raises ``RegistrationError`` naming the file."""
    from ..registration.learn2reg import read_nifti

    data, affine, _ = read_nifti(path, what)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RegistrationError(f"{path}: {what} must be a 3D volume, found shape {data.shape}")
    return data, affine


def _config(preset: Optional[str], config_file: Optional[Path], overrides: Optional[list[str]], use_labels: bool):
    """The hybrid method's config from a preset, a YAML file and ``--set`` overrides."""
    from ..registration.presets import parse_overrides, resolve_config

    values: dict[str, Any] = parse_overrides(overrides)
    if use_labels:
        values["features"] = "labels"
    return resolve_config("hybrid", preset or "brain_mr", config_file=config_file, **values)[1]


def _method_choice(method: Optional[str], rigid: bool, affine_only: bool, deformable: bool) -> tuple[Optional[str], dict[str, str]]:
    """``--method``/``--rigid``/``--affine-only``/``--deformable`` -> method name and extra overrides."""
    if rigid and affine_only:
        raise RegistrationError("--rigid and --affine-only exclude each other")
    linear = "rigid" if rigid else "affine" if affine_only else None
    if linear is None:
        if deformable:
            raise RegistrationError("--deformable goes with --rigid or --affine-only (the linear step before it)")
        return method, {}
    wanted = "hybrid" if deformable else linear
    if method is not None and method != wanted:
        raise RegistrationError(f"--method {method} contradicts --{'rigid' if rigid else 'affine-only'}"
                                f"{' --deformable' if deformable else ''} (which means --method {wanted})")
    if deformable:
        return "hybrid", {"affine": "true", "affine_model": linear}
    return linear, {}


def register_command(
    fixed: Annotated[Path, typer.Argument(help="Fixed image (NIfTI or DICOM); its grid is the output grid.")],
    moving: Annotated[Path, typer.Argument(help="Moving image (NIfTI or DICOM, any grid: resampled through both affines).")],
    out: Annotated[Path, typer.Option("--out", help="Displacement field to write (.nii.gz): (H, W, D, 3) fixed voxels, fixed -> moving.")],
    fixed_mask: Annotated[Optional[Path], typer.Option("--fixed-mask", help="Fixed mask (NIfTI).")] = None,
    moving_mask: Annotated[Optional[Path], typer.Option("--moving-mask", help="Moving mask (NIfTI).")] = None,
    fixed_labels: Annotated[Optional[Path], typer.Option("--fixed-labels", help="Fixed segmentation (label-driven mode).")] = None,
    moving_labels: Annotated[Optional[Path], typer.Option("--moving-labels", help="Moving segmentation (label-driven mode; warped to --warped-out when --warp-labels is not given).")] = None,
    warp_labels: Annotated[Optional[Path], typer.Option("--warp-labels", help="Moving segmentation to warp onto the fixed grid (nearest neighbour).")] = None,
    warped_out: Annotated[Optional[Path], typer.Option("--warped-out", help="Where to write the warped segmentation.")] = None,
    warped_image_out: Annotated[Optional[Path], typer.Option("--warped-image-out", help="Where to write the warped moving image (linear).")] = None,
    world_out: Annotated[Optional[Path], typer.Option("--world-out", help="Also write the field in world space for SimpleITK/ITK/ANTs (LPS mm, fixed -> moving).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="hybrid (default), affine or rigid; see docs/registration.md.")] = None,
    rigid: Annotated[bool, typer.Option("--rigid", help="Rigid alignment only (MIND similarity): sequences of one patient.")] = False,
    affine_only: Annotated[bool, typer.Option("--affine-only", help="Affine alignment only (MIND similarity).")] = False,
    deformable: Annotated[bool, typer.Option("--deformable", help="With --rigid/--affine-only: add the hybrid deformable step after it.")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", help="brain_mr, abdomen_ct, lung_ct or multiseq_rigid (sets the method).")] = None,
    device: DeviceOpt = "auto",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    use_labels: LabelsModeOpt = False,
) -> None:
    """Register MOVING to FIXED and write the Learn2Reg displacement field (fixed affine kept)."""
    from ..registration.api import register
    from ..registration.presets import parse_overrides
    from ..registration.world import save_nifti

    if warp_labels is not None and warped_out is None:
        raise RegistrationError("--warp-labels needs --warped-out (where to write the warped segmentation)")
    if warped_out is not None and warp_labels is None and moving_labels is None:
        raise RegistrationError("--warped-out needs --warp-labels or --moving-labels (the segmentation to warp)")
    method, extra = _method_choice(method, rigid, affine_only, deformable)
    values: dict[str, Any] = {**parse_overrides(set_), **extra}
    if use_labels:
        values["features"] = "labels"
    result = register(fixed, moving, method=method, preset=preset, masks=(fixed_mask, moving_mask),
                      labels=(fixed_labels, moving_labels), config_file=config, device=device, **values)
    result.save({"field": out, "meta": out.with_name(out.name.split(".")[0] + "_registration.json"),
                 "warped_image": warped_image_out, "world_field": world_out})
    if warped_out is not None:
        source = warp_labels if warp_labels is not None else moving_labels
        save_nifti(warped_out, result.warp(source, order=0, name="segmentation to warp"), result._fixed_affine())
    _console.print(f"field {out} ({result.method}, {result.runtime_s:.1f} s on {result.device})", highlight=False)


def run_command(
    dataset: Annotated[Path, typer.Option("--dataset", help="Learn2Reg dataset folder (dataset JSON, imagesTr, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for disp_FFFF_MMMM.nii.gz fields and runtimes.json.")],
    split: Annotated[str, typer.Option("--split", help="val or test.")] = "val",
    preset: PresetOpt = "brain_mr",
    device: DeviceOpt = "auto",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    use_masks: Annotated[bool, typer.Option("--use-masks/--no-masks", help="Use masks*/ files when they exist.")] = True,
    use_labels: LabelsModeOpt = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute fields that already exist.")] = False,
) -> None:
    """Register every pair of a Learn2Reg split; writes fields in the official naming and runtimes.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..registration.api import register_images
    from ..registration.learn2reg import Learn2RegDataset, save_displacement
    from ..utils import atomic_write_json

    if split not in ("val", "test"):
        raise RegistrationError(f"--split {split!r}: expected val or test")
    cfg = _config(preset, config, set_, use_labels)
    data = Learn2RegDataset(dataset)
    pairs = data.pairs(split)
    out.mkdir(parents=True, exist_ok=True)
    runtimes_path = out / "runtimes.json"
    runtimes: dict[str, float] = {}
    if runtimes_path.is_file() and not overwrite:
        import json

        try:
            runtimes = {str(k): float(v) for k, v in json.loads(runtimes_path.read_text()).items()}
        except (ValueError, AttributeError):
            runtimes = {}
    atomic_write_json(out / "registration_config.json", {"preset": preset, "config": cfg.to_dict()})
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}")]
    with Progress(*columns, console=_console) as progress:
        task = progress.add_task(f"{data.name} {split}", total=len(pairs), last="")
        for pair in pairs:
            target = out / f"{pair.field_stem}.nii.gz"
            if target.is_file() and not overwrite and pair.pair_id in runtimes:
                progress.advance(task)
                continue
            fixed_img, fixed_affine = _read_nifti(data.path(pair.fixed), "fixed image")
            moving_img, _ = _read_nifti(data.path(pair.moving), "moving image")
            masks = [None, None]
            if use_masks:
                for i, rel in enumerate((pair.fixed, pair.moving)):
                    path = data.mask_path(rel)
                    if path.is_file():
                        masks[i] = _read_nifti(path, "mask")[0]
            labels = [None, None]
            if cfg.features == "labels":
                labels = [_read_nifti(data.label_path(rel), "labels")[0] for rel in (pair.fixed, pair.moving)]
            start = time.perf_counter()
            result = register_images(fixed_img, moving_img, masks[0], masks[1], device=device,
                                     fixed_labels=labels[0], moving_labels=labels[1], config=cfg)
            runtimes[pair.pair_id] = round(result.runtime_s, 4)
            save_displacement(target, result.disp, fixed_affine)
            atomic_write_json(runtimes_path, runtimes)
            progress.update(task, advance=1, last=f"{pair.pair_id}: {time.perf_counter() - start:.1f} s")
    mean = sum(runtimes.values()) / max(len(runtimes), 1)
    _console.print(f"{len(pairs)} fields in {out} (mean {mean:.1f} s/pair); evaluate with "
                   f"`medfoundry l2r evaluate --dataset {dataset} --fields {out} --runtimes {runtimes_path} --out RESULTS.json`",
                   highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``register`` to the top-level app and ``run`` to ``medfoundry l2r`` when it exists."""
    app.command("register")(register_command)
    try:
        from . import l2r
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.l2r":
            raise
        return
    l2r.app.command("run")(run_command)
