import nibabel as nib
import numpy as np
import pytest

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.adapters import import_volumes, normalize_volume
from medfoundry.errors import DataError


def _volumes(tmp_path, n_cases=6, channels=1, nnunet=False):
    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for c in range(n_cases):
        lab = np.zeros((16, 16, 10), np.uint8)
        lab[4:10, 4:10, 3:6] = 1  # foreground on slices 3, 4, 5
        lab[6:8, 6:8, 4] = 2
        for ch in range(channels):
            img = np.full((16, 16, 10), -1000.0, np.float32)
            img[lab > 0] = 40.0 + 100 * ch
            name = f"case{c}_{ch:04d}.nii.gz" if nnunet else f"case{c}.nii.gz"
            nib.save(nib.Nifti1Image(img, affine), tmp_path / "im" / name)
        nib.save(nib.Nifti1Image(lab, affine), tmp_path / "lab" / f"case{c}.nii.gz")


def test_foreground_slices_ct_window_spacing_and_volume_split(tmp_path):
    _volumes(tmp_path)
    res = import_volumes(tmp_path / "im", tmp_path / "lab", tmp_path / "db", "organs", image_size=(8, 8),
                         classes=["bg", "organ", "lesion"], intensity="ct", window=(40, 400), image_dtype="float32")
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.num_samples("organs") == 6 * 3
    assert res.spec.extra["slice_axis"] == 2
    src = (tmp_path / "db" / "tasks" / "organs" / "sources.json").read_text()
    assert "case0:axis=2:slice=3" in src and "slice=0\"" not in src
    # spacing: 16 px of 0.8 mm -> 8 px of 1.6 mm
    assert db.spacing("organs", 0) == pytest.approx((1.6, 1.6))
    img = db.image("organs", 1)  # slice 4 of case0: 40 HU -> (40 - (-160)) / 400 = 0.5, air -> 0
    assert img.min() == 0.0 and img.max() == pytest.approx(0.5, abs=1e-6)
    assert db.target("organs", 1).max() == 2
    # no case has slices in two splits
    cases = {}
    import json
    sources = json.loads(src)
    for split in ("train", "val", "test"):
        for i in db.split_indices("organs", split):
            assert cases.setdefault(sources[i].split(":")[0], split) == split
    assert len(cases) == 6


def test_keep_all_background_fraction_axis_and_nnunet_channels(tmp_path):
    _volumes(tmp_path, n_cases=2, channels=2, nnunet=True)
    res = import_volumes(tmp_path / "im", tmp_path / "lab", tmp_path / "db", "a", image_size=(16, 16), keep="all")
    assert res.spec.channels == 2
    assert sum(res.split_sizes.values()) == 2 * 10
    res = import_volumes(tmp_path / "im", tmp_path / "lab", tmp_path / "db", "b", image_size=(16, 16),
                         background_fraction=0.5, axis=0, seed=3)
    # axis 0: foreground on rows 4..9 (6 slices), 10 background slices, half kept -> 11 per case
    assert sum(res.split_sizes.values()) == 2 * 11
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.image("b", 0).shape == (2, 16, 16)


def test_mr_percentile_normalisation_and_label_mismatch(tmp_path):
    v = np.zeros((4, 4, 4), np.float32)
    v[1:3, 1:3, 1:3] = np.arange(8).reshape(2, 2, 2) + 1  # non-zero values 1..8
    out = normalize_volume(v, "mr", percentiles=(0, 100))
    assert out.max() == 1.0 and out[v == 1].item() == 0.0 and out[0, 0, 0] == 0.0
    _volumes(tmp_path, n_cases=1)
    lab = nib.load(tmp_path / "lab" / "case0.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:8], lab.affine), tmp_path / "lab" / "case0.nii.gz")
    with pytest.raises(DataError, match="case0.nii.gz"):
        import_volumes(tmp_path / "im", tmp_path / "lab", tmp_path / "db", "t", image_size=(8, 8))


def test_dicom_series_case_with_nifti_label(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ct = get_testdata_file("CT_small.dcm")
    (tmp_path / "im" / "pat1").mkdir(parents=True)
    (tmp_path / "lab").mkdir()
    uid = generate_uid()
    for k in range(3):
        ds = pydicom.dcmread(ct)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = uid, generate_uid(), k + 1
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * k]
        ds.save_as(tmp_path / "im" / "pat1" / f"{k}.dcm")
    lab = np.zeros((128, 128, 3), np.uint8)
    lab[10:20, 30:50, 1] = 1  # rows of the NIfTI = first on-disk axis (DICOM columns)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "lab" / "pat1.nii.gz")
    res = import_volumes(tmp_path / "im", tmp_path / "lab", tmp_path / "db", "ct", image_size=(64, 64),
                         intensity="ct", split_ratios=(1, 0, 0), image_dtype="float32")
    assert res.split_sizes == {"train": 1, "val": 0, "test": 0}
    db = MultiTaskDatabase.open(tmp_path / "db")
    mask = db.target("ct", 0)
    assert mask[5:10, 15:25].all() and mask.sum() == 5 * 10  # nearest resize by 1/2 of the 10x20 block
    assert db.spacing("ct", 0) == pytest.approx((0.661468 * 2, 0.661468 * 2), rel=1e-5)


def test_whole_volumes_as_3d_task(tmp_path):
    _volumes(tmp_path, n_cases=3)
    res = import_volumes(tmp_path / "im", tmp_path / "lab", tmp_path / "db", "vol3d", image_size=(5, 8, 8),
                         classes=["bg", "organ", "lesion"], intensity="ct", image_dtype="float32")
    assert res.spec.spatial_dims == 3 and sum(res.split_sizes.values()) == 3
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.image("vol3d", 0).shape == (1, 5, 8, 8)
    mask = db.target("vol3d", 0)
    # depth = on-disk axis 2 (10 slices of 3 mm -> 5 of 6 mm); foreground on slices 3..5 -> depth 1..2
    assert mask.shape == (5, 8, 8) and mask[1:3].any() and not mask[0].any() and not mask[3:].any()
    assert db.spacing("vol3d", 0) == pytest.approx((6.0, 1.6, 1.6))
    from medfoundry.data.validate import validate_database

    assert [p for p in validate_database(tmp_path / "db") if p.severity == "error"] == []
