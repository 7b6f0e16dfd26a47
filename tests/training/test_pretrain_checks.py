"""``pretrain`` checks the stored labels before it writes anything or trains a round."""

import shutil

import numpy as np
import pytest

from medfoundry.errors import DataError
from medfoundry.training.config import PretrainConfig
from medfoundry.training.pretrain import pretrain


def test_out_of_range_label_stops_pretraining_before_any_file(toy_db, tmp_path):
    root = tmp_path / "db"
    shutil.copytree(toy_db.root, root)
    path = root / "tasks" / "toy_seg" / "masks.npy"
    masks = np.load(path)
    masks[16, 3, 3] = 7  # 2 classes; sample 16 is in the val split
    np.save(path, masks)
    out = tmp_path / "run"
    cfg = PretrainConfig(database=str(root), out=str(out), tasks=["toy_cls", "toy_seg"], rounds=1,
                         device="cpu", progress=False)
    with pytest.raises(DataError) as err:
        pretrain(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "masks.npy" in msg and "split 'val'" in msg and "sample 16 = 7" in msg
    assert not out.exists()


def test_pretraining_prints_plain_round_lines_when_not_a_terminal(toy_db, tmp_path, capsys):
    cfg = PretrainConfig(database=str(toy_db.root), out=str(tmp_path / "run"), tasks=["toy_cls"], rounds=2,
                         batch_size=4, eval_every=0, eval_max_samples=4, checkpoint_every=0, device="cpu",
                         progress=True)
    pretrain(cfg)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("pretraining rounds:")]
    assert [x.split()[2] for x in lines] == ["1/2", "2/2"] and "loss" in lines[0]
