"""Anchor-free, CenterNet-style detection head (2D or 3D) on the shared decoder map."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Pool

from ...data.tasks import TaskSpec
from ..boxes import batched_nms, paired_generalized_box_iou
from .dense import _DenseHead

__all__ = ["DetectionHead"]


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
