"""Fixtures of the 3D segmentation tests (seconds, no MNI template)."""

from __future__ import annotations

from pathlib import Path

import pytest
from seg3d_helpers import write_folder


@pytest.fixture()
def tiny_folder(tmp_path) -> Path:
    """Four cases of different shapes, 2 channels, labels 0/1/2, 1 mm voxels."""
    return write_folder(tmp_path / "raw", [(20, 18, 16), (17, 21, 15), (19, 19, 19), (16, 20, 18)])


@pytest.fixture()
def tiny_task(tiny_folder, tmp_path):
    from medfoundry.data.adapters.nnunet_folder import import_volumes3d

    return import_volumes3d(tiny_folder / "imagesTr", tiny_folder / "labelsTr", tmp_path / "db", "tiny",
                            classes=["background", "core", "shell"], val_fraction=0.25)
