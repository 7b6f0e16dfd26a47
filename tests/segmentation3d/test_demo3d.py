"""``make demo-3d`` end to end with a tiny budget: phantoms -> train -> predict -> metrics -> page."""

from __future__ import annotations

import json

import pytest

from medfoundry.demo3d import run_demo3d


@pytest.mark.slow
def test_demo3d_writes_a_report(tmp_path):
    page = run_demo3d(tmp_path / "d3", minutes=0.1, cases=2, test_cases=1, device="cpu", threads=1)
    text = page.read_text()
    assert "Dice per region on held-out cases" in text and text.count("data:image/png;base64,") == 1
    summary = json.loads((tmp_path / "d3" / "preds" / "summary.json").read_text())
    assert set(summary["mean"]) == {"WT", "TC", "ET"}
    assert (tmp_path / "d3" / "brats_metrics.json").is_file()
