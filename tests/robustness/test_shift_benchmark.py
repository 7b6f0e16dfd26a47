"""The verdicts of benchmarks/shift.py on hand-made results."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shift.py"
    spec = importlib.util.spec_from_file_location("shift_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _r(dice, half=0.01):
    return {"dice": dice, "ci": [dice - half, dice + half]}


def test_recovery_in_distribution_change_and_hurting():
    results = {
        "none": {"in-distribution": _r(0.9), "bias_s3": _r(0.7), "blur_s3": _r(0.8)},
        "entropy": {"in-distribution": _r(0.895), "bias_s3": _r(0.8), "blur_s3": _r(0.85)},
        "etta": {"in-distribution": _r(0.85), "bias_s3": _r(0.6), "blur_s3": _r(0.8)},
    }
    v = _bench()._verdicts(results, ["bias", "blur"], 3)
    assert abs(v["lost"] - 0.15) < 1e-9
    assert abs(v["recovered"]["entropy"] - 0.5) < 1e-9 and v["best"] == "entropy"
    text = "\n".join(v["lines"])
    assert "etta HURTS on: in-distribution, bias_s3" in text
    assert "entropy 50 % -> met" in text and "change -0.050 (NOT met)" in text


# ---------------------------------------------------------------- benchmarks/shift_heads.py (2D heads)

def _heads_bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shift_heads.py"
    spec = importlib.util.spec_from_file_location("shift_heads_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heads_verdicts_use_the_shared_resamples():
    import numpy as np

    bench = _heads_bench()
    cond = [bench.IN_DIST, "bias_s3", "blur_s3"]
    none = dict(zip(cond, (0.9, 0.6, 0.8)))
    tta = dict(zip(cond, (0.9, 0.77, 0.85)))      # recovers (0.17 + 0.05) / (0.3 + 0.1) = 55 %
    bad = dict(zip(cond, (0.8, 0.5, 0.7)))
    jitter = np.linspace(-0.02, 0.02, 50)
    points = {"none": none, "tta": tta, "bad": bad}
    reps = {m: {c: v + jitter for c, v in p.items()} for m, p in points.items()}
    rows = {m: {c: {"vs_none": {"difference": p[c] - none[c],
                                "ci": [p[c] - none[c] - 0.01, p[c] - none[c] + 0.01]}} for c in cond}
            for m, p in points.items()}
    v = bench._verdicts(points, reps, rows, ["bias", "blur"], [1, 3, 5], ["none", "tta", "bad"])
    assert v["middle"] == 3 and abs(v["lost"] - 0.2) < 1e-9 and v["significant_loss"]
    assert abs(v["recovered"]["tta"]["fraction"] - 0.55) < 1e-9 and v["best"] == "tta"
    lo, hi = v["recovered"]["tta"]["ci"]
    assert abs(lo - 0.55) < 1e-9 and abs(hi - 0.55) < 1e-9  # the jitter is shared: paired, so no width
    assert v["recovered"]["bad"]["hurts_on"] == cond and not v["recovered"]["bad"]["in_distribution_ok"]
    assert v["recovered"]["tta"]["in_distribution_ok"] and v["recovered"]["tta"]["helps_on"] == ["bias_s3", "blur_s3"]
    text = "\n".join(v["lines"])
    assert "bad HURTS" in text and "tta 55 %" in text and "-> met" in text


def test_heads_benchmark_runs_scores_and_resumes(toy_db, tmp_path, capsys):
    import json

    from head_runs import save_toy_run

    runs = [save_toy_run(toy_db, tmp_path / f"run{s}", seed=s) for s in (0, 1)]
    out = tmp_path / "out"
    argv = ["--out", str(out), "--database", str(toy_db.root), "--seg-task", "toy_seg", "--cls-task", "toy_cls",
            "--runs", ",".join(map(str, runs)), "--methods", "none,tta", "--corruptions", "gaussian",
            "--severities", "3", "--max-samples", "3", "--n-boot", "20"]
    bench = _heads_bench()
    report = bench.main(argv)
    for task, metric in (("toy_seg", "dice"), ("toy_cls", "balanced_accuracy")):
        t = report["tasks"][task]
        assert t["metric"] == metric and t["n"] == 3
        assert set(t["results"]) == {"none", "tta", "ensemble"}
        row = t["results"]["tta"]["gaussian_s3"]
        assert row["ci"][0] <= row["score"] <= row["ci"][1] and "vs_none" in row
        assert t["results"]["none"][bench.IN_DIST]["vs_none"]["difference"] == 0.0
    assert json.loads((out / "shift_heads.json").read_text())["tasks"]["toy_seg"]["corruptions"] == ["gaussian"]
    assert "### toy_cls (balanced_accuracy" in (out / "shift_heads.md").read_text()
    assert (out / "shift_heads_vs_severity.png").is_file() and (out / "shift_heads_vs_severity.svg").is_file()
    first = capsys.readouterr().out
    assert first.count("[") >= 12                       # 2 tasks x 2 conditions x 3 methods, one line each
    again = bench.main(argv)                             # resumed: every cell is on disk
    assert "s/case" not in capsys.readouterr().out
    assert again["tasks"]["toy_seg"]["results"] == report["tasks"]["toy_seg"]["results"]
