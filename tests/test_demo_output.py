"""The demo's output when stdout is not a terminal, and its timings across reruns."""

import json
from pathlib import Path

import pytest

from medfoundry import demo


@pytest.fixture
def fast_stages(monkeypatch):
    """The demo's stages replaced by instant stand-ins that only write what the next stage reads."""
    from importlib import import_module

    from medfoundry.testing import make_toy_database

    # import_module: the packages re-export functions named like their modules (training.pretrain)
    inspect, synthetic, html, pretrain, efficiency = (import_module(f"medfoundry.{m}") for m in (
        "data.inspect", "data.synthetic", "reports.html", "training.pretrain", "transfer.efficiency"))

    calls = []

    def make_db(root, **kwargs):
        calls.append("database")
        make_toy_database(root, n=8, size=16)

    def pretrain_demo(db_root, out, **kwargs):
        calls.append("pretrain")
        out = Path(out)
        (out / "model").mkdir(parents=True, exist_ok=True)
        (out / "final_metrics.json").write_text(json.dumps({"metrics": {"t": {"dice": 0.5, "dice_chance": 0.1}}}))
        return out

    def run_sweep(db_root, encoders, out, **kwargs):
        calls.append("transfer")
        Path(out).mkdir(parents=True, exist_ok=True)

    def build_report(folder, title="", **kwargs):
        path = Path(folder) / "report.html"
        path.write_text("<html></html>")
        return path

    monkeypatch.setattr(synthetic, "make_synthetic_database", make_db)
    monkeypatch.setattr(inspect, "contact_sheet", lambda db, path, **kw: Path(path))
    monkeypatch.setattr(pretrain, "pretrain_demo", pretrain_demo)
    monkeypatch.setattr(efficiency, "run_sweep", run_sweep)
    monkeypatch.setattr(html, "build_report", build_report)
    return calls


def test_not_a_terminal_prints_a_line_per_stage(fast_stages, tmp_path, capsys):
    demo.run_demo(tmp_path / "out")
    text = capsys.readouterr().out  # captured: stdout is not a terminal
    for line in ("building the synthetic database", "database done in", "pretraining done in",
                 "transfer done in"):
        assert line in text
    assert fast_stages == ["database", "pretrain", "pretrain", "transfer"]


def test_rerun_keeps_the_first_complete_runs_timings(fast_stages, tmp_path, capsys):
    out = tmp_path / "out"
    demo.run_demo(out)
    first = json.loads((out / demo.TIMINGS_FILE).read_text())
    assert first["resumed"] is False and "total_s" in first
    assert not (out / demo.RESUME_TIMINGS_FILE).exists()
    demo.run_demo(out)
    assert json.loads((out / demo.TIMINGS_FILE).read_text()) == first
    again = json.loads((out / demo.RESUME_TIMINGS_FILE).read_text())
    assert again["resumed"] is True and "total_s" in again
    assert "first complete run's timings stay in demo_timings.json" in " ".join(capsys.readouterr().out.split())


def test_interrupted_first_run_is_marked_resumed(fast_stages, tmp_path):
    out = tmp_path / "out"
    (out / demo.TIMINGS_FILE).parent.mkdir(parents=True)
    from medfoundry.testing import make_toy_database

    make_toy_database(out / "db", n=8, size=16)  # the database of an interrupted run
    demo.run_demo(out)
    assert json.loads((out / demo.TIMINGS_FILE).read_text())["resumed"] is True
    assert fast_stages == ["pretrain", "pretrain", "transfer"]


def test_sweep_prints_plain_run_lines_when_not_a_terminal(toy_db, tmp_path, capsys):
    from medfoundry.transfer import run_sweep

    run_sweep(toy_db.root, ["random"], tmp_path / "t", tasks=["toy_cls"], modes=("frozen",), fractions=(0.5, 1.0),
              seeds=1, max_epochs=1, min_steps=1, max_steps=1, min_eval_interval=1, patience=1, n_boot=2,
              device="cpu", progress=True)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("transfer runs:")]
    assert [x.split()[2] for x in lines] == ["1/2", "2/2"]


def test_plain_progress_spacing(capsys):
    from medfoundry.training.multitask import PlainProgress

    bar = PlainProgress("rounds", 100, lines=10)
    for k in range(1, 101):
        bar.update(k)
    done = [x.split()[1] for x in capsys.readouterr().out.splitlines()]
    assert done == ["1/100"] + [f"{k}/100" for k in range(10, 101, 10)]
    quiet = PlainProgress("rounds", 10, enabled=False)
    quiet.update(10)
    assert capsys.readouterr().out == ""


def test_one_seed_summary_is_a_smoke_run_never_met(tmp_path, capsys):
    from rich.console import Console

    from medfoundry.transfer.results import ResultStore, run_id

    def rec(enc, kind, mode, fraction, value):
        return {"run_id": run_id("ind", enc, mode, fraction, 0), "status": "ok", "task": "ind",
                "kind": "classification", "role": "in-domain", "group": "downstream", "encoder": enc,
                "encoder_kind": kind, "mode": mode, "fraction": fraction, "seed": 0, "n_train": 216,
                "primary_metric": "balanced_accuracy", "primary": value, "chance": 0.333,
                "metrics": {"balanced_accuracy": value}, "bootstrap": [value - 0.01, value + 0.01] * 10}

    store = ResultStore(tmp_path)
    # frozen multi-task at 1 % far above 95 % of the reference: MET by the means, but one seed
    store.records = [rec("random", "random", "finetune", 1.0, 0.55), rec("mt", "multi-task", "frozen", 0.01, 0.9)]
    store.save()
    demo.print_summary(Console(width=400), tmp_path)
    text = " ".join(capsys.readouterr().out.split())
    assert "smoke run (1 seed" in text and "not evidence" in text and "benchmarks/data_efficiency.py" in text
    assert "goal A: INCONCLUSIVE (ind: INCONCLUSIVE)" in text
    assert ": MET" not in text and "goal A: MET" not in text
