import numpy as np
import pytest
from PIL import Image

from medfoundry.errors import DataError
from medfoundry.io import read_image, read_volume


def _ct():
    from pydicom.data import get_testdata_file

    return get_testdata_file("CT_small.dcm")


def test_png_grey_rgb_and_dtype_scaling(tmp_path):
    grey = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    Image.fromarray(grey).save(tmp_path / "g.png")
    arr, spacing = read_image(tmp_path / "g.png")
    assert arr.shape == (1, 3, 4) and arr.dtype == np.float32 and spacing is None
    np.testing.assert_array_equal(arr[0], grey)
    scaled, _ = read_image(tmp_path / "g.png", normalize="dtype")
    np.testing.assert_allclose(scaled[0], grey / 255.0, rtol=1e-6)
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    arr, _ = read_image(tmp_path / "c.png")
    assert arr.shape == (3, 5, 6) and arr[:, 1, 2].tolist() == [10, 20, 30]


def test_uint16_png_and_tiff_resolution(tmp_path):
    import tifffile

    data = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "a.png")
    arr, _ = read_image(tmp_path / "a.png", normalize="dtype")
    np.testing.assert_allclose(arr[0], data / 65535.0, rtol=1e-5)
    # 100 pixels per cm in x, 50 in y -> 0.1 mm columns, 0.2 mm rows.
    tifffile.imwrite(tmp_path / "a.tif", data, resolution=(100, 50), resolutionunit="CENTIMETER")
    arr, spacing = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(arr[0], data)
    assert spacing == pytest.approx((0.2, 0.1))


def test_palette_mask_keeps_indices(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "m.png")
    arr, _ = read_image(tmp_path / "m.png", label=True)
    np.testing.assert_array_equal(arr[0], idx)
    as_image, _ = read_image(tmp_path / "m.png")
    assert as_image.shape == (3, 2, 2) and as_image[:, 0, 1].tolist() == [255, 0, 0]


def test_dicom_image_and_volume_agree():
    arr, spacing = read_image(_ct())
    assert arr.shape == (1, 128, 128)
    assert spacing == pytest.approx((0.661468, 0.661468))
    assert arr.min() < -500  # rescale intercept applied: Hounsfield units, air near -1000
    vol = read_volume(_ct())
    assert vol.array.shape == (128, 128, 1)
    assert vol.spacing[:2] == pytest.approx((0.661468, 0.661468))
    # Volume order is (i = column, j = row); the 2D reader is (row, column).
    np.testing.assert_array_equal(vol.array[:, :, 0].T, arr[0])
    # RAS affine: flipping ITK's LPS makes the first two diagonal entries negative here.
    assert vol.affine[0, 0] == pytest.approx(-0.661468) and vol.affine[2, 2] == pytest.approx(vol.spacing[2])


def test_mr_dicom_2d():
    from pydicom.data import get_testdata_file

    arr, spacing = read_image(get_testdata_file("MR_small.dcm"), normalize="minmax")
    assert arr.shape == (1, 64, 64) and spacing == pytest.approx((0.3125, 0.3125))
    assert arr.min() == 0.0 and arr.max() == 1.0


def test_nifti_volume_and_2d(tmp_path):
    import nibabel as nib

    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = (1, 2, 3)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    vol = read_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(vol.array, data)
    assert vol.spacing == pytest.approx((0.5, 0.7, 2.0))
    np.testing.assert_allclose(vol.affine, affine)
    nib.save(nib.Nifti1Image(data[:, :, :1], affine), tmp_path / "s.nii")
    arr, spacing = read_image(tmp_path / "s.nii")
    np.testing.assert_array_equal(arr[0], data[:, :, 0])  # first on-disk axis = rows
    assert spacing == pytest.approx((0.5, 0.7))
    with pytest.raises(DataError, match="2D NIfTI"):
        read_image(tmp_path / "v.nii.gz")


def test_dicom_series_folder(tmp_path):
    import pydicom
    from pydicom.uid import generate_uid

    series = tmp_path / "series"
    series.mkdir()
    uid = generate_uid()
    for k in range(3):
        ds = pydicom.dcmread(_ct())
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 2.5 * k]
        px = ds.pixel_array.copy()
        px[0, 0] = k  # marks the slice
        ds.PixelData = px.tobytes()
        ds.save_as(series / f"{2 - k}.dcm")  # file names in reverse order: reader must sort by position
    vol = read_volume(series)
    assert vol.array.shape == (128, 128, 3)
    assert vol.spacing[2] == pytest.approx(2.5)
    slope = float(pydicom.dcmread(_ct()).RescaleSlope)
    inter = float(pydicom.dcmread(_ct()).RescaleIntercept)
    assert [vol.array[0, 0, k] for k in range(3)] == pytest.approx([k * slope + inter for k in range(3)])


def test_unreadable_and_unsupported_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    with pytest.raises(DataError, match="unsupported"):
        (tmp_path / "x.xyz").write_text("1")
        read_image(tmp_path / "x.xyz")
    with pytest.raises(DataError, match="does not exist"):
        read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM series"):
        read_volume(tmp_path / "empty")


def test_monochrome1_is_inverted_and_suffixless_dicom(tmp_path):
    import pydicom

    ds = pydicom.dcmread(_ct())
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "IM0001")  # PACS exports often have no suffix
    ds.save_as(tmp_path / "1.2.840.10008.5")  # or a UID as name
    normal, _ = read_image(_ct())
    inverted, _ = read_image(tmp_path / "IM0001")
    # MONOCHROME1 shows low values bright: inverting maps v -> max + min - v
    np.testing.assert_allclose(inverted[0], normal.max() + normal.min() - normal[0])
    from medfoundry.data.adapters._common import list_files

    assert [p.name for p in list_files(tmp_path, (".png", ".dcm"))] == ["1.2.840.10008.5", "IM0001"]
    assert read_image(tmp_path / "1.2.840.10008.5").array.shape == (1, 128, 128)
