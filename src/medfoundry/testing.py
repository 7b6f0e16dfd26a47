"""Tiny random databases for tests and examples (not a benchmark: the labels are learnable
but trivial). The realistic default database lives in ``medfoundry.data.synthetic``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.database import DatabaseWriter, MultiTaskDatabase
from .data.tasks import TaskSpec

__all__ = ["make_toy_database", "TOY_TASKS"]

TOY_TASKS = ("toy_cls", "toy_multilabel", "toy_seg", "toy_det")


def make_toy_database(root: str | Path, seed: int = 0, size: int = 32, n: int = 24,
                      tasks: tuple[str, ...] = TOY_TASKS) -> MultiTaskDatabase:
    """A database with one task of each kind: bright squares on noise.

    toy_cls: which quadrant holds the square (4 classes, grey); toy_multilabel: which of two
    colours appear (RGB); toy_seg: square mask (2 classes); toy_det: box of each square
    (1 class, grey). Splits are 60/20/20 %.
    """
    rng = np.random.default_rng(seed)
    specs = {
        "toy_cls": TaskSpec("toy_cls", "classification", ("tl", "tr", "bl", "br"), "x-ray", 2, (size, size), 1),
        "toy_multilabel": TaskSpec("toy_multilabel", "multilabel", ("red", "green"), "microscopic", 2,
                                   (size, size), 3),
        "toy_seg": TaskSpec("toy_seg", "segmentation", ("background", "square"), "tomographic", 2,
                            (size, size), 1, spacing=(0.5, 0.5)),
        "toy_det": TaskSpec("toy_det", "detection", ("square",), "microscopic", 2, (size, size), 1),
    }
    q = size // 2
    s = max(2, size // 4)
    splits = {"train": range(0, int(0.6 * n)), "val": range(int(0.6 * n), int(0.8 * n)), "test": range(int(0.8 * n), n)}
    with DatabaseWriter(root, name="toy", overwrite=True) as writer:
        for name in tasks:
            spec = specs[name]
            tw = writer.add_task(spec, n=n, image_dtype="float32")
            for i in range(n):
                img = 0.1 * rng.random((spec.channels, size, size)).astype(np.float32)
                if name == "toy_cls":
                    label = i % 4
                    y0, x0 = (label // 2) * q + rng.integers(0, q - s + 1), (label % 2) * q + rng.integers(0, q - s + 1)
                    img[:, y0:y0 + s, x0:x0 + s] += 0.9
                    target = label
                elif name == "toy_multilabel":
                    target = np.array([i % 2, (i // 2) % 2], dtype=np.float32)
                    for c in range(2):
                        if target[c]:
                            y0, x0 = rng.integers(0, size - s, 2)
                            img[c, y0:y0 + s, x0:x0 + s] += 0.9
                else:
                    y0, x0 = rng.integers(0, size - s, 2)
                    img[:, y0:y0 + s, x0:x0 + s] += 0.9
                    if name == "toy_seg":
                        target = np.zeros((size, size), np.uint8)
                        target[y0:y0 + s, x0:x0 + s] = 1
                    else:
                        target = {"boxes": [[x0, y0, x0 + s, y0 + s]], "labels": [0]}
                tw.set_sample(i, img, target)
            tw.set_splits(splits)
    return MultiTaskDatabase.open(root)
