"""`l2r evaluate` and `l2r run` exit non-zero when a pair failed, unless --allow-failures."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.learn2reg import Learn2RegDataset, save_displacement
from medfoundry.learn2reg.dataset import make_dataset

FAST = ["--set", "adam_iterations=2", "--set", "inverse_consistency=false", "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2r_exit") / "ds"
    make_dataset(root, resolution=4, pairs=2, seed=1, n_landmarks=6, n_keypoints=4)
    return root


def _fields(dataset, out, skip_last=False):
    data = Learn2RegDataset(dataset)
    pairs = data.pairs("val")
    for pair in pairs[:-1] if skip_last else pairs:
        shape = nib.load(str(data.path(pair.fixed))).shape
        save_displacement(out / f"{pair.field_stem}.nii.gz", np.zeros((*shape, 3), np.float32))
    return pairs


def test_evaluate_exits_1_on_a_missing_field_and_0_when_allowed(dataset, tmp_path):
    fields = tmp_path / "fields"
    pairs = _fields(dataset, fields, skip_last=True)
    out = tmp_path / "r.json"
    args = ["l2r", "evaluate", "--dataset", str(dataset), "--fields", str(fields), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    failed = json.loads(out.read_text())["failed"]
    assert [f["pair_id"] for f in failed] == [pairs[-1].pair_id]
    assert CliRunner().invoke(app, [*args, "--allow-failures"]).exit_code == 0


def test_evaluate_exits_0_when_every_pair_is_scored(dataset, tmp_path):
    fields = tmp_path / "fields"
    _fields(dataset, fields)
    result = CliRunner().invoke(app, ["l2r", "evaluate", "--dataset", str(dataset), "--fields", str(fields),
                                      "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output


def test_run_records_a_failed_pair_goes_on_and_exits_1(dataset, tmp_path):
    import shutil

    broken = tmp_path / "ds"
    shutil.copytree(dataset, broken)
    pairs = Learn2RegDataset(broken).pairs("val")
    (broken / pairs[0].moving).unlink()
    out = tmp_path / "fields"
    args = ["l2r", "run", "--dataset", str(broken), "--out", str(out), *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    failures = json.loads((out / "failures.json").read_text())
    assert list(failures) == [pairs[0].pair_id] and "moving image not found" in failures[pairs[0].pair_id]
    assert (out / f"{pairs[1].field_stem}.nii.gz").is_file()  # the other pair still ran
    result = CliRunner().invoke(app, [*args, "--allow-failures"])
    assert result.exit_code == 0, result.output
