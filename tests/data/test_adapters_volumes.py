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
