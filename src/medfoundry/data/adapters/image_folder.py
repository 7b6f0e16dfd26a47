"""Classification from a folder per class: ``root/<class>/*.png``.

Images may sit in sub-folders of a class folder (``root/<class>/<patient>/*.png``); hidden
files and folders are skipped.

If every sub-folder of ``root`` is a split name (``train``, ``val``/``valid``/``validation``,
``test``), the layout ``root/<split>/<class>/*`` is read and those splits are kept; otherwise
a seeded stratified split is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ...io import IMAGE_SUFFIXES
from ..tasks import TaskSpec
from ._common import (DEFAULT_RATIOS, ImportResult, Sample, canonical_split, check_size, finish, list_files,
                      load_image_2d, natural_key, probe_channels, stratified_split)

__all__ = ["import_image_folder"]


def import_image_folder(src: str | Path, db: str | Path, task: str, *, modality: str, image_size: Sequence[int],
                        channels: int | None = None, classes: Sequence[str] | None = None,
                        split_ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0, normalize: str = "dtype",
                        fit: str = "stretch", image_dtype: str = "float16", description: str = "",
                        group: str = "pretrain",
                        progress: bool = False) -> ImportResult:
    """Import ``src/<class>/<image>`` (or ``src/<split>/<class>/<image>``) as a classification task.

    Args:
        src: root folder; each sub-folder name is a class name.
        db: database folder (created if missing; the task is added otherwise).
        task: task name, ``[a-z0-9_]+``.
        modality: ``tomographic``, ``microscopic``, ``x-ray`` or ``other``.
        image_size: (H, W) in pixels of the stored images.
        channels: stored channels; default: those of the first image (1 <-> 3 converted).
        classes: class names in index order; default: the sub-folder names in natural order.
            Sub-folders not listed are an error (a typo would otherwise drop a class).
        split_ratios: train/val/test ratios of the seeded stratified split.
        seed: seed of that split.
        normalize: intensity mode of :func:`medfoundry.io.read_image` (default ``dtype``).
        fit: ``stretch`` to ``image_size`` or ``pad`` (keep the aspect ratio, letterbox).
        image_dtype: storage dtype (``float16``, ``float32``, ``uint8``).
        description, group: copied into the TaskSpec.
        progress: show a progress bar.

    Returns:
        An :class:`ImportResult` (spec, split sizes, notes).
    """
    src = Path(src)
    size = check_size(image_size, fit=fit)
    if not src.is_dir():
        raise DataError("image folder does not exist", path=src)
    subdirs = sorted((p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: natural_key(p.name))
    if not subdirs:
        raise DataError("no class sub-folders found (expected root/<class>/<image>)", path=src)
    split_layout = all(_is_split(p.name) for p in subdirs)
    roots = [(canonical_split(p.name, p), p) for p in subdirs] if split_layout else [(None, src)]
    found: list[tuple[Path, str, str | None]] = []
    for split, root in roots:
        for class_dir in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                key=lambda p: natural_key(p.name)):
            for f in list_files(class_dir, IMAGE_SUFFIXES, recursive=True):
                found.append((f, class_dir.name, split))
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in the class folders", path=src)
    names = sorted({c for _, c, _ in found}, key=natural_key)
    if classes is None:
        classes = names
    else:
        classes = [str(c) for c in classes]
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(f"class folders {extra} are not in the given classes {classes}", path=src,
                            field="classes")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for _, c, _ in found], dtype=np.int64)
    if split_layout:
        splits = {s: [i for i, (_, _, sp) in enumerate(found) if sp == s] for s in ("train", "val", "test")}
    else:
        splits = stratified_split(labels, split_ratios, seed)
    channels = probe_channels(found[0][0], normalize) if channels is None else int(channels)
    spec = TaskSpec(task, "classification", tuple(classes), modality, 2, size, channels,
                    description=description or f"classification imported from {src.name}", group=group)

    def load(i: int) -> Sample:
        path = found[i][0]
        image, spacing, _ = load_image_2d(path, size, channels, normalize, fit)
        return Sample(image, int(labels[i]), spacing, str(path.relative_to(src)))

    return finish(db, spec, list(range(len(found))), load, splits, image_dtype, progress)


def _is_split(name: str) -> bool:
    try:
        canonical_split(name)
        return True
    except DataError:
        return False
