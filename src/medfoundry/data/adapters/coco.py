"""Detection from COCO-style JSON: ``images``, ``annotations`` (``bbox`` = [x, y, w, h] in
pixels, top-left corner) and ``categories``.

Boxes are stored as ``x0, y0, x1, y1`` = ``x, y, x + w, y + h`` in pixels of the resized image
(scaled by ``new / old`` per axis), clipped to the image. Categories are ordered by their
``id``; class index ``k`` is the ``k``-th category. Crowd annotations (``iscrowd: 1``) are
skipped by default, as are boxes with zero width or height after clipping (both counted in the
notes). Images without annotations are kept (negatives).

Splits: pass one file per split (``{"train": a.json, "val": b.json}``) to keep them; with one
file a seeded split stratified by the number of boxes (0, 1, 2, 3+) is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import DataError
from ..tasks import TaskSpec
from ._common import (DEFAULT_RATIOS, ImportResult, Sample, canonical_split, check_size, finish, load_image_2d,
                      probe_channels, stratified_split)

__all__ = ["import_coco"]


def import_coco(annotations: str | Path | Mapping[str, str | Path], db: str | Path, task: str, *, modality: str,
                image_size: Sequence[int], images_root: str | Path | None = None, include_crowd: bool = False,
                channels: int | None = None, split_ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0,
                normalize: str = "dtype", fit: str = "stretch", image_dtype: str = "float16", description: str = "",
                group: str = "pretrain", progress: bool = False) -> ImportResult:
    """Import COCO-style detection annotations.

    Args:
        annotations: one JSON file, or ``{split: JSON file}`` to keep given splits (the files
            must share the same categories).
        db: database folder (created if missing; the task is added otherwise).
        task: task name.
        modality: modality group.
        image_size: (H, W) of the stored images.
        images_root: folder ``file_name`` is relative to; default the JSON file's folder.
        include_crowd: keep ``iscrowd`` annotations as ordinary boxes.
        channels, split_ratios, seed, normalize, fit, image_dtype, description, group, progress: as
            in :func:`~medfoundry.data.adapters.import_image_folder`.

    Returns:
        An :class:`ImportResult`; its notes count skipped boxes.
    """
    size = check_size(image_size, fit=fit)
    files = {None: Path(annotations)} if isinstance(annotations, (str, Path)) else \
        {canonical_split(k): Path(v) for k, v in annotations.items()}
    categories: list[dict[str, Any]] | None = None
    records: list[dict[str, Any]] = []
    skipped = {"crowd": 0, "empty": 0}
    for split, path in files.items():
        data = _load_json(path)
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        if categories is None:
            categories = cats
        elif [(c["id"], c["name"]) for c in cats] != [(c["id"], c["name"]) for c in categories]:
            raise DataError("categories differ from those of the first annotation file", path=path,
                            field="categories")
        cat_index = {int(c["id"]): k for k, c in enumerate(categories)}
        root = Path(images_root) if images_root is not None else path.parent
        per_image: dict[Any, list[dict[str, Any]]] = {}
        for a, ann in enumerate(data["annotations"]):
            for key in ("image_id", "bbox", "category_id"):
                if key not in ann:
                    raise DataError(f"annotation #{a} has no {key!r}", path=path, field="annotations")
            per_image.setdefault(ann["image_id"], []).append(ann)
        for im in data["images"]:
            for key in ("id", "file_name"):
                if key not in im:
                    raise DataError(f"image entry {im!r:.80} has no {key!r}", path=path, field="images")
            boxes, labels = [], []
            for ann in per_image.get(im["id"], []):
                if ann.get("iscrowd", 0) and not include_crowd:
                    skipped["crowd"] += 1
                    continue
                bbox = ann["bbox"]
                if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                    raise DataError(f"annotation {ann.get('id', '?')}: bbox must be [x, y, w, h], got {bbox!r}",
                                    path=path, field="bbox")
                if int(ann["category_id"]) not in cat_index:
                    raise DataError(f"annotation {ann.get('id', '?')}: category_id {ann['category_id']} is not "
                                    f"in categories", path=path, field="category_id")
                x, y, w, h = (float(v) for v in bbox)
                boxes.append([x, y, x + w, y + h])
                labels.append(cat_index[int(ann["category_id"])])
            records.append({"path": root / im["file_name"], "name": str(im["file_name"]), "split": split,
                            "hw": (im.get("height"), im.get("width")), "json": path,
                            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                            "labels": np.asarray(labels, np.int64)})
    if not records:
        raise DataError("no images listed", path=next(iter(files.values())), field="images")
    missing = [str(r["path"]) for r in records if not r["path"].is_file()]
    if missing:
        raise DataError(f"{len(missing)} image file(s) do not exist, e.g. {missing[:3]}",
                        path=next(iter(files.values())), field="file_name")
    if files.keys() == {None}:
        strata = np.array([min(len(r["labels"]), 3) for r in records])
        splits = stratified_split(strata, split_ratios, seed)
    else:
        splits = {s: [i for i, r in enumerate(records) if r["split"] == s] for s in ("train", "val", "test")}
    classes = tuple(str(c["name"]) for c in categories or [])
    channels = probe_channels(records[0]["path"], normalize) if channels is None else int(channels)
    spec = TaskSpec(task, "detection", classes, modality, 2, size, channels,
                    description=description or "detection imported from COCO json", group=group)

    def load(i: int) -> Sample:
        r = records[i]
        image, spacing, plan = load_image_2d(r["path"], size, channels, normalize, fit)
        old = plan.old
        h, w = r["hw"]
        if h is not None and w is not None and (int(h), int(w)) != old:
            raise DataError(f"image {r['name']} is {old[0]}x{old[1]} pixels but the JSON says height={h}, "
                            f"width={w}", path=r["json"], field="images")
        boxes = r["boxes"].copy()
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, old[1])
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, old[0])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        skipped["empty"] += int((~keep).sum())
        boxes = plan.boxes(boxes[keep])
        return Sample(image, {"boxes": boxes, "labels": r["labels"][keep]}, spacing, r["name"])

    notes: list[str] = []
    result = finish(db, spec, list(range(len(records))), load, splits, image_dtype, progress, notes)
    if skipped["crowd"]:
        result.notes.append(f"{skipped['crowd']} crowd annotation(s) skipped (include_crowd=False)")
    if skipped["empty"]:
        result.notes.append(f"{skipped['empty']} box(es) with no area inside the image skipped")
    return result


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError("annotation file does not exist", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err}", path=path) from err
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"missing list {key!r} (expected COCO layout)", path=path, field=key)
    if not data["categories"]:
        raise DataError("no categories", path=path, field="categories")
    return data
