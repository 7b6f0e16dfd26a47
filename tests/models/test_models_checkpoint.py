"""The model checkpoint folder format (models/checkpoint.py): pairing, refusals, no unpickling."""

from __future__ import annotations

import json
import os

import pytest
import torch

from medfoundry.errors import CheckpointError
from medfoundry.models.checkpoint import (CONFIG_NAME, FORMAT, FORMAT_VERSION, WEIGHTS_NAME, read_config,
                                          read_state_dict, read_weights, write_checkpoint)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_write_then_read_pairs_config_and_weights(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3).t()}  # non-contiguous on purpose
    write_checkpoint(tmp_path, state, {"format": FORMAT, "format_version": FORMAT_VERSION})
    config = read_config(tmp_path)
    weights = read_weights(tmp_path, "cpu", config["save_id"])
    torch.testing.assert_close(weights["a"], state["a"])
    # a second save's weights beside the first save's config are refused, naming the file
    old = (tmp_path / CONFIG_NAME).read_text()
    write_checkpoint(tmp_path, state, {"format": FORMAT, "format_version": FORMAT_VERSION})
    (tmp_path / CONFIG_NAME).write_text(old)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME}: \[save_id\]"):
        read_weights(tmp_path, "cpu", json.loads(old)["save_id"])


def test_wrong_format_is_named(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(CheckpointError, match=r"config\.json: \[format\]"):
        read_config(tmp_path)


def test_state_dict_files_never_unpickle_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "evil": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights.pt"):
        read_state_dict(path)
    assert not (tmp_path / "pwned.txt").exists()
    torch.save({"model": {"module.x": torch.ones(2)}}, path)  # nested and DDP-prefixed: unwrapped
    assert list(read_state_dict(path)) == ["x"]
