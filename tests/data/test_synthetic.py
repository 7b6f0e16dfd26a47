"""The embedded synthetic database: determinism, task coverage, label sanity, no label leaks."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.synthetic import (
    CATALOG,
    SCALES,
    SYNTHETIC_TASKS,
    list_synthetic_tasks,
    make_synthetic_database,
    synthetic_task_spec,
)
from medfoundry.data.synthetic import build
from medfoundry.data.synthetic._common import boxes_from_instances, sample_rng, stratified_splits
from medfoundry.data.tasks import Modality, TaskKind
from medfoundry.errors import ConfigError, DataError

BY_NAME = {t.name: t for t in CATALOG}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory) -> MultiTaskDatabase:
    """Every task, 64 x 64 px (the real small geometry), 15 samples each."""
    return make_synthetic_database(tmp_path_factory.mktemp("synth") / "db", seed=0, _n_override=15, progress=False)


# --------------------------------------------------------------------------- API and catalogue
def test_unknown_scale_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="small.*full"):
        make_synthetic_database(tmp_path / "db", scale="huge")
    with pytest.raises(ConfigError, match="mri_lesion_seg"):
        make_synthetic_database(tmp_path / "db", tasks=["mri_lesion_segg"])
    assert not (tmp_path / "db").exists()


def test_existing_folder_needs_overwrite(tmp_path):
    (tmp_path / "db").mkdir()
    with pytest.raises(DataError, match="overwrite"):
        make_synthetic_database(tmp_path / "db", tasks=["fundus_lesion_cls"], _n_override=3, progress=False)


def test_catalogue_covers_kinds_modalities_and_held_out_tasks():
    pre = [t for t in CATALOG if t.group == "pretrain"]
    down = [t for t in CATALOG if t.group == "downstream"]
    assert len(pre) >= 8 and len(down) >= 3
    assert {t.modality for t in pre} == {Modality.TOMOGRAPHIC, Modality.MICROSCOPIC, Modality.XRAY}
    assert {t.kind for t in pre} == set(TaskKind)
    for modality in (Modality.TOMOGRAPHIC, Modality.MICROSCOPIC, Modality.XRAY):
        kinds = {t.kind for t in pre if t.modality is modality}
        assert {TaskKind.CLASSIFICATION, TaskKind.SEGMENTATION} & kinds and TaskKind.DETECTION in kinds \
            or TaskKind.MULTILABEL in kinds, modality
    in_domain = [t for t in down if t.role == "in-domain"]
    ood = [t for t in down if t.role == "out-of-domain"]
    assert len(in_domain) >= 2 and len(ood) >= 1
    assert all(t.modality in {p.modality for p in pre} for t in in_domain)
    assert all(t.modality not in {p.modality for p in pre} for t in ood)
    assert len({t.name for t in CATALOG}) == len(CATALOG)
    assert list(SYNTHETIC_TASKS) == list_synthetic_tasks()
    assert list_synthetic_tasks("downstream") == [t.name for t in down]
    with pytest.raises(ConfigError):
        list_synthetic_tasks("finetune")


def test_specs_geometry_and_spacing():
    small = synthetic_task_spec("mri_lesion_seg", "small")
    full = synthetic_task_spec("mri_lesion_seg", "full")
    assert small.image_size == (64, 64) and full.image_size == (128, 128)
    assert small.spacing == pytest.approx((200 / 64, 200 / 64))  # 200 mm field of view
    assert full.spacing == pytest.approx((200 / 128, 200 / 128))
    assert synthetic_task_spec("xray_nodule_det").spacing == pytest.approx((6.25, 6.25))  # 400 mm / 64
    assert synthetic_task_spec("stain_nuclei_seg").channels == 3
    assert synthetic_task_spec("fundus_lesion_cls").spacing is None
    assert synthetic_task_spec("fundus_lesion_cls").extra["role"] == "out-of-domain"


def test_bench_scale_sizes_without_building_it():
    """bench: 64 px, >= 10,000 train and >= 2,000 test images per downstream task (1 % >= 100)."""
    assert synthetic_task_spec("mri_lesion_size_cls", "bench") == synthetic_task_spec("mri_lesion_size_cls", "small")
    for task in CATALOG:
        n = build._count(task, dict(SCALES["bench"]))
        if task.group == "pretrain":
            assert n >= 10_000, task.name
            continue
        # downstream strata are the labels, which cycle with the index (see catalog.py)
        splits = stratified_splits(np.arange(n) % len(task.classes), np.random.default_rng(0))
        sizes = {k: len(v) for k, v in splits.items()}
        assert sizes["train"] >= 10_000 and sizes["test"] >= 2_000 and sizes["val"] >= 2_000, (task.name, sizes)
        assert int(0.01 * sizes["train"]) >= 100
    assert build._count(BY_NAME["mri_tissue_seg"], dict(SCALES["full"])) == 5 * BY_NAME["mri_tissue_seg"].n_small


def test_worker_count_does_not_change_a_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "_CHUNK", 3)  # several chunks per task, spread over both workers
    kw = dict(seed=2, scale="bench", image_size=32, _n_override=8, progress=False,
              tasks=["stain_atypia_cls", "xray_nodule_det"])
    make_synthetic_database(tmp_path / "one", workers=1, **kw)
    make_synthetic_database(tmp_path / "two", workers=2, **kw)
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    with pytest.raises(ConfigError, match="workers"):
        make_synthetic_database(tmp_path / "bad", workers=0, **kw)


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_order_does_not_matter(tmp_path):
    kw = dict(image_size=32, _n_override=5, progress=False)
    make_synthetic_database(tmp_path / "a", seed=3, **kw)
    make_synthetic_database(tmp_path / "b", seed=3, **kw)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 3 * len(CATALOG)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    # A subset in reverse order gives the very same task files: per-task, per-sample streams.
    subset = ["xray_nodule_det", "stain_atypia_cls"]
    make_synthetic_database(tmp_path / "c", seed=3, tasks=subset, **kw)
    c = _files(tmp_path / "c")
    for name in subset:
        files = [k for k in c if k.startswith(f"tasks/{name}/")]
        assert files and all(c[k] == a[k] for k in files)
    make_synthetic_database(tmp_path / "d", seed=4, **kw)
    d = _files(tmp_path / "d")
    for name in SYNTHETIC_TASKS:
        assert d[f"tasks/{name}/images.npy"] != a[f"tasks/{name}/images.npy"], name


def test_stratified_splits_partition_each_stratum():
    strata = np.repeat([0, 1, 2], [10, 20, 5])
    s = stratified_splits(strata, np.random.default_rng(0))
    allidx = np.sort(np.concatenate([s["train"], s["val"], s["test"]]))
    assert np.array_equal(allidx, np.arange(35))
    counts = {k: np.bincount(strata[v], minlength=3).tolist() for k, v in s.items()}
    assert counts == {"train": [6, 12, 3], "val": [2, 4, 1], "test": [2, 4, 1]}


# --------------------------------------------------------------------------- label sanity
def test_database_contents_are_sane(small_db):
    db = small_db
    assert db.task_names() == list(SYNTHETIC_TASKS)
    for name in db.task_names():
        spec = db.task(name)
        assert spec.group == SYNTHETIC_TASKS[name] and spec.image_size == (64, 64)
        images = np.stack([db.image(name, i) for i in range(15)])  # uint8 RGB is scaled to [0, 1]
        assert images.shape == (15, spec.channels, 64, 64)
        assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
        per_image_std = images.reshape(15, -1).std(axis=1)
        assert (per_image_std > 0.02).all(), name  # no blank images
        splits = db.splits(name)
        joined = np.concatenate([splits[s] for s in ("train", "val", "test")])
        assert sorted(joined.tolist()) == list(range(15)) and len(splits["train"]) >= 7
        if spec.kind is TaskKind.CLASSIFICATION:
            counts = np.bincount(db.array(name, "labels"), minlength=spec.num_classes)
            assert counts.max() - counts.min() <= 1, (name, counts)
        elif spec.kind is TaskKind.MULTILABEL:
            labels = np.asarray(db.array(name, "labels"))
            assert labels.shape == (15, spec.num_classes)
            assert (labels.sum(axis=0) > 0).all() and (labels.sum(axis=0) < 15).all(), labels.sum(axis=0)
        elif spec.kind is TaskKind.SEGMENTATION:
            masks = np.asarray(db.array(name, "masks"))
            present = np.unique(masks)
            assert present.max() < spec.num_classes
            assert set(present.tolist()) == set(range(spec.num_classes)), (name, present)
        else:
            boxes = np.asarray(db.array(name, "boxes"))
            labels = np.asarray(db.array(name, "box_labels"))
            assert len(boxes) >= 5 and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert boxes.min() >= 0 and boxes.max() <= 64
            assert labels.min() >= 0 and labels.max() < spec.num_classes


@pytest.mark.parametrize("name", ["mri_lesion_det", "fluo_mitosis_det", "xray_nodule_det"])
def test_detection_boxes_are_the_instance_bounds(name):
    task = BY_NAME[name]
    seen = 0
    for i in range(6):
        _, target, _, facts = task.sample(sample_rng(0, name, i), i, 64)
        inst = facts["instances"]
        ids = [k for k in np.unique(inst) if k > 0]
        assert len(ids) == len(target["boxes"])
        for k, box in zip(ids, target["boxes"]):
            rows, cols = np.nonzero(inst == k)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            seen += 1
    assert seen >= 3


def test_boxes_from_instances_hand_case():
    inst = np.zeros((6, 8), np.int32)
    inst[1:3, 2:5] = 1  # rows 1-2, columns 2-4
    inst[5, 7] = 2
    boxes, labels, ids = boxes_from_instances(inst, {1: 0, 2: 1})
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 5, 8, 6]]
    assert labels.tolist() == [0, 1] and ids.tolist() == [1, 2]


# --------------------------------------------------------------------------- label leaks
def _cv_balanced_accuracy(x: np.ndarray, y: np.ndarray, lam: float, folds: int = 4) -> float:
    """Ridge (least-squares one-vs-rest) classifier, k-fold cross-validated balanced accuracy."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    order = np.random.default_rng(0).permutation(len(y))
    pred = np.empty(len(y), np.int64)
    classes = int(y.max()) + 1
    for f in range(folds):
        te = order[f::folds]
        tr = np.setdiff1d(order, te)
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
        a = np.c_[(x[tr] - mu) / sd, np.ones(len(tr))]
        b = np.c_[(x[te] - mu) / sd, np.ones(len(te))]
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (2.0 * np.eye(classes)[y[tr]] - 1.0))
        pred[te] = (b @ w).argmax(1)
    return float(np.mean([np.mean(pred[y == c] == c) for c in range(classes)]))


# The informative feature is the ground-truth quantity of the concept the pretraining tasks
# teach (lesion extent, nuclear size, lesion pixels); the baselines see only global intensity
# statistics or raw pixels. A leak would let the baselines approach the informative score.
_INFORMATIVE = {
    "mri_lesion_size_cls": lambda f: [f["lesion_area_mm2"], float(f["lesion_area_mm2"] > 0)],
    "stain_atypia_cls": lambda f: [np.log(f["median_nucleus_area_px"])],
    "fundus_lesion_cls": lambda f: [f["haemorrhage_px"], f["exudate_px"]],
}


@pytest.mark.parametrize("scale", ["small", "bench"])
@pytest.mark.parametrize("name", list(_INFORMATIVE))
def test_downstream_labels_need_the_concept_not_global_intensity(name, scale):
    task = BY_NAME[name]
    n = 120
    # bench: the last 120 of its 16,680 samples (the first ones are small's), not the whole build
    last = build._count(task, dict(SCALES[scale]))
    samples = [task.sample(sample_rng(0, name, i), i, SCALES[scale]["image_size"]) for i in range(last - n, last)]
    images = np.stack([s[0] for s in samples]).astype(np.float64)
    y = np.array([s[1] for s in samples])
    chance = 1.0 / len(task.classes)
    mean = images.mean(axis=(2, 3))
    pixels = images.reshape(n, images.shape[1], 8, 8, 8, 8).mean(axis=(3, 5))  # 8 x 8 pooled raw pixels
    informative = np.array([_INFORMATIVE[name](s[3]) for s in samples])
    acc_mean = _cv_balanced_accuracy(mean, y, lam=1.0)
    acc_pixels = _cv_balanced_accuracy(pixels, y, lam=10.0)
    acc_info = _cv_balanced_accuracy(informative, y, lam=1e-3)
    print(f"{name} ({scale}): chance {chance:.2f} mean {acc_mean:.2f} pixels {acc_pixels:.2f} "
          f"informative {acc_info:.2f}")
    assert acc_info >= 0.85, acc_info
    assert acc_mean <= chance + 0.2, acc_mean
    assert acc_pixels <= chance + 0.25, acc_pixels
    assert acc_info - max(acc_mean, acc_pixels) >= 0.3
