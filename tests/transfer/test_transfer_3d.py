"""A 3D segmentation and a 3D classification task go through the same sweep code as 2D ones.

(3D detection waits for the database writer, which stores 2D boxes only.)
"""

import numpy as np
import pytest

from medfoundry.data.database import DatabaseWriter, MultiTaskDatabase
from medfoundry.data.tasks import TaskSpec
from medfoundry.transfer import run_sweep


@pytest.fixture(scope="module")
def db3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("db3d") / "db"
    rng = np.random.default_rng(0)
    size, n = 16, 12
    seg = TaskSpec("vol_seg", "segmentation", ("bg", "cube"), "tomographic", 3, (size,) * 3, 1, spacing=(2.0, 1.0, 1.0))
    cls = TaskSpec("vol_cls", "classification", ("upper", "lower"), "tomographic", 3, (size,) * 3, 1)
    with DatabaseWriter(root, name="toy3d") as w:
        for spec in (seg, cls):
            tw = w.add_task(spec, n=n, image_dtype="float32")
            for i in range(n):
                img = 0.1 * rng.random((1, size, size, size)).astype(np.float32)
                z, y, x = rng.integers(0, size - 6, 3)
                img[:, z:z + 6, y:y + 6, x:x + 6] += 0.9
                if spec.kind.value == "segmentation":
                    m = np.zeros((size,) * 3, np.uint8)
                    m[z:z + 6, y:y + 6, x:x + 6] = 1
                    tw.set_sample(i, img, m)
                else:
                    tw.set_sample(i, img, int(z >= (size - 6) // 2))
            tw.set_splits({"train": range(0, 6), "val": range(6, 9), "test": range(9, 12)})
    return MultiTaskDatabase.open(root)


def test_sweep_3d(db3d, tmp_path):
    store = run_sweep(db3d.root, ["random"], tmp_path, tasks=["vol_seg", "vol_cls"], modes=("frozen", "finetune"),
                      fractions=(1.0,), seeds=1, max_epochs=1, min_steps=2, max_steps=2, min_eval_interval=2,
                      n_boot=5, batch_size=4, progress=False, device="cpu", fail_fast=True)
    assert len(store.records) == 4 and all(r["status"] == "ok" for r in store.records)
    seg = [r for r in store.records if r["task"] == "vol_seg"]
    assert all(0.0 <= r["metrics"]["dice"] <= 1.0 for r in seg)
    cls = [r for r in store.records if r["task"] == "vol_cls"]
    assert all("balanced_accuracy" in r["metrics"] for r in cls)
