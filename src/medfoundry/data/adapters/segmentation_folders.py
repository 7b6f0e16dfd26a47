"""Segmentation from an image folder and a mask folder with matching file stems.

``images/case01.png`` pairs with ``masks/case01.png``, ``masks/case01_mask.png`` (any of the
suffixes ``_mask``, ``_seg``, ``_label``, ``_gt``, ``-mask`` or the one given), in any mix of
PNG, TIFF, 2D NIfTI and DICOM. Mask values are mapped to class indices:

* ``mask_values=[0, 128, 255]``: the value at position ``k`` becomes class ``k``;
* default: the distinct values found in all masks, sorted, become ``0 .. K-1`` (so a 0/255
  mask becomes background/foreground). With ``classes`` given and values already ``0 .. K-1``
  they are kept as they are.

A value that is not mapped is an error naming the mask file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from ...io import IMAGE_SUFFIXES, read_image
from ..tasks import TaskSpec
from ._common import (DEFAULT_RATIOS, ImportResult, Sample, check_size, finish, list_files, load_image_2d,
                      probe_channels, stratified_split, strip_suffix)

__all__ = ["import_segmentation_folders", "MASK_SUFFIXES", "build_value_map"]

MASK_SUFFIXES = ("_mask", "_seg", "_label", "_labels", "_gt", "-mask", "_segmentation")


def import_segmentation_folders(images_dir: str | Path, masks_dir: str | Path, db: str | Path, task: str, *,
                                modality: str, image_size: Sequence[int], classes: Sequence[str] | None = None,
                                mask_values: Sequence[int] | None = None, mask_suffix: str | None = None,
                                channels: int | None = None, split_ratios: Sequence[float] = DEFAULT_RATIOS,
                                seed: int = 0, normalize: str = "dtype", fit: str = "stretch",
                                image_dtype: str = "float16",
                                description: str = "", group: str = "pretrain",
                                progress: bool = False) -> ImportResult:
    """Import image/mask pairs as a segmentation task.

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks (same stems, optionally with a mask suffix).
        db: database folder (created if missing; the task is added otherwise).
        task: task name.
        modality: modality group.
        image_size: (H, W) of the stored images and masks (images linear, masks nearest).
        classes: class names, index 0 = background; default ``background, class_<value>...``.
        mask_values: raw mask value of each class, in class order (module docstring).
        mask_suffix: suffix of mask stems (default: try the common ones).
        channels, split_ratios, seed, normalize, fit, image_dtype, description, group, progress: as
            in :func:`~medfoundry.data.adapters.import_image_folder`. The split is stratified
            by the highest class index present in each mask.

    Returns:
        An :class:`ImportResult`; its notes list masks without an image.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    size = check_size(image_size, fit=fit)
    images = list_files(images_dir, IMAGE_SUFFIXES)
    masks = list_files(masks_dir, IMAGE_SUFFIXES)
    if not images:
        raise DataError("no images found", path=images_dir)
    suffixes = (mask_suffix,) if mask_suffix is not None else ("",) + MASK_SUFFIXES
    by_stem: dict[str, Path] = {}
    for m in masks:
        stem = strip_suffix(m)
        for suf in suffixes:
            key = stem[: len(stem) - len(suf)] if suf and stem.endswith(suf) else (stem if not suf else None)
            if key is not None:
                by_stem.setdefault(key, m)
    pairs = []
    unmatched = []
    for img in images:
        m = by_stem.get(strip_suffix(img))
        if m is None:
            unmatched.append(img.name)
        else:
            pairs.append((img, m))
    if unmatched:
        raise DataError(f"{len(unmatched)} image(s) have no mask in {masks_dir}, e.g. {unmatched[:3]} "
                        f"(mask suffixes tried: {[s for s in suffixes if s]})", path=images_dir, field="masks")
    used = {m for _, m in pairs}
    notes = [f"{len(masks) - len(used)} mask(s) without an image were ignored"] if len(used) < len(masks) else []

    # Pass 1 keeps only each mask's set of values (not the masks: 10k large masks would not fit
    # in memory); pass 2 reads each mask again beside its image.
    mask_values_found = [set(np.unique(_read_mask(m)).tolist()) for _, m in pairs]
    values = sorted(set().union(*mask_values_found))
    value_map = build_value_map(values, classes, mask_values, masks_dir)
    if classes is None:
        classes = ["background"] + [f"class_{v}" for v, k in sorted(value_map.items(), key=lambda t: t[1]) if k > 0]
    lut_keys = np.array(sorted(value_map), dtype=np.int64)
    lut_vals = np.array([value_map[v] for v in lut_keys], dtype=np.int64)
    strata = []
    for (_, mpath), found in zip(pairs, mask_values_found):
        bad = sorted(found - set(value_map))
        if bad:
            raise DataError(f"mask values {bad[:5]} are not mapped to a class (mapping: {value_map})",
                            path=mpath, field="mask_values")
        strata.append(max(value_map[v] for v in found))
    splits = stratified_split(np.asarray(strata), split_ratios, seed)
    channels = probe_channels(pairs[0][0], normalize) if channels is None else int(channels)
    spec = TaskSpec(task, "segmentation", tuple(classes), modality, 2, size, channels,
                    description=description or f"segmentation imported from {images_dir.name}", group=group)

    def load(i: int) -> Sample:
        img_path, mask_path = pairs[i]
        image, spacing, plan = load_image_2d(img_path, size, channels, normalize, fit)
        mask = _read_mask(mask_path)
        if mask.shape != plan.old:
            raise DataError(f"mask shape {mask.shape} differs from its image's {plan.old} ({img_path.name})",
                            path=mask_path, field="masks")
        mask = lut_vals[np.searchsorted(lut_keys, mask)].astype(np.uint8)
        return Sample(image, plan.mask(mask), spacing, img_path.name)

    return finish(db, spec, list(range(len(pairs))), load, splits, image_dtype, progress, notes)


def _read_mask(path: Path) -> np.ndarray:
    array = read_image(path, label=True).array[0]
    if not np.all(np.isfinite(array)) or not np.all(array == np.rint(array)) or array.min() < 0:
        raise DataError("mask holds values that are not non-negative integers", path=path, field="masks")
    return array.astype(np.int64)


def build_value_map(values: Sequence[int], classes: Sequence[str] | None, mask_values: Sequence[int] | None,
                    where: Path | str) -> dict[int, int]:
    """Map raw label values to class indices (rules in the module docstring)."""
    values = [int(v) for v in values]
    if mask_values is not None:
        mv = [int(v) for v in mask_values]
        if len(set(mv)) != len(mv):
            raise DataError(f"mask_values {mv} repeat a value", field="mask_values")
        if classes is not None and len(classes) != len(mv):
            raise DataError(f"{len(classes)} classes but {len(mv)} mask_values", field="mask_values")
        return {v: k for k, v in enumerate(mv)}
    if classes is not None:
        k = len(classes)
        if all(0 <= v < k for v in values):
            return {v: v for v in range(k)}
        if len(values) == k:
            return {v: i for i, v in enumerate(values)}
        raise DataError(f"labels hold values {values[:10]} that do not fit {k} classes {list(classes)}; "
                        "pass mask_values (--mask-values) to map them", path=where, field="mask_values")
    if len(values) > 255:
        raise DataError(f"labels hold {len(values)} distinct values; is this an image folder?", path=where,
                        field="masks")
    if values and values[0] != 0:
        values = [0] + values  # class 0 is always the background, present or not
    return {v: i for i, v in enumerate(values)}
