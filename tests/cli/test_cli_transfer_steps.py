"""`--max-steps` below the default floor lowers the floor instead of failing validation."""

from __future__ import annotations

import json


def test_max_steps_alone_below_the_default_min_steps(toy_db, tmp_path):
    from medfoundry.cli.main import main

    out = tmp_path / "sweep"
    rc = main(["transfer", "-e", "random", "-d", str(toy_db.root), "-t", "toy_cls", "--mode", "frozen",
               "--fractions", "1", "--seeds", "1", "--out", str(out), "--epochs", "1", "--max-steps", "2",
               "--device", "cpu", "--no-progress", "--no-report"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    config = cfg["transfer"]
    assert config["max_steps"] == 2 and config["min_steps"] == 2


def test_augment_flag_reaches_the_config_and_bad_levels_fail(toy_db, tmp_path, capsys):
    from medfoundry.cli.main import main

    out = tmp_path / "sweep"
    rc = main(["transfer", "-e", "random", "-d", str(toy_db.root), "-t", "toy_cls", "--mode", "finetune",
               "--fractions", "1", "--seeds", "1", "--out", str(out), "--epochs", "1", "--max-steps", "2",
               "--augment", "light", "--device", "cpu", "--no-progress", "--no-report"])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["transfer"]["augment"] == "light"
    rc = main(["transfer", "-e", "random", "-d", str(toy_db.root), "-t", "toy_cls", "--out", str(tmp_path / "b"),
               "--augment", "heavy", "--device", "cpu", "--no-progress", "--no-report"])
    assert rc == 2 and "augment" in capsys.readouterr().err
