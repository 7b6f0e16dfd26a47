"""The segmentation3d kind in the registry: `data validate` and `data inspect` see 3D tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medfoundry.cli.main import main
from medfoundry.data.database import DatabaseWriter
from medfoundry.data.inspect import contact_sheet, summarize
from medfoundry.data.tasks import TaskSpec
from medfoundry.data.validate import validate_database
from medfoundry.errors import DataError
from medfoundry.tasks import get_kind, list_kinds, stored_task_kinds


def _add_2d_task(db):
    spec = TaskSpec("flat", "segmentation", ("background", "spot"), "other", 2, (8, 8), 1)
    rng = np.random.default_rng(0)
    with DatabaseWriter(db, name="mixed") as w:
        tw = w.add_task(spec, n=4)
        for i in range(4):
            tw.set_sample(i, rng.random((1, 8, 8)), (rng.random((8, 8)) > 0.5).astype(np.int64))
        tw.set_splits({"train": [0, 1], "val": [2], "test": [3]})


def test_kind_is_registered_and_self_described(tiny_task):
    kind = get_kind("segmentation3d")
    assert "segmentation3d" in list_kinds() and kind.manifest == "volumes3d.json"
    assert stored_task_kinds(tiny_task.root.parent.parent) == {"tiny": kind}
    assert kind.primary_metric == "dice" and not kind.pooled


def test_validate_finds_a_corrupted_3d_task(tiny_task, capsys):
    db = tiny_task.root.parent.parent
    assert not (db / "database.yaml").exists()  # a folder of 3D tasks only needs no manifest
    assert validate_database(db) == []
    labels = np.lib.format.open_memmap(tiny_task.root / "labels.npy", "r+")
    labels[5] = 7
    labels.flush()
    del labels
    problems = validate_database(db)
    assert [(p.severity, p.field) for p in problems] == [("error", "labels")]
    assert problems[0].path.endswith("labels.npy") and "label value 7 >= 3 classes" in problems[0].message
    assert main(["data", "validate", str(db), "--no-progress"]) == 1
    assert "label value 7" in capsys.readouterr().out


def test_validate_reports_a_broken_index(tiny_task):
    meta_path = tiny_task.root / "volumes3d.json"
    meta = json.loads(meta_path.read_text())
    meta["cases"][1]["offset"] += 3
    meta_path.write_text(json.dumps(meta))
    messages = [p.message for p in validate_database(tiny_task.root.parent.parent)]
    assert any("offset" in m and meta["cases"][1]["name"] in m for m in messages)


def test_mixed_database_validates_and_inspects_both(tiny_folder, tmp_path, capsys):
    from medfoundry.data.adapters.nnunet_folder import import_volumes3d

    db = tmp_path / "mixed"
    _add_2d_task(db)
    import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", db, "tiny",
                     classes=["background", "core", "shell"], val_fraction=0.25)
    assert validate_database(db) == []  # no "folder not listed in the manifest" warning for the 3D task
    summaries = summarize(db)
    assert [s["name"] for s in summaries] == ["flat", "tiny"]
    s3 = summaries[1]
    assert s3["kind"] == "segmentation3d" and s3["num_samples"] == 4 and s3["channels"] == 2
    assert s3["splits"] == {"train": 3, "val": 1, "test": 0}
    assert s3["image_size"] == [20, 21, 19] and s3["image_size_min"] == [16, 18, 15]
    share = s3["balance"]["voxel_share"]
    assert abs(sum(share.values()) - 1.0) < 1e-9 and 0 < share["shell"] < share["background"]
    assert s3["balance"]["cases_with"]["core"] == 4
    assert main(["data", "inspect", str(db), "--sheet", str(tmp_path / "sheet.png"), "--per-task", "3"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "segmentation3d" in out and "16x18x15 .. 20x21x19" in out
    png = (tmp_path / "sheet.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    again = contact_sheet(db, tmp_path / "again.png", per_task=3)
    assert again.read_bytes() == png  # seeded: same sheet


def test_inspect_a_3d_only_folder(tiny_task, tmp_path, capsys):
    db = tiny_task.root.parent.parent
    assert main(["data", "inspect", str(db), "--task", "tiny", "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["name"] == "tiny" and summary["classes"] == ["background", "core", "shell"]
    assert main(["data", "inspect", str(db), "--sheet", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_task_and_kind_still_error_clearly(tiny_task, tmp_path, capsys):
    db = tiny_task.root.parent.parent
    assert main(["data", "inspect", str(db), "--task", "tiyn"]) == 2
    err = capsys.readouterr().err
    assert "tiyn" in err and "did you mean tiny" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(DataError, match="kind 'segmentaton3d' is not one of the registered kinds.*segmentation3d"):
        TaskSpec("t", "segmentaton3d", ("a", "b"), "other", 3, (4, 4, 4), 1)
    with pytest.raises(DataError, match="described by tasks/t/volumes3d.json, not by database.yaml"):
        TaskSpec("t", "segmentation3d", ("a", "b"), "other", 3, (4, 4, 4), 1)


def test_a_database_yaml_entry_of_the_3d_kind_is_reported(tiny_task):
    db = tiny_task.root.parent.parent
    entry = {"name": "tiny", "kind": "segmentation3d", "classes": ["background", "core", "shell"],
             "modality": "tomographic", "spatial_dims": 3, "image_size": [20, 20, 20], "channels": 2}
    (db / "database.yaml").write_text(yaml.safe_dump({"format_version": 1, "name": "x", "tasks": [entry]}))
    problems = validate_database(db)
    assert any(p.field == "tasks[0].kind" and "volumes3d.json" in p.message for p in problems)
