import numpy as np
import pytest
from PIL import Image

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.adapters import import_image_folder
from medfoundry.errors import DataError


def _write(path, value, shape=(10, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_class_folders_resized_labelled_and_split(tmp_path):
    src = tmp_path / "src"
    for c, value in (("benign", 50), ("malignant", 200)):
        for i in range(20):
            _write(src / c / f"img{i}.png", value)
    res = import_image_folder(src, tmp_path / "db", "lesions", modality="other", image_size=(8, 8), seed=0,
                              image_dtype="float32")
    assert res.spec.classes == ("benign", "malignant")
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.num_samples("lesions") == 40
    assert res.split_sizes == {s: len(db.split_indices("lesions", s)) for s in ("train", "val", "test")}
    for i in range(40):
        img, label = db.image("lesions", i), db.target("lesions", i)
        assert img.shape == (1, 8, 8)
        # constant images stay constant after resizing; value tells the class
        np.testing.assert_allclose(img, (50 if label == 0 else 200) / 255.0, atol=1e-6)
    train = db.split_indices("lesions", "train")
    counts = np.bincount([db.target("lesions", int(i)) for i in train], minlength=2)
    assert counts.tolist() == [14, 14]  # stratified 70 % of 20 per class


def test_split_subfolders_are_kept_and_rgb_converted(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        for c in ("a", "b"):
            for i in range(n):
                p = src / split / c / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((6, 6, 3), 255, np.uint8)).save(p)
    res = import_image_folder(src, tmp_path / "db", "t", modality="other", image_size=(4, 4), channels=1)
    assert res.split_sizes == {"train": 6, "val": 4, "test": 2}
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.image("t", 0).shape == (1, 4, 4)
    assert db.image("t", 0).max() == pytest.approx(1.0, abs=1e-3)  # luminance weights sum to 1


def test_nested_patient_folders_and_hidden_files(tmp_path):
    _write(tmp_path / "src" / "a" / "patient1" / "x.png", 10)
    _write(tmp_path / "src" / "a" / "patient2" / "y.png", 10)
    _write(tmp_path / "src" / "a" / ".cache" / "z.png", 10)
    _write(tmp_path / "src" / "b" / "w.png", 90)
    res = import_image_folder(tmp_path / "src", tmp_path / "db", "t", modality="other", image_size=(4, 4),
                              split_ratios=(1, 0, 0))
    assert res.split_sizes["train"] == 3
    sources = (tmp_path / "db" / "tasks" / "t" / "sources.json").read_text()
    assert "patient2/y.png" in sources and ".cache" not in sources


def test_unknown_class_folder_is_an_error(tmp_path):
    _write(tmp_path / "src" / "cat" / "a.png", 1)
    _write(tmp_path / "src" / "dgo" / "a.png", 1)
    with pytest.raises(DataError, match="dgo"):
        import_image_folder(tmp_path / "src", tmp_path / "db", "t", modality="other", image_size=(4, 4),
                            classes=["cat", "dog"])
    assert not (tmp_path / "db").exists()
