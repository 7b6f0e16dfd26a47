"""End to end on the MNI152-made dataset: make, evaluate (API and CLI), rank."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from medfoundry.cli.l2r import app
from medfoundry.learn2reg.ranking import rank_results
from medfoundry.learn2reg import evaluate_fields, warp_labels
from medfoundry.learn2reg import Learn2RegDataset, load_displacement, save_displacement
from medfoundry.learn2reg.dataset import make_dataset, make_pair


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2r") / "ds"
    make_dataset(root, resolution=4, pairs=2, seed=0, test_pairs=1, n_landmarks=12, n_keypoints=8)
    return root


@pytest.fixture(scope="module")
def fields(dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("fields")
    zero, noisy = base / "zero", base / "noisy"
    rng = np.random.default_rng(5)
    for path in sorted((dataset / "ground_truth").glob("disp_*.nii.gz")):
        u = load_displacement(path)
        name = path.name.replace(".nii.gz", ".npz")
        save_displacement(zero / name, np.zeros_like(u), dtype="float16")
        save_displacement(noisy / name, u + rng.normal(0, 0.25, u.shape).astype(np.float32))
    return {"true": dataset / "ground_truth", "zero": zero, "noisy": noisy}


def test_make_pair_is_seeded_and_consistent():
    a = make_pair(4, seed=3, n_landmarks=10, n_keypoints=0)
    b = make_pair(4, seed=3, n_landmarks=10, n_keypoints=0)
    assert np.array_equal(a["fixed"], b["fixed"]) and np.array_equal(a["true_disp"], b["true_disp"])
    assert a["true_disp"].shape == a["fixed"].shape + (3,) and a["spacing"] == (4.0, 4.0, 4.0)
    assert set(np.unique(a["fixed_labels"])) == {0, 1, 2, 3, 4, 5, 6}
    # Fixed labels are the moving labels pulled back through the true field.
    warped = warp_labels(a["moving_labels"], a["true_disp"])
    assert np.mean(warped == a["fixed_labels"]) > 0.999
    # Landmarks correspond through the true field (exact on grid points).
    p = a["fixed_landmarks"].astype(int)
    assert np.allclose(a["moving_landmarks"], p + a["true_disp"][tuple(p.T)])
    assert a["mask"][tuple(p.T)].all()


def test_dataset_layout(dataset):
    ds = Learn2RegDataset(dataset)
    assert ds.name == "SynthMNI" and len(ds.pairs("val")) == 2 and len(ds.pairs("test")) == 1
    assert ds.pairs("val")[1].field_stem == "disp_0002_0002"
    for sub in ("imagesTr", "labelsTr", "masksTr", "landmarksTr", "keypointsTr"):
        assert len(list((dataset / sub).iterdir())) == 6
    assert (dataset / "SynthMNI_VAL_evaluation_config.json").is_file()
    u1 = load_displacement(dataset / "ground_truth" / "disp_0001_0001.nii.gz")
    u2 = load_displacement(dataset / "ground_truth" / "disp_0002_0002.nii.gz")
    assert u1.shape == (50, 59, 48, 3) and not np.allclose(u1, u2)  # every pair has its own field


def test_zero_field_gives_initial_figures(dataset, fields):
    res = evaluate_fields(dataset, fields["zero"], "val", method_name="zero")
    assert res["n_failed"] == 0
    for case in res["cases"]:
        assert case["dice"] == pytest.approx(case["dice_initial"])
        assert case["tre_lm"] == pytest.approx(case["tre_lm_initial"])
        assert case["tre_lm_initial"] > 1.0  # the synthetic deformation is not trivial
        assert case["sdlogj_official"] == pytest.approx(0.0, abs=1e-12) and case["folding_percent"] == 0.0
    agg = res["aggregates"]
    assert agg["dice"]["mean"] == pytest.approx(agg["dice_initial"]["mean"])
    # DSC30 of the zero field = mean of the 30 % lowest initial Dice entries.
    entries = sorted(v for c in res["cases"] for v in c["dice_initial_per_label"].values() if v is not None)
    k = math.ceil(0.3 * len(entries))
    assert agg["dsc30"] == pytest.approx(np.mean(entries[:k]))


def test_true_field_scores_near_perfect(dataset, fields):
    res = evaluate_fields(dataset, fields["true"], "val", runtimes={"disp_0001_0001": 1.5, "0002_0002": 2.5})
    assert res["method"] == "ground_truth" and res["n_failed"] == 0
    for case in res["cases"]:
        assert case["tre_lm"] < 1e-3
        assert case["dice"] > 0.99 and case["dice"] > case["dice_initial"]
        assert case["folding_percent"] == 0.0
    assert [c["runtime_s"] for c in res["cases"]] == [1.5, 2.5]
    assert res["aggregates"]["runtime_s"]["mean"] == pytest.approx(2.0)


def test_official_config_matches_derived_config(dataset, fields):
    derived = evaluate_fields(dataset, fields["noisy"], "val")
    official = evaluate_fields(dataset, fields["noisy"], "val", official_only=True,
                               config=dataset / "SynthMNI_VAL_evaluation_config.json")
    for a, b in zip(derived["cases"], official["cases"]):
        assert a["dice"] == pytest.approx(b["dice"]) and a["hd95"] == pytest.approx(b["hd95"])
        assert a["tre_lm"] == pytest.approx(b["tre_lm"])
        assert a["sdlogj_official"] == pytest.approx(b["sdlogj_official"])
        assert "sdlogj" not in b and "hd95_mm" not in b and "ndv_percent" not in b
    assert official["official_names"] == {"LogJacDetStd": "sdlogj_official", "DSC": "dice", "HD95": "hd95",
                                          "TRE_lm": "tre_lm"}


def test_bad_fields_fail_alone(dataset, fields, tmp_path):
    broken = tmp_path / "broken"
    u = load_displacement(fields["true"] / "disp_0001_0001.nii.gz")
    u[5, 5, 5, 1] = np.nan
    save_displacement(broken / "disp_0001_0001.npz", u)
    np.savez(broken / "disp_0003_0003.npz", np.moveaxis(u * 0, -1, 0))  # channels first
    res = evaluate_fields(dataset, broken, "val")
    assert res["n_failed"] == 2 and [c["status"] for c in res["cases"]] == ["failed", "failed"]
    assert "disp_0001_0001.npz" in res["failed"][0]["error"] and "NaN" in res["failed"][0]["error"]
    assert "SynthMNI_0002_0000" in res["failed"][1]["error"]  # missing field names its pair
    # Initial figures survive a failure (the ranking fills missing entries from them).
    assert res["cases"][0]["tre_lm_initial_per_point"]
    res = evaluate_fields(dataset, broken, "test")
    assert "wrong channel order" in res["failed"][0]["error"]


def test_ranking_orders_true_noisy_zero(dataset, fields):
    results = [evaluate_fields(dataset, fields[m], "val", method_name=m) for m in ("zero", "true", "noisy")]
    table = rank_results(results)
    order = [r["method"] for r in table.rows]
    assert order[0] == "true"
    by = {r["method"]: r for r in table.rows}
    assert by["true"]["score_tre"] >= by["noisy"]["score_tre"] > by["zero"]["score_tre"]
    # SDlogJ is one value per case: with 2 pairs no rank-sum test can reach p < 0.05
    # (|z| <= 1.55, p >= 0.12), so all three tie at the middle of linspace(0.1, 1, 3).
    assert [by[m]["score_sdlogj"] for m in ("zero", "true", "noisy")] == pytest.approx([0.55] * 3)
    assert table.metrics["SynthMNI"] == ["dice", "dsc30", "hd95", "tre", "tre30", "sdlogj"]


def test_cli_make_evaluate_rank(tmp_path, fields, dataset):
    runner = CliRunner()
    made = runner.invoke(app, ["make-dataset", str(tmp_path / "cli_ds"), "--resolution", "4", "--pairs", "1"])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "cli_ds" / "SynthMNI_dataset.json").is_file()
    outs = []
    for name in ("zero", "true"):
        out = tmp_path / f"{name}.json"
        r = runner.invoke(app, ["evaluate", "--dataset", str(dataset), "--fields", str(fields[name]),
                                "--split", "val", "--out", str(out), "--method-name", name])
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["method"] == name
        outs.append(str(out))
    r = runner.invoke(app, ["rank", *outs, "--out", str(tmp_path / "rank")])
    assert r.exit_code == 0, r.output
    for name in ("ranking.csv", "ranking.json", "ranking.md", "ranking.png"):
        assert (tmp_path / "rank" / name).stat().st_size > 0
    csv_rows = (tmp_path / "rank" / "ranking.csv").read_text().splitlines()
    assert csv_rows[0].startswith("task,method,rank,task_score") and csv_rows[1].split(",")[1] == "true"
    bad = runner.invoke(app, ["evaluate", "--dataset", str(dataset), "--fields", str(fields["zero"]),
                              "--split", "train", "--out", str(tmp_path / "x.json")])
    assert bad.exit_code != 0
