"""What is in a database: per-task summaries, rich tables and a contact sheet of samples.

Class balance per kind:

* classification: samples per class;
* multilabel: positive samples per class (and samples with no positive label);
* segmentation: share of all pixels per class, and samples containing each class;
* detection: boxes per image (mean, max, images without boxes) and boxes per class.

Summaries scan the arrays in chunks (memory-mapped), so they work on databases larger than
RAM; expect a few seconds per GB for segmentation masks.

Tasks of a kind that describes itself (``segmentation3d``: whole volumes of different shapes,
``tasks/<task>/volumes3d.json``) are listed after the ``database.yaml`` tasks, summarised and
drawn by their kind (a mid-slice per case with the label overlaid); a folder holding only
such tasks needs no ``database.yaml``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..utils import atomic_path, look_up_option
from .database import MANIFEST, MultiTaskDatabase
from .tasks import SPLITS

__all__ = ["summarize", "summarize_task", "summary_table", "contact_sheet", "database_title"]

_CHUNK_BYTES = 64 * 2**20
_TITLE_WIDTH = 30  # characters per title line of a 2.2-inch panel at 8 pt


def _resolve(db: MultiTaskDatabase | str | Path, tasks: Sequence[str] | None
             ) -> tuple[Path, MultiTaskDatabase | None, list[tuple[str, Any]]]:
    """(root, database or None, [(task, kind of a self-described task or None)]), checking names."""
    from ..tasks import stored_task_kinds

    root = db.root if isinstance(db, MultiTaskDatabase) else Path(db)
    stored = stored_task_kinds(root)
    database = db if isinstance(db, MultiTaskDatabase) else (
        None if stored and not (root / MANIFEST).is_file() else MultiTaskDatabase.open(root))
    flat = database.task_names() if database is not None else []
    if tasks is None:
        return root, database, [(n, None) for n in flat] + list(stored.items())
    chosen = []
    for name in tasks:
        look_up_option(name, flat + list(stored), what=f"task in {root}")
        chosen.append((name, stored.get(name)) if name not in flat else (name, None))
    return root, database, chosen


def database_title(db: MultiTaskDatabase | str | Path) -> str:
    """The database name (from ``database.yaml``, else the folder name)."""
    if isinstance(db, MultiTaskDatabase):
        return db.name
    root, database, _ = _resolve(db, [])
    return database.name if database is not None else root.name


def summarize(db: MultiTaskDatabase | str | Path, tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One dict per task (see :func:`summarize_task`), in manifest order, then the
    self-described tasks (module docstring) by name."""
    root, database, chosen = _resolve(db, tasks)
    return [kind.summarize_stored(root, name) if kind is not None else summarize_task(database, name)
            for name, kind in chosen]


def summarize_task(db: MultiTaskDatabase, task: str) -> dict[str, Any]:
    """Summary of one task.

    Returns:
        ``{"name", "kind", "modality", "group", "classes", "channels", "image_size",
        "spacing" (task default, mm or None), "num_samples", "splits": {split: count},
        "balance": {...}}`` where ``balance`` depends on the kind (module docstring):
        classification ``{"counts": {class: n}}``; multilabel ``{"positives": {class: n},
        "none": n}``; segmentation ``{"pixel_share": {class: fraction}, "samples_with":
        {class: n}}``; detection ``{"boxes_per_image_mean", "boxes_per_image_max",
        "images_without_boxes", "boxes_per_class": {class: n}, "num_boxes"}``; ``problems``
        lists one line per split holding targets outside the class list (never counted in
        ``balance``).
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
    from ..tasks import get_kind

    from .validate import target_problems

    out["balance"] = get_kind(spec.kind).summary(db, task)
    # a label the head cannot take (e.g. -1 for "unknown") is an error, not silently a class
    out["problems"] = [p.message for p in target_problems(db, task)]
    return out


def _balance_text(summary: dict[str, Any], limit: int = 12) -> str:
    from ..tasks import get_kind

    return get_kind(summary["kind"]).summary_text(summary["balance"], limit)


def summary_table(summaries: list[dict[str, Any]], title: str = "tasks"):
    """A rich ``Table`` with one row per task summary; target problems go in its caption."""
    from rich.table import Table

    problems = [p for s in summaries for p in s.get("problems", [])]
    caption = "\n".join(f"error: {p}" for p in problems) or None
    table = Table(title=title, show_lines=True, caption=caption, caption_style="bold red")
    for col in ("task", "kind", "modality", "classes", "size", "train/val/test", "class balance"):
        table.add_column(col, overflow="fold")
    for s in summaries:
        classes = s["classes"]
        shown = ", ".join(classes[:8]) + (f" ... (+{len(classes) - 8})" if len(classes) > 8 else "")
        size = "x".join(map(str, s["image_size"])) + f" x{s['channels']}ch"
        if s.get("image_size_min", s["image_size"]) != s["image_size"]:  # ragged: smallest..largest
            size = "x".join(map(str, s["image_size_min"])) + " .. " + size
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
    drawn with ``seed`` (same seed, same sheet). Written atomically. A 3D row
    (``segmentation3d``) shows per case the axial slice with the most foreground, the last
    channel in grey and the label overlaid.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..tasks import get_kind

    root, database, chosen = _resolve(db, tasks)
    if not chosen:
        raise DataError("no tasks to draw", path=root)
    if per_task < 1:
        raise DataError(f"per_task must be >= 1, got {per_task}", field="per_task")
    palette = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(chosen), per_task, figsize=(2.2 * per_task, 2.5 * len(chosen)), squeeze=False)
    for row, (name, stored_kind) in enumerate(chosen):
        if stored_kind is not None:
            for ax in axes[row]:
                ax.set_xticks([])
                ax.set_yticks([])
            stored_kind.draw_stored(list(axes[row]), root, name, seed=seed)
            axes[row, 0].set_ylabel(f"{name}\n{stored_kind.name}", fontsize=8)
            continue
        spec = database.task(name)
        kind = get_kind(spec.kind)
        n = database.num_samples(name)
        rng = np.random.default_rng([seed, row])
        picked = np.sort(rng.choice(n, size=min(per_task, n), replace=False))
        for col in range(per_task):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(picked):
                ax.axis("off")
                continue
            i = int(picked[col])
            image, target = _middle_slice(database.image(name, i), database.target(name, i), spec.spatial_dims)
            shown, cmap = _display(image)
            vmin, vmax = (0.0, 1.0) if cmap is None else (float(shown.min()), float(shown.max()) or 1.0)
            ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            title = f"#{i}"
            text = kind.draw(ax, spec, target, palette)
            if text:
                title += f" {text}"
            ax.set_title(textwrap.fill(title, _TITLE_WIDTH, max_lines=2, placeholder=" ..."), fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{name}\n{spec.kind.value}", fontsize=8)
        handles = kind.legend(spec, palette)
        if handles:
            axes[row, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7,
                                 frameon=False)
    title = database.name if database is not None else root.name
    fig.suptitle(f"{title}: {per_task} random samples per task (seed {seed})", fontsize=10)
    # Reserve a fixed band (in inches) for the title so it never overlaps the first row's titles.
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return out_png
