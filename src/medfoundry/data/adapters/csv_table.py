"""Classification or multilabel from a CSV table of image paths and labels.

Accepted label layouts:

* one label column of class names -> classification (``kind="multilabel"`` or a value
  containing the separator, e.g. ``effusion|edema``, makes it multilabel; an empty cell then
  means "no positive label");
* several 0/1 columns, one per class (CheXpert / NIH style) -> multilabel; the column names are
  the class names. ``uncertain_as`` maps the value ``-1`` (CheXpert's "uncertain") to 0 or 1.

An optional split column (``train``/``val``/``test`` or aliases) is used as given; without
one, a seeded stratified split is drawn, by patient when ``group_column`` is set so that no
patient lands in two splits.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ..tasks import TaskSpec
from ._common import (DEFAULT_RATIOS, ImportResult, Sample, canonical_split, check_size, finish, grouped_split,
                      load_image_2d, natural_key, probe_channels, stratified_split)

__all__ = ["import_csv"]

_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}


def import_csv(csv_path: str | Path, db: str | Path, task: str, *, modality: str, image_size: Sequence[int],
               image_column: str = "path", label_columns: Sequence[str] | None = None, kind: str | None = None,
               separator: str = "|", classes: Sequence[str] | None = None, split_column: str | None = "split",
               group_column: str | None = None, images_root: str | Path | None = None,
               uncertain_as: int | None = None, channels: int | None = None,
               split_ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0, normalize: str = "dtype",
               fit: str = "stretch", image_dtype: str = "float16", description: str = "", group: str = "pretrain",
               progress: bool = False) -> ImportResult:
    """Import a CSV of image paths and labels as a classification or multilabel task.

    Args:
        csv_path: the table with a header row; comma, semicolon or tab separated (the most
            frequent of the three in the header line).
        db: database folder (created if missing; the task is added otherwise).
        task: task name.
        modality: modality group.
        image_size: (H, W) in pixels of the stored images.
        image_column: column with image paths, relative to ``images_root``.
        label_columns: label column(s); default ``label`` (or ``labels``) if present.
        kind: ``classification`` or ``multilabel``; default inferred (module docstring).
        separator: separator of several labels in one cell.
        classes: class names in index order; default: sorted values (one column) or the
            column names (several columns). Values not listed are an error.
        split_column: column with the split; used when present in the header.
        group_column: patient/study column; the random split then keeps each group together.
        images_root: folder the paths are relative to; default the CSV's folder.
        uncertain_as: value (0 or 1) given to ``-1`` cells of 0/1 columns; default: error.
        channels, split_ratios, seed, normalize, fit, image_dtype, description, group, progress: as
            in :func:`~medfoundry.data.adapters.import_image_folder`.

    Returns:
        An :class:`ImportResult`.
    """
    csv_path = Path(csv_path)
    size = check_size(image_size, fit=fit)
    root = Path(images_root) if images_root is not None else csv_path.parent
    if not csv_path.is_file():
        raise DataError("CSV file does not exist", path=csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        head = fh.readline()
        fh.seek(0)
        # Tab- or semicolon-separated exports (spreadsheets in many locales) read the same.
        delimiter = max((",", ";", "\t"), key=head.count) if head else ","
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if not rows:
        raise DataError("CSV has no data rows", path=csv_path)
    if image_column not in header:
        raise DataError(f"image column {image_column!r} not in the header {header}", path=csv_path,
                        field=image_column)
    if label_columns is None:
        default = [c for c in ("label", "labels") if c in header]
        if not default:
            raise DataError(f"no 'label' column; pass label_columns (header: {header})", path=csv_path,
                            field="label_columns")
        label_columns = default[:1]
    label_columns = list(label_columns)
    for col in label_columns + [c for c in (group_column,) if c]:
        if col not in header:
            raise DataError(f"column {col!r} not in the header {header}", path=csv_path, field=col)
    if kind is not None and kind not in ("classification", "multilabel"):
        raise DataError(f"kind must be classification or multilabel, got {kind!r}", field="kind")

    def where(r: int) -> str:
        return f"{csv_path}, row {r + 2}"  # +2: header line and 1-based numbering

    if len(label_columns) > 1:
        if kind == "classification":
            raise DataError("several label columns make a multilabel task, not classification", path=csv_path,
                            field="kind")
        kind = "multilabel"
        names = [str(c) for c in (classes or label_columns)]
        if list(names) != label_columns:
            raise DataError(f"with several label columns the classes are the column names {label_columns}",
                            path=csv_path, field="classes")
        labels = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for r, row in enumerate(rows):
            for k, col in enumerate(label_columns):
                labels[r, k] = _binary(row[col], uncertain_as, where(r), col)
    else:
        col = label_columns[0]
        cells = [str(row[col] or "").strip() for row in rows]
        if kind is None:
            kind = "multilabel" if any(separator in c for c in cells) else "classification"
        if kind == "multilabel":
            lists = [[v.strip() for v in c.split(separator) if v.strip()] if c else [] for c in cells]
            found = sorted({v for vs in lists for v in vs}, key=natural_key)
            names = [str(c) for c in classes] if classes is not None else found
            _check_known(found, names, csv_path, col)
            index = {c: i for i, c in enumerate(names)}
            labels = np.zeros((len(rows), len(names)), dtype=np.uint8)
            for r, vs in enumerate(lists):
                labels[r, [index[v] for v in vs]] = 1
        else:
            for r, c in enumerate(cells):
                if not c:
                    raise DataError(f"empty label in {where(r)}", path=csv_path, field=col)
            found = sorted(set(cells), key=natural_key)
            names = [str(c) for c in classes] if classes is not None else found
            _check_known(found, names, csv_path, col)
            index = {c: i for i, c in enumerate(names)}
            labels = np.array([index[c] for c in cells], dtype=np.int64)

    paths = []
    for r, row in enumerate(rows):
        cell = str(row[image_column] or "").strip()
        if not cell:
            raise DataError(f"empty image path in {where(r)}", path=csv_path, field=image_column)
        p = Path(cell)
        paths.append(p if p.is_absolute() else root / p)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image file(s) listed in the CSV do not exist, e.g. {missing[:3]}",
                        path=csv_path, field=image_column)

    if kind == "classification":
        strata = labels
    else:
        from ...tasks.strata import multilabel_strata  # the multilabel kind's strata, without torch

        strata = multilabel_strata(labels)
    if split_column and split_column in header:
        given = [canonical_split(row[split_column], where(r), split_column) for r, row in enumerate(rows)]
        splits = {s: [i for i, g in enumerate(given) if g == s] for s in ("train", "val", "test")}
    elif group_column:
        splits = grouped_split([row[group_column] for row in rows], strata, split_ratios, seed)
    else:
        splits = stratified_split(strata, split_ratios, seed)

    channels = probe_channels(paths[0], normalize) if channels is None else int(channels)
    spec = TaskSpec(task, kind, tuple(names), modality, 2, size, channels,
                    description=description or f"{kind} imported from {csv_path.name}", group=group)

    def load(i: int) -> Sample:
        image, spacing, _ = load_image_2d(paths[i], size, channels, normalize, fit)
        target = int(labels[i]) if kind == "classification" else labels[i].astype(np.float32)
        return Sample(image, target, spacing, str(rows[i][image_column]))

    return finish(db, spec, list(range(len(rows))), load, splits, image_dtype, progress)


def _binary(value: str | None, uncertain_as: int | None, where: str, col: str) -> int:
    v = str(value if value is not None else "").strip().lower()
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    if v in ("-1", "-1.0") and uncertain_as in (0, 1):
        return int(uncertain_as)
    hint = "; pass uncertain_as=0 or 1 (--uncertain-as) for -1 cells" if v in ("-1", "-1.0") else ""
    raise DataError(f"value {value!r} in {where} is not 0/1{hint}", field=col)


def _check_known(found: list[str], names: list[str], path: Path, col: str) -> None:
    unknown = [v for v in found if v not in names]
    if unknown:
        raise DataError(f"labels {unknown} are not in the given classes {names}", path=path, field=col)
