"""The shift benchmarks' scoring (``medfoundry.robustness.shift_report``) and both benchmarks end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _heads_bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shift_heads.py"
    spec = importlib.util.spec_from_file_location("shift_heads_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(points, width=0.01):
    none = points["none"]
    return {m: {c: {"vs_none": {"difference": p[c] - none[c],
                                "ci": [p[c] - none[c] - width, p[c] - none[c] + width]}} for c in p}
            for m, p in points.items()}


def test_verdicts_use_the_shared_resamples():
    import numpy as np

    from medfoundry.robustness.shift_report import IN_DIST, recovery_verdicts

    cond = [IN_DIST, "bias_s3", "blur_s3"]
    none = dict(zip(cond, (0.9, 0.6, 0.8)))
    tta = dict(zip(cond, (0.9, 0.77, 0.85)))      # recovers (0.17 + 0.05) / (0.3 + 0.1) = 55 %
    bad = dict(zip(cond, (0.8, 0.5, 0.7)))
    jitter = np.linspace(-0.02, 0.02, 50)
    points = {"none": none, "tta": tta, "bad": bad}
    reps = {m: {c: v + jitter for c, v in p.items()} for m, p in points.items()}
    v = recovery_verdicts(points, reps, _rows(points), ["bias", "blur"], [1, 3, 5], ["none", "tta", "bad"])
    assert v["middle"] == 3 and abs(v["lost"] - 0.2) < 1e-9 and v["significant_loss"]
    assert abs(v["recovered"]["tta"]["fraction"] - 0.55) < 1e-9 and v["best"] == "tta"
    lo, hi = v["recovered"]["tta"]["ci"]
    assert abs(lo - 0.55) < 1e-9 and abs(hi - 0.55) < 1e-9  # the jitter is shared: paired, so no width
    assert v["recovered"]["bad"]["hurts_on"] == cond and not v["recovered"]["bad"]["in_distribution_ok"]
    assert v["recovered"]["tta"]["in_distribution_ok"] and v["recovered"]["tta"]["helps_on"] == ["bias_s3", "blur_s3"]
    text = "\n".join(v["lines"])
    assert "bad HURTS" in text and "tta 55 %" in text and "-> met" in text


def test_verdicts_say_not_met_and_flag_a_loss_within_noise():
    import numpy as np

    from medfoundry.robustness.shift_report import IN_DIST, recovery_verdicts

    cond = [IN_DIST, "motion_s3"]
    points = {"none": dict(zip(cond, (0.9, 0.7))), "etta": dict(zip(cond, (0.85, 0.75)))}
    rng = np.random.default_rng(0)
    reps = {m: {c: v + rng.normal(0, 0.15, 400) for c, v in p.items()} for m, p in points.items()}
    v = recovery_verdicts(points, reps, _rows(points), ["motion"], [3], ["none", "etta"])
    assert abs(v["recovered"]["etta"]["fraction"] - 0.25) < 1e-9
    text = "\n".join(v["lines"])
    assert "etta 25 %" in text and "NOT met" in text and "change -0.050" in text
    # unpaired noise this large makes the loss's interval reach 0: the verdict warns
    assert not v["significant_loss"] and "divide by noise" in text


def test_paired_changes_and_markdown_from_per_case_scores(tmp_path):
    import numpy as np

    from medfoundry.evaluation.stats import bootstrap_indices
    from medfoundry.robustness.shift_report import (IN_DIST, add_paired_changes, markdown, per_case_replicates,
                                                  percentile_ci, plot, recovery_verdicts)

    base = np.array([0.9, 0.8, 0.85, 0.95, 0.7, 0.88])
    per_case = {"none": {IN_DIST: base, "blur_s3": base - 0.2},
                "tta": {IN_DIST: base, "blur_s3": base - 0.1}}
    resamples = bootstrap_indices(len(base), 300, seed=0)
    points = {m: {c: float(v.mean()) for c, v in d.items()} for m, d in per_case.items()}
    reps = {m: {c: per_case_replicates(v, resamples) for c, v in d.items()} for m, d in per_case.items()}
    rows = {m: {c: {"score": points[m][c], "ci": percentile_ci(reps[m][c]), "seconds_per_case": 1.0}
                for c in d} for m, d in per_case.items()}
    add_paired_changes(rows, points, reps)
    d = rows["tta"]["blur_s3"]["vs_none"]
    assert abs(d["difference"] - 0.1) < 1e-9 and abs(d["ci"][0] - 0.1) < 1e-9  # a constant gain: no width
    assert rows["tta"][IN_DIST]["vs_none"]["difference"] == 0.0
    v = recovery_verdicts(points, reps, rows, ["blur"], [3], ["none", "tta"])
    assert abs(v["recovered"]["tta"]["fraction"] - 0.5) < 1e-9 and "-> met" in v["lines"][-1]
    report = {"methods": ["none", "tta"], "severities": [3],
              "tasks": {"brats": {"metric": "mean Dice", "n": 6, "corruptions": ["blur"], "results": rows,
                                  "verdicts": v}}}
    text = markdown(report)
    assert "| blur, 3 |" in text and "(+0.100, helps)" in text and "n = 6" in text
    plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file() and (tmp_path / "p.svg").is_file()


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
        assert t["results"]["none"]["in-distribution"]["vs_none"]["difference"] == 0.0
    assert json.loads((out / "shift_heads.json").read_text())["tasks"]["toy_seg"]["corruptions"] == ["gaussian"]
    assert "### toy_cls (balanced_accuracy" in (out / "shift_heads.md").read_text()
    assert (out / "shift_heads_vs_severity.png").is_file() and (out / "shift_heads_vs_severity.svg").is_file()
    first = capsys.readouterr().out
    assert first.count("[") >= 12                       # 2 tasks x 2 conditions x 3 methods, one line each
    again = bench.main(argv)                             # resumed: every cell is on disk
    assert "s/case" not in capsys.readouterr().out
    assert again["tasks"]["toy_seg"]["results"] == report["tasks"]["toy_seg"]["results"]


# ---------------------------------------------------------------- benchmarks/shift.py (3D volumes)

@pytest.mark.slow  # about 20 s on 2 cores: 4 variants (none, etta, seed1, ensemble) x 2 conditions x 3 cases
def test_volume_benchmark_scores_given_runs_and_resumes(robust_runs, robust_folder, tmp_path):
    import json

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shift.py"
    spec = importlib.util.spec_from_file_location("shift_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--runs", ",".join(map(str, robust_runs)), "--images",
            str(robust_folder / "imagesTr"), "--labels", str(robust_folder / "labelsTr"), "--corruptions", "blur",
            "--severities", "3", "--methods", "none,etta", "--members", "--n-boot", "50", "--device", "cpu",
            "--threads", "1"]
    report = bench.main(argv)
    t = report["tasks"]["volumes"]
    assert report["methods"] == ["none", "etta", "ensemble"] and t["n"] == 3
    assert set(t["results"]["etta"]) == {"in-distribution", "blur_s3"}
    row = t["results"]["ensemble"]["blur_s3"]
    assert row["ci"][0] <= row["score"] <= row["ci"][1] and len(row["members"]) == 2
    assert t["results"]["none"]["in-distribution"]["vs_none"]["difference"] == 0.0
    assert json.loads((out / "shift.json").read_text())["tasks"]["volumes"]["corruptions"] == ["blur"]
    assert "| blur, 3 |" in (out / "shift.md").read_text()
    assert (out / "shift_vs_severity.svg").is_file()
    stamp = (out / "preds" / "etta" / "blur_s3" / "summary.json").stat().st_mtime_ns
    again = bench.main(argv)                            # resumed: every prediction is on disk
    assert (out / "preds" / "etta" / "blur_s3" / "summary.json").stat().st_mtime_ns == stamp
    assert again["tasks"]["volumes"]["results"] == t["results"]
    with pytest.raises(SystemExit):                     # a typo fails before any training or prediction
        bench.main(argv + ["--ensemble-adapt", "entrpy"])
