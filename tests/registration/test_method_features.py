"""MIND-SSC and label descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medfoundry.registration.features import label_features, mind_ssc, mind_ssc_pairs, pooled_features


def _volume(shape=(20, 18, 16), seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(ndimage.gaussian_filter(rng.standard_normal(shape), 1.5).astype(np.float32))[None, None]


def test_pairs_are_the_twelve_orthogonal_neighbour_pairs():
    pairs = mind_ssc_pairs(3)
    assert len(pairs) == 12
    assert len(set(pairs)) == 12
    for a, b in pairs:
        assert sum((p - q) ** 2 for p, q in zip(a, b)) == 2
    assert len(mind_ssc_pairs(2)) == 4


def test_mind_shape_range_and_linear_intensity_invariance():
    image = _volume()
    feat = mind_ssc(image)
    assert feat.shape == (1, 12, 20, 18, 16)
    assert feat.dtype == torch.float32
    assert float(feat.min()) > 0 and float(feat.max()) <= 1.0 + 1e-6
    # the best-matching pair of every voxel scores exactly exp(0) = 1
    assert torch.allclose(feat.max(dim=1).values, torch.ones(1, 20, 18, 16))
    changed = mind_ssc(3.7 * image - 12.0)
    assert torch.allclose(feat, changed, atol=1e-4)
    # ... but not to a nonlinear change
    assert not torch.allclose(feat, mind_ssc(image.abs() ** 0.5), atol=1e-2)


def test_mind_depends_on_structure_and_respects_masks():
    image = _volume()
    other = _volume(seed=5)
    assert (mind_ssc(image) - mind_ssc(other)).abs().mean() > 0.05
    mask = torch.zeros_like(image)
    mask[..., :10] = 1
    feat = mind_ssc(image, mask=mask)
    assert feat[..., 10:].abs().max() == 0
    assert feat[..., :10].min() > 0


def test_mind_2d():
    image = _volume((24, 20))[0]  # (1, 24, 20) -> make (N, 1, H, W)
    feat = mind_ssc(image[None])
    assert feat.shape == (1, 4, 24, 20)


def test_label_features_and_pooling():
    labels = torch.zeros(1, 1, 4, 4, 4)
    labels[..., :2] = 3
    labels[..., 3] = 1
    onehot = label_features(labels)
    assert onehot.shape == (1, 2, 4, 4, 4)
    assert onehot[0, 0].sum() == 16 and onehot[0, 1].sum() == 32
    pooled = pooled_features(onehot, 2)
    assert pooled.shape == (1, 2, 2, 2, 2)
    assert pooled[0, 1, 0, 0, 0].item() == pytest.approx(1.0)
    assert pooled[0, 0, 0, 0, 1].item() == pytest.approx(0.5)


def _mind_reference(image, radius, dilation):
    """MIND-SSC written plainly: replicate padding, avg_pool box means (the earlier kernel)."""
    import torch.nn.functional as F

    spatial = image.ndim - 2
    pool = (F.avg_pool2d, F.avg_pool3d)[spatial - 2]
    shape = image.shape[2:]
    padded = F.pad(image, [dilation] * (2 * spatial), mode="replicate")

    def at(offset):
        return padded[(slice(None), slice(None)) + tuple(slice(dilation + dilation * o, dilation + dilation * o + s)
                                                         for o, s in zip(offset, shape))]

    channels = []
    for a, b in mind_ssc_pairs(spatial):
        diff = (at(a) - at(b)) ** 2
        channels.append(pool(F.pad(diff, [radius] * (2 * spatial), mode="replicate"), 2 * radius + 1, stride=1))
    ssd = torch.cat(channels, 1)
    ssd = ssd - ssd.min(1, keepdim=True).values
    variance = ssd.mean(1, keepdim=True)
    level = float(variance.mean())
    variance = variance.clamp(min=level * 1e-3 + 1e-12, max=level * 1e3 + 1e-12)
    return torch.exp(-ssd / variance)


@pytest.mark.parametrize("shape,radius,dilation", [((20, 18, 16), 1, 2), ((17, 15, 13), 2, 1), ((24, 20), 1, 2)])
def test_mind_equals_the_plain_avg_pool_reference(shape, radius, dilation):
    image = _volume(shape, seed=3)
    fast = mind_ssc(image, radius, dilation)
    assert torch.allclose(fast, _mind_reference(image, radius, dilation), atol=2e-5)
