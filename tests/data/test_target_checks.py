"""Out-of-range targets: one line per task and split, before any training, never counted as a class."""

import shutil

import numpy as np
import pytest

from medfoundry.data import MultiTaskDatabase
from medfoundry.data.inspect import summarize, summary_table
from medfoundry.data.validate import check_targets, target_problems
from medfoundry.errors import DataError


def _corrupt(toy_db, tmp_path, task, array, edit):
    root = tmp_path / "db"
    shutil.copytree(toy_db.root, root)
    path = root / "tasks" / task / f"{array}.npy"
    values = np.load(path)
    edit(values)
    np.save(path, values)
    return MultiTaskDatabase.open(root)


def test_clean_database_has_no_target_problems(toy_db):
    for task in toy_db.task_names():
        assert target_problems(toy_db, task) == []
    check_targets(toy_db, toy_db.task_names())


@pytest.mark.parametrize("task,array,index,value,expected", [
    ("toy_cls", "labels", (2,), -1, "0..3"),
    ("toy_multilabel", "labels", (3, 1), 2, "0/1"),
    ("toy_seg", "masks", (4, 0, 0), 5, "0..1"),
    ("toy_det", "box_labels", (6,), 3, "0..0"),
])
def test_problem_names_task_split_sample_value_and_range(toy_db, tmp_path, task, array, index, value, expected):
    def edit(v):
        v[index] = value

    db = _corrupt(toy_db, tmp_path, task, array, edit)
    problems = target_problems(db, task)
    assert len(problems) == 1  # toy splits: samples 0..13 are train
    p = problems[0]
    assert p.path.endswith(f"{task}/{array}.npy") and p.field == array
    assert f"task {task!r} split 'train'" in p.message and f"outside {expected}" in p.message
    assert f"sample {index[0]} = {value}" in p.message
    with pytest.raises(DataError) as err:
        check_targets(db, [task])
    assert "\n" not in str(err.value) and array in str(err.value)


def test_one_problem_per_split(toy_db, tmp_path):
    def edit(v):
        v[0], v[1], v[20] = 4, 9, -1  # two in train, one in test

    db = _corrupt(toy_db, tmp_path, "toy_cls", "labels", edit)
    problems = target_problems(db, "toy_cls")
    assert [("'train'" in p.message, "'test'" in p.message) for p in problems] == [(True, False), (False, True)]
    assert "2 sample(s)" in problems[0].message and "sample 0 = 4" in problems[0].message
    with pytest.raises(DataError, match=r"and 1 more split"):
        check_targets(db, "toy_cls")


def test_inspect_reports_minus_one_instead_of_counting_it(toy_db, tmp_path):
    from rich.console import Console

    def edit(v):
        v[3] = -1  # was class 3 ("br")

    db = _corrupt(toy_db, tmp_path, "toy_cls", "labels", edit)
    summary = {s["name"]: s for s in summarize(db)}["toy_cls"]
    assert summary["balance"]["counts"] == {"tl": 6, "tr": 6, "bl": 6, "br": 5}
    assert summary["balance"]["invalid"] == 1
    assert len(summary["problems"]) == 1 and "split 'train'" in summary["problems"][0]
    assert {s["name"]: s for s in summarize(toy_db)}["toy_cls"]["problems"] == []
    console = Console(record=True, width=400)
    console.print(summary_table([summary]))
    text = console.export_text()
    assert "error: task 'toy_cls' split 'train'" in text and "INVALID: 1" in text


def test_inspect_cli_exits_non_zero_when_it_shows_problems(toy_db, tmp_path):
    from typer.testing import CliRunner

    from medfoundry.cli.main import app

    def edit(v):
        v[3] = -1

    db = _corrupt(toy_db, tmp_path, "toy_cls", "labels", edit)
    runner = CliRunner()
    assert runner.invoke(app, ["data", "inspect", str(toy_db.root)]).exit_code == 0
    bad = runner.invoke(app, ["data", "inspect", str(db.root), "--json"])
    assert bad.exit_code == 1 and '"invalid": 1' in bad.output
