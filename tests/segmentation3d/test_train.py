"""Patch training: a few steps, exact resume, predictions on the original grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from seg3d_helpers import TINY_ENCODER, tiny_config

from medfoundry.errors import ConfigError
from medfoundry.models import EncoderWithAdapters
from medfoundry.segmentation import predict_folder, train_segmentation
from medfoundry.segmentation.model import build_trunk
from medfoundry.training.checkpoint import list_checkpoints


def test_resume_from_a_checkpoint_is_bit_identical(tiny_task, tmp_path):
    cfg = tiny_config(tiny_task, regions="WT=1,2;TC=1", val_every=2)
    full = train_segmentation(cfg, tmp_path / "full", progress=False)
    assert full["steps"] == 4 and set(full["val_dice"]) == {"WT", "TC"}
    assert train_segmentation(cfg, tmp_path / "cut", progress=False, interrupt_after=2) == {"interrupted": 2}
    assert [r for r, _ in list_checkpoints(tmp_path / "cut")] == [2]
    train_segmentation(cfg, tmp_path / "cut", progress=False)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "eval"' in line for line in lines) == 2  # step 2 once, step 4 once


def test_other_settings_do_not_resume(tiny_task, tmp_path):
    train_segmentation(tiny_config(tiny_task, steps=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="other settings.*steps"):
        train_segmentation(tiny_config(tiny_task, steps=2), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="either steps or minutes"):
        tiny_config(tiny_task, minutes=1.0)
    assert tiny_config(tiny_task, steps=None).minutes == 4.0
    with pytest.raises(ConfigError, match="at least 32 voxels"):
        tiny_config(tiny_task, patch=(16, 16, 16))
    assert tiny_config(tiny_task, patch=(16, 16, 16), decoder_norm="group").patch == (16, 16, 16)


def test_predictions_keep_shape_and_affine_after_resampling(tiny_folder, tmp_path):
    from medfoundry.data.adapters.nnunet_folder import import_volumes3d

    task = import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "coarse",
                            classes=["background", "core", "shell"], spacing=(1.5, 1.5, 1.5))
    train_segmentation(tiny_config(task, steps=1), tmp_path / "run", progress=False)
    report = predict_folder(tmp_path / "run", tiny_folder / "imagesTr", tmp_path / "pred",
                            labels=tiny_folder / "labelsTr", device="cpu", threads=1)
    assert len(report["cases"]) == 4 and set(report["mean"]) == {"core", "shell"}
    for entry in report["cases"]:
        src = nib.load(str(tiny_folder / "imagesTr" / f"{entry['case']}_0000.nii.gz"))
        out = nib.load(entry["file"])
        assert out.shape == src.shape and out.get_data_dtype() == np.uint8
        np.testing.assert_allclose(out.affine, src.affine)
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}


@pytest.mark.slow
def test_time_budget_holds(tiny_task, tmp_path):
    summary = train_segmentation(tiny_config(tiny_task, steps=None, minutes=0.1, checkpoint_every=0),
                                 tmp_path / "run", progress=False)
    assert summary["steps"] > 1
    assert summary["seconds"] <= 0.1 * 60 * 1.1


def test_pretrained_3d_encoder_starts_training_and_2d_is_refused(tiny_task, tmp_path):
    trunk = EncoderWithAdapters("resnet_small", 3, 8, **TINY_ENCODER)
    trunk.save_pretrained(tmp_path / "pre3d")
    loaded = build_trunk(str(tmp_path / "pre3d"), "resnet_small", {}, 8)
    for key, value in trunk.encoder.state_dict().items():
        torch.testing.assert_close(loaded.encoder.state_dict()[key], value)
    summary = train_segmentation(tiny_config(tiny_task, encoder=str(tmp_path / "pre3d"), steps=1),
                                 tmp_path / "run", progress=False)
    assert summary["steps"] == 1
    EncoderWithAdapters("resnet_small", 2, 8, **TINY_ENCODER).save_pretrained(tmp_path / "pre2d")
    with pytest.raises(ConfigError, match="spatial_dims=2"):
        build_trunk(str(tmp_path / "pre2d"), "resnet_small", {}, 8)
