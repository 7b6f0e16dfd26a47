"""The ``models`` sub-app (list / show), run through typer's test runner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medfoundry.errors import CheckpointError
from medfoundry.models import FoundationModel
from medfoundry.cli.models import app


def test_list_json():
    result = CliRunner().invoke(app, ["list", "resnet*", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["resnet_base", "resnet_small"]
    assert all(r["license"] == "Apache-2.0" for r in rows)


def test_list_table_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "convnext_small" in result.output
    assert runner.invoke(app, ["show", "--help"]).exit_code == 0


def test_show_checkpoint(toy_db, tmp_path):
    FoundationModel("resnet_small", tasks=[toy_db.task("toy_seg")]).save_pretrained(tmp_path / "m")
    result = CliRunner().invoke(app, ["show", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["config"]["tasks"][0]["name"] == "toy_seg"
    assert info["parameters"]["head/toy_seg"] > 0
    result = CliRunner().invoke(app, ["show", str(tmp_path / "none")])
    assert isinstance(result.exception, CheckpointError)


def test_show_encoder_only_checkpoint(tmp_path):
    from medfoundry.models import EncoderWithAdapters

    trunk = EncoderWithAdapters("convnext_small")
    trunk.ensure_adapter("x-ray", 1)
    trunk.save_pretrained(tmp_path / "enc")
    result = CliRunner().invoke(app, ["show", str(tmp_path / "enc"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["config"]["tasks"] == [] and [a["key"] for a in info["config"]["adapters"]] == ["x-ray:1"]
    assert info["parameters"]["encoder"] == sum(p.numel() for p in trunk.encoder.parameters())
