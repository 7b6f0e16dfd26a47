"""``medfoundry register``: registration of NIfTI/DICOM files (``l2r run`` lives in cli/l2r.py).

Thin layer over :func:`medfoundry.registration.api.register` (any method, any two grids). Fields
are written as Learn2Reg expects: ``(H, W, D, 3)`` float32 fixed voxels, fixed -> moving, with
the fixed image's affine; ``--world-out`` adds the world-space (LPS mm) form for ITK/ANTs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..errors import RegistrationError

__all__ = ["register", "register_command"]

_console = Console()

DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a parameter, e.g. --set regularisation=2 (repeatable; see docs/registration.md).")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="YAML file of parameters (may name 'preset:'); --set overrides it.")]
LabelsModeOpt = Annotated[bool, typer.Option(
    "--use-labels", help="Label-driven mode: register the one-hot segmentations (needs labels for both images).")]


def _import_nibabel_without_pydicom() -> None:
    """Import nibabel while pydicom is hidden from it: nibabel.nifti1 imports pydicom only to parse
    DICOM header extensions of NIfTI files (kept as raw bytes without it), and that import costs
    ~0.3 CPU s of a ~3 s fast registration process. pydicom stays importable afterwards (DICOM input)."""
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # `import pydicom` now fails fast
    try:
        import nibabel  # noqa: F401
    finally:
        del sys.modules["pydicom"]


def _is_console_run() -> bool:
    """True in a ``medfoundry register ...`` process (console script or ``python -m medfoundry``),
    False when the command runs inside another program (tests, ``main([...])`` from Python)."""
    return sys.argv[1:2] == ["register"] and Path(sys.argv[0]).name in ("medfoundry", "__main__.py")


def _exit_without_teardown() -> None:
    """End a finished ``medfoundry register`` process at once: the interpreter's teardown of the
    torch modules costs 0.3-0.5 CPU s, a tenth of a fast registration. Outputs are written and
    closed already (atomic renames); streams and logging are flushed here."""
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    preset: Annotated[Optional[str], typer.Option("--preset", help="brain_mr, brain_mr_fast, abdomen_ct, lung_ct or multiseq_rigid (sets the method).")] = None,
    device: DeviceOpt = "auto",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    use_labels: LabelsModeOpt = False,
) -> None:
    """Register MOVING to FIXED and write the Learn2Reg displacement field (fixed affine kept)."""
    # Before torch (and its libgomp) loads: OpenMP's default busy-waiting made 2 threads ~5x slower
    # than 1 on a loaded machine (3.7 vs 27 CPU s per 2 mm MNI pair); a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _import_nibabel_without_pydicom()
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
        save_nifti(warped_out, result.warp(source, order=0, name="segmentation to warp"), result.fixed_grid_affine)
    _console.print(f"field {out} ({result.method}, {result.runtime_s:.1f} s on {result.device})", highlight=False)
    if _is_console_run():
        _exit_without_teardown()


def register(app: typer.Typer) -> None:
    """Add ``register`` to the top-level app (``l2r run`` lives in :mod:`medfoundry.cli.l2r`)."""
    app.command("register")(register_command)
