"""`shift make`: shifted test splits of database tasks (2D), stain jitter, the modality rule."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.cli.main import main
from medfoundry.data import DatabaseWriter, MultiTaskDatabase, TaskSpec
from medfoundry.data.validate import validate_database
from medfoundry.errors import ConfigError, DataError
from medfoundry.robustness.shifts import CORRUPTIONS, corrupt
from medfoundry.robustness.shifts_db import (make_shift_database, parse_shifted_task_name, sample_provenance,
                                             shifted_task_name, valid_corruptions)

N, SIZE = 8, 24
SPLITS = {"train": range(4), "val": range(4, 6), "test": range(6, 8)}
GENERIC = ["bias", "gamma", "gaussian", "blur", "lowres"]


def _disk(rng, size=SIZE):
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.uniform(8, 16), rng.uniform(8, 16), rng.uniform(4, 7)
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2


def _grey(rng, mask):
    base = 0.15 + 0.05 * np.sin(np.arange(SIZE) / 3.0)[None, :]
    return (base + 0.6 * mask + rng.normal(0, 0.02, mask.shape))[None].clip(0, 1).astype(np.float32)


def _he(rng, mask):
    from skimage.color import hed2rgb

    hed = np.zeros((SIZE, SIZE, 3))
    hed[..., 0] = 0.08 * mask + 0.005
    hed[..., 1] = 0.02 * (1 + 0.3 * rng.random((SIZE, SIZE)))
    return hed2rgb(hed).transpose(2, 0, 1).astype(np.float32)


def _write(writer, spec, make_sample, dtype="float16", sources=False):
    rng = np.random.default_rng(len(spec.name))
    tw = writer.add_task(spec, N, image_dtype=dtype)
    for i in range(N):
        image, target = make_sample(rng, i)
        tw.set_sample(i, image, target, spacing=(0.8, 0.8), source=f"scan{i}.png" if sources else None)
    tw.set_splits(SPLITS)


def _segmentation(colour):
    def sample(rng, i):
        mask = _disk(rng)
        return (_he if colour else _grey)(rng, mask), mask.astype(np.int64)
    return sample


def _detection(rng, i):
    mask = _disk(rng)
    ys, xs = np.nonzero(mask)
    return _grey(rng, mask), {"boxes": [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], "labels": [0]}


def _classification(rng, i):
    mask = _disk(rng) if i % 2 else np.zeros((SIZE, SIZE), bool)
    return _grey(rng, mask), i % 2


def _multilabel(rng, i):
    mask = _disk(rng)
    return _grey(rng, mask), np.array([i % 2, 1], np.float32)


@pytest.fixture(scope="module")
def source_db(tmp_path_factory):
    root = tmp_path_factory.mktemp("shiftdb") / "src"
    T, M, X = "tomographic", "microscopic", "x-ray"
    with DatabaseWriter(root, name="tiny") as w:
        _write(w, TaskSpec("ct_organ_seg", "segmentation", ("background", "organ"), T, 2, (SIZE, SIZE), 1,
                           description="Abdominal CT slice"), _segmentation(False), sources=True)
        _write(w, TaskSpec("mri_lesion_det", "detection", ("lesion",), T, 2, (SIZE, SIZE), 1,
                           description="Brain slice"), _detection)
        _write(w, TaskSpec("xray_cls", "classification", ("normal", "nodule"), X, 2, (SIZE, SIZE), 1),
               _classification)
        _write(w, TaskSpec("he_nuclei_seg", "segmentation", ("background", "nucleus"), M, 2, (SIZE, SIZE), 3,
                           description="H&E field"), _segmentation(True), dtype="uint8")
        _write(w, TaskSpec("fluo_multilabel", "multilabel", ("mitosis", "nuclei"), M, 2, (SIZE, SIZE), 1),
               _multilabel)
        _write(w, TaskSpec("slice_cls", "classification", ("a", "b"), T, 2, (SIZE, SIZE), 1,
                           description="Axial slice"), _classification)
    return root


SHIFTED = ["ct_organ_seg", "mri_lesion_det", "xray_cls", "he_nuclei_seg", "fluo_multilabel"]


@pytest.fixture(scope="module")
def shifted_db(source_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("shifted") / "db2"
    make_shift_database(source_db, SHIFTED, out, None, [1, 3, 5], seed=7)
    return out


def test_modality_rule():
    db_specs = {
        "ct": TaskSpec("a", "classification", ("x", "y"), "tomographic", 2, (8, 8), 1, description="CT slice"),
        "mr": TaskSpec("mri_b", "classification", ("x", "y"), "tomographic", 2, (8, 8), 1),
        "mr_extra": TaskSpec("c", "classification", ("x", "y"), "tomographic", 2, (8, 8), 1,
                             extra={"intensity": "mr"}),
        "unknown": TaskSpec("d", "classification", ("x", "y"), "tomographic", 2, (8, 8), 1),
        "rgb": TaskSpec("e", "classification", ("x", "y"), "microscopic", 2, (8, 8), 3),
        "grey": TaskSpec("f", "classification", ("x", "y"), "microscopic", 2, (8, 8), 1),
        "xray": TaskSpec("g", "classification", ("x", "y"), "x-ray", 2, (8, 8), 1),
    }
    mr = ["bias", "gamma", "gaussian", "rician", "blur", "lowres", "ghosting", "motion"]
    assert valid_corruptions(db_specs["ct"]) == GENERIC + ["ct"]
    assert valid_corruptions(db_specs["mr"]) == mr == valid_corruptions(db_specs["mr_extra"])
    assert valid_corruptions(db_specs["unknown"]) == GENERIC
    assert valid_corruptions(db_specs["unknown"], scanner="ct") == GENERIC + ["ct"]
    assert valid_corruptions(db_specs["rgb"]) == GENERIC + ["stain"]
    assert valid_corruptions(db_specs["grey"]) == GENERIC == valid_corruptions(db_specs["xray"])
    assert parse_shifted_task_name(shifted_task_name("xray_cls", "gaussian", 3)) == ("xray_cls", "gaussian", 3)
    assert parse_shifted_task_name("xray_cls") is None


@pytest.mark.parametrize("name", [*CORRUPTIONS, "stain"])
def test_2d_corruptions_are_seeded_and_keep_the_shape(name):
    rng = np.random.default_rng(0)
    x = np.stack([_grey(rng, _disk(rng))[0]] * 3)
    a = corrupt(x, name, 3, seed=1, case="c0")
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all() and not np.array_equal(a, x)
    np.testing.assert_array_equal(a, corrupt(x, name, 3, seed=1, case="c0"))
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        corrupt(x[0], name, 3)


def test_db2_validates_and_holds_every_fitting_condition(shifted_db):
    assert validate_database(shifted_db) == []
    db = MultiTaskDatabase.open(shifted_db)
    names = set(db.task_names())
    assert "he_nuclei_seg__stain_s5" in names and "ct_organ_seg__ct_s1" in names
    assert "mri_lesion_det__motion_s3" in names and "mri_lesion_det__ct_s1" not in names
    assert "xray_cls__stain_s1" not in names and "xray_cls__rician_s1" not in names
    assert all(f"{t}__none_s0" in names for t in SHIFTED)
    assert len(names) == 1 + 6 * 3 + 1 + 8 * 3 + 1 + 5 * 3 + 1 + 6 * 3 + 1 + 5 * 3


def test_labels_untouched_train_val_copied_test_shifted(source_db, shifted_db):
    src, db = MultiTaskDatabase.open(source_db), MultiTaskDatabase.open(shifted_db)
    for name in db.task_names():
        task, corruption, severity = parse_shifted_task_name(name)
        assert db.task(name).classes == src.task(task).classes
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(db.split_indices(name, split), src.split_indices(task, split))
        np.testing.assert_array_equal(db.array(name, "spacing"), src.array(task, "spacing"))
        for i in range(N):
            a, b = db.target(name, i), src.target(task, i)
            if isinstance(b, dict):
                for k in b:
                    np.testing.assert_array_equal(a[k], b[k])
            else:
                np.testing.assert_array_equal(a, b)
            same = np.array_equal(db.array(name, "images")[i], src.array(task, "images")[i])
            assert same == (i < 6 or corruption == "none"), (name, i)


def test_provenance_per_sample(shifted_db):
    db = MultiTaskDatabase.open(shifted_db)
    assert sample_provenance(db, "ct_organ_seg__gaussian_s3", 7) == {
        "corruption": "gaussian", "severity": 3, "seed": 7, "source_task": "ct_organ_seg", "source_index": 7,
        "source": "scan7.png"}
    assert sample_provenance(db, "ct_organ_seg__gaussian_s3", 2)["corruption"] == "none"
    p = sample_provenance(db, "xray_cls__blur_s5", 6)
    assert (p["corruption"], p["severity"], p["source_index"], p["source"]) == ("blur", 5, 6, None)
    shift = db.task("he_nuclei_seg__stain_s1").extra["shift"]
    assert (shift["source_task"], shift["corruption"], shift["severity"], shift["seed"]) == (
        "he_nuclei_seg", "stain", 1, 7)
    assert db.manifest["shift"]["source_name"] == "tiny"


def test_severity_monotone(source_db, shifted_db):
    src, db = MultiTaskDatabase.open(source_db), MultiTaskDatabase.open(shifted_db)
    for task in SHIFTED:
        clean = np.stack([src.image(task, i) for i in (6, 7)])
        for corruption in valid_corruptions(src.task(task)):
            d = [float(np.abs(np.stack([db.image(shifted_task_name(task, corruption, s), i) for i in (6, 7)])
                              - clean).mean()) for s in (1, 3, 5)]
            assert 0 < d[0] < d[1] < d[2], (task, corruption, d)


def test_stain_jitter_changes_colour_not_mask(source_db, shifted_db):
    src, db = MultiTaskDatabase.open(source_db), MultiTaskDatabase.open(shifted_db)
    for i in (6, 7):
        before, after = src.image("he_nuclei_seg", i), db.image("he_nuclei_seg__stain_s3", i)
        np.testing.assert_array_equal(db.target("he_nuclei_seg__stain_s3", i), src.target("he_nuclei_seg", i))
        shift = (after - before).reshape(3, -1).mean(1)
        # a colour change, not a brightness change: the channels move by different amounts
        assert np.abs(after - before).mean() > 0.01 and np.ptp(shift) > 0.005, shift
    with pytest.raises(ConfigError, match="RGB"):
        corrupt(np.zeros((1, 8, 8), np.float32), "stain", 1)


def test_same_seed_same_bytes(source_db, tmp_path):
    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for out, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_shift_database(source_db, ["he_nuclei_seg"], tmp_path / out, ["gaussian", "stain"], [2], seed=seed)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    key = next(k for k in a if k.parts[-2:] == ("he_nuclei_seg__stain_s2", "images.npy"))
    assert a[key] != c[key]


def test_wrong_corruption_for_modality_is_one_line_exit_2(source_db, tmp_path, capsys):
    cases = [("mri_lesion_det", "ct", "'ct' applies to CT tasks only; task 'mri_lesion_det' is MR"),
             ("xray_cls", "stain", "'stain' applies to RGB (3-channel) microscopy tasks only"),
             ("fluo_multilabel", "blur,stain", "single-channel microscopy"),
             ("slice_cls", "motion", "--scanner ct|mr"),
             ("ct_organ_seg", "fog", "unknown corruption")]
    for task, corruption, message in cases:
        code = main(["shift", "make", str(source_db), "--task", task, "--out", str(tmp_path / "x"),
                     "--corruptions", corruption, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


def test_cli_make_then_validate(source_db, tmp_path, capsys):
    out = tmp_path / "db2"
    assert main(["shift", "make", str(source_db), "--task", "slice_cls", "--scanner", "mr", "--out", str(out),
                 "--corruptions", "ghosting", "--severities", "2", "--seed", "1", "--no-progress"]) == 0
    assert "slice_cls: ghosting" in capsys.readouterr().out
    assert "slice_cls__ghosting_s2" in MultiTaskDatabase.open(out).task_names()
    assert main(["data", "validate", str(out)]) == 0
    assert main(["shift", "make", str(source_db), "--task", "slice_cls", "--out", str(out), "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err


def test_test_samples_keep_the_first_test_samples_with_the_full_suites_pixels(source_db, shifted_db, tmp_path,
                                                                                 capsys):
    out = tmp_path / "few"
    assert main(["shift", "make", str(source_db), "--task", "ct_organ_seg", "--out", str(out), "--corruptions",
                 "gaussian,blur", "--severities", "1,3,5", "--seed", "7", "--test-samples", "2",
                 "--no-progress"]) == 0
    few, full, src = (MultiTaskDatabase.open(p) for p in (out, shifted_db, source_db))
    assert main(["data", "validate", str(out)]) == 0
    test = src.split_indices("ct_organ_seg", "test")[:2]
    for name in few.task_names():
        assert few.num_samples(name) == 6 and list(few.split_indices(name, "test")) == [4, 5]
        assert list(few.split_indices(name, "train")) == [0, 1]
        train = src.split_indices("ct_organ_seg", "train")[0]
        np.testing.assert_array_equal(few.array(name, "images")[0], src.array("ct_organ_seg", "images")[train])
        for j, i in zip((4, 5), test):
            np.testing.assert_array_equal(few.array(name, "images")[j], full.array(name, "images")[i])
            np.testing.assert_array_equal(few.target(name, j), src.target("ct_organ_seg", int(i)))
            assert sample_provenance(few, name, j)["source_index"] == int(i)
    assert few.manifest["shift"]["test_samples"] == 2
    with pytest.raises(ConfigError, match="--test-samples"):
        make_shift_database(source_db, ["xray_cls"], tmp_path / "z", ["blur"], test_samples=0)


def test_bad_requests(source_db, tmp_path):
    with pytest.raises(ConfigError, match="--out"):
        make_shift_database(source_db, ["xray_cls"], source_db, ["blur"])
    with pytest.raises(ConfigError, match="--scanner"):
        make_shift_database(source_db, ["xray_cls"], tmp_path / "y", ["blur"], scanner="mr")
    with pytest.raises(ConfigError, match="--severities"):
        make_shift_database(source_db, ["xray_cls"], tmp_path / "y", ["blur"], [0])
    with pytest.raises(ConfigError, match="unknown task"):
        make_shift_database(source_db, ["nope"], tmp_path / "y", ["blur"])


def test_volume_tasks_are_sent_to_make_volumes(robust_folder, tmp_path):
    from medfoundry.data.adapters.nnunet_folder import import_volumes3d

    import_volumes3d(robust_folder / "imagesTr", robust_folder / "labelsTr", tmp_path / "vols", "tiny3d",
                     classes=["background", "core", "shell"], val_fraction=0.34)
    with pytest.raises(DataError, match="shift make-volumes"):
        make_shift_database(tmp_path / "vols", ["tiny3d"], tmp_path / "y", ["blur"])
