"""Learn2Reg files: dataset JSON, naming, official configs, point CSVs, field I/O (incl. legacy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfoundry.errors import RegistrationError
from medfoundry.learn2reg import (
    Learn2RegDataset,
    Pair,
    field_stem,
    find_field,
    load_displacement,
    load_evaluation_config,
    parse_case_name,
    read_points_csv,
    related_path,
    save_displacement,
    write_points_csv,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "learn2reg"
CONFIGS = sorted((SHARED / "evaluation_configs").glob("*.json")) if SHARED.is_dir() else []


def test_case_names_and_field_stems():
    case = parse_case_name("./imagesTr/ThoraxCBCT_0011_0001.nii.gz")
    assert (case.task, case.case, case.modality) == ("ThoraxCBCT", "0011", "0001")
    assert field_stem("./imagesTr/OASIS_0438_0000.nii.gz", "./imagesTr/OASIS_0439_0000.nii.gz") == "disp_0438_0439"
    assert field_stem("./imagesTr/X_0011_0001.nii.gz", "./imagesTr/X_0011_0000.nii.gz", long_name=True) \
        == "disp_0011_0001_0011_0000"
    with pytest.raises(RegistrationError, match="TASK_CCCC_MMMM"):
        parse_case_name("imagesTr/scan.nii.gz")
    assert related_path(Path("/d"), "./imagesTs/A_0001_0000.nii.gz", "landmarks", ".csv") \
        == Path("/d/landmarksTs/A_0001_0000.csv")


def _write_dataset(root: Path, pairs) -> Path:
    meta = {
        "name": "Toy", "modality": {"0": "CT", "1": "CBCT"},
        "tensorImageShape": {"0": [6, 5, 4]},
        "training": [{"image": "./imagesTr/Toy_0001_0000.nii.gz"}],
        "registration_val": [{"fixed": f, "moving": m} for f, m in pairs],
        "registration_test": [],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "Toy_dataset.json").write_text(json.dumps(meta))
    return root


def test_dataset_json_pairs_and_long_names(tmp_path):
    pairs = [("./imagesTr/Toy_0011_0001.nii.gz", "./imagesTr/Toy_0011_0000.nii.gz"),
             ("./imagesTr/Toy_0011_0002.nii.gz", "./imagesTr/Toy_0011_0000.nii.gz"),
             ("./imagesTr/Toy_0001_0000.nii.gz", "./imagesTr/Toy_0002_0000.nii.gz")]
    ds = Learn2RegDataset(_write_dataset(tmp_path / "ds", pairs))
    assert ds.name == "Toy" and ds.modalities == {"0": "CT", "1": "CBCT"} and ds.image_shape == (6, 5, 4)
    val = ds.pairs("val")
    # Same case numbers twice -> the long form keeps the fields apart; the plain pair stays short.
    assert [p.field_stem for p in val] == ["disp_0011_0001_0011_0000", "disp_0011_0002_0011_0000", "disp_0001_0002"]
    assert ds.pairs("test") == []
    with pytest.raises(RegistrationError, match="registration_train"):
        ds.pairs("train")
    assert ds.label_path(val[0].fixed) == tmp_path / "ds" / "labelsTr" / "Toy_0011_0001.nii.gz"


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(RegistrationError, match="no dataset JSON"):
        Learn2RegDataset(tmp_path)
    (tmp_path / "Bad_dataset.json").write_text("{not json")
    with pytest.raises(RegistrationError, match="Bad_dataset.json"):
        Learn2RegDataset(tmp_path)


@pytest.mark.skipif(not CONFIGS, reason="shared Learn2Reg configs not present beside the checkout")
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_official_config_parses(path):
    raw = json.loads(path.read_text())
    cfg = load_evaluation_config(path)
    assert cfg.task_name == raw["task_name"]
    assert len(cfg.pairs) == len(raw["eval_pairs"])
    assert cfg.expected_shape == tuple(raw["expected_shape"])
    assert cfg.masked == raw["masked_evaluation"]
    assert [m.metric for m in cfg.methods] == [m["metric"] for m in raw["evaluation_methods"]]
    for m, r in zip(cfg.methods, raw["evaluation_methods"]):
        assert list(m.labels) == r.get("labels", [])
    # Field names are unique within a config (ThoraxCBCT needs the long form for that).
    stems = [p.field_stem for p in cfg.pairs]
    assert len(set(stems)) == len(stems)
    assert cfg.to_dict()["eval_pairs"] == raw["eval_pairs"]


@pytest.mark.skipif(not CONFIGS, reason="shared Learn2Reg configs not present beside the checkout")
def test_config_keys_of_known_tasks():
    lung = load_evaluation_config(SHARED / "evaluation_configs" / "LungCT_VAL_evaluation_config.json")
    assert lung.metrics == ["sdlogj_official", "tre_lm", "tre_kp"] and lung.masked
    assert lung.pairs[0].field_stem == "disp_0001_0001"
    thorax = load_evaluation_config(SHARED / "evaluation_configs" / "ThoraxCBCT_VAL_evaluation_config.json")
    assert thorax.pairs[0].field_stem == "disp_0011_0001_0011_0000"
    assert thorax.labels_for("dice") == (1,)


def test_bad_configs_are_named(tmp_path):
    base = {"task_name": "T", "evaluation_methods": [{"name": "DSC", "metric": "dice", "labels": [1]}],
            "expected_shape": [4, 4, 4, 3],
            "eval_pairs": [{"fixed": "./imagesTr/T_0001_0000.nii.gz", "moving": "./imagesTr/T_0002_0000.nii.gz"}]}
    cases = {
        "eval_pairs": {k: v for k, v in base.items() if k != "eval_pairs"},
        "metric": base | {"evaluation_methods": [{"name": "X", "metric": "ncc"}]},
        "labels": base | {"evaluation_methods": [{"name": "DSC", "metric": "dice"}]},
        "dest": base | {"evaluation_methods": [{"name": "TRE", "metric": "tre"}]},
        "expected_shape": base | {"expected_shape": [4, 4]},
    }
    for key, data in cases.items():
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(RegistrationError, match=key):
            load_evaluation_config(path)
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(base))
    assert load_evaluation_config(path).labels_for("dice") == (1,)


def test_points_csv_roundtrip(tmp_path):
    pts = np.array([[1.0, 2.5, 3.25], [10.0, 0.0, 7.125]])
    write_points_csv(tmp_path / "p.csv", pts)
    assert np.allclose(read_points_csv(tmp_path / "p.csv"), pts)
    (tmp_path / "bad.csv").write_text("1,2,3\n4,x,6\n")
    with pytest.raises(RegistrationError, match="bad.csv"):
        read_points_csv(tmp_path / "bad.csv")
    with pytest.raises(RegistrationError, match="not found"):
        read_points_csv(tmp_path / "missing.csv")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Learn2Reg files not present beside the checkout")
def test_real_lungct_points_read():
    lms = read_points_csv(SHARED / "LungCT_val" / "landmarksTr" / "LungCT_0001_0000.csv")
    kps = read_points_csv(SHARED / "LungCT_val" / "keypointsTr" / "LungCT_0001_0001.csv")
    assert lms.shape == (81, 3) and kps.shape[1] == 3 and kps.shape[0] > 1000
    assert np.all(lms >= 0) and np.all(lms < [192, 192, 208])


PAIR = Pair("./imagesTr/T_0001_0000.nii.gz", "./imagesTr/T_0002_0000.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".npz"])
def test_field_roundtrip_and_float16(tmp_path, suffix):
    rng = np.random.default_rng(0)
    disp = rng.normal(size=(6, 5, 4, 3)).astype(np.float32)
    # NIfTI-1 has no float16 code: that request is written as float32 there.
    path = save_displacement(tmp_path / f"disp_0001_0002{suffix}", disp, dtype="float16")
    assert find_field(tmp_path, PAIR) == path
    loaded = load_displacement(path, (6, 5, 4, 3), PAIR)
    assert loaded.dtype == np.float32
    assert np.allclose(loaded, disp.astype(np.float16).astype(np.float32))


def test_nifti_vector_image_5d_is_accepted(tmp_path):
    import nibabel as nib

    disp = np.arange(6 * 5 * 4 * 3, dtype=np.float32).reshape(6, 5, 4, 3)
    nib.save(nib.Nifti1Image(disp[:, :, :, None, :], np.eye(4)), str(tmp_path / "d.nii.gz"))
    assert np.array_equal(load_displacement(tmp_path / "d.nii.gz", (6, 5, 4)), disp)


def test_legacy_half_resolution_is_upsampled(tmp_path):
    # Channel c constant c + 1 and a linear ramp along axis 0 in channel 0.
    half = np.zeros((3, 4, 3, 2), np.float16)
    half[0] = np.arange(4, dtype=np.float16)[:, None, None]
    half[1] = 2.0
    half[2] = 3.0
    np.savez(tmp_path / "disp_0001_0002.npz", half)
    disp = load_displacement(tmp_path / "disp_0001_0002.npz", (8, 6, 4, 3), PAIR)
    assert disp.shape == (8, 6, 4, 3) and disp.dtype == np.float32
    assert np.allclose(disp[..., 1], 2.0) and np.allclose(disp[..., 2], 3.0)
    # zoom by 2 maps the half-resolution ramp 0..3 onto 8 samples from 0 to 3, monotone.
    ramp = disp[:, 0, 0, 0]
    assert ramp[0] == pytest.approx(0.0, abs=1e-5) and ramp[-1] == pytest.approx(3.0, abs=1e-5)
    assert np.all(np.diff(ramp) > 0)
    assert np.allclose(ramp, np.linspace(0, 3, 8), atol=0.2)
    with pytest.raises(RegistrationError, match="legacy"):
        load_displacement(tmp_path / "disp_0001_0002.npz", (8, 6, 4, 3), PAIR, allow_legacy=False)


def test_field_errors_name_pair_and_file(tmp_path):
    channels_first = np.zeros((3, 6, 5, 4), np.float32)
    np.savez(tmp_path / "cf.npz", channels_first)
    with pytest.raises(RegistrationError, match=r"T_0001_0000.*channel order.*cf.npz|cf.npz.*channel order"):
        load_displacement(tmp_path / "cf.npz", (6, 5, 4, 3), PAIR)
    bad = np.zeros((6, 5, 4, 3), np.float32)
    bad[1, 1, 1, 0] = np.nan
    bad[2, 1, 1, 2] = np.inf
    np.savez(tmp_path / "nan.npz", bad)
    with pytest.raises(RegistrationError, match="2 NaN/Inf"):
        load_displacement(tmp_path / "nan.npz", (6, 5, 4, 3), PAIR)
    np.savez(tmp_path / "shape.npz", np.zeros((6, 5, 3, 3), np.float32))
    with pytest.raises(RegistrationError, match=r"shape \(6, 5, 3, 3\)"):
        load_displacement(tmp_path / "shape.npz", (6, 5, 4, 3), PAIR)
    with pytest.raises(RegistrationError, match="T_0001_0000.nii.gz -> ./imagesTr/T_0002_0000.nii.gz"):
        find_field(tmp_path, PAIR)
    with pytest.raises(RegistrationError, match="not found"):
        load_displacement(tmp_path / "none.nii.gz", None, PAIR)
