"""What a new user hits first: bad labels, a failing sweep, frozen-only sweeps."""

import json
import shutil

import numpy as np
import pytest

from medfoundry.errors import DataError, MedfoundryError
from medfoundry.transfer import run_sweep

TINY = dict(fractions=(1.0,), seeds=1, max_epochs=1, min_steps=2, max_steps=2, min_eval_interval=2,
            patience=1, n_boot=5, progress=False, device="cpu", eval_batch_size=16)


@pytest.fixture
def bad_label_db(toy_db, tmp_path):
    root = tmp_path / "db"
    shutil.copytree(toy_db.root, root)
    path = root / "tasks" / "toy_cls" / "labels.npy"
    labels = np.load(path)
    labels[5] = 4  # 4 classes: valid labels are 0..3
    np.save(path, labels)
    return root


def test_cli_out_of_range_label_is_one_line_exit_2(bad_label_db, tmp_path, capsys):
    from medfoundry.cli.main import main

    out = tmp_path / "out"
    code = main(["transfer", "-e", "random", "-d", str(bad_label_db), "-t", "toy_cls", "-o", str(out),
                 "--fractions", "1", "--seeds", "1", "--max-steps", "2", "--min-steps", "2", "--no-progress",
                 "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "labels.npy" in err and "split 'train'" in err and "sample 5 = 4" in err and "0..3" in err
    assert not out.exists()  # checked before anything is written


def test_failed_sweep_in_new_folder_leaves_nothing(toy_db, tmp_path, monkeypatch):
    from medfoundry.transfer import efficiency

    def boom(*args, **kwargs):
        raise DataError("simulated failure of the first run")

    monkeypatch.setattr(efficiency, "_one_run", boom)
    out = tmp_path / "new"
    with pytest.raises(MedfoundryError):
        run_sweep(toy_db.root, ["random"], out, tasks=["toy_cls"], modes=("frozen",), **TINY)
    assert not out.exists()
    # a folder that already existed keeps whatever else it holds
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    with pytest.raises(MedfoundryError):
        run_sweep(toy_db.root, ["random"], keep, tasks=["toy_cls"], modes=("frozen",), **TINY)
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_failure_after_a_success_keeps_earlier_results(toy_db, tmp_path, monkeypatch):
    from medfoundry.transfer import efficiency

    out = tmp_path / "out"
    run_sweep(toy_db.root, ["random"], out, tasks=["toy_cls"], modes=("frozen",), fail_fast=True, **TINY)
    assert (out / "config.json").is_file() and (out / "versions.json").is_file()
    before = (out / "results.json").read_text()

    def boom(*args, **kwargs):
        raise DataError("simulated failure")

    monkeypatch.setattr(efficiency, "_one_run", boom)
    with pytest.raises(MedfoundryError):
        run_sweep(toy_db.root, ["random"], out, tasks=["toy_cls"], modes=("frozen",), seeds=2,
                  **{k: v for k, v in TINY.items() if k != "seeds"})
    assert (out / "config.json").is_file() and (out / "versions.json").is_file()
    assert (out / "results.json").read_text() == before


def test_frozen_only_sweep_fine_tunes_nothing_without_a_goal(toy_db, tmp_path):
    out = tmp_path / "out"
    store = run_sweep(toy_db.root, ["random"], out, tasks=["toy_cls"], modes=("frozen",), fail_fast=True, **TINY)
    assert {r["mode"] for r in store.records} == {"frozen"}
    assert "reference_only" not in json.loads((out / "config.json").read_text())


def test_frozen_only_sweep_runs_and_names_the_goal_reference(toy_db, tmp_path, capsys):
    import yaml

    root = tmp_path / "db"
    shutil.copytree(toy_db.root, root)
    manifest = yaml.safe_load((root / "database.yaml").read_text())
    for entry in manifest["tasks"]:
        if entry["name"] == "toy_cls":
            entry.setdefault("extra", {})["role"] = "in-domain"
    (root / "database.yaml").write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    store = run_sweep(root, ["random"], out, tasks=["toy_cls"], modes=("frozen",), fail_fast=True,
                      goal_in_domain_fraction=0.5, **TINY)
    finetuned = [(r["fraction"], r["encoder_kind"]) for r in store.records if r["mode"] == "finetune"]
    assert finetuned == [(1.0, "random")]
    assert json.loads((out / "config.json").read_text())["reference_only"]["tasks"] == ["toy_cls"]
    assert "fine-tuned on 100 % of toy_cls" in capsys.readouterr().err
