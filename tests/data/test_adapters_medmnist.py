import numpy as np

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.adapters import import_medmnist


def test_medmnist_classification_keeps_splits(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1))
    np.savez(tmp_path / "pneumonia.npz", **arrays)
    res = import_medmnist(tmp_path / "pneumonia.npz", tmp_path / "db", "pmnist", modality="x-ray",
                          classes=["a", "b", "c"])
    assert res.split_sizes == {"train": 10, "val": 3, "test": 4}
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.split_indices("pmnist", "val").tolist() == [10, 11, 12]
    np.testing.assert_array_equal(np.rint(db.image("pmnist", 11)[0] * 255), arrays["val_images"][1])
    assert db.target("pmnist", 14) == int(arrays["test_labels"][1, 0])


def test_medmnist_multilabel_rgb_resized(tmp_path):
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.full((2, 28, 28, 3), 255, np.uint8)
        arrays[f"{split}_labels"] = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    np.savez(tmp_path / "chest.npz", **arrays)
    res = import_medmnist(tmp_path / "chest.npz", tmp_path / "db", "chest", modality="x-ray", image_size=(16, 16))
    assert res.spec.kind.value == "multilabel" and res.spec.num_classes == 4 and res.spec.channels == 3
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.image("chest", 0).shape == (3, 16, 16)
    assert db.target("chest", 3).tolist() == [0, 0, 0, 1]
