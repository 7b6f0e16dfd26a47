"""Fixtures of the robustness tests: a tiny folder and two tiny trained runs (seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# the tiny-volume helpers of the 3D segmentation tests serve these tests too
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "segmentation3d"))


@pytest.fixture(scope="session")
def robust_folder(tmp_path_factory) -> Path:
    from seg3d_helpers import write_folder

    return write_folder(tmp_path_factory.mktemp("robust") / "raw", [(20, 18, 16), (17, 21, 15), (19, 19, 19)])


@pytest.fixture(scope="session")
def robust_runs(robust_folder, tmp_path_factory) -> list[Path]:
    """Two runs (seeds 3 and 4) of 3 steps on the tiny task, softmax classes."""
    from seg3d_helpers import tiny_config

    from medfoundry.data.adapters.nnunet_folder import import_volumes3d
    from medfoundry.segmentation import train_segmentation

    root = tmp_path_factory.mktemp("runs")
    task = import_volumes3d(robust_folder / "imagesTr", robust_folder / "labelsTr", root / "db", "tiny",
                            classes=["background", "core", "shell"], val_fraction=0.34)
    runs = []
    for seed in (3, 4):
        run = root / f"run{seed}"
        train_segmentation(tiny_config(task, steps=3, seed=seed, checkpoint_every=3), run, progress=False)
        runs.append(run)
    return runs
