"""A saved multi-task model of the toy database (the runs of the 2D-head robustness tests)."""

from __future__ import annotations

from pathlib import Path


def save_toy_run(db, folder: Path, seed: int = 0) -> Path:
    """An untrained 2D model with a head per toy task, saved as ``folder/model`` (a run folder)."""
    import torch

    from medfoundry.training import PretrainConfig
    from medfoundry.training.pretrain import build_model

    torch.manual_seed(seed)
    model = build_model([db.task(t) for t in db.tasks], PretrainConfig(decoder_channels=16))
    model.save_pretrained(folder / "model")
    return folder
