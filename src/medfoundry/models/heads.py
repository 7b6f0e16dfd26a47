"""Task heads: one class per :class:`~medfoundry.data.tasks.TaskKind`, each with its loss,
its decoding to per-sample numpy predictions and its metrics.

Every head has

* ``uses_decoder``: ``False`` heads read the encoder's multi-scale list, ``True`` heads read
  the shared decoder's map (reduction ``stride``);
* ``forward(features, image_size=None) -> output`` (raw logits; see each class);
* ``loss(output, target) -> scalar`` **scaled so that an untrained head scores about 1**
  (cross-entropy / ln C and the like), so that no task dominates the shared gradient by its
  units;
* ``decode(output) -> list`` of per-sample numpy predictions;
* ``metrics(preds, targets, spacings=None) -> dict[str, float]`` via
  ``medfoundry.evaluation.tasks.task_metrics`` and the name of its ``primary_metric``.

Targets follow the batch layout of :mod:`medfoundry.data.loading`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from ..data.tasks import TaskKind, TaskSpec
from ..errors import ConfigError
from .boxes import batched_nms, paired_generalized_box_iou
from .encoders import group_norm, per_axis

__all__ = [
    "Head",
    "ClassificationHead",
    "MultilabelHead",
    "SegmentationHead",
    "DetectionHead",
    "register_head",
    "create_head",
    "head_class",
]

_HEADS: dict[TaskKind, type["Head"]] = {}


def register_head(kind: TaskKind | str) -> Callable[[type["Head"]], type["Head"]]:
    """Class decorator registering the head of a task kind (duplicates are errors)."""
    kind = TaskKind(kind)

    def wrap(cls: type["Head"]) -> type["Head"]:
        if kind in _HEADS:
            raise ConfigError(f"register_head: a head for {kind.value!r} is already registered "
                              f"({_HEADS[kind].__name__})")
        cls.kind = kind
        _HEADS[kind] = cls
        return cls

    return wrap


def head_class(kind: TaskKind | str) -> type["Head"]:
    """The registered head class of a task kind."""
    try:
        return _HEADS[TaskKind(kind)]
    except (KeyError, ValueError) as err:
        raise ConfigError(f"no head registered for task kind {kind!r} "
                          f"(registered: {', '.join(k.value for k in _HEADS)})") from err


def create_head(spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                stride: int | Sequence[int] = 4, **kwargs: Any) -> "Head":
    """Build the head for ``spec.kind``.

    Args:
        spec: the task.
        encoder_channels: channels per encoder stage (``[f["num_chs"] for f in
            encoder.feature_info]``) or the last stage's channels.
        decoder_channels: channels of the shared decoder map.
        stride: reduction of the decoder map (pixels per decoder cell), used by detection; an
            int or one int per spatial axis (array order) for anisotropic encoders.
        **kwargs: head options (e.g. ``dropout``, ``label_smoothing``, ``ignore_index``,
            ``score_threshold``).

    Raises:
        ConfigError: no head for the kind, or options the head does not take.
    """
    cls = head_class(spec.kind)
    try:
        return cls(spec, encoder_channels, decoder_channels, stride=stride, **kwargs)
    except TypeError as err:
        raise ConfigError(f"create_head: task {spec.name!r}: bad {cls.__name__} options {sorted(kwargs)}: {err}") from err


def _spatial_mode(dims: int) -> str:
    return "bilinear" if dims == 2 else "trilinear"


class Head(nn.Module):
    """Base class; see the module docstring for the contract."""

    kind: ClassVar[TaskKind]
    uses_decoder: ClassVar[bool] = False
    primary_metric: ClassVar[str] = ""

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4):
        super().__init__()
        if TaskKind(spec.kind) is not self.kind:
            raise ConfigError(f"{type(self).__name__}: task {spec.name!r} is a {spec.kind.value} task")
        self.spec = spec
        self.encoder_channels = [int(encoder_channels)] if isinstance(encoder_channels, int) \
            else [int(c) for c in encoder_channels]
        self.decoder_channels = int(decoder_channels)
        self.spatial_dims = spec.spatial_dims
        self.stride_per_axis = per_axis(stride, self.spatial_dims, f"{type(self).__name__}: stride")
        self.stride = max(self.stride_per_axis)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def forward(self, features: Any, image_size: Sequence[int] | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: Any, target: Any) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode(self, output: Any) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def metrics(self, preds: Sequence[Any], targets: Sequence[Any],
                spacings: Sequence[Any] | None = None) -> dict[str, float]:
        """Task metrics of decoded predictions against per-sample numpy targets (as
        ``MultiTaskDatabase.target`` returns them); ``spacings`` in mm per sample or ``None``."""
        from ..evaluation.tasks import task_metrics

        return task_metrics(self.spec, preds, targets, spacings)


class _GlobalHead(Head):
    """Global-average-pooled last encoder stage -> LayerNorm -> dropout -> linear."""

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, dropout: float = 0.0):
        super().__init__(spec, encoder_channels, decoder_channels, stride)
        c = self.encoder_channels[-1]
        self.norm = nn.LayerNorm(c)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, self.num_classes)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.fc.weight, std=0.01)

    def forward(self, features: Sequence[torch.Tensor] | torch.Tensor,
                image_size: Sequence[int] | None = None) -> torch.Tensor:
        x = features[-1] if isinstance(features, (list, tuple)) else features
        x = x.flatten(2).mean(dim=2)
        return self.fc(self.dropout(self.norm(x)))


@register_head(TaskKind.CLASSIFICATION)
class ClassificationHead(_GlobalHead):
    """Single-label classification.

    ``forward`` -> logits ``(B, C)``; ``loss`` = cross-entropy / ln C (1 for uniform logits,
    with or without label smoothing); ``decode`` -> per sample ``probs (C,)`` float32 (softmax).

    Args:
        dropout: dropout before the linear layer.
        label_smoothing: passed to ``F.cross_entropy``.
    """

    primary_metric = "balanced_accuracy"

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__(spec, encoder_channels, decoder_channels, stride, dropout)
        self.label_smoothing = float(label_smoothing)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target, device=output.device).long()
        if target.ndim != 1 or target.shape[0] != output.shape[0]:
            raise ValueError(f"ClassificationHead.loss: expected ({output.shape[0]},) class indices, "
                             f"got shape {tuple(target.shape)}")
        ce = F.cross_entropy(output, target, label_smoothing=self.label_smoothing)
        return ce / math.log(self.num_classes)

    def decode(self, output: torch.Tensor) -> list[np.ndarray]:
        probs = torch.softmax(output.detach().float(), dim=1).cpu().numpy().astype(np.float32)
        return list(probs)


@register_head(TaskKind.MULTILABEL)
class MultilabelHead(_GlobalHead):
    """K independent binary labels.

    ``forward`` -> logits ``(B, K)``; ``loss`` = mean binary cross-entropy / ln 2 (1 for zero
    logits) over labelled entries (a NaN target marks a missing label and is ignored);
    ``decode`` -> per sample ``scores (K,)`` float32 in [0, 1] (sigmoid).
    """

    primary_metric = "auroc"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target, device=output.device).float()
        known = ~torch.isnan(target)
        if bool(known.all()):
            bce = F.binary_cross_entropy_with_logits(output, target)
        else:
            per = F.binary_cross_entropy_with_logits(output, torch.nan_to_num(target), reduction="none")
            bce = (per * known).sum() / known.sum().clamp(min=1)
        return bce / math.log(2.0)

    def decode(self, output: torch.Tensor) -> list[np.ndarray]:
        return list(torch.sigmoid(output.detach().float()).cpu().numpy().astype(np.float32))


class _DenseHead(Head):
    uses_decoder = True

    def _branch(self, out: int, bias: float = 0.0) -> nn.Sequential:
        conv = Conv[Conv.CONV, self.spatial_dims]
        c = self.decoder_channels
        last = conv(c, out, 1)
        nn.init.normal_(last.weight, std=0.01)
        nn.init.constant_(last.bias, bias)
        return nn.Sequential(conv(c, c, 3, padding=1, bias=False), group_norm(c), nn.SiLU(), last)

    def _check_map(self, features: torch.Tensor) -> torch.Tensor:
        if isinstance(features, (list, tuple)) or features.ndim != 2 + self.spatial_dims:
            raise ValueError(f"{type(self).__name__}: expects the decoder map (B, C, *spatial), got "
                             f"{type(features).__name__}")
        return features


@register_head(TaskKind.SEGMENTATION)
class SegmentationHead(_DenseHead):
    """Semantic segmentation on the shared decoder map.

    ``forward(decoder_map, image_size)`` -> logits ``(B, C, *image_size)`` (upsampled from the
    decoder resolution when ``image_size`` is given); ``loss`` = (CE / ln C + soft Dice) / 2,
    Dice over foreground classes with batch statistics (about 1 untrained, 0 perfect);
    ``decode`` -> per sample label map ``(*image_size)`` int64.

    Args:
        smooth: added to the Dice numerator and denominator.
        ignore_index: a target value marking unlabelled pixels (e.g. 255 for partial
            annotations); they count in neither CE nor Dice. ``None``: every target value must
            be a class index.
    """

    primary_metric = "dice"

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, smooth: float = 1e-5, ignore_index: int | None = None):
        super().__init__(spec, encoder_channels, decoder_channels, stride)
        self.classifier = self._branch(self.num_classes)
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, features: torch.Tensor, image_size: Sequence[int] | None = None) -> torch.Tensor:
        logits = self.classifier(self._check_map(features))
        if image_size is not None and tuple(logits.shape[2:]) != tuple(image_size):
            logits = F.interpolate(logits, size=tuple(int(s) for s in image_size),
                                   mode=_spatial_mode(self.spatial_dims), align_corners=False)
        return logits

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.float()  # Dice sums in half precision lose small structures
        target = torch.as_tensor(target, device=output.device).long()
        if target.shape[1:] != output.shape[2:]:
            raise ValueError(f"SegmentationHead.loss: target {tuple(target.shape)} does not match logits "
                             f"{tuple(output.shape)}; call forward with image_size")
        c = self.num_classes
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        bad = valid & ((target < 0) | (target >= c))
        if bool(bad.any()):
            raise ValueError(f"SegmentationHead.loss: task {self.spec.name!r} has {c} classes but the target "
                             f"holds {sorted(set(target[bad].unique().tolist()))[:5]}"
                             + ("" if self.ignore_index is None else f" (ignore_index={self.ignore_index})"))
        safe = torch.where(valid, target, torch.zeros_like(target))
        ce = F.cross_entropy(output, target, ignore_index=-100 if self.ignore_index is None else self.ignore_index)
        ce = ce / math.log(c)
        mask = valid.unsqueeze(1).to(output.dtype)
        probs = torch.softmax(output, dim=1)[:, 1:] * mask
        onehot = F.one_hot(safe, c).movedim(-1, 1)[:, 1:].to(probs.dtype) * mask
        dims = (0,) + tuple(range(2, probs.ndim))  # batch Dice: sum over samples and space
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)
        return 0.5 * (ce + dice.mean())

    def decode(self, output: torch.Tensor) -> list[np.ndarray]:
        return list(output.detach().argmax(dim=1).cpu().numpy().astype(np.int64))


@register_head(TaskKind.DETECTION)
class DetectionHead(_DenseHead):
    """Anchor-free, CenterNet-style detection on the shared decoder map (2D or 3D).

    Each object is a peak of its class heatmap at the decoder cell holding its centre; the
    regression map gives, at that cell, the sub-cell offset of the centre (``d`` values, cell
    units) and the log of the box extent in cells (``d`` values), both in box order
    (x, y[, z]). A cell is ``stride_per_axis`` pixels/voxels (anisotropic encoders allowed).

    ``forward`` -> ``{"heatmap": (B, K, *S) logits, "regression": (B, 2d, *S),
    "image_size": tuple}`` with ``S`` the decoder grid.

    ``loss`` = (heatmap + box) / 2:

    * heatmap: penalty-reduced focal loss (CenterNet, alpha 2, beta 4) against elliptical
      Gaussians (sigma = max(0.5, 0.54 * extent / 6) cells per axis, TTFNet), normalised by
      the number of objects **and divided by the same loss of a constant prediction at the
      prior probability** ``prior`` (the untrained head's output), so it starts at about 1;
    * box: mean over objects of ``1 - GIoU`` between the box decoded at the object's centre
      cell and the true box (0 perfect, about 1 untrained, scale-free).

    ``decode`` -> per sample ``{"boxes": (M, 2d) float32 pixels, "scores": (M,) float32,
    "labels": (M,) int64}``: local maxima of the sigmoid heatmap (3x3(x3) max-pool), top
    ``max_detections``, ``score >= score_threshold``, class-wise NMS at ``nms_iou``, boxes
    clipped to the image.

    Args:
        prior: initial foreground probability of the heatmap (bias init).
        score_threshold, max_detections, nms_iou: decoding options (raise ``max_detections``
            for crowded microscopy fields).
    """

    primary_metric = "map50"

    def __init__(self, spec: TaskSpec, encoder_channels: Sequence[int] | int, decoder_channels: int,
                 stride: int | Sequence[int] = 4, prior: float = 0.1, score_threshold: float = 0.05,
                 max_detections: int = 300, nms_iou: float = 0.5):
        super().__init__(spec, encoder_channels, decoder_channels, stride)
        d = self.spatial_dims
        self.prior = float(prior)
        self.heatmap = self._branch(self.num_classes, bias=math.log(prior / (1 - prior)))
        self.regression = self._branch(2 * d)
        with torch.no_grad():  # start at the cell centre with an extent of one cell
            self.regression[-1].bias[:d] = 0.5
        self.score_threshold, self.max_detections, self.nms_iou = score_threshold, max_detections, nms_iou

    def forward(self, features: torch.Tensor, image_size: Sequence[int] | None = None) -> dict[str, Any]:
        x = self._check_map(features)
        if image_size is None:
            image_size = tuple(s * r for s, r in zip(x.shape[2:], self.stride_per_axis))
        return {"heatmap": self.heatmap(x), "regression": self.regression(x),
                "image_size": tuple(int(s) for s in image_size)}

    # ------------------------------------------------------------------ targets
    def _grid(self, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """Cell coordinates (n_cells, d) in box order (x, y[, z]) = reversed array axes."""
        axes = [torch.arange(s, device=device, dtype=torch.float32) for s in shape]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in reversed(mesh)], dim=1)

    def encode_targets(self, targets: Sequence[dict[str, torch.Tensor]], shape: Sequence[int],
                       device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Encode box targets on the decoder grid.

        Args:
            targets: per sample ``{"boxes": (M, 2d) pixels, "labels": (M,)}``.
            shape: decoder grid ``S`` (array axis order).
            device: where to build the tensors.

        Returns:
            ``heat`` ``(B, K, *S)`` Gaussian heatmaps (1 at each object's centre cell) and the
            objects as tensors ``sample (N,)``, ``label (N,)``, ``cell (N,)`` (flat index into
            ``S``) and ``box (N, 2d)``.
        """
        d, k = self.spatial_dims, self.num_classes
        shape = tuple(int(s) for s in shape)
        grid = self._grid(shape, device)
        n_cells = grid.shape[0]
        extent_xyz = torch.tensor(list(reversed(shape)), device=device, dtype=torch.float32)
        stride_xyz = self._stride_xyz(device)
        # flat index = x + W * y (+ W * H * z): multipliers in box (x, y, z) order
        mult = torch.cumprod(torch.cat([torch.ones(1, device=device), extent_xyz[:-1]]), 0)
        heat = torch.zeros(len(targets), k, n_cells, device=device)
        samples, labels_all, cells_all, boxes_all = [], [], [], []
        for b, t in enumerate(targets):
            boxes = torch.as_tensor(t["boxes"], device=device, dtype=torch.float32).reshape(-1, 2 * d)
            labels = torch.as_tensor(t["labels"], device=device).long().reshape(-1)
            if boxes.shape[0] != labels.shape[0]:
                raise ValueError(f"DetectionHead.loss: sample {b} has {boxes.shape[0]} boxes but "
                                 f"{labels.shape[0]} labels")
            if labels.numel() == 0:
                continue
            if labels.min() < 0 or labels.max() >= k:
                raise ValueError(f"DetectionHead.loss: labels must be in [0, {k}), got {labels.tolist()}")
            centre = (boxes[:, :d] + boxes[:, d:]) / 2 / stride_xyz
            extent = (boxes[:, d:] - boxes[:, :d]).clamp(min=0) / stride_xyz
            cell = torch.minimum(centre.floor().clamp(min=0), extent_xyz - 1)
            sigma = (0.54 * extent / 6).clamp(min=0.5)
            # chunks bound the (objects x cells) buffer for crowded images and large 3D grids
            for i in range(0, len(labels), 64):
                g = torch.exp(-(((grid[None] - cell[i:i + 64, None]) / sigma[i:i + 64, None]) ** 2).sum(-1) / 2)
                index = labels[i:i + 64, None].expand(-1, n_cells)
                heat[b].scatter_reduce_(0, index, g, reduce="amax")
            samples.append(torch.full_like(labels, b))
            labels_all.append(labels)
            cells_all.append((cell * mult).sum(1).long())
            boxes_all.append(boxes)
        if samples:
            objects = {"sample": torch.cat(samples), "label": torch.cat(labels_all), "cell": torch.cat(cells_all),
                       "box": torch.cat(boxes_all)}
        else:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            objects = {"sample": empty, "label": empty, "cell": empty,
                       "box": torch.zeros(0, 2 * d, device=device)}
        return heat.reshape(len(targets), k, *shape), objects

    def _stride_xyz(self, device: torch.device) -> torch.Tensor:
        """Pixels per cell in box order (x, y[, z])."""
        return torch.tensor(list(reversed(self.stride_per_axis)), device=device, dtype=torch.float32)

    def _cell_boxes(self, reg: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Boxes (N, 2d) in pixels from regression vectors (N, 2d) at cells (N, d) (x, y, z order)."""
        d = self.spatial_dims
        stride = self._stride_xyz(reg.device)
        centre = (cells + reg[:, :d]) * stride
        extent = torch.exp(reg[:, d:].clamp(-10, 10)) * stride
        return torch.cat([centre - extent / 2, centre + extent / 2], dim=1)

    # --------------------------------------------------------------------- loss
    def loss(self, output: dict[str, Any], target: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        logits, reg = output["heatmap"].float(), output["regression"].float()
        shape = logits.shape[2:]
        heat, obj = self.encode_targets(target, shape, logits.device)
        b_idx, c_idx, cell_idx = obj["sample"], obj["label"], obj["cell"]
        pos = torch.zeros_like(heat, dtype=torch.bool).flatten(2)
        pos[b_idx, c_idx, cell_idx] = True
        pos = pos.reshape(heat.shape)
        n_obj = max(int(b_idx.numel()), 1)
        neg_w = (1 - heat).pow(4) * (~pos)
        log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
        p = torch.sigmoid(logits)
        focal = (-(log_p * (1 - p).pow(2)) * pos).sum() + (-(log_q * p.pow(2)) * neg_w).sum()
        p0 = self.prior
        reference = (-math.log(p0) * (1 - p0) ** 2) * pos.sum() + (-math.log(1 - p0) * p0 ** 2) * neg_w.sum()
        heat_loss = (focal / n_obj) / (reference / n_obj).clamp(min=1e-12)
        if b_idx.numel():
            vec = reg.flatten(2)[b_idx, :, cell_idx]  # (N, 2d)
            pred = self._cell_boxes(vec, self._grid(shape, reg.device)[cell_idx])
            box_loss = (1 - paired_generalized_box_iou(pred, obj["box"])).mean()
        else:
            box_loss = reg.sum() * 0.0
        return 0.5 * (heat_loss + box_loss)

    # ------------------------------------------------------------------- decode
    @torch.no_grad()
    def decode(self, output: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        logits, reg = output["heatmap"].float(), output["regression"].float()
        d = self.spatial_dims
        shape = logits.shape[2:]
        image_size = output.get("image_size") or tuple(s * r for s, r in zip(shape, self.stride_per_axis))
        bounds = torch.tensor(list(reversed(image_size)), dtype=torch.float32, device=logits.device)
        heat = torch.sigmoid(logits)
        pooled = Pool[Pool.MAX, d](3, stride=1, padding=1)(heat)
        heat = heat * (heat == pooled)
        grid = self._grid(shape, logits.device)
        n_cells = grid.shape[0]
        results = []
        for b in range(heat.shape[0]):
            scores_all = heat[b].reshape(-1)
            k = min(self.max_detections, scores_all.numel())
            scores, idx = scores_all.topk(k)
            keep = scores >= self.score_threshold
            scores, idx = scores[keep], idx[keep]
            labels, cells_flat = idx // n_cells, idx % n_cells
            vec = reg[b].reshape(2 * d, -1)[:, cells_flat].T
            boxes = self._cell_boxes(vec, grid[cells_flat])
            boxes = torch.minimum(torch.maximum(boxes, torch.zeros_like(boxes)), bounds.repeat(2))
            kept = batched_nms(boxes, scores, labels, self.nms_iou)
            results.append({"boxes": boxes[kept].cpu().numpy().astype(np.float32).reshape(-1, 2 * d),
                            "scores": scores[kept].cpu().numpy().astype(np.float32),
                            "labels": labels[kept].cpu().numpy().astype(np.int64)})
        return results
