"""A kind defined only in tests/ runs through the whole product without an edit to src/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medfoundry.data.database import DatabaseWriter, MultiTaskDatabase
from medfoundry.data.inspect import summarize, summary_table
from medfoundry.data.tasks import TaskSpec
from medfoundry.data.validate import validate_database
from medfoundry.errors import ConfigError
from medfoundry.tasks import get_kind, list_kinds, register_kind, unregister_kind

from .ordinal_kind import OrdinalKind

GRADES = ("none", "mild", "moderate", "severe")


@pytest.fixture(scope="module")
def ordinal():
    register_kind(OrdinalKind())
    yield get_kind("ordinal")
    unregister_kind("ordinal")


def _write(root, n=40, seed=0):
    rng = np.random.default_rng(seed)
    spec = TaskSpec("lesion_grade", "ordinal", GRADES, "x-ray", 2, (16, 16), 1, group="pretrain")
    with DatabaseWriter(root, name="ordinal") as w:
        tw = w.add_task(spec, n=n, image_dtype="float32")
        for i in range(n):
            grade = i % len(GRADES)
            image = rng.normal(0.2, 0.05, (1, 16, 16)).astype(np.float32)
            r = 2 + 2 * grade  # the lesion grows with the grade
            image[0, 8 - r // 2: 8 + r // 2 + 1, 8 - r // 2: 8 + r // 2 + 1] += 0.6
            tw.set_sample(i, image, grade)
        tw.set_splits({"train": range(0, 24), "val": range(24, 32), "test": range(32, 40)})
    return root


def test_registering_twice_or_unknown_names_fail(ordinal):
    assert "ordinal" in list_kinds()
    with pytest.raises(ConfigError, match="already registered"):
        register_kind(OrdinalKind())
    with pytest.raises(ConfigError, match="did you mean ordinal"):
        get_kind("ordinl")


def test_new_kind_end_to_end(ordinal, tmp_path):
    from medfoundry.training import PretrainConfig, evaluate, pretrain
    from medfoundry.models import FoundationModel
    from medfoundry.transfer import run_sweep

    db_root = _write(tmp_path / "db")
    manifest = yaml.safe_load((db_root / "database.yaml").read_text())
    assert manifest["tasks"][0]["kind"] == "ordinal"
    assert (db_root / "tasks" / "lesion_grade" / "grades.npy").is_file()
    db = MultiTaskDatabase.open(db_root)
    assert db.target("lesion_grade", 5) == 1

    assert validate_database(db_root) == []
    np.save(db_root / "tasks" / "lesion_grade" / "grades.npy", np.full(40, 7, np.int64))
    problems = validate_database(db_root)
    assert [p.field for p in problems] == ["grades"] and "outside 0..3" in problems[0].message
    db_root = _write(tmp_path / "db2")
    db = MultiTaskDatabase.open(db_root)

    summary = summarize(db)[0]
    assert summary["kind"] == "ordinal" and summary["balance"]["grades"]["severe"] == 10
    assert summary_table([summary]).row_count == 1
    assert len(db.fraction_indices("lesion_grade", 0.5)) == 12  # 3 of each of the 4 grade strata

    run = pretrain(PretrainConfig(database=str(db_root), out=str(tmp_path / "run"), rounds=2, batch_size=4,
                                  warmup_rounds=1, device="cpu", progress=False, seed=0))
    final = json.loads((run / "final_metrics.json").read_text())["metrics"]["lesion_grade"]
    assert final["within_one_chance"] == pytest.approx((3 * 4 - 2) / 16)
    model = FoundationModel.from_pretrained(run / "model")
    assert model.task_specs["lesion_grade"].kind == "ordinal"
    assert set(evaluate(model, db, "test")["lesion_grade"]) >= {"within_one", "mae", "n"}

    store = run_sweep(db_root, [str(run)], tmp_path / "transfer", tasks=["lesion_grade"], modes=("frozen",),
                      fractions=(1.0,), seeds=1, max_epochs=2, min_steps=2, max_steps=3, min_eval_interval=1,
                      patience=2, n_boot=10, progress=False, device="cpu", eval_batch_size=8, fail_fast=True,
                      baseline=False)
    (record,) = store.records
    assert record["status"] == "ok" and record["kind"] == "ordinal" and record["primary_metric"] == "within_one"
    assert 0.0 <= record["primary"] <= 1.0 and record["n_test"] == 8 and len(record["bootstrap"]) == 10
    assert record["chance"] == pytest.approx(10 / 16)
