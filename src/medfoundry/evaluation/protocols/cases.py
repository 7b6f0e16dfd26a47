"""Pair prediction and reference label maps by case name, and read them with their geometry.

Case-name rule (documented in docs/evaluation_protocols.md):

1. only ``.nii.gz`` and ``.nii`` files count; the extension is removed;
2. one trailing annotation tag is removed: ``seg``, ``label``, ``labels``, ``mask``, ``msk``,
   ``gt`` or ``pred`` after ``-``, ``_`` or ``.`` (any case), so ``BraTS-GLI-00001-000-seg``
   and ``BraTS-GLI-00001-000``, or ``sub-strokecase0001_ses-0001_msk`` and
   ``sub-strokecase0001_ses-0001``, are the same case; nnU-Net's ``case_00001`` stays as is;
3. a reference with no prediction of the same name is paired with the one prediction whose name
   ends with the reference's BraTS identifier (``00001-000``), as the official BraTS code does.

Two files of one folder that reduce to the same name are an error naming both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError

__all__ = ["Case", "LabelMap", "case_name", "match_cases", "read_label_map", "check_same_grid"]

_SUFFIXES = (".nii.gz", ".nii")
_TAG = re.compile(r"[-_.](seg|label|labels|mask|msk|gt|pred)$", re.IGNORECASE)
_BRATS_ID = re.compile(r"(\d{5}-\d{3})$")
# Affines are compared to this many mm: predictions written through float32 headers differ
# from their reference by rounding, never by this much.
AFFINE_TOLERANCE_MM = 1e-4


def case_name(path: str | Path) -> str | None:
    """The case name of a label-map file, or ``None`` when it is not a NIfTI file."""
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return _TAG.sub("", name[: -len(suffix)])
    return None


@dataclass(frozen=True)
class Case:
    """One reference and its prediction (``None`` when missing)."""

    name: str
    ref: Path
    pred: Path | None


def _index(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{what} folder does not exist", path=folder)
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path)
        if name is None or not path.is_file():
            continue
        if name in index:
            raise DataError(f"{what} files {index[name].name} and {path.name} both give case name {name!r}",
                            path=folder)
        index[name] = path
    if not index:
        raise DataError(f"{what} folder holds no .nii.gz or .nii files", path=folder)
    return index


def match_cases(pred_dir: str | Path, ref_dir: str | Path) -> tuple[list[Case], list[Path]]:
    """Pair every reference with its prediction.

    Returns:
        ``(cases, unmatched_predictions)``: one :class:`Case` per reference file, sorted by name
        (``pred=None`` when no prediction matches), and the prediction files no reference uses.
    """
    refs = _index(Path(ref_dir), "reference")
    preds = _index(Path(pred_dir), "prediction")
    used: set[str] = set()
    cases = []
    for name, ref in refs.items():
        pred_name = name if name in preds else None
        if pred_name is None:
            brats = _BRATS_ID.search(name)
            if brats is not None:
                hits = [p for p in preds if p.endswith(brats.group(1)) and p not in refs]
                pred_name = hits[0] if len(hits) == 1 else None
        if pred_name is not None:
            used.add(pred_name)
        cases.append(Case(name, ref, preds[pred_name] if pred_name is not None else None))
    unmatched = [path for name, path in preds.items() if name not in used]
    return cases, unmatched


@dataclass(frozen=True)
class LabelMap:
    """An integer label map in the file's voxel order, its voxel size (mm) and its affine."""

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray


def read_label_map(path: str | Path) -> LabelMap:
    """Read a 2D or 3D NIfTI label map (integer values; a trailing axis of length 1 is dropped).

    Raises:
        DataError: unreadable file, wrong dimensionality or non-integer labels, naming the file.
    """
    from ...io.volumes import read_nifti

    path = Path(path)
    data, affine, zooms = read_nifti(path, "label map")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise DataError(f"expected a 2D or 3D label map, got shape {data.shape}", path=path)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.rint(data)):
            raise DataError("label map holds non-integer values; expected integer labels", path=path)
        data = data.astype(np.int64)
    elif data.dtype.kind not in "iub":
        raise DataError(f"label map has data type {data.dtype}; expected integer labels", path=path)
    # Float32 header values as float64, exactly (the official codes use them unrounded).
    spacing = tuple(float(z) for z in zooms[: data.ndim])
    return LabelMap(data, spacing, affine)


def check_same_grid(pred: LabelMap, ref: LabelMap, pred_path: Path, ref_path: Path) -> None:
    """Raise a one-line DataError naming both files when shapes or affines differ."""
    if pred.array.shape != ref.array.shape:
        raise DataError(f"shape mismatch: prediction {pred_path} has shape {pred.array.shape}, "
                        f"reference {ref_path} has shape {ref.array.shape}")
    diff = float(np.max(np.abs(pred.affine - ref.affine)))
    if diff > AFFINE_TOLERANCE_MM:
        raise DataError(f"affine mismatch: prediction {pred_path} and reference {ref_path} differ by up to "
                        f"{diff:.4g} mm in their voxel-to-world affines")
