"""Volume readers that keep the geometry: NIfTI (nibabel) and DICOM files or series (SimpleITK).

Every reader returns a :class:`VolumeRead` ``(array, spacing, affine)``:

* ``array`` float32 in nibabel's on-disk voxel order ``(H, W, D)`` = ``(i, j, k)``; a 4D
  NIfTI with several frames (e.g. the Medical Segmentation Decathlon's multi-modal brain
  MRI) gives ``(H, W, D, C)``. DICOM is returned in the same order nibabel would give for
  the NIfTI that SimpleITK writes from it (column index ``i``, row index ``j``, slice ``k``),
  so a DICOM series and its NIfTI label map line up voxel for voxel.
* ``spacing`` ``(3,)`` in millimetres per voxel along ``i, j, k``.
* ``affine`` ``(4, 4)`` voxel -> world (RAS+, mm), nibabel's convention; for DICOM converted
  from ITK's LPS by flipping the first two world axes.

CT values are returned in Hounsfield units (DICOM rescale slope/intercept and NIfTI
``scl_slope``/``scl_inter`` applied).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError
from ..utils import atomic_path
from .images import file_suffix, looks_like_dicom

__all__ = ["VolumeRead", "read_volume", "read_nifti", "read_nifti_header", "write_nifti", "VOLUME_SUFFIXES"]

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".dicom")


class VolumeRead(NamedTuple):
    """``array`` (H, W, D[, C]) float32, ``spacing`` (3,) mm, ``affine`` (4, 4) voxel -> RAS mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


def read_volume(path: str | Path, *, series_id: str | None = None, dtype: type = np.float32) -> VolumeRead:
    """Read a 3D volume with its spacing and affine.

    Args:
        path: a ``.nii``/``.nii.gz`` file, a DICOM file (one slice gives depth 1; a
            multi-frame file gives all frames), or a folder holding one DICOM series.
        series_id: for a folder with several series, the SeriesInstanceUID to read.
        dtype: output dtype (float32 for images; pass ``np.int64`` or ``np.float64`` to read
            label maps without rounding surprises).

    Returns:
        ``VolumeRead(array (H, W, D[, C]), spacing (mm), affine (4, 4))``.

    Raises:
        DataError: missing, unreadable or unsupported input, naming the file or folder.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path, series_id, dtype)
    if not path.is_file():
        raise DataError("volume file or DICOM folder does not exist", path=path)
    suffix = file_suffix(path)
    try:
        if suffix in (".nii", ".nii.gz"):
            return _read_nifti(path, dtype)
        if suffix in (".dcm", ".dicom") or looks_like_dicom(path):
            return _read_dicom_file(path, dtype)
    except DataError as err:
        if err.path is None:
            raise DataError(err.message, path=path, field=err.field) from err
        raise
    except Exception as err:  # nibabel / ITK raise many unrelated types for corrupt files
        raise DataError(f"cannot read volume: {type(err).__name__}: {err}", path=path) from err
    raise DataError(f"unsupported volume type {suffix!r}; expected .nii, .nii.gz, .dcm or a DICOM folder", path=path)


def read_nifti(path: str | Path, what: str = "image", error: type[Exception] = DataError
               ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """The package's one NIfTI reader: array as stored, 4x4 affine and voxel size.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        what: what the file should hold, for the error message ("fixed image", "labels", ...).
        error: the exception class raised (callers in one area keep their own error type).

    Returns:
        ``(array, affine, spacing)``: the array in nibabel's on-disk voxel order and stored dtype
        (scaling applied, so float when ``scl_slope`` is set), the voxel -> RAS+ affine in mm
        (float64), and the voxel size along the first three axes in mm.

    Raises:
        ``error``: missing or unreadable file, naming it and ``what`` it should hold.
    """
    img = _load_nifti(Path(path), what, error)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several unrelated types for corrupt files
        raise _failure(Path(path), f"cannot read {what} ({type(err).__name__}: {err})", error) from err
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, np.asarray(img.affine, dtype=np.float64), spacing


def read_nifti_header(path: str | Path, what: str = "image", error: type[Exception] = DataError
                      ) -> tuple[tuple[int, ...], np.ndarray, tuple[float, ...]]:
    """Shape, 4x4 affine (voxel -> RAS+ mm) and voxel size (mm) of a NIfTI, without its data.

    Args and Raises as :func:`read_nifti`.
    """
    img = _load_nifti(Path(path), what, error)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64), spacing


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, header: Any = None) -> None:
    """The package's one NIfTI writer (beside :func:`read_nifti`), atomic: voxel axes i, j, k
    as stored, ``affine`` voxel -> world in mm.

    ``header``: a nibabel header to copy (qform/sform codes of the source scan), else a plain
    one in mm. ``.nii.gz`` is gzipped without a time stamp, so the same array gives the same
    bytes.
    """
    import gzip

    import nibabel as nib

    path = Path(path)
    array = np.asarray(array)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64),
                          header=None if header is None else header.copy())
    img.set_data_dtype(array.dtype)
    if header is None:
        img.header.set_xyzt_units("mm", "sec")
    data = img.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _failure(path: Path, message: str, error: type[Exception]) -> Exception:
    return DataError(message, path=path) if error is DataError else error(f"{path}: {message}")


def _load_nifti(path: Path, what: str, error: type[Exception]):
    import nibabel as nib

    if not path.is_file():
        raise _failure(path, f"{what} not found", error)
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several unrelated types for corrupt files
        raise _failure(path, f"cannot read {what} ({type(err).__name__}: {err})", error) from err


def _read_nifti(path: Path, dtype) -> VolumeRead:
    data, affine, zooms = read_nifti(path)
    shape = data.shape
    if len(shape) < 2 or len(shape) > 4:
        raise DataError(f"expected a 3D or 4D NIfTI, got shape {tuple(shape)}")
    array = np.asarray(data, dtype=np.float64 if np.dtype(dtype).kind in "iu" else dtype)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if np.dtype(dtype).kind in "iu":
        array = np.rint(array).astype(dtype)
    spacing = tuple(float(z) if z > 0 else 1.0 for z in (list(zooms) + [1.0] * 3)[:3])
    return VolumeRead(array, spacing, affine)


def _from_sitk(image, dtype) -> VolumeRead:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # (k, j, i) or (k, j, i, C) for vector pixels
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.transpose(array, (2, 1, 0, 3))
    else:
        array = np.transpose(array, (2, 1, 0))
    if np.dtype(dtype).kind in "iu":
        array = np.rint(array).astype(dtype)
    else:
        array = array.astype(dtype)
    spacing = tuple(float(s) for s in image.GetSpacing())
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(spacing)
    affine[:3, 3] = lps_to_ras @ origin
    return VolumeRead(np.ascontiguousarray(array), spacing, affine)


def _read_dicom_file(path: Path, dtype) -> VolumeRead:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(f"not a readable DICOM file: {str(err).strip().splitlines()[-1]}") from err
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    return _from_sitk(image, dtype)


def _read_dicom_series(folder: Path, series_id: str | None, dtype) -> VolumeRead:
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    if not ids:
        raise DataError("folder holds no DICOM series", path=folder)
    if series_id is None:
        if len(ids) > 1:
            raise DataError(f"folder holds {len(ids)} DICOM series ({', '.join(ids)}); pass series_id", path=folder,
                            field="series_id")
        series_id = ids[0]
    elif series_id not in ids:
        raise DataError(f"series {series_id!r} not found; the folder holds {', '.join(ids)}", path=folder,
                        field="series_id")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(f"cannot read DICOM series {series_id}: {str(err).strip().splitlines()[-1]}",
                        path=folder) from err
    return _from_sitk(image, dtype)
