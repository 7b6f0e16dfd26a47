"""Graded scanner shifts: deterministic, graded, labels untouched, provenance per case."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medfoundry.errors import ConfigError
from medfoundry.robustness.shifts import CORRUPTIONS, corrupt, make_shift_volumes, parse_corruptions


def _image(seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((2, 16, 18, 14), np.float32)
    x[:, 4:12, 5:13, 3:11] = 100.0
    return x + rng.normal(0, 2, x.shape).astype(np.float32) + 50


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_is_seeded_and_grows_with_severity(name):
    x = _image()
    a = corrupt(x, name, 3, seed=1, case="c0")
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, corrupt(x, name, 3, seed=1, case="c0"))
    distances = [float(np.abs(corrupt(x, name, s, seed=1, case="c0") - x).mean()) for s in (1, 3, 5)]
    assert 0 < distances[0] < distances[1] < distances[2], (name, distances)
    if name in ("bias", "gaussian", "rician", "motion"):  # the others draw a sign or an axis, or nothing
        assert not np.array_equal(corrupt(x, name, 3, seed=1, case="c1"), a)


def test_bad_names_and_severities_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown corruption"):
        corrupt(_image(), "fog", 1)
    with pytest.raises(ConfigError, match="severity"):
        corrupt(_image(), "bias", 6)
    with pytest.raises(ConfigError, match="--corruptions"):
        parse_corruptions("bias,fog")


def test_make_shift_volumes_writes_nnunet_folders(robust_folder, tmp_path):
    out = tmp_path / "shifted"
    folders = make_shift_volumes(robust_folder / "imagesTr", out, ["gaussian", "bias"], [1, 5], seed=7,
                                 labels=robust_folder / "labelsTr")
    assert [f.name for f in folders] == ["gaussian_s1", "gaussian_s5", "bias_s1", "bias_s5"]
    src = nib.load(str(robust_folder / "imagesTr" / "case1_0001.nii.gz"))
    dst = nib.load(str(out / "bias_s5" / "imagesTs" / "case1_0001.nii.gz"))
    assert dst.shape == src.shape and np.allclose(dst.affine, src.affine)
    assert not np.allclose(dst.get_fdata(), src.get_fdata())
    assert (out / "bias_s5" / "labelsTs" / "case1.nii.gz").read_bytes() == \
        (robust_folder / "labelsTr" / "case1.nii.gz").read_bytes()
    prov = json.loads((out / "bias_s5" / "provenance" / "case1.json").read_text())
    assert (prov["corruption"], prov["severity"], prov["seed"]) == ("bias", 5, 7)
    again = make_shift_volumes(robust_folder / "imagesTr", tmp_path / "again", ["gaussian"], [5], seed=7)
    assert (again[0] / "imagesTs" / "case0_0000.nii.gz").read_bytes() == \
        (out / "gaussian_s5" / "imagesTs" / "case0_0000.nii.gz").read_bytes()
