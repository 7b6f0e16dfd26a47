"""Learn2Reg ranking: significance wins, score mapping, geometric mean, missing-value fills."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfoundry.errors import RegistrationError
from medfoundry.learn2reg.ranking import metric_samples, rank_results, scores_from_wins, significant_wins
from medfoundry.learn2reg import RESULTS_FORMAT


def test_scores_from_wins_linspace_with_ties():
    assert scores_from_wins({"a": 2, "b": 1, "c": 0}) == pytest.approx({"a": 1.0, "b": 0.55, "c": 0.1})
    # b and c share slots 0.1 and 0.55 -> 0.325 each.
    assert scores_from_wins({"a": 2, "b": 0, "c": 0}) == pytest.approx({"a": 1.0, "b": 0.325, "c": 0.325})
    assert scores_from_wins({"a": 0, "b": 0, "c": 0, "d": 0}) == pytest.approx(dict.fromkeys("abcd", 0.55))
    assert scores_from_wins({"only": 0}) == {"only": 1.0}


def test_significant_wins_direction_and_threshold():
    rng = np.random.default_rng(0)
    low = rng.normal(0.0, 1.0, 40)
    high = rng.normal(3.0, 1.0, 40)
    close = low + 0.01
    wins, p = significant_wins({"low": low, "high": high, "close": close}, higher_is_better=True)
    assert wins == {"low": 0, "high": 2, "close": 0}
    assert p[0, 2] > 0.05 and p[1, 0] < 1e-6 and math.isnan(p[0, 0])
    wins, _ = significant_wins({"low": low, "high": high}, higher_is_better=False)
    assert wins == {"low": 1, "high": 0}


def _case(pid, dice=None, dice0=None, hd=None, tre=None, tre0=None, sd=0.1, rt=None, ok=True):
    c = {"pair_id": pid, "status": "ok" if ok else "failed", "sdlogj_official": sd if ok else None}
    if dice0 is not None:
        c["dice_initial_per_label"] = {str(i + 1): v for i, v in enumerate(dice0)}
    if dice is not None and ok:
        c["dice_per_label"] = {str(i + 1): v for i, v in enumerate(dice)}
        c["hd95_per_label"] = {str(i + 1): v for i, v in enumerate(hd)}
    if tre0 is not None:
        c["tre_lm_initial_per_point"] = list(tre0)
    if tre is not None and ok:
        c["tre_lm_per_point"] = list(tre)
    if rt is not None:
        c["runtime_s"] = rt
    return c


def _results(method, cases, task="T", penalty=50.0):
    return {"format": RESULTS_FORMAT, "method": method, "task": task, "cases": cases, "hd95_penalty": penalty}


def test_missing_values_are_filled_as_documented():
    a = _results("a", [_case("p1", [0.9, 0.8], [0.5, 0.2], [1.0, 2.0], sd=0.3, rt=2.0),
                       _case("p2", [0.7, None], [0.4, None], [3.0, None], sd=0.2, rt=4.0)])
    b = _results("b", [_case("p1", dice0=[0.5, 0.2], ok=False)])  # p1 failed, p2 absent
    per_method = {r["method"]: {c["pair_id"]: c for c in r["cases"]} for r in (a, b)}
    ids = ["p1", "p2"]
    dice = metric_samples("dice", per_method, ids, hd95_penalty=50.0)
    assert dice["a"].tolist() == [0.9, 0.8, 0.7] and dice["b"].tolist() == [0.0, 0.0, 0.0]
    hd = metric_samples("hd95", per_method, ids, hd95_penalty=50.0)
    assert hd["b"].tolist() == [50.0, 50.0, 50.0]
    # DSC30: ceil(0.3 * 3) = 1 entry, the lowest initial Dice (p1 label 2, 0.2).
    assert metric_samples("dsc30", per_method, ids, hd95_penalty=50.0)["a"].tolist() == [0.8]
    sd = metric_samples("sdlogj", per_method, ids, hd95_penalty=50.0)
    assert sd["b"].tolist() == [0.3, 0.2]  # worst value seen on each pair
    rt = metric_samples("runtime", per_method, ids, hd95_penalty=50.0, runtime_max_s=100.0)
    assert rt["a"].tolist() == [2.0, 4.0] and rt["b"].tolist() == [100.0, 100.0]


def test_tre_fill_uses_initial_tre_and_tre30_hardest():
    a = _results("a", [_case("p1", tre=[0.5, 1.0, 0.2, 0.1], tre0=[4.0, 9.0, 1.0, 2.0])])
    b = _results("b", [_case("p1", tre0=[4.0, 9.0, 1.0, 2.0], ok=False)])
    per_method = {r["method"]: {c["pair_id"]: c for c in r["cases"]} for r in (a, b)}
    tre = metric_samples("tre", per_method, ["p1"], hd95_penalty=1.0)
    assert tre["b"].tolist() == [4.0, 9.0, 1.0, 2.0]
    tre30 = metric_samples("tre30", per_method, ["p1"], hd95_penalty=1.0)
    # ceil(0.3 * 4) = 2 hardest by initial TRE: 9.0 and 4.0.
    assert tre30["a"].tolist() == [1.0, 0.5] and tre30["b"].tolist() == [9.0, 4.0]


def _label_task(rng, method, shift, n_pairs=12, sd=0.1, rt=None):
    cases = []
    for i in range(n_pairs):
        d0 = rng.uniform(0.3, 0.5, 3)
        dice = np.clip(d0 + shift + rng.normal(0, 0.01, 3), 0, 1)
        hd = 10 * (1 - dice)
        cases.append(_case(f"p{i}", dice.tolist(), d0.tolist(), hd.tolist(), sd=sd + rng.normal(0, 0.001), rt=rt))
    return _results(method, cases)


def test_label_task_geometric_mean_by_hand(tmp_path):
    good = _label_task(np.random.default_rng(1), "good", 0.4, sd=0.30, rt=10.0)
    mid = _label_task(np.random.default_rng(1), "mid", 0.2, sd=0.20, rt=1.0)
    bad = _label_task(np.random.default_rng(1), "bad", 0.0, sd=0.10, rt=100.0)
    table = rank_results([bad, good, mid])
    assert table.metrics["T"] == ["dice", "dsc30", "hd95", "sdlogj", "runtime"]
    by = {r["method"]: r for r in table.rows}
    # Accuracy: good > mid > bad; smoothness reversed; runtime mid < good < bad.
    assert [by[m]["score_dice"] for m in ("good", "mid", "bad")] == pytest.approx([1.0, 0.55, 0.1])
    assert [by[m]["score_sdlogj"] for m in ("good", "mid", "bad")] == pytest.approx([0.1, 0.55, 1.0])
    assert [by[m]["score_runtime"] for m in ("good", "mid", "bad")] == pytest.approx([0.55, 1.0, 0.1])
    expected_good = (1.0 * 1.0 * 1.0 * 0.1 * 0.55) ** (1 / 5)
    expected_mid = (0.55 ** 3 * 0.55 * 1.0) ** (1 / 5)
    assert by["good"]["task_score"] == pytest.approx(expected_good)
    assert by["mid"]["task_score"] == pytest.approx(expected_mid)
    assert [r["method"] for r in table.rows] == ["mid", "good", "bad"]
    csv_text = table.to_csv(tmp_path / "r.csv")
    assert csv_text.splitlines()[1].startswith("T,mid,1,")
    assert table.plot(tmp_path / "r.png").stat().st_size > 1000
    assert "| 1 | mid |" in table.to_markdown()


def test_landmark_task_counts_tre_twice():
    rng = np.random.default_rng(2)

    def lm(method, factor):
        cases = []
        for i in range(6):
            t0 = rng.uniform(5, 10, 20)
            cases.append(_case(f"p{i}", tre=(t0 * factor).tolist(), tre0=t0.tolist(), sd=0.1))
        return _results(method, cases, task="L")

    table = rank_results([lm("a", 0.1), lm("b", 0.5)])
    assert table.metrics["L"] == ["tre", "tre30", "sdlogj"]
    by = {r["method"]: r for r in table.rows}
    # a wins TRE (x2) and TRE30, SDlogJ ties (identical 0.1): (1 * 1 * 1 * 0.55) ** (1/4).
    assert by["a"]["task_score"] == pytest.approx((1.0 * 1.0 * 1.0 * 0.55) ** 0.25)
    assert by["b"]["task_score"] == pytest.approx((0.1 * 0.1 * 0.1 * 0.55) ** 0.25)


def test_several_tasks_and_errors():
    rng = np.random.default_rng(3)
    t1 = [_label_task(rng, "x", 0.3), _label_task(rng, "y", 0.0)]
    t2 = [dict(_label_task(rng, "x", 0.0), task="U"), dict(_label_task(rng, "y", 0.3), task="U")]
    table = rank_results(t1 + t2)
    assert set(table.metrics) == {"T", "U"}
    assert table.overall["x"] == pytest.approx(table.overall["y"])
    with pytest.raises(RegistrationError, match="appear twice"):
        rank_results([t1[0], t1[0]])
    with pytest.raises(RegistrationError, match="format"):
        rank_results([{"method": "m"}])


def test_paired_differences_name_the_better_method_and_their_interval():
    from medfoundry.learn2reg.ranking import rank_task

    def results(name, dice, label2_shift=0.0):
        cases = [{"pair_id": f"{i:04d}_{i:04d}", "status": "ok",
                  "dice_initial_per_label": {"1": 0.5, "2": 0.5},
                  "dice_per_label": {"1": d - label2_shift, "2": d + label2_shift},
                  "sdlogj_official": 0.1} for i, d in enumerate(dice)]
        return {"format": "medfoundry.l2r.results/1", "task": "T", "method": name, "cases": cases}

    good = results("good", [0.8 + 0.01 * i for i in range(12)])
    # Labels of one pair move together, so the pair is the unit: a label-level spread that
    # cancels within each pair must not widen the interval of the difference.
    bad = results("bad", [0.7 + 0.01 * i + (0.02 if i % 2 else -0.02) for i in range(12)], label2_shift=0.05)
    *_, paired = rank_task([good, bad])
    entry = paired["dice"][0]
    assert (entry["a"], entry["b"]) == ("good", "bad")
    assert entry["mean_diff"] == pytest.approx(0.1)
    assert 0.08 < entry["low"] < 0.1 < entry["high"] < 0.12 and entry["p"] < 0.01 and entry["n"] == 12
    assert [e["n"] for e in paired["sdlogj"]] == [12] and paired["sdlogj"][0]["mean_diff"] == 0
    same = rank_task([good, results("twin", [0.8 + 0.01 * i for i in range(12)])])[-1]["dice"][0]
    assert same["mean_diff"] == 0 and same["p"] == 1.0
    worse_first = rank_task([bad, good])[-1]["dice"][0]
    assert worse_first["mean_diff"] == pytest.approx(-0.1) and worse_first["high"] < 0
