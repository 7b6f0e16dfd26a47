"""Combine the predictions of several runs of one case: mean of probabilities, majority vote or
STAPLE of label maps.

``mean``    average of the runs' probabilities (K, *S), then the usual decoding.
``vote``    per voxel the label most runs chose; a tie goes to the smallest label value.
``staple``  SimpleITK's multi-label STAPLE (Warfield et al. 2004) on the label maps, each run's
            performance estimated by expectation-maximisation; voxels STAPLE leaves undecided
            fall back to the majority vote.

Classification heads (:func:`vote_classes`): ``mean`` averages the class probabilities,
``vote`` takes the class most runs predict (ties: the smallest class index); 2D segmentation
maps use the same three functions as volumes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["ENSEMBLES", "mean_probabilities", "majority_vote", "staple", "vote_classes"]

ENSEMBLES = ("mean", "vote", "staple")


def mean_probabilities(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Mean (float32) of the runs' probability maps (K, *S), which must have one shape."""
    shapes = {np.shape(p) for p in probabilities}
    if len(shapes) != 1:
        raise ConfigError(f"ensemble mean: the runs' probabilities differ in shape {sorted(shapes)}; the runs must "
                          "predict the same classes or regions")
    return np.mean(np.stack(probabilities), axis=0).astype(np.float32)


def majority_vote(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise most frequent label (uint8) of label maps of one shape; ties -> smallest label."""
    stack = np.stack([np.asarray(v, dtype=np.uint8) for v in labels])
    counts = np.stack([(stack == v).sum(0) for v in range(int(stack.max()) + 1)])
    return np.argmax(counts, axis=0).astype(np.uint8)


def staple(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Multi-label STAPLE (SimpleITK) of label maps of one shape (uint8 out)."""
    import SimpleITK as sitk

    stack = [np.asarray(v, dtype=np.uint8) for v in labels]
    undecided = 255
    images = [sitk.GetImageFromArray(v) for v in stack]
    out = sitk.GetArrayFromImage(sitk.MultiLabelSTAPLE(images, undecided)).astype(np.uint8)
    vote = majority_vote(stack)
    return np.where(out == undecided, vote, out).astype(np.uint8)


def vote_classes(probabilities: Sequence[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """Majority vote of classifiers: ``probabilities`` holds one (N, K) array per run; returns
    the (N,) int64 class most runs rank first (ties: the smallest class index)."""
    stack = np.stack([np.asarray(p) for p in probabilities])
    if stack.ndim != 3:
        raise ConfigError(f"ensemble vote: expected one (N, K) probability array per run, got shape {stack.shape}")
    k = int(num_classes or stack.shape[2])
    choice = stack.argmax(axis=2)
    counts = np.stack([(choice == c).sum(0) for c in range(k)], axis=1)
    return counts.argmax(axis=1).astype(np.int64)
