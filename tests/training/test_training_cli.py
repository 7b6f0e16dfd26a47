"""`medfoundry pretrain | info | extract` end to end with the real FoundationModel (tiny run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfoundry.cli.main import main
from medfoundry.testing import TOY_TASKS

pytest.importorskip("medfoundry.models")


def test_pretrain_info_extract(toy_db, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--database", str(toy_db.root), "--out", str(run), "--rounds", "2", "--batch-size", "4",
            "--device", "cpu", "--no-progress", "--checkpoint-every", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in TOY_TASKS) and "chance" in out
    for name in ("config.yaml", "metrics.jsonl", "final_metrics.json", "model/config.json", "model/model.safetensors",
                 "checkpoints/round_0000002.pt"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints" / "round_0000001.pt").exists()  # keep_checkpoints=1
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines if x["kind"] == "train"] == [1, 2]
    assert set(lines[-1]["metrics"]) == set(TOY_TASKS)  # default: every group=pretrain task

    # A resumed run with a different batch size is refused with a one-line error (exit 2).
    assert main(["pretrain", "--out", str(run), "--batch-size", "8", "--no-progress"]) == 2
    assert "batch_size: saved 4, asked 8" in capsys.readouterr().err.replace("\n", " ")
    # More rounds on the same folder continue from the checkpoint.
    assert main(["pretrain", "--out", str(run), "--rounds", "3", "--no-progress"]) == 0
    capsys.readouterr()
    rounds = [json.loads(x)["round"] for x in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["kind"] == "train"]
    assert rounds == [1, 2, 3]

    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rounds_done"] == 3 and info["tasks"] == list(TOY_TASKS)
    assert info["parameters"]["trunk"] > 0 and info["parameters"]["heads"] > 0

    feats = tmp_path / "f.npz"
    assert main(["extract", "--encoder", str(run), "--images", f"{toy_db.root}:toy_cls:val", "--out", str(feats)]) == 0
    with np.load(feats) as data:
        val = toy_db.split_indices("toy_cls", "val")
        assert data["embeddings"].shape[0] == len(val) and np.isfinite(data["embeddings"]).all()
        assert data["index"].tolist() == val.tolist()


def test_pretrain_needs_a_database(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--database" in capsys.readouterr().err


def test_extract_image_files(toy_db, tmp_path):
    from PIL import Image

    from medfoundry.models import FoundationModel

    model = FoundationModel("resnet_small", tasks=[toy_db.task("toy_cls")])
    model.save_pretrained(tmp_path / "enc")
    rng = np.random.default_rng(0)
    files = []
    for i, shape in enumerate([(40, 48), (32, 32, 3)]):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
        files += ["--images", str(tmp_path / f"{i}.png")]
    assert main(["extract", "--encoder", str(tmp_path / "enc"), *files, "--modality", "x-ray",
                 "--out", str(tmp_path / "f.npz")]) == 0
    with np.load(tmp_path / "f.npz") as data:
        assert data["embeddings"].shape == (2, model.trunk.embed_dim)
        assert data["source"].tolist() == [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    assert main(["extract", "--encoder", str(tmp_path / "enc"), "--images", "nope.png",
                 "--out", str(tmp_path / "g.npz")]) == 2


def test_example_configs_load_and_the_demo_config_is_the_demo(monkeypatch, tmp_path):
    import importlib
    from pathlib import Path

    from medfoundry.training import PretrainConfig

    pretrain_module = importlib.import_module("medfoundry.training.pretrain")  # the package re-exports a function

    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert configs, "configs/ holds no example configuration"
    loaded = {p.stem: PretrainConfig.from_yaml(p) for p in configs}  # raises ConfigError on a bad field
    assert loaded["pretrain_default"].differences(PretrainConfig()) == []
    captured = {}
    monkeypatch.setattr(pretrain_module, "pretrain", lambda cfg: captured.setdefault("cfg", cfg))
    pretrain_module.pretrain_demo(tmp_path / "db", tmp_path / "run", rounds=200)  # the demo's call
    demo = captured["cfg"]
    assert demo.differences(loaded["pretrain_cpu_demo"]) == ["database", "out"]


def test_missing_optional_package_fails_loudly(toy_db, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    args = ["pretrain", "--database", str(toy_db.root), "--out", str(tmp_path / "run"), "--rounds", "1",
            "--batch-size", "2", "--device", "cpu", "--no-progress", "--tensorboard"]
    assert main(args) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "tensorboard package is not installed" in err and "--no-tensorboard" in err
