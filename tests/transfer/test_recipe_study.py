"""benchmarks/recipe_study.py: val-split recipe comparison with paired differences to a baseline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("recipe_study_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_study_compares_variants_on_val_only(study, toy_db, tmp_path):
    task = next(t for t in toy_db.tasks if toy_db.task(t).kind.value == "classification")
    out = tmp_path / "study"
    rc = study.main(["--database", str(toy_db.root), "--out", str(out), "-e", "rand=random", "-e", "same=random",
                     "-e", "stats=classical", "--tasks", task, "--probes", "last,multiscale", "--fractions", "1.0",
                     "--seeds", "2", "--max-steps", "3", "--device", "cpu"])
    assert rc == 0
    rows = json.loads((out / "recipe_study.json").read_text())["rows"]
    by = {r["variant"]: r for r in rows}
    assert set(by) == {f"{e} / probe {p}" for e in ("rand", "same", "stats") for p in ("last", "multiscale")}
    assert by["rand / probe last"]["baseline"] == "rand / probe last" and "difference" not in by["rand / probe last"]
    same = by["same / probe last"]  # the same random init: a paired difference of exactly zero
    assert same["difference"] == 0.0 and same["verdict"] == "no clear difference"
    assert all(r["verdict"] in ("better", "worse", "no clear difference") for r in rows if "difference" in r)
    for probe in ("last", "multiscale"):
        records = json.loads((out / f"probe_{probe}" / "results.json").read_text())
        records = records["records"] if isinstance(records, dict) else records
        assert records and all(r["score_split"] == "val" for r in records)
    assert "| variant |" in (out / "recipe_study.md").read_text()
    # another baseline, from the stored sweeps alone
    rc = study.main(["--database", str(toy_db.root), "--out", str(out), "-e", "rand=random", "-e", "same=random",
                     "-e", "stats=classical", "--probes", "last,multiscale", "--compare-only",
                     "--baseline", "same / probe multiscale"])
    assert rc == 0
    rows = json.loads((out / "recipe_study_vs_same_probe_multiscale.json").read_text())["rows"]
    assert {r["baseline"] for r in rows} == {"same / probe multiscale"}
    by = {r["variant"]: r for r in rows}
    assert by["rand / probe multiscale"]["difference"] == 0.0


def test_unknown_probe_setting_is_refused(study, tmp_path):
    with pytest.raises(SystemExit):
        study.main(["--database", str(tmp_path), "--out", str(tmp_path / "o"), "-e", "a=random", "--probes", "deep"])


def test_fine_tuning_settings_are_compared_like_probes(study, toy_db, tmp_path):
    task = next(t for t in toy_db.tasks if toy_db.task(t).kind.value == "classification")
    out = tmp_path / "study"
    rc = study.main(["--database", str(toy_db.root), "--out", str(out), "-e", "rand=random", "--tasks", task,
                     "--modes", "finetune", "--fractions", "1.0", "--seeds", "2", "--max-steps", "2",
                     "--device", "cpu", "--setting", "slow:scratch_encoder_lr_ratio=0.1",
                     "--setting", "again:scratch_encoder_lr_ratio=0.1", "--setting", "full:scratch_encoder_lr_ratio=1"])
    assert rc == 0
    rows = json.loads((out / "recipe_study.json").read_text())["rows"]
    by = {r["variant"]: r for r in rows}
    assert len(rows) == 3 and set(by) == {"rand / slow", "rand / again", "rand / full"}
    assert by["rand / again"]["baseline"] == "rand / slow" and by["rand / again"]["difference"] == 0.0
    for name, ratio in (("slow", 0.1), ("full", 1.0)):
        records = json.loads((out / f"setting_{name}" / "results.json").read_text())
        records = records["records"] if isinstance(records, dict) else records
        assert {r["fraction"] for r in records} == {1.0}  # no goal fractions added to a study
        assert {r["encoder_lr_ratio"] for r in records} == {ratio}


@pytest.mark.parametrize("text", ["nocolon", "x:not_a_field=1", "x:augment", "bad name:augment=none"])
def test_malformed_setting_is_refused(study, tmp_path, text):
    with pytest.raises(SystemExit):
        study.main(["--database", str(tmp_path), "--out", str(tmp_path / "o"), "-e", "a=random", "--setting", text])
