"""``medfoundry register`` and ``medfoundry l2r run``: the hybrid convex + Adam registration on NIfTI files.

Thin layer over :func:`medfoundry.registration.api.register_images`. Fields are written as
Learn2Reg expects: ``(H, W, D, 3)`` float32 voxels, fixed -> moving, with the fixed image's affine.
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


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    from ..utils import atomic_path

    name = path.name
    if not name.endswith((".nii.gz", ".nii")):
        raise RegistrationError(f"{path}: output must end in .nii.gz or .nii")
    with atomic_path(path) as tmp:
        # nibabel picks compression from the suffix, so write under a name that keeps it.
        real = tmp.with_name(tmp.name + (".nii.gz" if name.endswith(".gz") else ".nii"))
        nib.save(nib.Nifti1Image(array, affine), str(real))
        real.replace(tmp)


def _config(preset: str, config_file: Optional[Path], overrides: Optional[list[str]], use_labels: bool):
    from ..registration.presets import RegistrationConfig, get_preset, parse_overrides

    base = get_preset(preset)
    if config_file is not None:
        base = RegistrationConfig.from_yaml(config_file, base=base)
    values: dict[str, Any] = parse_overrides(overrides)
    if use_labels:
        values["features"] = "labels"
    return base.replace(**values) if values else base


def register_command(
    fixed: Annotated[Path, typer.Argument(help="Fixed image (NIfTI).")],
    moving: Annotated[Path, typer.Argument(help="Moving image (NIfTI, same grid as the fixed image).")],
    out: Annotated[Path, typer.Option("--out", help="Displacement field to write (.nii.gz): (H, W, D, 3) voxels, fixed -> moving.")],
    fixed_mask: Annotated[Optional[Path], typer.Option("--fixed-mask", help="Fixed mask (NIfTI).")] = None,
    moving_mask: Annotated[Optional[Path], typer.Option("--moving-mask", help="Moving mask (NIfTI).")] = None,
    fixed_labels: Annotated[Optional[Path], typer.Option("--fixed-labels", help="Fixed segmentation (label-driven mode).")] = None,
    moving_labels: Annotated[Optional[Path], typer.Option("--moving-labels", help="Moving segmentation (label-driven mode; also warped by --warp-labels).")] = None,
    warp_labels: Annotated[Optional[Path], typer.Option("--warp-labels", help="Moving segmentation to warp into the fixed space (nearest neighbour).")] = None,
    warped_out: Annotated[Optional[Path], typer.Option("--warped-out", help="Where to write the warped segmentation.")] = None,
    warped_image_out: Annotated[Optional[Path], typer.Option("--warped-image-out", help="Where to write the warped moving image (linear).")] = None,
    preset: PresetOpt = "brain_mr",
    device: DeviceOpt = "auto",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    use_labels: LabelsModeOpt = False,
) -> None:
    """Register MOVING to FIXED and write the Learn2Reg displacement field (fixed affine kept)."""
    from ..registration.api import register_images, warp_volume
    from ..utils import atomic_write_json

    if warp_labels is not None and warped_out is None:
        raise RegistrationError("--warp-labels needs --warped-out (where to write the warped segmentation)")
    cfg = _config(preset, config, set_, use_labels)
    fixed_img, fixed_affine = _read_nifti(fixed, "fixed image")
    moving_img, _ = _read_nifti(moving, "moving image")
    if fixed_img.shape != moving_img.shape:
        raise RegistrationError(f"{moving}: shape {moving_img.shape} differs from the fixed image's {fixed_img.shape}; "
                                "resample both to one grid first")
    masks = [None if p is None else _read_nifti(p, what)[0] for p, what in
             ((fixed_mask, "fixed mask"), (moving_mask, "moving mask"))]
    labels = [None if p is None else _read_nifti(p, what)[0] for p, what in
              ((fixed_labels, "fixed labels"), (moving_labels, "moving labels"))]
    result = register_images(fixed_img, moving_img, masks[0], masks[1], device=device, fixed_labels=labels[0],
                             moving_labels=labels[1], config=cfg)
    _write_nifti(out, result.disp.astype(np.float32), fixed_affine)
    atomic_write_json(out.with_name(out.name.split(".")[0] + "_registration.json"), {
        "fixed": str(fixed), "moving": str(moving), "runtime_s": result.runtime_s, "device": result.device,
        "stage_times": result.stage_times, "affine_voxel": result.affine, "config": result.config})
    if warp_labels is not None:
        seg, _ = _read_nifti(warp_labels, "segmentation to warp")
        _write_nifti(warped_out, warp_volume(seg, result.disp, order=0, device=device), fixed_affine)
    if warped_image_out is not None:
        _write_nifti(warped_image_out, warp_volume(moving_img, result.disp, order=1, device=device), fixed_affine)
    _console.print(f"field {out} ({result.runtime_s:.1f} s on {result.device})", highlight=False)


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
