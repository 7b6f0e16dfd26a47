"""Importer of nnU-Net-style folders and the ragged memory-mapped storage."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medfoundry.data.adapters.nnunet_folder import import_volumes3d, normalize_case
from medfoundry.data.volumes3d import VolumeTask, list_volume_tasks, validate_volume_task
from medfoundry.io.volumes import write_nifti
from medfoundry.errors import DataError

from seg3d_helpers import write_folder


def test_round_trip_keeps_shapes_affines_and_values(tiny_folder, tmp_path):
    task = import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "tiny")
    assert list_volume_tasks(tmp_path / "db") == ["tiny"]
    assert validate_volume_task(tmp_path / "db", "tiny") == []
    assert {c.shape for c in task.cases} == {(20, 18, 16), (17, 21, 15), (19, 19, 19), (16, 20, 18)}
    assert sorted(c.split for c in task.cases).count("val") == 1
    for i, case in enumerate(task.cases):
        src = [nib.load(str(tiny_folder / "imagesTr" / f"{case.name}_{c:04d}.nii.gz")) for c in range(2)]
        raw = np.stack([s.get_fdata(dtype=np.float32) for s in src])
        np.testing.assert_allclose(task.image(i), normalize_case(raw), atol=2e-2)  # float16 storage
        label = np.asarray(nib.load(str(tiny_folder / "labelsTr" / f"{case.name}.nii.gz")).dataobj)
        np.testing.assert_array_equal(task.label(i), label)
        np.testing.assert_allclose(np.array(case.affine), src[0].affine)
    assert isinstance(np.load(task.root / "images.npy", mmap_mode="r"), np.memmap)


def test_four_d_nifti_gives_channels(tmp_path):
    folder = write_folder(tmp_path / "raw", [(12, 12, 12)], channels=3)
    four_d = tmp_path / "four_d"
    parts = [nib.load(str(folder / "imagesTr" / f"case0_{c:04d}.nii.gz")) for c in range(3)]
    stacked = np.stack([p.get_fdata(dtype=np.float32) for p in parts], axis=-1)
    write_nifti(four_d / "images" / "case0.nii.gz", stacked, parts[0].affine)
    task = import_volumes3d(four_d / "images", folder / "labelsTr", tmp_path / "db", "four_d")
    assert task.channels == 3 and task.image(0).shape == (3, 12, 12, 12)


def test_target_spacing_resamples(tiny_folder, tmp_path):
    task = import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "coarse",
                            spacing=(2.0, 2.0, 2.0))
    case = task.cases[0]
    assert case.original_shape == (20, 18, 16) and case.shape == (10, 9, 8)
    assert task.target_spacing == (2.0, 2.0, 2.0)
    assert set(np.unique(task.label(0))) <= {0, 1, 2}


def _assert_nothing_written(db):
    assert not (db / "tasks").exists() or not any((db / "tasks").iterdir())


def test_missing_channel_names_the_file(tiny_folder, tmp_path):
    (tiny_folder / "imagesTr" / "case2_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="case2_0001.nii.gz"):
        import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "t")
    _assert_nothing_written(tmp_path / "db")


def test_channel_on_another_grid_names_the_file(tiny_folder, tmp_path):
    path = tiny_folder / "imagesTr" / "case1_0001.nii.gz"
    img = nib.load(str(path))
    write_nifti(path, img.get_fdata(dtype=np.float32), img.affine + np.diag([0.5, 0, 0, 0]))
    with pytest.raises(DataError, match="case1_0001.nii.gz.*another grid"):
        import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "t")
    _assert_nothing_written(tmp_path / "db")


def test_label_on_another_grid_names_the_file(tiny_folder, tmp_path):
    path = tiny_folder / "labelsTr" / "case3.nii.gz"
    write_nifti(path, np.zeros((16, 20, 17), np.uint8), nib.load(str(path)).affine)
    with pytest.raises(DataError, match="case3.nii.gz.*does not match"):
        import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "t")
    _assert_nothing_written(tmp_path / "db")


def test_missing_label_and_bad_values(tiny_folder, tmp_path):
    with pytest.raises(DataError, match="outside the 2 classes"):
        import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "t",
                         classes=["background", "lesion"])
    (tiny_folder / "labelsTr" / "case0.nii.gz").unlink()
    with pytest.raises(DataError, match="case0.nii.gz"):
        import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "t")
    _assert_nothing_written(tmp_path / "db")


def test_existing_task_and_corruption_are_reported(tiny_task, tiny_folder, tmp_path):
    with pytest.raises(DataError, match="already exists"):
        import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "tiny")
    labels = np.lib.format.open_memmap(tiny_task.root / "labels.npy", "r+")
    labels[0] = 9
    labels.flush()
    del labels
    problems = validate_volume_task(tmp_path / "db", "tiny")
    assert len(problems) == 1 and "label value 9" in problems[0]
    with pytest.raises(DataError, match="no 3D segmentation task 'nope'.*tiny"):
        VolumeTask.open(tmp_path / "db", "nope")
