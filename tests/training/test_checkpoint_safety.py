"""A checkpoint that would run code when unpickled is refused, with the file named."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from medfoundry.errors import CheckpointError
from medfoundry.training.checkpoint import (capture_rng_state, load_checkpoint, restore_rng_state,
                                            save_checkpoint)


class _Payload:
    """Unpickling this calls os.system: what a malicious shared run folder could contain."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_crafted_pickle_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoints" / "round_0000001.pt"
    path.parent.mkdir()
    torch.save({"format": 1, "round": 1, "model": {}, "evil": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"round_0000001\.pt.*refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_plain_pickle_is_refused_too(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError, match="x.pt"):
        load_checkpoint(path)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    path = save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
