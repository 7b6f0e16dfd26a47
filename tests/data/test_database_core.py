import numpy as np
import pytest

from medfoundry.data import DatabaseWriter, MultiTaskDatabase, TaskSpec
from medfoundry.data.loading import BatchStream, TaskDataset
from medfoundry.errors import DataError


def test_toy_database_roundtrip(toy_db):
    assert set(toy_db.tasks) == {"toy_cls", "toy_multilabel", "toy_seg", "toy_det"}
    assert toy_db.image("toy_multilabel", 0).shape == (3, 32, 32)
    det = toy_db.target("toy_det", 5)
    assert det["boxes"].shape == (1, 4) and det["labels"].tolist() == [0]
    assert toy_db.target("toy_seg", 0).sum() == 8 * 8
    assert toy_db.spacing("toy_seg", 0) == (0.5, 0.5)


def test_fractions_are_nested_stratified_and_seeded(tmp_path):
    spec = TaskSpec("t", "classification", ("a", "b", "c"), "x-ray", 2, (4, 4), 1)
    n = 300
    labels = np.r_[np.zeros(200, int), np.ones(80, int), np.full(20, 2)]
    with DatabaseWriter(tmp_path / "db", name="f") as w:
        tw = w.add_task(spec, n=n)
        for i in range(n):
            tw.set_sample(i, np.zeros((1, 4, 4)), labels[i])
        tw.set_splits({"train": range(n), "val": [], "test": []})
    db = MultiTaskDatabase.open(tmp_path / "db")
    previous = set()
    for f in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
        idx = db.fraction_indices("t", f, seed=3)
        assert previous <= set(idx.tolist())
        previous = set(idx.tolist())
        counts = np.bincount(labels[idx], minlength=3)
        assert (counts >= 1).all()  # every class kept
        assert abs(len(idx) - f * n) <= 3
    assert len(previous) == n
    assert not np.array_equal(db.fraction_indices("t", 0.1, seed=3), db.fraction_indices("t", 0.1, seed=4))
    np.testing.assert_array_equal(db.fraction_indices("t", 0.1, seed=3), db.fraction_indices("t", 0.1, seed=3))


def test_writer_is_atomic_on_failure(tmp_path):
    spec = TaskSpec("t", "classification", ("a", "b"), "x-ray", 2, (4, 4), 1)
    with pytest.raises(DataError, match="never written"):
        with DatabaseWriter(tmp_path / "db", name="f") as w:
            tw = w.add_task(spec, n=3)
            tw.set_sample(0, np.zeros((1, 4, 4)), 0)
            tw.set_splits({"train": [0]})
    assert not (tmp_path / "db").exists()
    assert not any(p.name.startswith(".db") for p in tmp_path.iterdir())


def test_batch_stream_resumes_exactly(toy_db):
    ds = TaskDataset(toy_db, "toy_det", "train")
    a = BatchStream(ds, batch_size=5, seed=1)
    for _ in range(3):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()["index"].tolist() for _ in range(4)]
    b = BatchStream(ds, batch_size=5, seed=1)
    b.load_state_dict(state)
    assert [b.next_batch()["index"].tolist() for _ in range(4)] == expected


def test_taskspec_rejects_bad_fields():
    with pytest.raises(DataError, match="kind"):
        TaskSpec("t", "regression", ("a", "b"), "x-ray", 2, (4, 4), 1)
    with pytest.raises(DataError, match="image_size"):
        TaskSpec("t", "classification", ("a", "b"), "x-ray", 2, (4, 4, 4), 1)
    with pytest.raises(DataError, match="at least 2"):
        TaskSpec("t", "classification", ("a",), "x-ray", 2, (4, 4), 1)
