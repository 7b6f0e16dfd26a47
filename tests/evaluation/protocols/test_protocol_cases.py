"""Case-name matching, label-map reading and the protocol registry."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.errors import ConfigError, DataError
from medfoundry.evaluation.protocols import get_protocol, list_protocols, register_protocol
from medfoundry.evaluation.protocols.cases import case_name, check_same_grid, match_cases, read_label_map
from protocol_synth import save_nifti


@pytest.mark.parametrize("filename, name", [
    ("case_00001.nii.gz", "case_00001"),
    ("BraTS-GLI-00001-000-seg.nii.gz", "BraTS-GLI-00001-000"),
    ("BraTS-GLI-00001-000.nii.gz", "BraTS-GLI-00001-000"),
    ("sub-strokecase0001_ses-0001_msk.nii.gz", "sub-strokecase0001_ses-0001"),
    ("liver_3_label.nii", "liver_3"),
    ("image.SEG.NII.GZ", "image"),
    ("notes.txt", None),
])
def test_case_names(filename, name):
    assert case_name(filename) == name


def _label(path, value=1, shape=(6, 6, 6), spacing=(1.0, 1.0, 1.0)):
    array = np.zeros(shape, np.uint8)
    array[1:3, 1:3, 1:3] = value
    return save_nifti(path, array, spacing)


def test_matching_missing_extra_and_brats_ids(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for name in ("BraTS-GLI-00001-000-seg", "BraTS-GLI-00002-000-seg", "other"):
        _label(ref / f"{name}.nii.gz")
    _label(pred / "BraTS-GLI-00001-000.nii.gz")
    _label(pred / "team_00002-000.nii.gz")   # official BraTS rule: ends with the identifier
    _label(pred / "stray.nii.gz")
    cases, unmatched = match_cases(pred, ref)
    assert [(c.name, c.pred.name if c.pred else None) for c in cases] == [
        ("BraTS-GLI-00001-000", "BraTS-GLI-00001-000.nii.gz"),
        ("BraTS-GLI-00002-000", "team_00002-000.nii.gz"),
        ("other", None)]
    assert [p.name for p in unmatched] == ["stray.nii.gz"]


def test_two_files_one_case_and_empty_folders(tmp_path):
    _label(tmp_path / "a.nii.gz")
    _label(tmp_path / "a_seg.nii")
    with pytest.raises(DataError, match="a.nii.gz and a_seg.nii both give case name 'a'"):
        match_cases(tmp_path, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .nii.gz or .nii"):
        match_cases(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        match_cases(tmp_path / "nope", tmp_path / "nope")


def test_reading_and_grid_checks(tmp_path):
    ref = read_label_map(_label(tmp_path / "r.nii.gz", spacing=(0.5, 1.0, 2.0)))
    assert ref.spacing == (0.5, 1.0, 2.0) and ref.array.dtype.kind in "iu"
    other_shape = read_label_map(_label(tmp_path / "s.nii.gz", shape=(6, 6, 7), spacing=(0.5, 1.0, 2.0)))
    with pytest.raises(DataError, match=r"shape mismatch: prediction .*s.nii.gz.*reference .*r.nii.gz"):
        check_same_grid(other_shape, ref, tmp_path / "s.nii.gz", tmp_path / "r.nii.gz")
    shifted = read_label_map(_label(tmp_path / "t.nii.gz", spacing=(0.5, 1.0, 2.1)))
    with pytest.raises(DataError, match="affine mismatch: prediction .*t.nii.gz and reference .*r.nii.gz"):
        check_same_grid(shifted, ref, tmp_path / "t.nii.gz", tmp_path / "r.nii.gz")
    save_nifti(tmp_path / "f.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    with pytest.raises(DataError, match="non-integer"):
        read_label_map(tmp_path / "f.nii.gz")


def test_registry():
    assert {"default", "brats-gli", "brats-mets", "brats-ped", "brats-men", "isles22", "kits21"} <= set(list_protocols())
    with pytest.raises(ConfigError, match="did you mean brats-gli"):
        get_protocol("brats-gl")
    protocol = get_protocol("kits21")
    assert get_protocol(protocol) is protocol
    assert register_protocol(protocol) is protocol  # the same object again is harmless
    import dataclasses

    with pytest.raises(ValueError, match="already registered"):
        register_protocol(dataclasses.replace(protocol))
