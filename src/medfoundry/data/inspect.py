"""What is in a database: per-task summaries, rich tables and a contact sheet of samples.

Class balance per kind:

* classification: samples per class;
* multilabel: positive samples per class (and samples with no positive label);
* segmentation: share of all pixels per class, and samples containing each class;
* detection: boxes per image (mean, max, images without boxes) and boxes per class.

Summaries scan the arrays in chunks (memory-mapped), so they work on databases larger than
RAM; expect a few seconds per GB for segmentation masks.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..utils import atomic_path
from .database import MultiTaskDatabase
from .tasks import SPLITS, TaskKind

__all__ = ["summarize", "summarize_task", "summary_table", "contact_sheet"]

_CHUNK_BYTES = 64 * 2**20
_TITLE_WIDTH = 30  # characters per title line of a 2.2-inch panel at 8 pt
_MAX_BOX_TEXT = 6  # boxes per image that still get a class label drawn beside them


def _open(db: MultiTaskDatabase | str | Path) -> MultiTaskDatabase:
    return db if isinstance(db, MultiTaskDatabase) else MultiTaskDatabase.open(db)


def summarize(db: MultiTaskDatabase | str | Path, tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One dict per task (see :func:`summarize_task`), in manifest order."""
    db = _open(db)
    names = list(tasks) if tasks is not None else db.task_names()
    return [summarize_task(db, name) for name in names]


def summarize_task(db: MultiTaskDatabase, task: str) -> dict[str, Any]:
    """Summary of one task.

    Returns:
        ``{"name", "kind", "modality", "group", "classes", "channels", "image_size",
        "spacing" (task default, mm or None), "num_samples", "splits": {split: count},
        "balance": {...}}`` where ``balance`` depends on the kind (module docstring):
        classification ``{"counts": {class: n}}``; multilabel ``{"positives": {class: n},
        "none": n}``; segmentation ``{"pixel_share": {class: fraction}, "samples_with":
        {class: n}}``; detection ``{"boxes_per_image_mean", "boxes_per_image_max",
        "images_without_boxes", "boxes_per_class": {class: n}, "num_boxes"}``.
    """
    spec = db.task(task)
    n = db.num_samples(task)
    splits = db.splits(task)
    out: dict[str, Any] = {
        "name": spec.name, "kind": spec.kind.value, "modality": spec.modality.value, "group": spec.group,
        "classes": list(spec.classes), "channels": spec.channels, "image_size": list(spec.image_size),
        "spacing": None if spec.spacing is None else list(spec.spacing), "num_samples": n,
        "splits": {s: int(len(splits[s])) for s in SPLITS}, "description": spec.description,
    }
    k = spec.num_classes
    if spec.kind is TaskKind.CLASSIFICATION:
        counts = np.bincount(np.asarray(db.array(task, "labels"), dtype=np.int64).clip(0, k - 1), minlength=k)
        out["balance"] = {"counts": {c: int(v) for c, v in zip(spec.classes, counts)}}
    elif spec.kind is TaskKind.MULTILABEL:
        labels = np.asarray(db.array(task, "labels"), dtype=bool)
        out["balance"] = {"positives": {c: int(v) for c, v in zip(spec.classes, labels.sum(axis=0))},
                          "none": int((~labels.any(axis=1)).sum())}
    elif spec.kind is TaskKind.SEGMENTATION:
        masks = db.array(task, "masks")
        pixels = np.zeros(k, dtype=np.int64)
        present = np.zeros(k, dtype=np.int64)
        step = max(1, _CHUNK_BYTES // max(1, int(np.prod(masks.shape[1:])) * masks.itemsize))
        for a in range(0, n, step):
            block = np.asarray(masks[a:a + step]).reshape(min(step, n - a), -1).astype(np.int64).clip(0, k - 1)
            pixels += np.bincount(block.ravel(), minlength=k)[:k]
            for c in range(k):
                present[c] += int((block == c).any(axis=1).sum())
        total = max(1, int(pixels.sum()))
        out["balance"] = {"pixel_share": {c: float(v) / total for c, v in zip(spec.classes, pixels)},
                          "samples_with": {c: int(v) for c, v in zip(spec.classes, present)}}
    else:
        counts = np.diff(np.asarray(db.array(task, "box_offsets"), dtype=np.int64))
        labels = np.asarray(db.array(task, "box_labels"), dtype=np.int64).clip(0, k - 1)
        per_class = np.bincount(labels, minlength=k) if len(labels) else np.zeros(k, np.int64)
        out["balance"] = {"num_boxes": int(counts.sum()), "boxes_per_image_mean": float(counts.mean()),
                          "boxes_per_image_max": int(counts.max()), "images_without_boxes": int((counts == 0).sum()),
                          "boxes_per_class": {c: int(v) for c, v in zip(spec.classes, per_class)}}
    return out


def _balance_text(summary: dict[str, Any], limit: int = 12) -> str:
    b = summary["balance"]
    kind = summary["kind"]

    def items(d: dict[str, Any], fmt) -> str:
        parts = [f"{c}: {fmt(v)}" for c, v in list(d.items())[:limit]]
        if len(d) > limit:
            parts.append(f"... (+{len(d) - limit})")
        return ", ".join(parts)

    if kind == "classification":
        return items(b["counts"], str)
    if kind == "multilabel":
        return items(b["positives"], str) + f"; none: {b['none']}"
    if kind == "segmentation":
        return "pixels " + items(b["pixel_share"], lambda v: f"{100 * v:.2f}%")
    return (f"{b['num_boxes']} boxes, {b['boxes_per_image_mean']:.2f}/image (max {b['boxes_per_image_max']}, "
            f"{b['images_without_boxes']} empty); " + items(b["boxes_per_class"], str))


def summary_table(summaries: list[dict[str, Any]], title: str = "tasks"):
    """A rich ``Table`` with one row per task summary."""
    from rich.table import Table

    table = Table(title=title, show_lines=True)
    for col in ("task", "kind", "modality", "classes", "size", "train/val/test", "class balance"):
        table.add_column(col, overflow="fold")
    for s in summaries:
        classes = s["classes"]
        shown = ", ".join(classes[:8]) + (f" ... (+{len(classes) - 8})" if len(classes) > 8 else "")
        size = "x".join(map(str, s["image_size"])) + f" x{s['channels']}ch"
        sp = s["splits"]
        table.add_row(s["name"], s["kind"], s["modality"], f"{len(classes)}: {shown}", size,
                      f"{sp['train']}/{sp['val']}/{sp['test']}", _balance_text(s))
    return table


# ---------------------------------------------------------------------- contact sheet
def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) -> an array matplotlib shows: RGB when 3 channels, else the first channel."""
    if image.shape[0] == 3:
        return np.clip(np.moveaxis(image, 0, -1), 0.0, 1.0), None
    return image[0], "gray"


def _middle_slice(image: np.ndarray, target: Any, spatial_dims: int) -> tuple[np.ndarray, Any]:
    if spatial_dims == 3:  # show the middle slice of a volume (first spatial axis = depth)
        d = image.shape[1] // 2
        image = image[:, d]
        if isinstance(target, np.ndarray) and target.ndim == 3:
            target = target[d]
    return image, target


def contact_sheet(db: MultiTaskDatabase | str | Path, out_png: str | Path, tasks: Sequence[str] | None = None,
                  per_task: int = 6, seed: int = 0, dpi: int = 100) -> Path:
    """Draw ``per_task`` random samples of each task in a grid, with their labels, into a PNG.

    One row per task: the image (grey or RGB), titled with its class (classification) or
    positive labels (multilabel); segmentation masks overlaid in colour (background
    transparent) with a legend; detection boxes drawn with their class name. Samples are
    drawn with ``seed`` (same seed, same sheet). Written atomically.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    db = _open(db)
    names = list(tasks) if tasks is not None else db.task_names()
    if not names:
        raise DataError("no tasks to draw", path=db.root)
    if per_task < 1:
        raise DataError(f"per_task must be >= 1, got {per_task}", field="per_task")
    palette = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(names), per_task, figsize=(2.2 * per_task, 2.5 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        spec = db.task(name)
        n = db.num_samples(name)
        rng = np.random.default_rng([seed, row])
        chosen = np.sort(rng.choice(n, size=min(per_task, n), replace=False))
        for col in range(per_task):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(chosen):
                ax.axis("off")
                continue
            i = int(chosen[col])
            image, target = _middle_slice(db.image(name, i), db.target(name, i), spec.spatial_dims)
            shown, cmap = _display(image)
            vmin, vmax = (0.0, 1.0) if cmap is None else (float(shown.min()), float(shown.max()) or 1.0)
            ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            title = f"#{i}"
            if spec.kind is TaskKind.CLASSIFICATION:
                title += f" {spec.classes[int(target)] if 0 <= int(target) < spec.num_classes else target}"
            elif spec.kind is TaskKind.MULTILABEL:
                pos = [spec.classes[k] for k in np.flatnonzero(np.asarray(target) > 0.5)]
                title += " " + (", ".join(pos) if pos else "(none)")
            elif spec.kind is TaskKind.SEGMENTATION:
                mask = np.ma.masked_equal(np.asarray(target), 0)
                colours = ListedColormap([(0, 0, 0, 0)] + [palette[(c - 1) % 10] for c in range(1, spec.num_classes)])
                ax.imshow(mask, cmap=colours, vmin=-0.5, vmax=spec.num_classes - 0.5, alpha=0.45,
                          interpolation="nearest")
                present = [spec.classes[c] for c in np.unique(np.asarray(target)) if c > 0]
                title += " " + (", ".join(present) if present else "(background)")
            else:
                label_boxes = len(target["labels"]) <= _MAX_BOX_TEXT  # dense images: colours + legend only
                for box, lab in zip(target["boxes"], target["labels"]):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    colour = palette[int(lab) % 10]
                    # Box coordinates are pixel edges; imshow centres pixel j at j, edges at j - 0.5.
                    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                           edgecolor=colour))
                    if label_boxes:
                        ax.text(x0 - 0.5, y0 - 0.5, spec.classes[int(lab)], color="white", fontsize=6,
                                va="bottom", bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "lw": 0})
                title += f" {len(target['labels'])} box(es)"
            ax.set_title(textwrap.fill(title, _TITLE_WIDTH, max_lines=2, placeholder=" ..."), fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{name}\n{spec.kind.value}", fontsize=8)
        if spec.kind is TaskKind.SEGMENTATION and spec.num_classes > 1:
            handles = [Patch(color=palette[(c - 1) % 10], label=spec.classes[c]) for c in range(1, spec.num_classes)]
        elif spec.kind is TaskKind.DETECTION:
            handles = [Patch(color=palette[c % 10], label=spec.classes[c]) for c in range(spec.num_classes)]
        else:
            handles = []
        if handles:
            axes[row, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7,
                                 frameon=False)
    fig.suptitle(f"{db.name}: {per_task} random samples per task (seed {seed})", fontsize=10)
    # Reserve a fixed band (in inches) for the title so it never overlaps the first row's titles.
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return out_png
