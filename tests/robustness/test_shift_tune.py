"""benchmarks/shift_heads_tune.py: settings scored on the val split only, the grid parsed, the
unsafe settings not scored under shift."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _tune():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shift_heads_tune.py"
    spec = importlib.util.spec_from_file_location("shift_heads_tune", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tune_scores_val_settings_and_writes_json(toy_db, tmp_path):
    from head_runs import save_toy_run

    run = save_toy_run(toy_db, tmp_path / "run")
    out = tmp_path / "tune.json"
    report = _tune().main(["--run", str(run), "--database", str(toy_db.root), "--task", "toy_seg", "--out", str(out),
                           "--corruptions", "gaussian", "--max-samples", "3", "--n-boot", "20",
                           "--grid", "entropy:1e-3:1:1,etta:1e-3:1:0", "--safe", "1.0"])
    assert report["split"] == "val" and report["n"] == 3 and report["corruptions"] == ["gaussian"]
    assert [(r["method"], r["diversity"]) for r in report["settings"]] == [("entropy", 1.0), ("etta", 0.0)]
    for row in report["settings"]:
        assert row["change_ci"][0] <= row["change"] <= row["change_ci"][1]
        assert "shifted_gain" in row  # --safe 1.0: every setting is scored under shift too
        assert len(row["entropy_before_after"]) == 2
    assert json.loads(out.read_text())["settings"][0]["lr"] == 1e-3


def test_tune_grid_is_checked():
    from medfoundry.errors import ConfigError

    tune = _tune()
    assert tune._parse_grid("entropy:1e-3:1:0.5") == [("entropy", 1e-3, 1, 0.5)]
    assert tune._parse_grid(None) == tune.GRID
    with pytest.raises(ConfigError, match="--grid"):
        tune._parse_grid("tta:1e-3:1:0")
