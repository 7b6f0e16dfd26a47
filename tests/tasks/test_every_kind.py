"""Registry-driven: every registered kind honours the whole Kind contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medfoundry.data.database import DatabaseWriter, MultiTaskDatabase
from medfoundry.data.loading import TaskDataset, collate
from medfoundry.data.tasks import TaskSpec
from medfoundry.data.validate import validate_database
from medfoundry.evaluation.tasks import chance_level, primary_bootstrap, primary_metric, task_metrics
from medfoundry.models.heads import create_head
from medfoundry.tasks import get_kind, list_kinds, register_kind, unregister_kind

from .ordinal_kind import OrdinalKind

ENC = [8, 16]


@pytest.fixture(scope="module", autouse=True)
def plugin_registered():
    register_kind(OrdinalKind())  # the contract holds for a plug-in kind too
    yield
    unregister_kind("ordinal")


def _kinds() -> list[str]:
    # ordinal: registered by the fixture above; self-described kinds (a manifest, no database.yaml
    # entry: segmentation3d) have their contract test in tests/segmentation3d/test_kind3d.py
    names = {n for n in list_kinds() if not get_kind(n).manifest} | {"ordinal"}
    return sorted(names)


@pytest.mark.parametrize("name", _kinds())
def test_kind_contract(name, tmp_path):
    kind = get_kind(name)
    assert kind.name == name and kind.primary_metric and primary_metric(name) == kind.primary_metric
    classes = tuple(f"c{i}" for i in range(max(kind.min_classes, 3)))
    spec = TaskSpec("t", name, classes, "other", 2, (16, 16), 1)
    rng = np.random.default_rng(0)
    n = 12
    targets = [kind.example_target(spec, rng) for _ in range(n)]
    with DatabaseWriter(tmp_path / "db", name="contract") as w:
        tw = w.add_task(spec, n=n)
        for i, t in enumerate(targets):
            tw.set_sample(i, rng.random((1, 16, 16)), t)
        tw.set_splits({"train": range(8), "val": range(8, 10), "test": range(10, 12)})
    assert {f"{a}.npy" for a in kind.arrays} <= {p.name for p in (tmp_path / "db" / "tasks" / "t").iterdir()}
    assert validate_database(tmp_path / "db") == []
    db = MultiTaskDatabase.open(tmp_path / "db")
    stored = [db.target("t", i) for i in range(n)]
    assert len(kind.strata(db, "t")) == n
    json.dumps(kind.summary(db, "t"))
    assert isinstance(kind.summary_text(kind.summary(db, "t")), str)

    ds = TaskDataset(db, "t", "train")
    batch = collate([ds[i] for i in range(4)], "t", spec.kind)
    head = create_head(spec, ENC, 8, stride=4)
    feats = [torch.randn(4, 8, 4, 4), torch.randn(4, 16, 2, 2)]
    output = head(torch.randn(4, 8, 4, 4) if head.uses_decoder else feats, image_size=(16, 16))
    loss = head.loss(output, batch["target"])
    value = float(loss.detach())
    assert loss.ndim == 0 and math.isfinite(value) and 0.2 < value < 5.0  # untrained: about 1
    preds = head.decode(output)
    assert len(preds) == 4
    metrics = task_metrics(spec, preds, stored[:4])
    assert kind.primary_metric in metrics and metrics["n"] == 4
    assert 0.0 <= chance_level(spec) <= 1.0
    assert primary_bootstrap(spec, preds, stored[:4], n_boot=5).shape == (5,)


def test_no_kind_branches_outside_the_kind_modules():
    from pathlib import Path

    import medfoundry

    root = Path(medfoundry.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.parent.name != "tasks" and p != root / "data" / "tasks.py"
                 and "TaskKind." in p.read_text(encoding="utf-8")]
    assert offenders == []
