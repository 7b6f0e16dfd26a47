import hashlib
import json
import shutil

import numpy as np
import pytest
import yaml

from medfoundry.data.validate import validate_database


@pytest.fixture()
def db_copy(toy_db, tmp_path):
    dst = tmp_path / "db"
    shutil.copytree(toy_db.root, dst)
    return dst


def _edit_array(path, fn, dtype=None):
    arr = np.load(path)
    arr = fn(arr.astype(dtype) if dtype else arr.copy())
    np.save(path, arr)


def _edit_yaml(root, fn):
    p = root / "database.yaml"
    m = yaml.safe_load(p.read_text())
    fn(m)
    p.write_text(yaml.safe_dump(m, sort_keys=False))


def _edit_splits(root, task, fn):
    p = root / "tasks" / task / "splits.json"
    s = json.loads(p.read_text())
    fn(s)
    p.write_text(json.dumps(s))


def _set(arr, index, value):
    arr[index] = value
    return arr


# (name, breaker, expected file suffix, expected field, text in the message)
CASES = [
    ("missing_array", lambda r: (r / "tasks/toy_cls/labels.npy").unlink(),
     "toy_cls/labels.npy", "labels", "missing array"),
    ("unreadable_array", lambda r: (r / "tasks/toy_seg/masks.npy").write_bytes(b"garbage"),
     "toy_seg/masks.npy", "masks", "unreadable"),
    ("wrong_image_shape", lambda r: _edit_array(r / "tasks/toy_cls/images.npy", lambda a: a[:, :, :16, :16]),
     "toy_cls/images.npy", "images", "expected (N, 1, 32, 32)"),
    ("mask_shape", lambda r: _edit_array(r / "tasks/toy_seg/masks.npy", lambda a: a[:, :31]),
     "toy_seg/masks.npy", "masks", "matching image_size"),
    ("label_out_of_range", lambda r: _edit_array(r / "tasks/toy_cls/labels.npy", lambda a: _set(a, 3, 7)),
     "toy_cls/labels.npy", "labels", "sample 3 = 7"),
    ("multilabel_not_binary", lambda r: _edit_array(r / "tasks/toy_multilabel/labels.npy",
                                                    lambda a: _set(a, (2, 1), 2)),
     "toy_multilabel/labels.npy", "labels", "not 0/1, e.g. sample 2 class 'green' = 2"),
    ("mask_value_too_large", lambda r: _edit_array(r / "tasks/toy_seg/masks.npy", lambda a: _set(a, (5, 0, 0), 2)),
     "toy_seg/masks.npy", "masks", "sample 5 has value 2"),
    ("empty_split", lambda r: _edit_splits(r, "toy_det", lambda s: s.update(train=[])),
     "toy_det/splits.json", "train", "split is empty"),
    ("index_out_of_range", lambda r: _edit_splits(r, "toy_cls", lambda s: s["test"].append(99)),
     "toy_cls/splits.json", "test", "outside 0..23, e.g. 99"),
    ("overlapping_splits", lambda r: _edit_splits(r, "toy_cls", lambda s: s["val"].append(0)),
     "toy_cls/splits.json", "val", "also in split 'train'"),
    ("inverted_box", lambda r: _edit_array(r / "tasks/toy_det/boxes.npy", lambda a: _set(a, (4, 2), a[4, 0] - 1)),
     "toy_det/boxes.npy", "boxes", "x1 <= x0 or y1 <= y0, e.g. box 4"),
    ("box_outside_image", lambda r: _edit_array(r / "tasks/toy_det/boxes.npy", lambda a: _set(a, (1, 3), 40.0)),
     "toy_det/boxes.npy", "boxes", "outside the 32x32"),
    ("box_offsets", lambda r: _edit_array(r / "tasks/toy_det/box_offsets.npy", lambda a: _set(a, -1, 23)),
     "toy_det/box_offsets.npy", "box_offsets", "expected the number of boxes 24"),
    ("nan_image", lambda r: _edit_array(r / "tasks/toy_seg/images.npy", lambda a: _set(a, (7, 0, 3, 3), np.nan)),
     "toy_seg/images.npy", "images", "NaN or Inf, e.g. indices [7]"),
    ("unknown_manifest_key", lambda r: _edit_yaml(r, lambda m: m["tasks"][1].update(colour="red")),
     "database.yaml", "tasks[1].colour", "unknown key(s) ['colour']"),
    ("bad_kind", lambda r: _edit_yaml(r, lambda m: m["tasks"][0].update(kind="regression")),
     "database.yaml", "tasks[0].kind", "'regression' is not one of"),
    ("missing_splits_file", lambda r: (r / "tasks/toy_multilabel/splits.json").unlink(),
     "toy_multilabel/splits.json", "splits", "missing splits file"),
    ("duplicate_index", lambda r: _edit_splits(r, "toy_seg", lambda s: s["train"].append(s["train"][0])),
     "toy_seg/splits.json", "train", "listed twice"),
    ("unknown_split", lambda r: _edit_splits(r, "toy_seg", lambda s: s.update(holdout=[1])),
     "toy_seg/splits.json", "holdout", "unknown split 'holdout'"),
    ("box_label_out_of_range", lambda r: _edit_array(r / "tasks/toy_det/box_labels.npy", lambda a: _set(a, 2, 1)),
     "toy_det/box_labels.npy", "box_labels", "outside 0..0, e.g. box 2 = 1"),
    ("nan_box", lambda r: _edit_array(r / "tasks/toy_det/boxes.npy", lambda a: _set(a, (6, 1), np.nan)),
     "toy_det/boxes.npy", "boxes", "NaN or Inf, e.g. box 6"),
    ("bad_spacing", lambda r: np.save(r / "tasks/toy_seg/spacing.npy", np.c_[np.ones(24), np.r_[np.ones(23), 0.0]]),
     "toy_seg/spacing.npy", "spacing", "sample 23 = [1.0, 0.0] mm"),
    ("label_count", lambda r: _edit_array(r / "tasks/toy_cls/labels.npy", lambda a: a[:20]),
     "toy_cls/labels.npy", "labels", "20 entries, but images.npy holds 24"),
    ("task_folder_missing", lambda r: shutil.rmtree(r / "tasks/toy_det"),
     "tasks/toy_det", "tasks", "task folder of 'toy_det' is missing"),
    ("format_version", lambda r: _edit_yaml(r, lambda m: m.update(format_version=7)),
     "database.yaml", "format_version", "expected 1, found 7"),
    ("duplicate_task", lambda r: _edit_yaml(r, lambda m: m["tasks"].append(dict(m["tasks"][0]))),
     "database.yaml", "tasks[4].name", "'toy_cls' appears twice"),
    ("image_dtype", lambda r: _edit_array(r / "tasks/toy_cls/images.npy", lambda a: a, dtype=np.float64),
     "toy_cls/images.npy", "images", "dtype float64"),
]


@pytest.mark.parametrize("name,breaker,file,field,text", CASES, ids=[c[0] for c in CASES])
def test_each_problem_names_file_and_field(db_copy, name, breaker, file, field, text):
    assert validate_database(db_copy) == []
    breaker(db_copy)
    problems = validate_database(db_copy)
    hits = [p for p in problems if p.path.endswith(file) and p.field == field and text in p.message]
    assert hits, f"no problem for {file} [{field}] containing {text!r}; got {[str(p) for p in problems]}"
    assert hits[0].severity == "error"


def _hash_tree(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_reports_every_problem_and_never_writes(db_copy):
    for name in ("label_out_of_range", "mask_value_too_large", "inverted_box", "overlapping_splits", "nan_image"):
        dict((c[0], c[1]) for c in CASES)[name](db_copy)
    before = _hash_tree(db_copy)
    problems = validate_database(db_copy, progress=True, chunk_bytes=2048)  # tiny chunks: many steps
    assert _hash_tree(db_copy) == before
    assert {(p.path.split("tasks/")[-1], p.field) for p in problems} >= {
        ("toy_cls/labels.npy", "labels"), ("toy_seg/masks.npy", "masks"), ("toy_det/boxes.npy", "boxes"),
        ("toy_cls/splits.json", "val"), ("toy_seg/images.npy", "images")}


def test_missing_manifest_and_warnings(tmp_path, db_copy):
    assert [p.field for p in validate_database(tmp_path / "nothing")] == ["database"]
    (tmp_path / "empty").mkdir()
    assert "missing database.yaml" in validate_database(tmp_path / "empty")[0].message
    _edit_splits(db_copy, "toy_seg", lambda s: s.update(test=[]))
    problems = validate_database(db_copy)
    assert [(p.severity, p.field) for p in problems] == [("warning", "test"), ("warning", "splits")]
    assert "belong to no split" in problems[1].message


def test_warnings_for_unlearnable_class_and_raw_intensities(db_copy):
    _edit_array(db_copy / "tasks/toy_cls/labels.npy", lambda a: np.where(a == 3, 2, a))  # no 'br' at all
    _edit_array(db_copy / "tasks/toy_seg/images.npy", lambda a: a * 1000 - 1000)  # looks like raw HU
    problems = validate_database(db_copy)
    assert all(p.severity == "warning" for p in problems)
    messages = {(p.path.split("tasks/")[-1], p.field): p.message for p in problems}
    assert "['br'] have no sample in the train split" in messages[("toy_cls/labels.npy", "labels")]
    assert "normalisation" in messages[("toy_seg/images.npy", "images")]
    assert "values span -1000" in messages[("toy_seg/images.npy", "images")]


def test_broken_yaml_is_one_clear_problem(db_copy):
    (db_copy / "database.yaml").write_text("tasks: [unclosed\n")
    problems = validate_database(db_copy)
    assert len(problems) == 1 and problems[0].field == "manifest" and "not valid YAML" in problems[0].message
    assert problems[0].path.endswith("database.yaml")
