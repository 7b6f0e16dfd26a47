"""Detection: boxes in pixels/voxels plus a class per box.

Stored: ``boxes.npy`` (M, 2d) float32 (x0, y0[, z0], x1, y1[, z1]), ``box_labels.npy`` (M,)
int64 and ``box_offsets.npy`` (N + 1,) int64 (sample i owns rows ``off[i]:off[i+1]``).
Target ``{"boxes", "labels"}``; prediction ``{"boxes", "scores", "labels"}``. Primary metric
``map50`` (all-point AP at IoU 0.5, mean over classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..evaluation.detection import detection_metrics, map50_bootstrap
from ..models.heads import DetectionHead
from . import register_kind
from .base import Kind, KindWriter, ValidationContext, format_items, to_numpy

__all__ = ["DetectionKind"]

_BOX_TOLERANCE = 1e-3  # pixels; float16 round-off at the image border is not a problem
_MAX_BOX_TEXT = 6  # boxes per image that still get a class label drawn beside them


class BoxWriter(KindWriter):
    def __init__(self, folder: Path, spec: Any, n: int):
        super().__init__(folder, spec, n)
        self.width = 2 * spec.spatial_dims
        self.boxes: list[np.ndarray] = [np.zeros((0, self.width), np.float32)] * n
        self.labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n

    def set(self, i: int, target: Any) -> None:
        boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, self.width)
        labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
        if len(boxes) != len(labels):
            raise DataError(f"task {self.spec.name!r} sample {i}: {len(boxes)} boxes but {len(labels)} labels",
                            field="boxes")
        self.boxes[i], self.labels[i] = boxes, labels

    def close(self) -> None:
        offsets = np.zeros(self.n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in self.boxes])
        np.save(self.folder / "boxes.npy", np.concatenate(self.boxes).astype(np.float32).reshape(-1, self.width))
        np.save(self.folder / "box_labels.npy", np.concatenate(self.labels).astype(np.int64))
        np.save(self.folder / "box_offsets.npy", offsets)


class DetectionKind(Kind):
    name = "detection"
    arrays = ("boxes", "box_labels", "box_offsets")
    min_classes = 1
    primary_metric = "map50"
    pooled = False
    head = DetectionHead

    def writer(self, folder: Path, spec: Any, n: int) -> KindWriter:
        return BoxWriter(folder, spec, n)

    def target(self, db: Any, task: str, index: int) -> dict[str, np.ndarray]:
        off = db.array(task, "box_offsets")
        a, b = int(off[index]), int(off[index + 1])
        width = 2 * db.task(task).spatial_dims
        return {"boxes": np.array(db.array(task, "boxes")[a:b], dtype=np.float32).reshape(-1, width),
                "labels": np.array(db.array(task, "box_labels")[a:b], dtype=np.int64)}

    def example_target(self, spec: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
        d, m = spec.spatial_dims, int(rng.integers(0, 3))
        size = np.asarray(spec.image_size[::-1], dtype=np.float32)  # box order x, y[, z]
        lo = rng.uniform(0, 0.5, (m, d)) * size
        hi = lo + rng.uniform(0.2, 0.5, (m, d)) * size
        return {"boxes": np.concatenate([lo, hi], 1).astype(np.float32).reshape(m, 2 * d),
                "labels": rng.integers(spec.num_classes, size=m).astype(np.int64)}

    def validate(self, spec: Any, ctx: ValidationContext) -> None:
        folder, n = ctx.folder, ctx.n
        boxes, labels, offsets = ctx.load("boxes"), ctx.load("box_labels"), ctx.load("box_offsets")
        bpath, lpath, opath = folder / "boxes.npy", folder / "box_labels.npy", folder / "box_offsets.npy"
        m = None
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                ctx.error(bpath, "boxes", f"shape {boxes.shape}, expected (M, 4) x0 y0 x1 y1")
                boxes = None
            else:
                m = len(boxes)
        if labels is not None:
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                ctx.error(lpath, "box_labels",
                          f"expected (M,) integers, found shape {labels.shape} dtype {labels.dtype}")
            else:
                if m is not None and len(labels) != m:
                    ctx.error(lpath, "box_labels", f"{len(labels)} labels for {m} boxes")
                bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
                if len(bad):
                    ctx.error(lpath, "box_labels", f"{len(bad)} box label(s) outside 0..{spec.num_classes - 1}, "
                              f"e.g. box {int(bad[0])} = {int(labels[bad[0]])}")
        if offsets is not None:
            off = np.asarray(offsets)
            if off.ndim != 1 or off.dtype.kind not in "iu":
                ctx.error(opath, "box_offsets",
                          f"expected (N + 1,) integers, found shape {off.shape} dtype {off.dtype}")
            else:
                if n is not None and len(off) != n + 1:
                    ctx.error(opath, "box_offsets", f"{len(off)} entries, expected N + 1 = {n + 1}")
                if len(off) and off[0] != 0:
                    ctx.error(opath, "box_offsets", f"first offset is {int(off[0])}, expected 0")
                if len(off) > 1 and (np.diff(off) < 0).any():
                    i = int(np.flatnonzero(np.diff(off) < 0)[0])
                    ctx.error(opath, "box_offsets",
                              f"offsets decrease at sample {i} ({int(off[i])} -> {int(off[i + 1])})")
                if m is not None and len(off) and off[-1] != m:
                    ctx.error(opath, "box_offsets",
                              f"last offset is {int(off[-1])}, expected the number of boxes {m}")
        if boxes is None or not len(boxes):
            return
        b = np.asarray(boxes, dtype=np.float64)
        finite = np.isfinite(b).all(axis=1)
        if not finite.all():
            ctx.error(bpath, "boxes", f"{int((~finite).sum())} box(es) contain NaN or Inf, e.g. box "
                      f"{int(np.flatnonzero(~finite)[0])}")
        b = b[finite]
        idx = np.flatnonzero(finite)
        inverted = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        if inverted.any():
            j = int(np.flatnonzero(inverted)[0])
            ctx.error(bpath, "boxes", f"{int(inverted.sum())} box(es) have x1 <= x0 or y1 <= y0, e.g. box "
                      f"{int(idx[j])} = {b[j].tolist()}")
        h, w = spec.image_size[0], spec.image_size[1]
        t = _BOX_TOLERANCE
        outside = (b[:, 0] < -t) | (b[:, 1] < -t) | (b[:, 2] > w + t) | (b[:, 3] > h + t)
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            ctx.error(bpath, "boxes", f"{int(outside.sum())} box(es) extend outside the {w}x{h} (W x H) image, "
                      f"e.g. box {int(idx[j])} = {b[j].tolist()}")

    def strata(self, db: Any, task: str) -> np.ndarray:
        counts = np.diff(np.asarray(db.array(task, "box_offsets")))
        return np.minimum(counts, 3)  # 0, 1, 2, 3+ objects

    def collate(self, targets: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.from_numpy(np.asarray(t["boxes"])).float(),
                 "labels": torch.from_numpy(np.asarray(t["labels"])).long()} for t in targets]

    def invalid_targets(self, spec: Any, db: Any, task: str) -> tuple[str, str, np.ndarray, np.ndarray]:
        labels = np.asarray(db.array(task, "box_labels"), dtype=np.int64)
        offsets = np.asarray(db.array(task, "box_offsets"), dtype=np.int64)
        boxes = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
        owner = np.searchsorted(offsets, boxes, side="right") - 1  # box j belongs to sample i
        samples, first = np.unique(owner, return_index=True)
        return "box_labels", f"0..{spec.num_classes - 1}", samples, labels[boxes[first]]

    def summary(self, db: Any, task: str) -> dict[str, Any]:
        spec = db.task(task)
        k = spec.num_classes
        counts = np.diff(np.asarray(db.array(task, "box_offsets"), dtype=np.int64))
        labels = np.asarray(db.array(task, "box_labels"), dtype=np.int64)
        labels = labels[(labels >= 0) & (labels < k)]  # invalid labels are reported, never counted as a class
        per_class = np.bincount(labels, minlength=k) if len(labels) else np.zeros(k, np.int64)
        return {"num_boxes": int(counts.sum()),
                "boxes_per_image_mean": float(counts.mean()) if len(counts) else 0.0,
                "boxes_per_image_max": int(counts.max()) if len(counts) else 0,
                "images_without_boxes": int((counts == 0).sum()),
                "boxes_per_class": {c: int(v) for c, v in zip(spec.classes, per_class)}}

    def summary_text(self, balance: dict[str, Any], limit: int = 12) -> str:
        b = balance
        return (f"{b['num_boxes']} boxes, {b['boxes_per_image_mean']:.2f}/image (max {b['boxes_per_image_max']}, "
                f"{b['images_without_boxes']} empty); " + format_items(b["boxes_per_class"], str, limit))

    def draw(self, ax: Any, spec: Any, target: Any, palette: Sequence[Any]) -> str:
        from matplotlib.patches import Rectangle

        label_boxes = len(target["labels"]) <= _MAX_BOX_TEXT  # dense images: colours + legend only
        for box, lab in zip(target["boxes"], target["labels"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            colour = palette[int(lab) % 10]
            # Box coordinates are pixel edges; imshow centres pixel j at j, edges at j - 0.5.
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.2, edgecolor=colour))
            if label_boxes:
                ax.text(x0 - 0.5, y0 - 0.5, spec.classes[int(lab)], color="white", fontsize=6,
                        va="bottom", bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "lw": 0})
        return f"{len(target['labels'])} box(es)"

    def legend(self, spec: Any, palette: Sequence[Any]) -> list[Any]:
        from matplotlib.patches import Patch

        return [Patch(color=palette[c % 10], label=spec.classes[c]) for c in range(spec.num_classes)]

    def metrics(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                spacings: Sequence[Any] | None = None) -> dict[str, float]:
        out = {"n": float(len(preds))}
        out.update(detection_metrics([to_numpy(x) for x in preds], [to_numpy(x) for x in targets],
                                     spec.num_classes))
        return out

    def bootstrap(self, spec: Any, preds: Sequence[Any], targets: Sequence[Any],
                  resamples: np.ndarray) -> np.ndarray:
        return map50_bootstrap([to_numpy(x) for x in preds], [to_numpy(x) for x in targets], spec.num_classes,
                               resamples)

    def chance_level(self, spec: Any) -> float:
        # A conservative floor: an empty prediction has AP 0.
        return 0.0


register_kind(DetectionKind())
