"""Shared fixtures. Tests run offline and single-threaded so two suites can share 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_db(tmp_path_factory):
    """A 4-task database (classification, multilabel, segmentation, detection), 32x32, 24 samples each."""
    from medfoundry.testing import make_toy_database

    return make_toy_database(tmp_path_factory.mktemp("toy") / "db", seed=0)
