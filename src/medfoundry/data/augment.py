"""Training-time augmentation of one sample (image + target), per task kind and modality.

Three levels (``augment`` in the pretraining and the transfer configs):

* ``none``: identity (the default in tests, so every existing figure stays reproducible);
* ``light``: the flips the modality allows, intensity scale/shift;
* ``standard``: ``light`` plus 90-degree rotations where allowed, a small affine (rotation,
  scale, translation), gaussian noise and a gamma contrast change.

What a modality allows: microscopy has no orientation, so every flip and rotation is fine;
tomographic slices and fundus photographs are roughly left-right symmetric but have an up and a
down, so only the left-right flip; projection X-rays carry laterality (the heart is on the left),
so no flip and no rotation. Unknown modalities get no flips.

Targets follow the image: classification and multilabel targets are unchanged; segmentation
masks go through the same geometric transform with nearest interpolation (they stay
label-valued); detection boxes (``x0, y0[, z0], x1, y1[, z1]`` in pixel-edge coordinates) are
mapped exactly for flips and 90-degree rotations, and for an affine become the box of the
transformed corners, clipped to the image; boxes narrower than ``MIN_BOX`` pixels after
clipping are dropped with their labels. Kinds not listed here get intensity changes only.

Randomness comes only from the ``rng`` argument, so a caller that seeds it per sample (e.g.
from seed, epoch and position) gets the same augmented batch on every run and after a resume.
The geometric work is done by MONAI array transforms (``Flip``, ``Rotate90``, ``Affine``,
``AdjustContrast``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["LEVELS", "AugmentPolicy", "policy_for", "make_augmenter", "Augmenter", "check_level", "MIN_BOX"]

LEVELS = ("none", "light", "standard")
MIN_BOX = 1.0  # pixels: a clipped box thinner than this on any axis no longer shows an object
_SPATIAL_KINDS = ("classification", "multilabel", "segmentation", "detection")


def check_level(level: str, where: str = "augment") -> str:
    """``level`` if it is one of :data:`LEVELS`, else a one-line ConfigError naming ``where``."""
    from ..errors import ConfigError

    if level not in LEVELS:
        raise ConfigError(f"{where}: expected one of {', '.join(LEVELS)}, got {level!r}")
    return level


@dataclass(frozen=True)
class AugmentPolicy:
    """The random changes applied to one task's samples.

    Attributes:
        flip_axes: spatial axes (0 = rows/y, 1 = columns/x, 2 = z) that may be flipped, each
            with probability 0.5.
        rot90: rotate by a uniform multiple of 90 degrees in the plane of spatial axes (0, 1).
        affine_prob: probability of a small affine; ``rotate`` (radians), ``scale`` (relative)
            and ``translate`` (fraction of the size) bound its uniform parameters.
        scale, shift: intensity ``x * U(1 - scale, 1 + scale) + U(-shift, shift) * std(x)``.
        noise: gaussian noise of standard deviation ``U(0, noise) * std(x)`` (probability 0.5).
        gamma: contrast ``AdjustContrast(U(1 - gamma, 1 + gamma))`` (probability 0.5).
    """

    flip_axes: tuple[int, ...] = ()
    rot90: bool = False
    affine_prob: float = 0.0
    rotate: float = 0.0
    zoom: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    shift: float = 0.0
    noise: float = 0.0
    gamma: float = 0.0

    @property
    def identity(self) -> bool:
        return self == AugmentPolicy()


def _modality_geometry(modality: str, spatial_dims: int) -> tuple[tuple[int, ...], bool]:
    """Allowed flip axes and whether 90-degree rotations are allowed (see the module docstring)."""
    if modality == "microscopic":
        return tuple(range(spatial_dims)), True
    if modality in ("tomographic", "other"):
        return (1,), False  # left-right only: anatomy and fundus images have an up and a down
    return (), False  # x-ray (laterality) and anything unknown


def policy_for(spec: Any, level: str) -> AugmentPolicy:
    """The policy of task ``spec`` (a :class:`~medfoundry.data.tasks.TaskSpec`) at ``level``."""
    check_level(level)
    if level == "none":
        return AugmentPolicy()
    modality = getattr(spec.modality, "value", spec.modality)
    kind = getattr(spec.kind, "value", spec.kind)
    flips, rot = _modality_geometry(str(modality), int(spec.spatial_dims))
    if kind not in _SPATIAL_KINDS:
        flips, rot = (), False
    if level == "light":
        return AugmentPolicy(flip_axes=flips, scale=0.1, shift=0.1)
    spatial = kind in _SPATIAL_KINDS
    return AugmentPolicy(flip_axes=flips, rot90=rot, affine_prob=0.5 if spatial else 0.0,
                         rotate=np.deg2rad(10.0) if spatial else 0.0, zoom=0.1 if spatial else 0.0,
                         translate=0.05 if spatial else 0.0, scale=0.15, shift=0.1, noise=0.05, gamma=0.2)


# --- boxes -------------------------------------------------------------------------------------

def _box_corners(boxes: np.ndarray, d: int) -> np.ndarray:
    """(M, 2^d, d) corners of (M, 2d) boxes, in spatial-axis order (axis 0 = y)."""
    lo, hi = boxes[:, :d][:, ::-1], boxes[:, d:][:, ::-1]  # (x, y[, z]) -> axis order (y, x) / (z?..)
    corners = []
    for bits in np.ndindex(*(2,) * d):
        corners.append(np.where(np.array(bits, bool), hi, lo))
    return np.stack(corners, 1)


def _boxes_from_corners(corners: np.ndarray, d: int) -> np.ndarray:
    lo, hi = corners.min(1)[:, ::-1], corners.max(1)[:, ::-1]
    return np.concatenate([lo, hi], 1).astype(np.float32)


def _map_boxes(target: dict[str, Any], size: tuple[int, ...], point_map: Callable[[np.ndarray], np.ndarray]
               ) -> dict[str, Any]:
    """Boxes through ``point_map`` (edge coordinates, axis order), clipped; thin ones dropped."""
    boxes = np.asarray(target["boxes"], np.float32)
    d = len(size)
    if len(boxes) == 0:
        return target
    corners = _box_corners(boxes.reshape(-1, 2 * d), d)
    out = _boxes_from_corners(point_map(corners.reshape(-1, d)).reshape(corners.shape), d)
    upper = np.array(size[::-1], np.float32)
    out[:, :d] = np.clip(out[:, :d], 0, upper)
    out[:, d:] = np.clip(out[:, d:], 0, upper)
    keep = np.all(out[:, d:] - out[:, :d] >= MIN_BOX, axis=1)
    return {**target, "boxes": out[keep], "labels": np.asarray(target["labels"])[keep]}


# --- the augmenter ------------------------------------------------------------------------------

class Augmenter:
    """``f(image, target, rng) -> (image, target)`` for one task (the ``transform`` hook of
    :class:`~medfoundry.data.loading.TaskDataset`).

    Args:
        spec: the task's :class:`~medfoundry.data.tasks.TaskSpec`.
        policy: what to apply (see :func:`policy_for`).
    """

    def __init__(self, spec: Any, policy: AugmentPolicy):
        self.spec, self.policy = spec, policy
        self.kind = str(getattr(spec.kind, "value", spec.kind))
        self.d = int(spec.spatial_dims)

    def __call__(self, image: np.ndarray, target: Any, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        image = np.asarray(image, np.float32)
        size = tuple(int(s) for s in image.shape[1:])
        p = self.policy
        for axis in p.flip_axes:
            if rng.random() < 0.5:
                image, target = self._flip(image, target, axis, size)
        if p.rot90 and size[0] == size[1]:  # a non-square plane would change the image size
            k = int(rng.integers(4))
            if k:
                image, target = self._rot90(image, target, k, size)
        if p.affine_prob > 0 and rng.random() < p.affine_prob:
            image, target = self._affine(image, target, size, rng)
        return self._intensity(image, rng), target

    # geometric pieces: each moves the image (MONAI), the mask (same transform, nearest) and boxes

    def _flip(self, image: np.ndarray, target: Any, axis: int, size: tuple[int, ...]) -> tuple[np.ndarray, Any]:
        from monai.transforms import Flip

        flip = Flip(spatial_axis=axis)
        image = _np(flip(image))
        if self.kind == "segmentation":
            target = _np(flip(np.asarray(target)[None]))[0]
        elif self.kind == "detection":
            n = size[axis]

            def point_map(pts: np.ndarray) -> np.ndarray:
                pts = pts.copy()
                pts[:, axis] = n - pts[:, axis]
                return pts

            target = _map_boxes(target, size, point_map)
        return image, target

    def _rot90(self, image: np.ndarray, target: Any, k: int, size: tuple[int, ...]) -> tuple[np.ndarray, Any]:
        from monai.transforms import Rotate90

        rot = Rotate90(k=k, spatial_axes=(0, 1))
        image = _np(rot(image))
        if self.kind == "segmentation":
            target = _np(rot(np.asarray(target)[None]))[0]
        elif self.kind == "detection":
            n0, n1 = size[0], size[1]

            def point_map(pts: np.ndarray) -> np.ndarray:
                # np.rot90 (what Rotate90 does) by 90 degrees sends index (i, j) to (n1-1-j, i);
                # in pixel-edge coordinates that is (u, v) -> (n1 - v, u)
                pts = pts.copy()
                a, b = n0, n1
                for _ in range(k):
                    u, v = pts[:, 0].copy(), pts[:, 1].copy()
                    pts[:, 0], pts[:, 1] = b - v, u
                    a, b = b, a
                return pts

            target = _map_boxes(target, size, point_map)
        return image, target

    def _affine(self, image: np.ndarray, target: Any, size: tuple[int, ...], rng: np.random.Generator
                ) -> tuple[np.ndarray, Any]:
        from monai.transforms import Affine

        p, d = self.policy, self.d
        forward = np.eye(d + 1)  # centred index coordinates of the input -> of the output
        angle = rng.uniform(-p.rotate, p.rotate)
        c, s = np.cos(angle), np.sin(angle)
        rotation = np.eye(d)
        rotation[:2, :2] = [[c, -s], [s, c]]  # in the plane of axes (0, 1), also for 3D
        zoom = np.diag(rng.uniform(1 - p.zoom, 1 + p.zoom, size=d))
        forward[:d, :d] = rotation @ zoom
        forward[:d, d] = rng.uniform(-p.translate, p.translate, size=d) * np.array(size)
        # MONAI's matrix maps output to input coordinates (it samples the input there)
        backward = np.linalg.inv(forward)
        img_aff = Affine(affine=backward, mode="bilinear", padding_mode="zeros", image_only=True)
        image = _np(img_aff(image))
        if self.kind == "segmentation":
            mask = np.asarray(target)
            mask_aff = Affine(affine=backward, mode="nearest", padding_mode="zeros", image_only=True)
            target = np.rint(_np(mask_aff(mask[None].astype(np.float32)))[0]).astype(mask.dtype)
        elif self.kind == "detection":
            centre = np.array(size, np.float64) / 2.0  # pixel-edge coordinates: centre of the image

            def point_map(pts: np.ndarray) -> np.ndarray:
                return (pts - centre) @ forward[:d, :d].T + forward[:d, d] + centre

            target = _map_boxes(target, size, point_map)
        return image, target

    def _intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.policy
        if not (p.scale or p.shift or p.noise or p.gamma):
            return image
        std = float(image.std()) or 1.0
        if p.gamma and rng.random() < 0.5:
            from monai.transforms import AdjustContrast

            image = _np(AdjustContrast(gamma=float(rng.uniform(1 - p.gamma, 1 + p.gamma)))(image))
        image = image * rng.uniform(1 - p.scale, 1 + p.scale) + rng.uniform(-p.shift, p.shift) * std
        if p.noise and rng.random() < 0.5:
            image = image + rng.normal(0.0, rng.uniform(0, p.noise) * std, size=image.shape)
        return image.astype(np.float32)


def _np(x: Any) -> np.ndarray:
    """A plain numpy array from a MONAI output (MetaTensor / tensor / array), contiguous."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


def make_augmenter(spec: Any, level: str) -> Augmenter | None:
    """The augmenter of task ``spec`` at ``level``; ``None`` when nothing would change
    (``none``, or a policy with no allowed change), so callers skip the work entirely."""
    policy = policy_for(spec, level)
    return None if policy.identity else Augmenter(spec, policy)
