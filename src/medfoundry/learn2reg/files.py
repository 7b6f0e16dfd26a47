"""Learn2Reg files: the dataset JSON, case and field naming, point CSVs and displacement-field I/O (current and 2020/2021 legacy forms).

Layout of a Learn2Reg dataset folder (``TASK`` is the task name)::

    TASK_dataset.json            pairs (registration_val / registration_test), training list,
                                 modalities, image shape
    imagesTr/TASK_CCCC_MMMM.nii.gz   case CCCC, modality / time point MMMM
    labelsTr/ masksTr/           same file names
    keypointsTr/ landmarksTr/    same stems, ``.csv``: one point a line, x,y,z voxel
                                 coordinates in array index order (no header)

Displacement fields (what a method submits) follow Learn2Reg: shape (H, W, D, 3), float,
**voxel units**, fixed -> moving: the fixed voxel x corresponds to x + u(x) in the moving image.
They are named ``disp_FFFF_MMMM`` (fixed case, moving case) or, when that would be ambiguous
(two pairs of the split share both case numbers) or the pair is not the default modality
pairing (fixed ``_0000``, moving ``_0000``/``_0001``), ``disp_FFFF_ffff_MMMM_mmmm``, and stored
as ``.nii.gz`` or ``.npz``. float16 is accepted and cast to float32.

The 2020/2021 legacy form, a ``.npz`` of shape (3, H/2, W/2, D/2) (half resolution, channel
first, float16), is upsampled by 2 per channel with a second-order spline
(``scipy.ndimage.zoom(order=2)``) as the challenge's evaluation did then; values stay in
full-resolution voxels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RegistrationError
from ..io.volumes import read_nifti as _read_nifti
from ..io.volumes import read_nifti_header
from ..utils import atomic_path

__all__ = [
    "CaseName",
    "Pair",
    "Learn2RegDataset",
    "parse_case_name",
    "field_stem",
    "find_field",
    "load_displacement",
    "save_displacement",
    "read_points_csv",
    "read_nifti",
    "read_json",
    "write_points_csv",
    "load_volume",
    "load_spacing",
    "related_path",
    "OFFICIAL_METRICS",
]

OFFICIAL_METRICS = ("sdlogj", "dice", "hd95", "tre")
_CASE_RE = re.compile(r"^(?P<task>.+)_(?P<case>\d{4})_(?P<mod>\d{4})(?:\.nii\.gz|\.nii|\.csv)?$")


@dataclass(frozen=True)
class CaseName:
    """A Learn2Reg image name ``TASK_CCCC_MMMM``: task, case number and modality index."""

    task: str
    case: str
    modality: str

    @property
    def stem(self) -> str:
        return f"{self.task}_{self.case}_{self.modality}"


def parse_case_name(path: str | Path) -> CaseName:
    """Parse ``.../TASK_CCCC_MMMM.nii.gz`` into a :class:`CaseName`.

    Raises:
        RegistrationError: the file name does not follow the Learn2Reg pattern.
    """
    name = Path(str(path)).name
    match = _CASE_RE.match(name)
    if match is None:
        raise RegistrationError(f"{path}: file name does not follow Learn2Reg's TASK_CCCC_MMMM.nii.gz pattern")
    return CaseName(match["task"], match["case"], match["mod"])


@dataclass(frozen=True)
class Pair:
    """One registration pair; paths are as written in the JSON (relative to the dataset root)."""

    fixed: str
    moving: str
    long_name: bool = False

    @property
    def fixed_case(self) -> CaseName:
        return parse_case_name(self.fixed)

    @property
    def moving_case(self) -> CaseName:
        return parse_case_name(self.moving)

    @property
    def pair_id(self) -> str:
        """``FFFF_MMMM`` or ``FFFF_ffff_MMMM_mmmm``: the field name without ``disp_``."""
        return field_stem(self.fixed, self.moving, self.long_name)[len("disp_"):]

    @property
    def field_stem(self) -> str:
        return field_stem(self.fixed, self.moving, self.long_name)


def field_stem(fixed: str | Path, moving: str | Path, long_name: bool = False) -> str:
    """Learn2Reg file stem of the field of a pair: ``disp_FFFF_MMMM`` or, with ``long_name``,
    ``disp_FFFF_ffff_MMMM_mmmm``."""
    f, m = parse_case_name(fixed), parse_case_name(moving)
    if long_name:
        return f"disp_{f.case}_{f.modality}_{m.case}_{m.modality}"
    return f"disp_{f.case}_{m.case}"


def _mark_long_names(raw_pairs: Sequence[tuple[str, str]]) -> list[Pair]:
    """Use the long field name where the short one is ambiguous or the modalities are unusual."""
    short = [field_stem(f, m) for f, m in raw_pairs]
    pairs = []
    for (f, m), stem in zip(raw_pairs, short):
        fm, mm = parse_case_name(f).modality, parse_case_name(m).modality
        unusual = fm != "0000" or mm not in ("0000", "0001")
        pairs.append(Pair(f, m, long_name=unusual or short.count(stem) > 1))
    return pairs


def related_path(root: Path, image_rel: str, folder: str, suffix: str = ".nii.gz") -> Path:
    """Path of a file that accompanies an image: ``imagesTr/X.nii.gz`` -> ``{folder}Tr/X{suffix}``.

    ``folder`` is ``labels``, ``masks``, ``keypoints`` or ``landmarks``; the ``Tr``/``Ts`` part
    follows the image's folder, as in the official evaluation.
    """
    rel = Path(image_rel)
    parent = rel.parent.name
    if not parent.startswith("images"):
        raise RegistrationError(f"{image_rel}: expected the image inside an images* folder (imagesTr/imagesTs)")
    name = rel.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return root / rel.parent.parent / (folder + parent[len("images"):]) / (name + suffix)


# --------------------------------------------------------------------------------------------
# Dataset JSON
# --------------------------------------------------------------------------------------------


class Learn2RegDataset:
    """A Learn2Reg-layout dataset folder and its dataset JSON.

    Args:
        root: the dataset folder (holding ``*_dataset.json`` or ``dataset.json``).
        json_path: explicit path of the dataset JSON, if it is not in ``root``.

    Raises:
        RegistrationError: the folder or JSON is missing, or a required key is malformed.
    """

    def __init__(self, root: str | Path, json_path: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise RegistrationError(f"{self.root}: dataset folder not found")
        if json_path is None:
            candidates = sorted(self.root.glob("*_dataset.json")) or sorted(self.root.glob("dataset.json"))
            if not candidates:
                raise RegistrationError(f"{self.root}: no dataset JSON (expected TASK_dataset.json or dataset.json)")
            if len(candidates) > 1:
                raise RegistrationError(f"{self.root}: several dataset JSONs ({', '.join(c.name for c in candidates)}); "
                                        "pass json_path")
            json_path = candidates[0]
        self.json_path = Path(json_path)
        try:
            self.meta: dict[str, Any] = json.loads(self.json_path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise RegistrationError(f"{self.json_path}: dataset JSON not found") from err
        except json.JSONDecodeError as err:
            raise RegistrationError(f"{self.json_path}: not valid JSON ({err})") from err
        if not isinstance(self.meta, dict):
            raise RegistrationError(f"{self.json_path}: expected a JSON object at the top level")

    @property
    def name(self) -> str:
        if "name" in self.meta:
            return str(self.meta["name"])
        return self.json_path.name.replace("_dataset.json", "").replace(".json", "")

    @property
    def modalities(self) -> dict[str, str]:
        """Modality index (``"0"``, ``"1"``, ...) -> modality name."""
        return {str(k): str(v) for k, v in dict(self.meta.get("modality", {})).items()}

    @property
    def provided_data(self) -> dict[str, list[str]]:
        return {str(k): list(v) for k, v in dict(self.meta.get("provided_data", {})).items()}

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """Spatial shape of the images (``tensorImageShape`` of modality 0), if stated."""
        shapes = self.meta.get("tensorImageShape")
        if isinstance(shapes, dict) and shapes:
            first = shapes.get("0", next(iter(shapes.values())))
            return tuple(int(s) for s in first)
        return None

    @property
    def training(self) -> list[dict[str, str]]:
        entries = self.meta.get("training", [])
        if not isinstance(entries, list):
            raise RegistrationError(f"{self.json_path}: [training] expected a list of objects")
        return entries

    def pairs(self, split: str) -> list[Pair]:
        """Pairs of ``split`` (``val``/``test`` or ``registration_val``/``registration_test``)."""
        key = split if split.startswith("registration_") else f"registration_{split}"
        if key not in self.meta:
            known = [k for k in self.meta if k.startswith("registration_")]
            raise RegistrationError(f"{self.json_path}: [{key}] no such split; found {', '.join(known) or 'none'}")
        raw = self.meta[key]
        if not isinstance(raw, list):
            raise RegistrationError(f"{self.json_path}: [{key}] expected a list of {{fixed, moving}} objects")
        out = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or "fixed" not in entry or "moving" not in entry:
                raise RegistrationError(f"{self.json_path}: [{key}][{i}] expected an object with 'fixed' and 'moving'")
            parse_case_name(entry["fixed"])
            parse_case_name(entry["moving"])
            out.append((str(entry["fixed"]), str(entry["moving"])))
        return _mark_long_names(out)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def label_path(self, image_rel: str) -> Path:
        return related_path(self.root, image_rel, "labels")

    def mask_path(self, image_rel: str) -> Path:
        return related_path(self.root, image_rel, "masks")

    def points_path(self, image_rel: str, kind: str = "landmarks") -> Path:
        return related_path(self.root, image_rel, kind, ".csv")


# --------------------------------------------------------------------------------------------
# Points, volumes, fields
# --------------------------------------------------------------------------------------------


def read_points_csv(path: str | Path) -> np.ndarray:
    """Read a Learn2Reg point CSV (x,y,z voxel coordinates in array index order, no header).

    Returns:
        (N, 3) float64 array.

    Raises:
        RegistrationError: missing file or rows that are not three numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"{path}: point file not found")
    try:
        points = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise RegistrationError(f"{path}: expected rows of comma-separated numbers x,y,z ({err})") from err
    if points.size == 0:
        return np.zeros((0, 3))
    if points.shape[1] not in (2, 3):
        raise RegistrationError(f"{path}: expected 3 columns (x,y,z voxel coordinates), found {points.shape[1]}")
    if not np.all(np.isfinite(points)):
        raise RegistrationError(f"{path}: NaN or Inf in point coordinates")
    return points


def write_points_csv(path: str | Path, points: np.ndarray) -> None:
    """Write points (N, ndim) as Learn2Reg CSV (5 decimals), atomically."""
    with atomic_path(path) as tmp:
        np.savetxt(tmp, np.asarray(points, dtype=np.float64), delimiter=",", fmt="%.5f")


def read_nifti(path: str | Path, what: str = "image") -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Array (on-disk axis order), 4x4 affine and voxel size (mm); :func:`medfoundry.io.read_nifti`.

    Raises:
        RegistrationError: missing or unreadable file (naming it and ``what`` it should hold).
    """
    return _read_nifti(path, what, error=RegistrationError)


def load_volume(path: str | Path, what: str = "image") -> tuple[np.ndarray, tuple[float, ...]]:
    """Load a NIfTI volume and its voxel size (mm, array axis order).

    Raises:
        RegistrationError: missing or unreadable file.
    """
    data, _, spacing = read_nifti(path, what)
    return data, spacing


def read_json(path: str | Path, what: str) -> Any:
    """Parsed JSON of ``path``; a missing file or bad JSON raises ``RegistrationError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RegistrationError(f"{path}: {what} not found") from err
    except json.JSONDecodeError as err:
        raise RegistrationError(f"{path}: not valid JSON ({err})") from err


def load_spacing(path: str | Path) -> tuple[float, ...]:
    """Voxel size (mm) from a NIfTI header without loading the data."""
    return read_nifti_header(path, "image", RegistrationError)[2]


def find_field(fields_dir: str | Path, pair: Pair) -> Path:
    """The field file of ``pair`` in ``fields_dir`` (short or long name, ``.nii.gz`` or ``.npz``).

    Raises:
        RegistrationError: no file found; the message names the pair and the names tried.
    """
    fields_dir = Path(fields_dir)
    stems = [pair.field_stem]
    other = field_stem(pair.fixed, pair.moving, not pair.long_name)
    stems.append(other)
    tried = []
    for stem in stems:
        for ext in (".nii.gz", ".nii", ".npz"):
            candidate = fields_dir / (stem + ext)
            tried.append(candidate.name)
            if candidate.is_file():
                return candidate
    raise RegistrationError(f"{fields_dir}: no displacement field for pair {pair.fixed} -> {pair.moving} "
                            f"(tried {', '.join(tried[:3])}, ...)")


def _read_field_array(path: Path) -> np.ndarray:
    name = path.name
    if name.endswith(".npz"):
        try:
            with np.load(path) as archive:
                keys = list(archive.keys())
                if not keys:
                    raise RegistrationError(f"{path}: empty npz archive (expected one displacement array)")
                key = next((k for k in ("disp", "displacement", "arr_0") if k in keys), keys[0])
                if len(keys) > 1 and key not in ("disp", "displacement", "arr_0"):
                    raise RegistrationError(f"{path}: npz holds several arrays ({', '.join(keys)}); "
                                            "name the field 'disp' or store a single array")
                return np.asarray(archive[key])
        except (OSError, ValueError) as err:
            raise RegistrationError(f"{path}: cannot read npz ({err})") from err
    if name.endswith(".npy"):
        return np.load(path)
    if name.endswith((".nii.gz", ".nii")):
        return _read_nifti(path, "NIfTI field", RegistrationError)[0]
    raise RegistrationError(f"{path}: unknown field format; expected .nii.gz or .npz")


def load_displacement(path: str | Path, expected_shape: Sequence[int] | None = None,
                      pair: Pair | None = None, allow_legacy: bool = True) -> np.ndarray:
    """Load a displacement field as float32 (H, W, D, 3), voxel units, fixed -> moving.

    Accepts (H, W, D, 3) and NIfTI vector images (H, W, D, 1, 3); with ``allow_legacy``, the
    2020/2021 form (3, H/2, W/2, D/2) is upsampled by 2 with a second-order spline. 2D fields
    (H, W, 2) are accepted when ``expected_shape`` says so.

    Args:
        path: ``.nii.gz``, ``.nii`` or ``.npz`` file.
        expected_shape: (H, W, D, 3) or the spatial shape; ``None`` skips the shape check.
        pair: named in error messages.
        allow_legacy: accept the half-resolution channel-first form.

    Raises:
        RegistrationError: missing file, unreadable file, wrong shape, channel-first layout,
            NaN or Inf; the message names the pair and the file.
    """
    path = Path(path)
    who = f"pair {pair.fixed} -> {pair.moving}: " if pair is not None else ""
    if not path.is_file():
        raise RegistrationError(f"{who}{path}: displacement field not found")
    disp = _read_field_array(path)
    if not np.issubdtype(disp.dtype, np.floating) and not np.issubdtype(disp.dtype, np.integer):
        raise RegistrationError(f"{who}{path}: field dtype {disp.dtype} is not numeric")
    if disp.ndim == 5 and disp.shape[3] == 1:
        disp = disp[:, :, :, 0, :]
    expected = None
    if expected_shape is not None:
        expected = tuple(int(s) for s in expected_shape)
        spatial = expected[:-1] if len(expected) in (3, 4) and expected[-1] == len(expected) - 1 else expected
        expected = tuple(spatial) + (len(spatial),)
    ndim = disp.ndim - 1
    if expected is not None and disp.shape != expected:
        spatial = expected[:-1]
        legacy_shape = (len(spatial),) + tuple(s // 2 for s in spatial)
        if allow_legacy and disp.shape == legacy_shape and all(s % 2 == 0 for s in spatial):
            disp = _upsample_legacy(disp.astype(np.float32))
        elif disp.shape == (len(spatial),) + tuple(spatial):
            raise RegistrationError(f"{who}{path}: wrong channel order: found {disp.shape} (channels first), "
                                    f"expected {expected} (channels last); use np.moveaxis(u, 0, -1)")
        else:
            raise RegistrationError(f"{who}{path}: field shape {disp.shape}, expected {expected}"
                                    + (f" or the legacy half-resolution {legacy_shape}" if allow_legacy else ""))
    elif expected is None and disp.shape[-1] != ndim:
        if disp.shape[0] == ndim:
            raise RegistrationError(f"{who}{path}: wrong channel order: found {disp.shape} (channels first), "
                                    f"expected (..., {ndim}) channels last; use np.moveaxis(u, 0, -1)")
        raise RegistrationError(f"{who}{path}: field shape {disp.shape} is not (H, W, D, 3)")
    disp = disp.astype(np.float32, copy=False)
    if not np.all(np.isfinite(disp)):
        bad = int(np.size(disp) - np.count_nonzero(np.isfinite(disp)))
        raise RegistrationError(f"{who}{path}: field holds {bad} NaN/Inf values")
    return disp


def _upsample_legacy(disp: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return np.stack([ndimage.zoom(c, 2, order=2) for c in disp], axis=-1).astype(np.float32)


def save_displacement(path: str | Path, disp: np.ndarray, affine: np.ndarray | None = None,
                      dtype: str = "float32") -> Path:
    """Write a (H, W, D, 3) voxel field as ``.nii.gz`` or ``.npz`` (by suffix), atomically.

    Args:
        path: destination ending in ``.nii.gz``, ``.nii`` or ``.npz``.
        disp: (..., ndim) displacement in voxels, fixed -> moving.
        affine: NIfTI affine (identity if ``None``).
        dtype: ``float32`` or ``float16`` (Learn2Reg accepts both); NIfTI-1 has no float16
            type, so ``.nii.gz`` files are always written as float32.
    """
    path = Path(path)
    disp = np.asarray(disp)
    if disp.shape[-1] != disp.ndim - 1:
        raise RegistrationError(f"{path}: refusing to write field of shape {disp.shape}; expected (H, W, D, 3)")
    disp = disp.astype(dtype)
    name = path.name
    if name.endswith(".npz"):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, disp)
    elif name.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        img = nib.Nifti1Image(disp.astype(np.float32), np.eye(4) if affine is None else np.asarray(affine))
        with atomic_path(path) as tmp:
            real = tmp.with_name(tmp.name + (".nii.gz" if name.endswith(".gz") else ".nii"))
            nib.save(img, str(real))
            real.replace(tmp)
    else:
        raise RegistrationError(f"{path}: unknown field format; use .nii.gz or .npz")
    return path
