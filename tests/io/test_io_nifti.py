"""The one NIfTI reader: data, affine and spacing, the header alone, and errors naming the file."""

import nibabel as nib
import numpy as np
import pytest

from medfoundry.errors import DataError, RegistrationError
from medfoundry.io import read_nifti, read_nifti_header


@pytest.fixture
def oblique(tmp_path):
    affine = np.array([[0.0, -1.5, 0.0, 10.0], [2.0, 0.0, 0.0, -5.0], [0.0, 0.0, 3.0, 7.0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path, data, affine


def test_read_nifti_and_header_agree(oblique):
    path, data, affine = oblique
    array, read_affine, spacing = read_nifti(path)
    assert array.dtype == np.int16 and np.array_equal(array, data)
    assert np.allclose(read_affine, affine) and spacing == (2.0, 1.5, 3.0)
    shape, header_affine, header_spacing = read_nifti_header(path)
    assert shape == (4, 5, 6) and np.array_equal(header_affine, read_affine) and header_spacing == spacing


def test_missing_and_corrupt_files_raise_the_callers_error(tmp_path):
    with pytest.raises(DataError, match="fixed image not found"):
        read_nifti_header(tmp_path / "none.nii.gz", "fixed image")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(RegistrationError, match=r"bad\.nii\.gz: cannot read labels"):
        read_nifti(bad, "labels", RegistrationError)
    with pytest.raises(RegistrationError, match=r"bad\.nii\.gz: cannot read mask"):
        read_nifti_header(bad, "mask", RegistrationError)
