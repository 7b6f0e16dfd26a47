"""Stored 3D tasks in multi-task pretraining: patches, resume, and `segment train` from the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "segmentation3d"))
from seg3d_helpers import write_folder  # noqa: E402

from medfoundry.errors import ConfigError, DataError  # noqa: E402
from medfoundry.training import PretrainConfig, load_checkpoint, pretrain  # noqa: E402
from medfoundry.training.checkpoint import checkpoint_path, list_checkpoints  # noqa: E402
from medfoundry.training.multitask import MultiTaskTrainer  # noqa: E402

CLASSES = ["background", "core", "shell"]
ROUNDS = 4


def _import(db: Path, raw: Path, task: str, shapes, channels: int, seed: int, val_fraction: float):
    from medfoundry.data.adapters.nnunet_folder import import_volumes3d

    folder = write_folder(raw, shapes, channels=channels, seed=seed)
    return import_volumes3d(folder / "imagesTr", folder / "labelsTr", db, task, classes=CLASSES,
                            val_fraction=val_fraction)


@pytest.fixture(scope="module")
def db3d(tmp_path_factory) -> Path:
    """Two stored 3D tasks of different channel counts (2 MRI-like, 1 CT-like) and shapes."""
    root = tmp_path_factory.mktemp("pre3d")
    db = root / "db"
    _import(db, root / "mri", "mri", [(20, 18, 16), (17, 21, 15), (19, 19, 19), (16, 20, 18)], 2, 0, 0.25)
    _import(db, root / "ct", "ct", [(18, 18, 18), (20, 16, 17), (16, 19, 20)], 1, 1, 0.34)
    return db


def _config(db: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(database=str(db), out=str(out), tasks=["mri", "ct"], rounds=ROUNDS, batch_size=2, patch=(16, 16, 16),
                warmup_rounds=1, checkpoint_every=2, decoder_channels=8, device="cpu", progress=False, seed=5,
                encoder_kwargs={"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1]})
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def run3d(db3d, tmp_path_factory) -> Path:
    return pretrain(_config(db3d, tmp_path_factory.mktemp("run") / "full"))


def test_two_3d_tasks_pretrain_with_one_stem_per_channel_count(db3d, run3d):
    from medfoundry.models import FoundationModel

    assert [r for r, _ in list_checkpoints(run3d)] == [ROUNDS]
    final = json.loads((run3d / "final_metrics.json").read_text())
    # validation scored every val case whole (sliding window), with the kind's metrics
    assert final["metrics"]["mri"]["n"] == 1 and final["metrics"]["ct"]["n"] == 1
    assert {"dice", "dice/core", "dice/shell", "dice_chance"} <= set(final["metrics"]["ct"])
    model = FoundationModel.from_pretrained(run3d / "model")
    assert model.spatial_dims == 3 and model.adapters.keys() == ["tomographic:2", "tomographic:1"]
    assert model.task_specs["mri"].kind.value == "segmentation3d" and model.task_specs["mri"].image_size == (16,) * 3
    lines = [json.loads(x) for x in (run3d / "metrics.jsonl").read_text().splitlines()]
    losses = [r["losses"] for r in lines if r["kind"] == "train"]
    assert len(losses) == ROUNDS and all(set(v) == {"mri", "ct"} and np.isfinite(list(v.values())).all()
                                         for v in losses)


def test_patch_batches_are_fixed_size_and_sharded_exactly(db3d):
    from medfoundry.data.volumes3d import VolumeTask
    from medfoundry.training.patches3d import VolumePatchStream

    task = VolumeTask.open(db3d, "mri")
    whole = VolumePatchStream(task, (16, 16, 16), 4, seed=2).next_batch()
    assert whole["image"].shape == (4, 2, 16, 16, 16) and whole["target"].shape == (4, 16, 16, 16)
    assert whole["target"].dtype == torch.int64 and set(whole["index"].tolist()) <= set(task.split("train"))
    shards = [VolumePatchStream(task, (16, 16, 16), 4, seed=2, rank=r, world_size=2).next_batch() for r in (0, 1)]
    for r, shard in enumerate(shards):  # rank r holds samples r, r + 2 of the global batch
        assert torch.equal(shard["image"], whole["image"][r::2]) and torch.equal(shard["target"], whole["target"][r::2])


def test_resume_after_a_stop_gives_identical_weights(db3d, run3d, tmp_path, monkeypatch):
    cut = tmp_path / "cut"
    original = MultiTaskTrainer.save_checkpoint

    def stop_after_first(self):  # a crash right after the checkpoint of round 2
        path = original(self)
        raise KeyboardInterrupt(f"stopped after {path}")

    monkeypatch.setattr(MultiTaskTrainer, "save_checkpoint", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(db3d, cut))
    monkeypatch.setattr(MultiTaskTrainer, "save_checkpoint", original)
    assert [r for r, _ in list_checkpoints(cut)] == [2] and not (cut / "model").exists()
    pretrain(_config(db3d, cut))
    a, b = load_checkpoint(checkpoint_path(run3d, ROUNDS)), load_checkpoint(checkpoint_path(cut, ROUNDS))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["streams"] == b["streams"]
    with pytest.raises(ConfigError, match="other settings.*patch"):
        pretrain(_config(db3d, cut, patch=(16, 16, 24)))


def test_segment_train_starts_from_the_pretrain_run(db3d, run3d, tmp_path):
    from medfoundry.models import EncoderWithAdapters, FoundationModel
    from medfoundry.segmentation import SegmentConfig, train_segmentation
    from medfoundry.segmentation.model import build_trunk

    pretrained = FoundationModel.from_pretrained(run3d / "model").trunk.encoder.state_dict()
    trunk = build_trunk(str(run3d), "resnet_small", {}, 16)
    for key, value in trunk.encoder.state_dict().items():
        assert torch.equal(value, pretrained[key]), key
    cfg = SegmentConfig(database=str(db3d), task="ct", encoder=str(run3d), patch=(16, 16, 16), decoder_norm="group",
                        batch_size=1, steps=1, warmup_steps=1, device="cpu", threads=1)
    summary = train_segmentation(cfg, tmp_path / "seg", progress=False)
    assert summary["steps"] == 1 and summary["input_stem"] == {"key": "tomographic:1", "rule": "exact"}
    # a 2D encoder, and a run that has not finished, are refused with one line each
    flat = tmp_path / "run2d"
    EncoderWithAdapters("resnet_small", 2, 8, widths=(8, 8, 8, 8), depths=(1, 1, 1, 1)).save_pretrained(flat / "model")
    with pytest.raises(ConfigError, match="spatial_dims=2; 3D segmentation needs a 3D encoder"):
        build_trunk(str(flat), "resnet_small", {}, 16)
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "round_0000002.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="no model/config.json yet"):
        build_trunk(str(unfinished), "resnet_small", {}, 16)


def test_mixing_2d_and_3d_tasks_fails_with_one_line(tmp_path, capsys):
    from medfoundry.cli.main import main
    from medfoundry.testing import make_toy_database

    db = make_toy_database(tmp_path / "db", seed=0).root
    _import(db, tmp_path / "raw", "vol", [(16, 16, 16), (17, 16, 18)], 1, 0, 0.5)
    code = main(["pretrain", "--database", str(db), "--out", str(tmp_path / "run"), "--tasks", "toy_seg,vol",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "mix spatial_dims (2D: toy_seg; 3D: vol)" in err and not (tmp_path / "run").exists()
    # a label the head cannot take is found before training, naming file, task, split and case
    labels = np.load(db / "tasks" / "vol" / "labels.npy", mmap_mode="r+")
    labels[0] = 7
    labels.flush()
    del labels
    with pytest.raises(DataError, match=r"labels.npy.*task 'vol' split '\w+': 1 sample\(s\) outside 0..2.*= 7"):
        pretrain(_config(db, tmp_path / "run", tasks=["vol"]))
    assert not (tmp_path / "run").exists()


def test_cli_patch_flag_reaches_the_config(db3d, tmp_path, capsys):
    from medfoundry.cli.main import main

    cfg_file = tmp_path / "c.yaml"
    _config(db3d, tmp_path / "unused", rounds=1, checkpoint_every=1).save(cfg_file)
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(cfg_file), "--out", str(out), "--patch", "16,16,8",
                 "--no-progress"]) == 0
    assert PretrainConfig.from_yaml(out / "config.yaml").patch == (16, 16, 8)
    assert main(["pretrain", "--config", str(cfg_file), "--out", str(tmp_path / "bad"), "--patch", "16,16",
                 "--no-progress"]) != 0
    assert "--patch: expected three positive voxel counts" in capsys.readouterr().err
