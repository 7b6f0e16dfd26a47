"""MedMNIST-layout ``.npz``: ``train_images``, ``train_labels``, ``val_*``, ``test_*``.

Images are uint8 ``(N, H, W)`` (grey), ``(N, H, W, 3)`` (RGB) or ``(N, D, H, W)`` (the 3D
sets, stored as a ``spatial_dims=3`` task). Labels ``(N, 1)`` are class indices
(classification); ``(N, K)`` with K > 1 are 0/1 (multilabel, e.g. ChestMNIST). MedMNIST's own
splits are kept. Images are divided by 255.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ..tasks import TaskSpec
from ._common import ImportResult, Sample, finish, match_channels, resize_image

__all__ = ["import_medmnist"]

_SPLIT_KEYS = {"train": "train", "val": "val", "test": "test"}


def import_medmnist(npz: str | Path, db: str | Path, task: str, *, modality: str,
                    image_size: Sequence[int] | None = None, classes: Sequence[str] | None = None,
                    kind: str | None = None, channels: int | None = None, image_dtype: str = "uint8",
                    description: str = "", group: str = "pretrain", progress: bool = False) -> ImportResult:
    """Import a MedMNIST(-layout) npz file as a classification or multilabel task.

    Args:
        npz: the ``.npz`` file.
        db: database folder (created if missing; the task is added otherwise).
        task: task name.
        modality: modality group.
        image_size: stored spatial size; default the file's own (28, 64, 128 or 224).
        classes: class names; default ``class_0 .. class_{K-1}`` (MedMNIST's ``INFO`` has the
            real names).
        kind: ``classification`` or ``multilabel``; default from the label shape.
        channels: stored channels; default the file's.
        image_dtype: storage dtype; ``uint8`` (default) is lossless for MedMNIST's 8-bit images.
        description, group, progress: as in :func:`~medfoundry.data.adapters.import_image_folder`.
    """
    npz = Path(npz)
    if not npz.is_file():
        raise DataError("npz file does not exist", path=npz)
    try:
        data = np.load(npz, allow_pickle=False)
        keys = set(data.files)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read npz: {err}", path=npz) from err
    present = [s for s in _SPLIT_KEYS if f"{s}_images" in keys]
    if not present:
        raise DataError(f"no '<split>_images' arrays (keys: {sorted(keys)}); expected MedMNIST layout", path=npz)
    # Images are loaded one split at a time (npz members cannot be memory-mapped, and the
    # 224-pixel MedMNIST+ files are large); labels are small and loaded at once.
    labels, split_of, local = [], [], []
    for s in present:
        if f"{s}_labels" not in keys:
            raise DataError(f"'{s}_images' has no '{s}_labels'", path=npz, field=f"{s}_labels")
        lab = data[f"{s}_labels"]
        if lab.ndim == 1:
            lab = lab[:, None]
        labels.append(lab)
        split_of += [s] * len(lab)
        local += list(range(len(lab)))
    widths = {lab.shape[1] for lab in labels}
    if len(widths) > 1:
        raise DataError(f"label widths differ between splits: {sorted(widths)}", path=npz, field="labels")
    lab_all = np.concatenate(labels).astype(np.int64)
    current: dict[str, np.ndarray] = {}

    def split_images(split: str) -> np.ndarray:
        if split not in current:
            current.clear()
            im = data[f"{split}_images"]
            expected = split_of.count(split)
            if len(im) != expected:
                raise DataError(f"{len(im)} images but {expected} labels", path=npz, field=f"{split}_images")
            current[split] = im
        return current[split]

    img_first = split_images(present[0])
    kind = kind or ("multilabel" if lab_all.shape[1] > 1 else "classification")
    if kind == "classification":
        if lab_all.shape[1] != 1:
            raise DataError(f"classification needs one label per image, got {lab_all.shape[1]}", path=npz,
                            field="labels")
        lab_all = lab_all[:, 0]
        k = int(lab_all.max()) + 1 if classes is None else len(classes)
        if lab_all.min() < 0 or lab_all.max() >= k:
            raise DataError(f"labels span {lab_all.min()}..{lab_all.max()}, outside {k} classes", path=npz,
                            field="labels")
    elif kind == "multilabel":
        if not np.isin(lab_all, (0, 1)).all():
            raise DataError("multilabel labels must be 0/1", path=npz, field="labels")
        k = lab_all.shape[1]
    else:
        raise DataError(f"kind must be classification or multilabel, got {kind!r}", field="kind")
    names = tuple(classes) if classes is not None else tuple(f"class_{i}" for i in range(max(k, 2 if kind ==
                                                                                             "classification" else 1)))
    if kind == "multilabel" and len(names) != k:
        raise DataError(f"{len(names)} class names for {k} label columns", field="classes")
    rgb = img_first.ndim == 4 and img_first.shape[-1] == 3
    dims = 3 if (img_first.ndim == 4 and not rgb) else 2
    native = img_first.shape[1:1 + dims]
    size = tuple(int(s) for s in (image_size if image_size is not None else native))
    if len(size) != dims:
        raise DataError(f"image_size needs {dims} entries for these {dims}D images, got {list(size)}",
                        field="image_size")
    file_channels = 3 if rgb else 1
    channels = file_channels if channels is None else int(channels)
    spec = TaskSpec(task, kind, names, modality, dims, size, channels,
                    description=description or f"{kind} imported from {npz.name}", group=group)
    splits = {s: [i for i, sp in enumerate(split_of) if sp == s] for s in ("train", "val", "test")}
    scale = 255.0 if img_first.dtype == np.uint8 else 1.0
    del img_first

    def load(i: int) -> Sample:
        im = split_images(split_of[i])[local[i]].astype(np.float32) / scale
        im = np.moveaxis(im, -1, 0) if rgb else im[None]
        im = resize_image(match_channels(im, channels, npz), size)
        target = int(lab_all[i]) if kind == "classification" else lab_all[i].astype(np.float32)
        return Sample(im, target, None, f"{split_of[i]}[{local[i]}]")

    return finish(db, spec, list(range(len(split_of))), load, splits, image_dtype, progress)
