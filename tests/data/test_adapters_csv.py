import numpy as np
import pytest
from PIL import Image

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.adapters import import_csv
from medfoundry.errors import DataError


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((6, 6), i * 10, np.uint8)).save(folder / f"{i}.png")


def test_single_column_classification_with_split_column(tmp_path):
    _images(tmp_path / "img", 6)
    rows = ["path,label,split"] + [f"img/{i}.png,{'normal' if i % 2 else 'pneumonia'},"
                                   f"{['train', 'valid', 'test'][i % 3]}" for i in range(6)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    res = import_csv(tmp_path / "t.csv", tmp_path / "db", "cxr", modality="x-ray", image_size=(4, 4),
                     image_dtype="float32")
    assert res.spec.kind.value == "classification" and res.spec.classes == ("normal", "pneumonia")
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert db.split_indices("cxr", "val").tolist() == [1, 4]
    assert [db.target("cxr", i) for i in range(6)] == [1, 0, 1, 0, 1, 0]
    np.testing.assert_allclose(db.image("cxr", 3), 30 / 255, atol=1e-6)


def test_multilabel_from_01_columns_and_from_separator(tmp_path):
    _images(tmp_path, 4)
    (tmp_path / "a.csv").write_text("file,effusion,edema,pid\n0.png,1,0,p1\n1.png,0,-1,p1\n"
                                    "2.png,1,1,p2\n3.png,0,0,p3\n")
    with pytest.raises(DataError, match=r"row 3.*uncertain"):
        import_csv(tmp_path / "a.csv", tmp_path / "db", "m", modality="x-ray", image_size=(4, 4),
                   image_column="file", label_columns=["effusion", "edema"])
    res = import_csv(tmp_path / "a.csv", tmp_path / "db", "m", modality="x-ray", image_size=(4, 4),
                     image_column="file", label_columns=["effusion", "edema"], uncertain_as=1, group_column="pid")
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert res.spec.kind.value == "multilabel" and res.spec.classes == ("effusion", "edema")
    assert np.stack([db.target("m", i) for i in range(4)]).tolist() == [[1, 0], [0, 1], [1, 1], [0, 0]]
    split_of = {i: s for s in ("train", "val", "test") for i in db.split_indices("m", s).tolist()}
    assert split_of[0] == split_of[1]  # same patient p1
    (tmp_path / "b.csv").write_text("path,label\n0.png,edema|effusion\n1.png,\n2.png,edema\n3.png,effusion\n")
    res = import_csv(tmp_path / "b.csv", tmp_path / "db", "m2", modality="x-ray", image_size=(4, 4))
    db = MultiTaskDatabase.open(tmp_path / "db")
    assert res.spec.classes == ("edema", "effusion")
    assert np.stack([db.target("m2", i) for i in range(4)]).tolist() == [[1, 1], [0, 0], [1, 0], [0, 1]]


def test_missing_files_and_columns_are_reported(tmp_path):
    (tmp_path / "c.csv").write_text("path,label\nnope.png,a\n")
    with pytest.raises(DataError, match="do not exist.*nope.png"):
        import_csv(tmp_path / "c.csv", tmp_path / "db", "t", modality="x-ray", image_size=(4, 4))
    with pytest.raises(DataError, match="'img' not in the header"):
        import_csv(tmp_path / "c.csv", tmp_path / "db", "t", modality="x-ray", image_size=(4, 4), image_column="img")


def test_semicolon_separated_with_patient_groups(tmp_path):
    _images(tmp_path, 12)
    rows = ["path;label;pid"] + [f"{i}.png;{'ab'[i % 2]};p{i // 2}" for i in range(12)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    import_csv(tmp_path / "s.csv", tmp_path / "db", "t", modality="x-ray", image_size=(4, 4), group_column="pid",
               split_ratios=(0.5, 0.25, 0.25), seed=2)
    db = MultiTaskDatabase.open(tmp_path / "db")
    split_of = {int(i): s for s in ("train", "val", "test") for i in db.split_indices("t", s)}
    assert len(split_of) == 12
    assert all(split_of[2 * p] == split_of[2 * p + 1] for p in range(6))  # both images of a patient together
