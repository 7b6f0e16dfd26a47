"""Plumbing of benchmarks/data_efficiency.py: the plan, a tiny end-to-end run and its resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("data_efficiency_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_plan_fits_budget_and_scales(bench):
    two = bench.plan(2.0, 2)
    assert two.scale == "bench" and two.fractions == bench.FRACTIONS and two.seeds == 3
    assert two.estimate_s["total_s"] <= 2 * 3600
    four = bench.plan(4.0, 2)
    assert four.rounds > two.rounds and four.finetune_max_steps >= two.finetune_max_steps
    assert four.max_steps > two.max_steps
    quick = bench.plan(2.0, 2, quick=True)
    assert quick.scale == "small" and quick.estimate_s["total_s"] < 15 * 60
    with pytest.raises(ValueError, match="--hours"):
        bench.plan(0.1, 2)  # the database build alone takes longer


def test_tiny_end_to_end_and_resume(bench, tmp_path, capsys):
    from medfoundry.testing import make_toy_database

    db = tmp_path / "db"
    make_toy_database(db, n=20)
    p = bench.Plan(scale="toy", rounds=2, batch_size=2, fractions=(1.0,), seeds=1, finetune_max_steps=2,
                   max_steps=2, workers=1, pretrain_tasks=["toy_seg", "toy_det"], single_tasks=["toy_seg", "toy_det"],
                   downstream_tasks=["toy_cls"])
    out = tmp_path / "out"
    summary = bench.run_benchmark(out, p, database=db, device="cpu")
    assert set(summary["goals"]) == {"A", "B", "C"}
    assert summary["training_images"]["toy_cls"]["100%"] == 12  # 60 % of 20 samples
    assert (out / "transfer" / "report.html").is_file()
    assert any(x.endswith(".svg") for x in summary["plots"]) and any(x.endswith(".pdf") for x in summary["plots"])
    saved = json.loads((out / bench.SUMMARY_FILE).read_text())
    assert saved["goals"]["C"]["status"] == summary["goals"]["C"]["status"]
    results = json.loads((out / "transfer" / "results.json").read_text())
    encoders = {r["encoder"] for r in (results["runs"] if isinstance(results, dict) else results)}
    assert {"multitask", "single_toy_seg", "single_toy_det", "random", "classical"} <= encoders
    sweep_cfg = json.loads((out / "transfer" / "config.json").read_text())["transfer"]
    # the fine-tuning recipe chosen on val reaches the sweep
    assert (sweep_cfg["augment"], sweep_cfg["encoder_lr_ratio"]) == (p.finetune_augment, p.encoder_lr_ratio) \
        == ("light", 1.0)
    printed = capsys.readouterr().out
    assert "goal C:" in printed and "training images per fraction" in printed

    ckpt = out / "pretrain_multitask" / "final_metrics.json"
    before = (ckpt.stat().st_mtime_ns, (out / "transfer" / "results.json").stat().st_mtime_ns)
    again = bench.run_benchmark(out, p, database=db, device="cpu")
    printed = capsys.readouterr().out
    assert "pretraining: done before (skipped)" in printed and "sweep: done before (skipped)" in printed
    assert again["timings"] == {}  # no stage ran
    assert (ckpt.stat().st_mtime_ns, (out / "transfer" / "results.json").stat().st_mtime_ns) == before

    # a changed setting reruns the stages it defines (here the sweep only)
    more = bench.Plan(**{**p.__dict__, "seeds": 2})
    third = bench.run_benchmark(out, more, database=db, device="cpu")
    assert "sweep_s" in third["timings"] and "pretrain_s" not in third["timings"]
