"""2D image readers that keep the pixel spacing: PNG/JPEG/BMP, TIFF, 2D NIfTI, single DICOM.

Every reader returns a :class:`ImageRead` ``(array, spacing)``:

* ``array`` is float32 ``(C, H, W)``: ``H`` rows (y, top to bottom) and ``W`` columns (x).
  For NIfTI the first on-disk axis is ``H`` and the second ``W`` (nibabel's order, the same
  rule as for volume slices, see :mod:`medfoundry.io.volumes`).
* ``spacing`` is ``(row_mm, col_mm)`` in millimetres, or ``None`` when the file does not say:
  DICOM PixelSpacing (or ImagerPixelSpacing), NIfTI pixdim, TIFF resolution tags in cm or
  inches, PNG/JPEG/BMP dpi unless it is 72 or 96 (writers' defaults, not a measurement).

Intensity handling is chosen by ``normalize`` (labels always keep their raw values):

* ``"none"``: raw values as stored (DICOM after its rescale slope/intercept, i.e. HU for CT).
* ``"dtype"``: integer files divided by the maximum of their integer type (uint8 -> /255,
  uint16 -> /65535); files with float data (float TIFF/NIfTI, rescaled DICOM) fall back to
  ``"minmax"`` because they have no natural range.
* ``"minmax"``: per image to [0, 1].
* ``"percentile"``: per image, clip to the 0.5th-99.5th percentile, then to [0, 1] (robust for
  16-bit radiographs and microscopy with a few saturated pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError

__all__ = ["ImageRead", "read_image", "normalize_intensity", "IMAGE_SUFFIXES", "NORMALIZE_MODES", "file_suffix",
           "looks_like_dicom"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm", ".dicom")
NORMALIZE_MODES = ("none", "dtype", "minmax", "percentile")
_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ImageRead(NamedTuple):
    """A 2D image as read from disk: ``array`` (C, H, W) float32 and ``spacing`` (mm) or ``None``."""

    array: np.ndarray
    spacing: tuple[float, float] | None


def file_suffix(path: str | Path) -> str:
    """Lower-case suffix, treating ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def read_image(path: str | Path, *, label: bool = False, normalize: str = "none") -> ImageRead:
    """Read one 2D image (or 2D label map) and its pixel spacing.

    Args:
        path: a PNG, JPEG, BMP, TIFF, 2D NIfTI (``.nii``/``.nii.gz``, a third axis of length 1
            is dropped) or single-frame DICOM file (recognised by content whatever its suffix,
            as PACS exports are often named by UID or have no suffix).
        label: read a label map: raw integer values are kept, palette PNGs give their palette
            indices, multi-channel label files must have equal channels (one is kept), and
            the result has one channel.
        normalize: ``none``, ``dtype``, ``minmax`` or ``percentile`` (module docstring);
            ignored when ``label`` is true.

    Returns:
        ``ImageRead(array (C, H, W) float32, spacing (row_mm, col_mm) or None)``.

    Raises:
        DataError: the file is missing, unreadable, not 2D or of an unsupported type; the
            message names the file.
    """
    path = Path(path)
    if normalize not in NORMALIZE_MODES:
        raise DataError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}", field="normalize")
    if not path.is_file():
        raise DataError("image file does not exist", path=path)
    suffix = file_suffix(path)
    try:
        if suffix in _PIL_SUFFIXES:
            array, spacing, integer_max = _read_pil(path, label)
        elif suffix in (".tif", ".tiff"):
            array, spacing, integer_max = _read_tiff(path)
        elif suffix in (".nii", ".nii.gz"):
            array, spacing, integer_max = _read_nifti_2d(path)
        elif suffix in (".dcm", ".dicom") or looks_like_dicom(path):  # UID-named files: any suffix
            array, spacing, integer_max = _read_dicom_2d(path, label)
        else:
            raise DataError(f"unsupported image type {suffix or '(no suffix)'!r}; "
                            f"expected one of {', '.join(IMAGE_SUFFIXES)}", path=path)
    except DataError as err:
        if err.path is None:
            raise DataError(err.message, path=path, field=err.field) from err
        raise
    except Exception as err:  # decoder libraries raise many unrelated types for corrupt files
        raise DataError(f"cannot read image: {type(err).__name__}: {err}", path=path) from err
    if label:
        if array.shape[0] > 1:
            if not all(np.array_equal(array[0], array[c]) for c in range(1, array.shape[0])):
                raise DataError(f"label map has {array.shape[0]} different channels; expected a single-channel "
                                "map of class values (convert colour masks to indices first)", path=path)
            array = array[:1]
        return ImageRead(array.astype(np.float32), spacing)
    if not np.all(np.isfinite(array)):
        raise DataError("image contains NaN or Inf values", path=path)
    mode = normalize
    if mode == "dtype":
        if integer_max is None:
            mode = "minmax"
        else:
            array = array / float(integer_max)
    return ImageRead(normalize_intensity(array, mode), spacing)


def normalize_intensity(array: np.ndarray, mode: str, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Scale an array to [0, 1]: ``minmax``, ``percentile`` (clip to the given percentiles first)
    or ``none``/``dtype`` (returned unchanged as float32). A constant array becomes zeros."""
    array = np.asarray(array, dtype=np.float32)
    if mode in ("none", "dtype"):
        return array
    if mode == "minmax":
        lo, hi = float(array.min()), float(array.max())
    elif mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(array, [lower, upper]))
    else:
        raise DataError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}", field="normalize")
    if hi <= lo:
        return np.zeros_like(array)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _channels_first(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return np.moveaxis(array, -1, 0)
    raise DataError(f"expected a 2D image (H, W) or (H, W, C), got array shape {array.shape}")


def _integer_max(dtype: np.dtype) -> int | None:
    if np.issubdtype(dtype, np.bool_):
        return 1
    if np.issubdtype(dtype, np.integer):
        return int(np.iinfo(dtype).max)
    return None


def _read_pil(path: Path, label: bool):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P" and not label:
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("RGBA", "LA", "PA"):
            # Alpha is a display channel, not image content.
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
        if im.mode in ("CMYK", "YCbCr", "HSV", "LAB"):
            im = im.convert("RGB")
        if im.mode == "1":
            im = im.convert("L")
        array = np.asarray(im)
        dpi = im.info.get("dpi")
    integer_max = _integer_max(array.dtype)
    if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) <= 65535):
        integer_max = 65535
    spacing = None
    if dpi and all(float(d) > 1.0 for d in dpi[:2]) and not {round(float(d)) for d in dpi[:2]} <= {72, 96}:
        # 72 and 96 dpi are the defaults many writers put in; they say nothing about the pixel.
        spacing = (25.4 / float(dpi[1]), 25.4 / float(dpi[0]))
    return _channels_first(array.astype(np.float32)), spacing, integer_max


def _read_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array = page.asarray()
        spacing = _tiff_spacing(page)
        if len(tif.pages) > 1 and array.ndim == 2 and len(tif.series) and len(tif.series[0].shape) > 2:
            raise DataError(f"TIFF holds a stack of {len(tif.pages)} pages; expected one 2D image")
    if array.ndim == 3 and array.shape[0] <= 4 and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage
    integer_max = _integer_max(array.dtype)
    return _channels_first(array.astype(np.float32)), spacing, integer_max


def _tiff_spacing(page) -> tuple[float, float] | None:
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
    mm_per_unit = {2: 25.4, 3: 10.0}.get(int(unit))
    if mm_per_unit is None:
        return None  # unit 1 = no absolute unit
    try:
        xn, xd = tags["XResolution"].value
        yn, yd = tags["YResolution"].value
    except (TypeError, ValueError):
        return None
    if not (xn and yn and xd and yd):
        return None
    return (mm_per_unit * yd / yn, mm_per_unit * xd / xn)


def _read_nifti_2d(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    shape = img.shape
    if len(shape) < 2 or any(s != 1 for s in shape[2:3]) or len(shape) > 4:
        raise DataError(f"expected a 2D NIfTI (X, Y) or (X, Y, 1[, C]), got shape {tuple(shape)}; "
                        "use read_volume for volumes")
    raw = np.asanyarray(img.dataobj)
    integer_max = _integer_max(raw.dtype) if not _has_scaling(img) else None
    array = np.asarray(img.dataobj, dtype=np.float32)
    if array.ndim >= 3:
        array = array[:, :, 0]
    zooms = img.header.get_zooms()
    spacing = (float(zooms[0]), float(zooms[1])) if min(zooms[:2]) > 0 else None
    return _channels_first(array), spacing, integer_max


def _has_scaling(img) -> bool:
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    return (float(slope), float(inter)) != (1.0, 0.0)


def looks_like_dicom(path: str | Path) -> bool:
    """True when the file carries the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom_2d(path: Path, label: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as err:
        raise DataError(f"not a DICOM file: {err}") from err
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"DICOM holds {frames} frames; expected one 2D image (use read_volume)")
    pixels = ds.pixel_array
    integer_max = _integer_max(pixels.dtype)
    bits = getattr(ds, "BitsStored", None)
    if integer_max is not None and bits and int(bits) < pixels.dtype.itemsize * 8:
        integer_max = 2 ** int(bits) - 1
    array = pixels.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if (slope, intercept) != (1.0, 0.0) and not label:
        array = array * slope + intercept  # modality LUT: stored values -> physical (HU for CT)
        integer_max = None
    if not label and str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        # MONOCHROME1 shows low values as white; invert so bright always means high signal.
        array = array.max() + array.min() - array
    spacing = None
    ps = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
    if ps is not None and len(ps) == 2:
        spacing = (float(ps[0]), float(ps[1]))  # DICOM order: row spacing, column spacing
    return _channels_first(array), spacing, integer_max
