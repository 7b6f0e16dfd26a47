"""Semantic segmentation: one class index per pixel/voxel, 0 = background.

Stored: ``masks.npy`` (N, *image_size) uint8. Target and prediction: label map, int64.
Primary metric ``dice``: mean over test cases of the mean foreground Dice over classes (a
class absent from both prediction and reference is NaN and left out); HD95 in mm where the
spacing is known, else in pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..evaluation.segmentation import per_class_dice, per_class_hd95
from ..models.heads import SegmentationHead
from . import register_kind
from .base import Kind, KindWriter, ValidationContext, format_items, to_numpy

__all__ = ["SegmentationKind", "segmentation_case_values"]

_CHUNK_BYTES = 64 * 2**20  # masks scanned per step by the inspect summary


def _nanmean(x: Any) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def segmentation_case_values(spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                             spacings: Sequence[Any] | None = None, with_hd95: bool = True
                             ) -> dict[str, np.ndarray]:
    """Per-case, per-class Dice and HD95 arrays, each (N, num_classes - 1) (background left out).

    HD95 is in mm where a case's spacing is known, else in pixels; a class with exactly one
    empty mask has NaN HD95 (excluded from means, see :mod:`medfoundry.evaluation.segmentation`).
    """
    n = len(preds)
    labels = range(1, spec.num_classes)
    dice = np.full((n, len(labels)), np.nan)
    hd = np.full((n, len(labels)), np.nan)
    for i, (p, t) in enumerate(zip(preds, targets)):
        p, t = to_numpy(p).astype(np.int64), to_numpy(t).astype(np.int64)
        dice[i] = per_class_dice(p, t, labels=labels)
        if with_hd95:
            sp = None if spacings is None else spacings[i]
            sp = None if sp is None else [float(s) for s in to_numpy(sp).reshape(-1)]
            hd[i] = per_class_hd95(p, t, labels=labels, spacing=sp)
    return {"dice": dice, "hd95": hd}


def _case_dice(spec: Any, preds: Sequence[Any], targets: Sequence[Any]) -> np.ndarray:
    dice = segmentation_case_values(spec, preds, targets, with_hd95=False)["dice"]
    with np.errstate(all="ignore"):
        return np.array([_nanmean(row) for row in dice])


class MaskWriter(KindWriter):
    def __init__(self, folder: Path, spec: Any, n: int):
        super().__init__(folder, spec, n)
        self.masks = np.lib.format.open_memmap(folder / "masks.npy", mode="w+", dtype=np.uint8,
                                               shape=(n, *spec.image_size))

    def set(self, i: int, target: Any) -> None:
        mask = np.asarray(target)
        if mask.shape != tuple(self.spec.image_size):
            raise DataError(f"task {self.spec.name!r} sample {i}: mask shape {mask.shape}, "
                            f"expected {tuple(self.spec.image_size)}", field="masks")
        self.masks[i] = mask.astype(np.uint8)

    def close(self) -> None:
        self.masks.flush()
        del self.masks


class SegmentationKind(Kind):
    name = "segmentation"
    arrays = ("masks",)
    min_classes = 2
    primary_metric = "dice"
    pooled = False
    head = SegmentationHead

    def writer(self, folder: Path, spec: Any, n: int) -> KindWriter:
        return MaskWriter(folder, spec, n)

    def target(self, db: Any, task: str, index: int) -> np.ndarray:
        return np.array(db.array(task, "masks")[index], dtype=np.int64)

    def example_target(self, spec: Any, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(spec.num_classes, size=spec.image_size).astype(np.int64)

    def validate(self, spec: Any, ctx: ValidationContext) -> None:
        path = ctx.folder / "masks.npy"
        masks = ctx.load("masks")
        if masks is None:
            return
        if tuple(masks.shape[1:]) != tuple(spec.image_size):
            ctx.error(path, "masks", f"shape {tuple(masks.shape)}, expected "
                      f"(N, {', '.join(map(str, spec.image_size))}) matching image_size")
            return
        if masks.dtype.kind not in "iu":
            ctx.error(path, "masks", f"dtype {masks.dtype}, expected an integer type (uint8)")
            return
        ctx.count_mismatch(path, "masks", len(masks))
        advance = ctx.progress(f"{spec.name}: masks", len(masks))
        bad: list[tuple[int, int]] = []
        for a, b in ctx.chunks(masks):
            block = np.asarray(masks[a:b]).reshape(b - a, -1)
            hi, lo = block.max(axis=1), block.min(axis=1)
            for j in np.flatnonzero((hi >= spec.num_classes) | (lo < 0)):
                bad.append((a + int(j), int(hi[j]) if hi[j] >= spec.num_classes else int(lo[j])))
            advance(b - a)
        if bad:
            ctx.error(path, "masks", f"{len(bad)} mask(s) hold values outside 0..{spec.num_classes - 1} "
                      f"({spec.num_classes} classes), e.g. sample {bad[0][0]} has value {bad[0][1]}")

    def invalid_targets(self, spec: Any, db: Any, task: str) -> tuple[str, str, np.ndarray, np.ndarray]:
        masks = db.array(task, "masks")
        n, k = len(masks), spec.num_classes
        step = max(1, _CHUNK_BYTES // max(1, int(np.prod(masks.shape[1:])) * masks.itemsize))
        lo, hi = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for a in range(0, n, step):  # chunks keep memory flat on databases larger than RAM
            block = np.asarray(masks[a:a + step]).reshape(min(step, n - a), -1)
            lo[a:a + step], hi[a:a + step] = block.min(axis=1), block.max(axis=1)
        bad = np.flatnonzero((lo < 0) | (hi >= k))
        return "masks", f"0..{k - 1}", bad, np.where(lo[bad] < 0, lo[bad], hi[bad])

    def strata(self, db: Any, task: str) -> np.ndarray:
        masks = db.array(task, "masks")
        out = np.empty(len(masks), dtype=np.int64)
        for i in range(len(masks)):  # one sample at a time keeps memory flat for large databases
            out[i] = int(np.max(masks[i]))
        return out

    def collate(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(t) for t in targets])).long()

    def summary(self, db: Any, task: str) -> dict[str, Any]:
        spec = db.task(task)
        k, masks = spec.num_classes, db.array(task, "masks")
        n = len(masks)
        pixels = np.zeros(k, dtype=np.int64)
        present = np.zeros(k, dtype=np.int64)
        step = max(1, _CHUNK_BYTES // max(1, int(np.prod(masks.shape[1:])) * masks.itemsize))
        for a in range(0, n, step):
            block = np.asarray(masks[a:a + step]).reshape(min(step, n - a), -1).astype(np.int64).clip(0, k - 1)
            pixels += np.bincount(block.ravel(), minlength=k)[:k]
            for c in range(k):
                present[c] += int((block == c).any(axis=1).sum())
        total = max(1, int(pixels.sum()))
        return {"pixel_share": {c: float(v) / total for c, v in zip(spec.classes, pixels)},
                "samples_with": {c: int(v) for c, v in zip(spec.classes, present)}}

    def summary_text(self, balance: dict[str, Any], limit: int = 12) -> str:
        return "pixels " + format_items(balance["pixel_share"], lambda v: f"{100 * v:.2f}%", limit)

    def draw(self, ax: Any, spec: Any, target: Any, palette: Sequence[Any]) -> str:
        from matplotlib.colors import ListedColormap

        mask = np.ma.masked_equal(np.asarray(target), 0)
        colours = ListedColormap([(0, 0, 0, 0)] + [palette[(c - 1) % 10] for c in range(1, spec.num_classes)])
        ax.imshow(mask, cmap=colours, vmin=-0.5, vmax=spec.num_classes - 0.5, alpha=0.45, interpolation="nearest")
        present = [spec.classes[c] for c in np.unique(np.asarray(target)) if c > 0]
        return ", ".join(present) if present else "(background)"

    def legend(self, spec: Any, palette: Sequence[Any]) -> list[Any]:
        from matplotlib.patches import Patch

        return [Patch(color=palette[(c - 1) % 10], label=spec.classes[c]) for c in range(1, spec.num_classes)]

    def metrics(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                spacings: Sequence[Any] | None = None) -> dict[str, float]:
        vals = segmentation_case_values(spec, preds, targets, spacings)
        out = {"n": float(len(preds))}
        with np.errstate(all="ignore"):
            out["dice"] = _nanmean([_nanmean(row) for row in vals["dice"]])
            out["hd95"] = _nanmean([_nanmean(row) for row in vals["hd95"]])
            for j, name in enumerate(spec.classes[1:]):
                out[f"dice/{name}"] = _nanmean(vals["dice"][:, j])
                out[f"hd95/{name}"] = _nanmean(vals["hd95"][:, j])
        return out

    def primary_score(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any]) -> float:
        # Dice only: HD95 is too slow for every validation pass of early stopping.
        return _nanmean(_case_dice(spec, preds, targets))

    def bootstrap(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                  resamples: np.ndarray) -> np.ndarray:
        case = _case_dice(spec, preds, targets)
        finite = np.isfinite(case)
        cz = np.where(finite, case, 0.0)
        num = cz[resamples].sum(axis=1)
        den = finite[resamples].sum(axis=1)
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    def chance_level(self, spec: Any) -> float:
        # A conservative floor: an empty prediction has Dice 0.
        return 0.0


register_kind(SegmentationKind())
