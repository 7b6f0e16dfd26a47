"""`shift make-volumes` and `segment predict --adapt/--ensemble` through the CLI."""

from __future__ import annotations

import json

import pytest

from medfoundry.cli.main import main


def test_shift_make_volumes_cli(robust_folder, tmp_path, capsys):
    out = tmp_path / "shifted"
    assert main(["shift", "make-volumes", str(robust_folder / "imagesTr"), str(out), "--corruptions",
                 "blur,ghosting", "--severities", "2", "--labels", str(robust_folder / "labelsTr"),
                 "--no-progress"]) == 0
    assert "wrote 2 shifted folders" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["blur_s2", "ghosting_s2"]
    code = main(["shift", "make-volumes", str(robust_folder / "imagesTr"), str(out), "--corruptions", "fog",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--corruptions" in err and "Traceback" not in err


@pytest.mark.slow  # three ensembles of two runs, about 5 s
def test_segment_predict_ensembles(robust_runs, robust_folder, tmp_path, capsys):
    for method in ("mean", "vote", "staple"):
        out = tmp_path / method
        assert main(["segment", "predict", *map(str, robust_runs), "--images", str(robust_folder / "imagesTr"),
                     "--out", str(out), "--labels", str(robust_folder / "labelsTr"), "--ensemble", method,
                     "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["ensemble"] == method and len(summary["run"]) == 2
        assert ("ece" in summary) == (method == "mean")
    assert "s per case" in capsys.readouterr().out
    code = main(["segment", "predict", str(robust_runs[0]), "--images", str(robust_folder / "imagesTr"), "--out",
                 str(tmp_path / "x"), "--adapt", "tent", "--no-progress"])
    assert code == 2 and "method" in capsys.readouterr().err


def test_segment_predict_rotated_tta(robust_runs, robust_folder, tmp_path):
    out = tmp_path / "rot"
    assert main(["segment", "predict", str(robust_runs[0]), "--images", str(robust_folder / "imagesTr"),
                 "--out", str(out), "--labels", str(robust_folder / "labelsTr"), "--adapt", "tta", "--tta-rotate",
                 "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] and all(0.0 <= d <= 1.0 for c in summary["cases"] for d in c["dice"].values())
