"""Sliding-window prediction: whole-case shape, Gaussian blending, flip TTA."""

from __future__ import annotations

import pytest
import torch

from medfoundry.inference.sliding_window import SlidingWindowPredictor, flip_sets, sliding_window


class _Smooth(torch.nn.Module):
    """A flip-equivariant 'model': two logits from a symmetric 3x3x3 box filter of channel 0."""

    def forward(self, x):
        box = torch.nn.functional.avg_pool3d(x[:, :1], 3, stride=1, padding=1)
        return torch.cat([-box, box], dim=1)


@pytest.mark.parametrize("shape", [(23, 17, 30), (9, 10, 11)])  # larger and smaller than the window
def test_output_covers_the_whole_case(shape):
    image = torch.randn((2,) + shape)
    probs = SlidingWindowPredictor(_Smooth(), (16, 16, 16), "softmax")(image)
    assert probs.shape == (2,) + shape
    torch.testing.assert_close(probs.sum(0), torch.ones(shape), atol=1e-5, rtol=0)


def test_windows_agree_with_a_whole_volume_pass_and_tta_keeps_equivariant_models():
    pointwise = torch.nn.Conv3d(1, 2, 1)  # no spatial context: every window must agree exactly
    image = torch.randn(1, 20, 19, 21)
    with torch.no_grad():
        whole = torch.sigmoid(pointwise(image[None]))[0]
    windowed = SlidingWindowPredictor(pointwise, (12, 12, 12), "sigmoid", overlap=0.5)(image)
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=0)
    tta = SlidingWindowPredictor(pointwise, (12, 12, 12), "sigmoid", tta=True)(image)
    torch.testing.assert_close(tta, whole, atol=1e-5, rtol=0)


def test_tta_undoes_each_flip():
    assert len(flip_sets(3)) == 8 and flip_sets(2)[0] == ()

    class _Left(torch.nn.Module):  # not flip-equivariant: marks the first voxel of axis 0
        def forward(self, x):
            out = torch.zeros_like(x[:, :1])
            out[:, :, 0] = 10.0
            return out

    probs = SlidingWindowPredictor(_Left(), (8, 8, 8), "sigmoid", tta=True)(torch.zeros(1, 8, 8, 8))
    # half the passes see the axis flipped: the mark lands on voxel 0 or 7, flipped back to 0 or 7
    assert probs[0, 0].mean() > 0.7 and probs[0, 7].mean() > 0.7 and probs[0, 3].mean() < 0.6


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        SlidingWindowPredictor(_Smooth(), (8, 8, 8), "relu")
    with pytest.raises(ValueError, match="spatial axes"):
        SlidingWindowPredictor(_Smooth(), (8, 8, 8))(torch.zeros(8, 8, 8))


def test_wrapper_plugs_into_the_inference_seam():
    from medfoundry.inference.predictors import compose, forward

    class _Dense(torch.nn.Module):
        def forward(self, x, task):
            return x[:, :1] * 2.0  # pointwise, like a 1x1 head

    image = torch.randn(2, 1, 21, 19)
    predictor = compose(sliding_window((8, 8)))
    torch.testing.assert_close(predictor(_Dense(), "seg", image), forward(_Dense(), "seg", image))

    class _Pooled(torch.nn.Module):
        def forward(self, x, task):
            return x.mean(dim=(2, 3))

    with pytest.raises(ValueError, match="dense output"):
        predictor(_Pooled(), "cls", image)
