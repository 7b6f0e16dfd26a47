"""``medfoundry evaluate segmentation`` end to end: results file, exit codes, failures."""

from __future__ import annotations

import json

import numpy as np

from medfoundry.cli.main import main
from medfoundry.evaluation.protocols import evaluate_segmentation
from protocol_synth import random_cases, save_nifti


def _folders(tmp_path, n=3, drop=(), spacing=(1.0, 1.0, 1.25)):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for i, (p, r, _) in enumerate(random_cases(7, n, [1, 2, 3], shape=(24, 24, 24))):
        save_nifti(ref / f"BraTS-GLI-{i:05d}-000-seg.nii.gz", r, spacing)
        if i not in drop:
            save_nifti(pred / f"BraTS-GLI-{i:05d}-000.nii.gz", p, spacing)
    return pred, ref


def test_cli_writes_results_and_exit_codes(tmp_path, capsys):
    pred, ref = _folders(tmp_path, drop=(2,))
    out = tmp_path / "results.json"
    args = ["evaluate", "segmentation", "--pred", str(pred), "--ref", str(ref), "--protocol", "brats-gli",
            "--out", str(out), "--quiet"]
    assert main(args) == 1  # one prediction missing
    results = json.loads(out.read_text())
    assert results["n_cases"] == 3 and results["n_failed"] == 1
    missing = results["cases"][2]
    assert missing["status"] == "failed" and missing["pred"] is None and "missing" in missing["error"]
    assert missing["figures"]["wt"]["hd95"] == 373.0
    assert results["cases"][0]["status"] == "ok" and set(results["cases"][0]["figures"]) >= {"wt", "tc", "et"}
    agg = results["aggregates"]["wt"]["dice"]
    assert set(agg) == {"mean", "median", "std", "n", "n_nan", "n_inf"} and agg["n"] == 3
    assert "1 of 3 cases failed" in capsys.readouterr().err
    assert main(args + ["--allow-failures"]) == 0


def test_cli_mismatch_and_unknown_protocol(tmp_path, capsys):
    pred, ref = _folders(tmp_path, n=2)
    save_nifti(pred / "BraTS-GLI-00001-000.nii.gz", np.zeros((24, 24, 20), np.uint8), (1.0, 1.0, 1.25))
    out = tmp_path / "r.json"
    code = main(["evaluate", "segmentation", "--pred", str(pred), "--ref", str(ref), "--out", str(out),
                 "--protocol", "default", "--quiet"])
    assert code == 1
    failed = json.loads(out.read_text())["cases"][1]
    assert failed["status"] == "failed" and failed["figures"] == {}
    assert "shape mismatch" in failed["error"] and "BraTS-GLI-00001-000.nii.gz" in failed["error"] \
        and "BraTS-GLI-00001-000-seg.nii.gz" in failed["error"]
    line = [ln for ln in capsys.readouterr().err.splitlines() if "shape mismatch" in ln]
    assert len(line) == 1
    assert main(["evaluate", "segmentation", "--pred", str(pred), "--ref", str(ref), "--out", str(out),
                 "--protocol", "brats-gil"]) == 2
    assert "did you mean brats-gli" in capsys.readouterr().err


def test_api_parallel_equals_serial(tmp_path):
    pred, ref = _folders(tmp_path, n=3)
    serial = evaluate_segmentation(pred, ref, "isles22")
    parallel = evaluate_segmentation(pred, ref, "isles22", workers=2)
    assert json.dumps(serial["cases"]) == json.dumps(parallel["cases"])
    assert serial["aggregates"]["lesion"]["dice"]["n"] == 3
