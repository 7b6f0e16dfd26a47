"""Ensembles of label maps and probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.errors import ConfigError
from medfoundry.robustness.ensemble import majority_vote, mean_probabilities, staple


def test_vote_and_staple_agree_with_the_majority_on_clear_cases():
    a = np.zeros((6, 6, 4), np.uint8)
    a[1:5, 1:5] = 1
    a[2:4, 2:4] = 2
    b = a.copy()
    b[0, 0, 0] = 2  # one dissenting voxel per run, at different places
    c = a.copy()
    c[5, 5, 3] = 1
    np.testing.assert_array_equal(majority_vote([a, b, c]), a)
    np.testing.assert_array_equal(staple([a, b, c]), a)
    assert majority_vote([np.array([1]), np.array([2])])[0] == 1  # tie: smallest label


def test_mean_probabilities_checks_shapes():
    p = np.random.default_rng(0).random((3, 4, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(mean_probabilities([p, 1 - p]), np.full(p.shape, 0.5), atol=1e-6)
    with pytest.raises(ConfigError, match="differ in shape"):
        mean_probabilities([p, p[:2]])
