import numpy as np
import pytest
import yaml

from medfoundry.data import MultiTaskDatabase, TaskSpec
from medfoundry.data.adapters import Sample, add_task, grouped_split, resize_mask, scale_boxes, stratified_split
from medfoundry.errors import DataError


def test_stratified_split_ratios_per_class_and_seeded():
    strata = np.repeat([0, 1, 2], [100, 40, 20])
    s = stratified_split(strata, (0.7, 0.15, 0.15), seed=1)
    all_idx = sorted(s["train"] + s["val"] + s["test"])
    assert all_idx == list(range(160))  # a partition
    for c, n in ((0, 100), (1, 40), (2, 20)):
        counts = [int(np.sum(strata[s[k]] == c)) for k in ("train", "val", "test")]
        for got, ratio in zip(counts, (0.7, 0.15, 0.15)):
            assert abs(got - ratio * n) <= 1
    assert s == stratified_split(strata, (0.7, 0.15, 0.15), seed=1)
    assert s != stratified_split(strata, (0.7, 0.15, 0.15), seed=2)


def test_grouped_split_keeps_groups_together():
    groups = [f"p{i // 5}" for i in range(100)]  # 20 patients x 5 images
    s = grouped_split(groups, ratios=(0.6, 0.2, 0.2), seed=0)
    owner = {}
    for split, idx in s.items():
        for i in idx:
            assert owner.setdefault(groups[i], split) == split
    assert sorted(len(v) for v in s.values()) == [20, 20, 60]


def test_resize_mask_nearest_and_box_scaling():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 3
    big = resize_mask(mask, (8, 8))
    assert set(np.unique(big)) == {0, 3} and (big[:4, :4] == 3).all() and big[4:].sum() == 0
    boxes = scale_boxes(np.array([[0, 0, 10, 20], [5, 5, 6, 6]]), old_hw=(20, 10), new_hw=(40, 40))
    np.testing.assert_allclose(boxes, [[0, 0, 40, 40], [20, 10, 24, 12]])


def _spec(name):
    return TaskSpec(name, "classification", ("a", "b"), "x-ray", 2, (4, 4), 1)


def _samples(n):
    return (Sample(np.full((1, 4, 4), i / n, np.float32), i % 2) for i in range(n))


def test_add_task_creates_then_appends_and_refuses_duplicates(tmp_path):
    root = tmp_path / "db"
    add_task(root, _spec("first"), _samples(4), 4, {"train": [0, 1], "val": [2], "test": [3]})
    db = add_task(root, _spec("second"), _samples(6), 6, {"train": [0, 1, 2, 3], "val": [4], "test": [5]})
    assert db.task_names() == ["first", "second"]
    assert db.num_samples("second") == 6 and db.target("second", 3) == 1
    manifest_before = (root / "database.yaml").read_text()
    with pytest.raises(DataError, match="already exists"):
        add_task(root, _spec("first"), _samples(2), 2, {"train": [0, 1]})
    assert (root / "database.yaml").read_text() == manifest_before
    # A failing import leaves neither a task folder nor a manifest entry behind.
    with pytest.raises(DataError, match="got 3 samples, expected 5"):
        add_task(root, _spec("third"), _samples(3), 5, {"train": [0]})
    assert sorted(p.name for p in (root / "tasks").iterdir()) == ["first", "second"]
    assert [t["name"] for t in yaml.safe_load(manifest_before)["tasks"]] == MultiTaskDatabase.open(root).task_names()


def test_add_task_refuses_non_database_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("hi")
    with pytest.raises(DataError, match="holds no database.yaml"):
        add_task(tmp_path / "x", _spec("t"), _samples(2), 2, {"train": [0, 1]})


def test_pad_fit_keeps_aspect_ratio_for_image_mask_and_boxes():
    from medfoundry.data.adapters import Fit

    plan = Fit.plan((10, 20), (8, 8), "pad")  # scale 0.4 -> 4 x 8 content, 2 rows of padding above
    assert plan.inner == (4, 8) and plan.offset == (2, 0)
    img = plan.image(np.ones((1, 10, 20), np.float32))
    assert img[0, :2].sum() == 0 and img[0, 6:].sum() == 0 and np.allclose(img[0, 2:6], 1)
    mask = plan.mask(np.ones((10, 20), np.uint8))
    assert mask.sum() == 32
    np.testing.assert_allclose(plan.boxes(np.array([[0, 0, 20, 10], [5, 5, 10, 10]])),
                               [[0, 2, 8, 6], [2, 4, 4, 6]])
    assert plan.spacing((0.5, 0.5)) == pytest.approx((1.25, 1.25))
    stretch = Fit.plan((10, 20), (8, 8), "stretch")
    assert stretch.spacing((0.5, 0.5)) == pytest.approx((0.625, 1.25))
    with pytest.raises(DataError, match="fit must be one of"):
        Fit.plan((10, 20), (8, 8), "crop")
