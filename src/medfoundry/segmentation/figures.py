"""Mid-slice pictures of volumes with label maps overlaid (PNG, matplotlib Agg).

The slice shown is the axial one (third NIfTI axis, k) holding the most foreground, or the
middle one when the case has none; ``image`` rows are drawn as screen rows after a transpose
and flip, so RAS volumes look like radiological axial slices with anterior at the top.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils import atomic_path

__all__ = ["best_slice", "draw_overlay", "overlay_figure", "mid_slice_sheet", "LABEL_COLOURS"]

LABEL_COLOURS = np.array([[0, 0, 0, 0], [230, 25, 75, 150], [60, 180, 75, 150], [255, 225, 25, 170],
                          [0, 130, 200, 150], [245, 130, 48, 150], [145, 30, 180, 150]], dtype=np.float32) / 255.0


def best_slice(label: np.ndarray | None, depth: int) -> int:
    """Index along the third axis with the most foreground (the middle one if none)."""
    if label is None or not label.any():
        return depth // 2
    return int(np.argmax((label > 0).sum(axis=(0, 1))))


def _rgba(label: np.ndarray) -> np.ndarray:
    return LABEL_COLOURS[np.clip(label, 0, len(LABEL_COLOURS) - 1)]


def _screen(a: np.ndarray) -> np.ndarray:
    return np.flipud(np.swapaxes(a, 0, 1))


def draw_overlay(ax, title: str, image: np.ndarray, label: np.ndarray | None) -> None:
    """One panel on a matplotlib axis: a slice (X, Y) in grey (1-99 % window) with its label
    slice overlaid in :data:`LABEL_COLOURS`."""
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0, 1)
    ax.imshow(_screen(image), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    if label is not None:
        ax.imshow(_screen(_rgba(label)), interpolation="nearest")
    ax.set_title(title, fontsize=8)


def overlay_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]], columns: int = 3,
                   path: str | Path | None = None) -> bytes:
    """Draw ``(title, slice (X, Y), label slice or None)`` panels in a grid; returns the PNG
    bytes (also written atomically to ``path`` when given)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, label) in zip(axes.ravel(), panels):
        draw_overlay(ax, title, image, label)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data


def mid_slice_sheet(task, path: str | Path, cases: int = 6, channel: int = -1) -> Path:
    """One panel per case (the first ``cases``) of a stored 3D task: ``channel`` (default the
    last) at :func:`best_slice` with the label overlaid. Returns ``path``."""
    panels = []
    for i in range(min(cases, len(task))):
        image, label = task.image(i), task.label(i)
        k = best_slice(label, label.shape[2])
        panels.append((f"{task.cases[i].name} k={k}", image[channel][:, :, k], label[:, :, k]))
    overlay_figure(panels, columns=min(3, max(1, len(panels))), path=path)
    return Path(path)
