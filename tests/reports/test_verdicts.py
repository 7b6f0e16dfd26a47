"""Goal verdicts (MET / NOT MET / INCONCLUSIVE), goal C, per-class results, smoke banner, figure files."""

import numpy as np
import pytest

from medfoundry.reports import build_report, goal_status, goal_verdicts, summarise
from medfoundry.reports.per_class import key_runs, per_class_section, recall_f1
from medfoundry.transfer import TransferConfig
from medfoundry.transfer.results import ResultStore, run_id

B = 100
NOISE = np.random.default_rng(0).normal(0, 0.02, (3, B))  # case resample b of seed s: shared by every encoder


def _rec(task, role, enc, kind, mode, fraction, seed, value, chance=0.25, n_train=2000, **extra):
    return {"run_id": run_id(task, enc, mode, fraction, seed), "status": "ok", "task": task, "kind": "classification",
            "role": role, "group": "downstream", "encoder": enc, "encoder_kind": kind, "mode": mode,
            "fraction": fraction, "seed": seed, "primary_metric": "balanced_accuracy", "primary": value,
            "chance": chance, "metrics": {"balanced_accuracy": value}, "n_train": n_train, "n_test": 500,
            "bootstrap": list(value + NOISE[seed]), **extra}


def _ind(mt_values, ref_values, seeds=3, chance=0.25):
    recs = []
    for s in range(seeds):
        recs.append(_rec("ind", "in-domain", "random", "random", "finetune", 1.0, s, ref_values[s], chance))
        recs.append(_rec("ind", "in-domain", "mt", "multi-task", "frozen", 0.01, s, mt_values[s], chance))
    return recs


def _verdict(recs, goal="A"):
    return next(v for v in goal_verdicts(summarise(recs)) if v.goal == goal)


def test_paired_interval_decides_met_not_met_and_inconclusive():
    ref = [0.80, 0.70, 0.90]  # large seed-to-seed spread: only pairing by seed sees the steady margin
    met = _verdict(_ind([r * 0.95 + 0.03 for r in ref], ref))
    assert met.status == "MET" and met.difference.low > 0
    assert _verdict(_ind([r * 0.95 - 0.03 for r in ref], ref)).status == "NOT MET"
    # seeds disagree in sign: the interval straddles the threshold
    straddle = _verdict(_ind([r * 0.95 + d for r, d in zip(ref, (0.03, -0.03, 0.0))], ref))
    assert straddle.status == "INCONCLUSIVE" and "straddles" in straddle.text


def test_single_seed_and_chance_level_baseline_are_inconclusive():
    one = _verdict(_ind([0.9], [0.5], seeds=1))  # far above the threshold, but one seed
    assert one.status == "INCONCLUSIVE" and "single seed: inconclusive" in one.text
    # the reference's interval reaches chance (0.25): beating it shows nothing
    near_chance = _verdict(_ind([0.6, 0.6, 0.6], [0.26, 0.25, 0.27]))
    assert near_chance.status == "INCONCLUSIVE" and "indistinguishable from chance" in near_chance.text


def test_met_needs_a_converged_reference():
    ref = [0.80, 0.70, 0.90]
    mt = [r * 0.95 + 0.03 for r in ref]
    recs = _ind(mt, ref)
    for r in recs:
        if r["encoder"] == "random":
            r.update(converged=r["seed"] != 1, stop_reason="plateau" if r["seed"] != 1 else "cap")
    v = _verdict(recs)
    assert v.status == "INCONCLUSIVE" and "1 of 3 seeds" in v.text and "step budget" in v.text
    below = _ind([r * 0.95 - 0.03 for r in ref], ref)  # failing an under-trained reference still fails
    for r in below:
        r["converged"] = False
    assert _verdict(below).status == "NOT MET"
    for r in recs:
        r["converged"] = True
    assert _verdict(recs).status == "MET"


def test_goal_status_aggregates_checks():
    assert goal_status(["MET", "MET"]) == "MET"
    assert goal_status(["MET", "INCONCLUSIVE"]) == "INCONCLUSIVE"
    assert goal_status(["MET", "NOT MET", "INCONCLUSIVE"]) == "NOT MET"
    assert goal_status(["NOT EVALUATED"]) == "NOT EVALUATED"


def _goal_c(margins):
    """Three tasks; multi-task minus single-task is ``margins[task]`` on every seed (frozen, 100 %)."""
    recs = []
    for t, m in zip(("t1", "t2", "t3"), margins):
        for s in range(3):
            base = 0.6 + 0.05 * s
            recs.append(_rec(t, None, "st", "single-task", "frozen", 1.0, s, base))
            recs.append(_rec(t, None, "mt", "multi-task", "frozen", 1.0, s, base + m))
    return [v for v in goal_verdicts(summarise(recs)) if v.goal == "C"]


def test_goal_c_needs_two_of_three_paired_wins():
    (met,) = _goal_c([0.05, 0.05, -0.05])
    assert met.status == "MET" and met.task == "frozen" and "won 2 of 3 tasks" in met.text
    assert _goal_c([0.05, -0.05, -0.05])[0].status == "NOT MET"
    assert _goal_c([0.05, 0.0, -0.05])[0].status == "INCONCLUSIVE"  # the tie could go either way


def test_per_class_recall_f1_and_confusion(tmp_path):
    cm = np.array([[8, 2], [1, 9]])
    recall, f1 = recall_f1(cm)
    precision = np.array([8 / 9, 9 / 11])
    assert recall == pytest.approx([0.8, 0.9])
    assert f1 == pytest.approx(2 * precision * recall / (precision + recall))
    recs = _ind([0.8] * 3, [0.8] * 3)
    for r in recs:
        r.update(classes=["benign", "malignant"], confusion=cm.tolist())
    recs.append(_rec("ind", "in-domain", "mt", "multi-task", "frozen", 0.1, 0, 0.7))  # not a key run
    keys = [(e, m, f) for e, m, f, _ in key_runs(recs, "in-domain", TransferConfig())]
    assert keys == [("mt", "frozen", 0.01), ("random", "finetune", 1.0)]
    page = per_class_section(recs, "in-domain", TransferConfig())
    assert "malignant" in page and "0.900" in page and "true \\ predicted" in page
    assert "<td>24</td><td>6</td>" in page  # [8, 2] summed over 3 seeds


def test_report_panels_files_and_smoke_banner(tmp_path):
    store = ResultStore(tmp_path)
    store.records = _ind([0.8] * 3, [0.8] * 3)
    store.save()
    page = build_report(tmp_path).read_text()
    assert "Smoke run" not in page  # 3 seeds, 2000 training images: not a smoke run
    assert all((tmp_path / "plots" / f"ind.{x}").stat().st_size > 0 for x in ("png", "svg", "pdf"))
    svg = (tmp_path / "plots" / "ind.svg").read_text()
    assert "fine-tuned" in svg and "frozen" in svg  # one panel per mode
    assert "2000" in svg  # training images under the fraction ticks
    assert "Smoke run" in build_report(tmp_path, smoke=True).read_text()
    store.records = _ind([0.8], [0.8], seeds=1)
    store.save()
    page = build_report(tmp_path).read_text()
    assert "Smoke run: these figures are not evidence" in page and "1 seed " in page
    assert "Goal A (in-domain): <span class='inc'>INCONCLUSIVE</span>" in page
