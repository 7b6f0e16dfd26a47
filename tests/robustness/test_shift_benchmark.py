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
