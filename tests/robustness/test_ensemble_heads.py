"""Ensembles of classification and 2D segmentation heads, and `medfoundry shift evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from head_runs import save_toy_run
from medfoundry.robustness.ensemble import vote_classes
from medfoundry.robustness.head_eval import evaluate_heads


@pytest.fixture(scope="module")
def runs(toy_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("head_runs")
    return [save_toy_run(toy_db, root / f"s{seed}", seed) for seed in (0, 1)]


def test_vote_classes_ties_go_to_the_smallest_class():
    a = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]])
    b = np.array([[0.2, 0.8, 0.0], [0.1, 0.1, 0.8]])
    c = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert vote_classes([a, b, c]).tolist() == [0, 2]  # sample 0: a three-way tie


def test_an_ensemble_of_one_run_repeated_is_that_run(toy_db, runs):
    single = evaluate_heads([runs[0]], toy_db.root, "toy_cls", device="cpu")["methods"]["none"]
    for how in ("mean", "vote"):
        same = evaluate_heads([runs[0]] * 3, toy_db.root, "toy_cls", ensemble=how, device="cpu")["methods"]["none"]
        assert same["score"] == pytest.approx(single["score"])
        assert len(same["members"]) == 3
    assert same["ece"] is None  # a vote has no probabilities


@pytest.mark.parametrize("how", ["mean", "vote", "staple"])
def test_segmentation_ensembles(toy_db, runs, how):
    report = evaluate_heads(runs, toy_db.root, "toy_seg", ensemble=how, device="cpu", max_samples=3)
    entry = report["methods"]["none"]
    assert report["ensemble"] == how and 0 <= entry["score"] <= 1
    assert [m["primary_metric"] for m in entry["members"]] == ["dice", "dice"]
    assert (entry["ece"] is None) == (how != "mean")


def test_mean_ensemble_averages_member_probabilities(toy_db, runs):
    from medfoundry.inference import predict
    from medfoundry.robustness.head_eval import load_run_model

    images = np.stack([toy_db.image("toy_cls", int(i)) for i in toy_db.split_indices("toy_cls", "test")])
    probs = np.mean([np.stack(predict(load_run_model(r), "toy_cls", images)) for r in runs], axis=0)
    y = np.array([toy_db.target("toy_cls", int(i)) for i in toy_db.split_indices("toy_cls", "test")])
    report = evaluate_heads(runs, toy_db.root, "toy_cls", device="cpu")["methods"]["none"]
    assert report["metrics"]["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()))


def test_staple_is_for_segmentation_only(toy_db, runs):
    from medfoundry.errors import ConfigError

    with pytest.raises(ConfigError, match="staple"):
        evaluate_heads(runs, toy_db.root, "toy_cls", ensemble="staple", device="cpu")


def test_shift_evaluate_command(toy_db, runs, tmp_path):
    from medfoundry.cli.shift import app

    out = tmp_path / "results.json"
    result = CliRunner().invoke(app, ["evaluate", str(runs[0]), str(runs[1]), "--database", str(toy_db.root),
                                      "--task", "toy_cls", "--adapt", "none,tta", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["none", "tta"] and report["ensemble"] == "mean"
    assert report["methods"]["tta"]["primary_metric"] == "balanced_accuracy"
    assert (tmp_path / "results_reliability.png").is_file() and (tmp_path / "results_reliability.svg").is_file()
    bad = CliRunner().invoke(app, ["evaluate", str(runs[0]), "--database", str(toy_db.root), "--task", "toy_cls",
                                   "--adapt", "bogus", "--out", str(out)])
    assert bad.exit_code != 0


def test_a_shifted_task_is_scored_by_its_source_head(toy_db, runs):
    from types import SimpleNamespace

    from medfoundry.errors import ConfigError
    from medfoundry.robustness.head_eval import load_run_model, resolve_head

    model = load_run_model(runs[0])
    spec = toy_db.task("toy_cls")
    shifted = SimpleNamespace(name="toy_cls__gaussian_s3", classes=spec.classes)
    assert resolve_head(model, runs[0], shifted) == "toy_cls"
    assert resolve_head(model, runs[0], SimpleNamespace(name="other", classes=spec.classes), "toy_cls") == "toy_cls"
    with pytest.raises(ConfigError, match="--head"):
        resolve_head(model, runs[0], SimpleNamespace(name="toy_cls__x", classes=spec.classes))
    with pytest.raises(ConfigError, match="classes"):
        resolve_head(model, runs[0], SimpleNamespace(name="toy_seg__blur_s1", classes=("a", "b", "c")))
