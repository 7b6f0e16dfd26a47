"""The three-command path (import, train, predict) through the CLI, on tiny volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import yaml
from seg3d_helpers import TINY_ENCODER

from medfoundry.cli.main import main


def test_import_train_predict_end_to_end(tiny_folder, tmp_path, capsys):
    db, run, preds = tmp_path / "db", tmp_path / "run", tmp_path / "preds"
    assert main(["data", "import", "volumes3d", str(tiny_folder / "imagesTr"), str(tiny_folder / "labelsTr"),
                 "--db", str(db), "--task", "tiny", "--modality", "tomographic", "--classes", "background,core,shell",
                 "--no-progress"]) == 0
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({"encoder_kwargs": TINY_ENCODER, "adapter_channels": 8, "warmup_steps": 1}))
    assert main(["segment", "train", "--database", str(db), "--task", "tiny", "--out", str(run), "--steps", "2",
                 "--patch", "32", "32", "32", "--batch-size", "2", "--threads", "1", "--regions", "WT=1,2;TC=1",
                 "--device", "cpu", "--config", str(config), "--no-progress"]) == 0
    assert main(["segment", "predict", str(run), "--images", str(tiny_folder / "imagesTr"), "--out", str(preds),
                 "--labels", str(tiny_folder / "labelsTr"), "--device", "cpu", "--threads", "1",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 label maps" in out and "WT" in out
    summary = json.loads((preds / "summary.json").read_text())
    assert set(summary["mean"]) == {"WT", "TC"} and summary["tta"] is False
    src = nib.load(str(tiny_folder / "imagesTr" / "case1_0000.nii.gz"))
    pred = nib.load(str(preds / "case1.nii.gz"))
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)
    assert main(["segment", "validate", str(db)]) == 0
    assert main(["segment", "inspect", str(db), "--task", "tiny", "--sheet", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").read_bytes()[:4] == b"\x89PNG"


def test_import_errors_are_one_line(tiny_folder, tmp_path, capsys):
    (tiny_folder / "imagesTr" / "case0_0001.nii.gz").unlink()
    code = main(["data", "import", "volumes3d", str(tiny_folder / "imagesTr"), str(tiny_folder / "labelsTr"),
                 "--db", str(tmp_path / "db"), "--task", "t", "--modality", "tomographic", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "case0_0001.nii.gz" in err and "Traceback" not in err
    code = main(["segment", "train", "--database", str(tmp_path / "db"), "--task", "t", "--out",
                 str(tmp_path / "run"), "--steps", "1", "--no-progress"])
    assert code == 2 and "no 3D segmentation task" in capsys.readouterr().err
