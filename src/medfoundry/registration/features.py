"""Image descriptors for registration: MIND-SSC and one-hot label features.

MIND-SSC (modality independent neighbourhood descriptor, self-similarity context; Heinrich et
al., MICCAI 2013) describes each voxel by how similar small patches around its six axis
neighbours are to one another. For every pair of six-neighbours at distance ``sqrt(2)``
(12 pairs in 3D, 4 in 2D) it takes the patch sum of squared differences ``D_k(x)``, divides by
a local variance estimate ``V(x)`` (the mean of the ``D_k``) and maps ``exp(-D_k / V)``.
Because both ``D_k`` and ``V`` scale with the square of the intensity scale, the descriptor is
invariant to linear intensity changes ``a * I + b`` (a != 0).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..errors import RegistrationError
from .fields import box_sum

__all__ = ["mind_ssc", "mind_ssc_pairs", "label_features", "pooled_features"]


def mind_ssc_pairs(spatial_dims: int = 3) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The neighbour pairs ``(a, b)`` (unit offsets) of the self-similarity context.

    All pairs of axis neighbours ``+-e_i``, ``+-e_j`` (``i != j``): 12 in 3D, 4 in 2D.
    """
    neighbours = []
    for axis in range(spatial_dims):
        for sign in (-1, 1):
            offset = [0] * spatial_dims
            offset[axis] = sign
            neighbours.append(tuple(offset))
    pairs = []
    for a, b in itertools.combinations(neighbours, 2):
        if sum((p - q) ** 2 for p, q in zip(a, b)) == 2:
            pairs.append((a, b))
    return pairs


def _shift(padded: torch.Tensor, offset: tuple[int, ...], pad: int, shape: tuple[int, ...]) -> torch.Tensor:
    """View of ``padded`` (padded by ``pad`` on every side) at ``x + offset`` for ``x`` in ``shape``."""
    index = [slice(None), slice(None)]
    index += [slice(pad + o, pad + o + s) for o, s in zip(offset, shape)]
    return padded[tuple(index)]


@torch.no_grad()
def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """MIND-SSC descriptor of ``image``.

    Args:
        image: ``(N, 1, *spatial)`` intensities (any units; the result does not depend on a
            linear rescaling).
        radius: half-width of the box patch over which squared differences are summed, voxels.
        dilation: distance of the six neighbours from the centre voxel, voxels.
        mask: optional ``(N, 1, *spatial)`` {0, 1}; descriptors are set to 0 outside it.

    Returns:
        ``(N, 12, *spatial)`` in 3D (``(N, 4, H, W)`` in 2D), float32 in ``(0, 1]``.
    """
    if image.ndim not in (4, 5) or image.shape[1] != 1:
        raise RegistrationError(f"mind_ssc(): expected image (N, 1, *spatial) with 2 or 3 spatial axes, "
                                f"found {tuple(image.shape)}")
    image = image.float()
    spatial = image.ndim - 2
    shape = tuple(image.shape[2:])
    padded = F.pad(image, [dilation] * (2 * spatial), mode="replicate")
    pairs = mind_ssc_pairs(spatial)
    # One channel at a time into a preallocated output keeps the peak near one descriptor volume.
    # Box sums rather than means: MIND divides by the mean over channels, so the (2r+1)^S factor
    # cancels; the per-voxel minimum and sum over channels accumulate as each channel is made
    # (contiguous, instead of strided reductions over the channel axis afterwards).
    ssd = torch.empty((image.shape[0], len(pairs)) + shape, device=image.device, dtype=torch.float32)
    low = total = None
    for index, (a, b) in enumerate(pairs):
        diff = _shift(padded, tuple(dilation * o for o in a), dilation, shape) \
            - _shift(padded, tuple(dilation * o for o in b), dilation, shape)
        channel = ssd[:, index:index + 1]
        channel.copy_(box_sum(diff.mul_(diff), radius))
        if low is None:
            low, total = channel.clone(), channel.clone()
        else:
            torch.minimum(low, channel, out=low)
            total.add_(channel)
    del padded, diff
    # Subtracting the per-voxel minimum keeps the best-matching pair at 1 and changes nothing
    # else about the invariance (it scales like ssd).
    ssd -= low
    variance = total.sub_(low, alpha=len(pairs)).div_(len(pairs))
    del low
    level = float(variance.mean())
    variance.clamp_(min=level * 1e-3 + 1e-12, max=level * 1e3 + 1e-12)
    ssd /= variance
    features = ssd.neg_().exp_()
    if mask is not None:
        features = features * (mask > 0).to(features.dtype)
    return features


def label_features(labels: torch.Tensor, classes: list[int] | None = None,
                   include_background: bool = False) -> torch.Tensor:
    """One-hot label maps ``(N, K, *spatial)`` float32 from integer ``labels`` ``(N, 1, *spatial)``.

    Args:
        labels: integer segmentation.
        classes: label values to encode; by default every value present in ``labels``.
        include_background: also encode label 0.
    """
    if classes is None:
        classes = [int(c) for c in torch.unique(labels).tolist()]
    if not include_background:
        classes = [c for c in classes if c != 0]
    if not classes:
        raise RegistrationError("label_features(): the segmentation holds no foreground label")
    return torch.cat([(labels == c).float() for c in classes], dim=1)


def pooled_features(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``features`` by an integer ``factor`` (ceil mode, so every voxel counts)."""
    if factor <= 1:
        return features
    spatial = features.ndim - 2
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
    return pool(features, factor, stride=factor, ceil_mode=True, count_include_pad=False)
