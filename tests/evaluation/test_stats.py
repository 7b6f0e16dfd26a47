"""Bootstrap CIs of medfoundry.evaluation.stats on cases whose answer is known exactly."""

import math

import numpy as np
import pytest

from medfoundry.evaluation.stats import bootstrap_indices, bootstrap_statistic, mean_ci, seed_case_ci


def test_single_value_collapses():
    assert mean_ci([2.0]) == (2.0, 2.0, 2.0)


def test_two_values_interval_spans_extremes():
    # resampled means of {0, 1} are 0, 0.5, 1 with prob 1/4, 1/2, 1/4: 2.5 % -> 0, 97.5 % -> 1
    mean, lo, hi = mean_ci([0.0, 1.0], n_boot=4000, seed=1)
    assert mean == 0.5 and lo == 0.0 and hi == 1.0


def test_nan_entries_are_ignored_and_deterministic():
    v = np.array([[0.2, np.nan, 0.4], [0.6, 0.8, np.nan]])
    # mean of the finite entries: (0.2 + 0.4 + 0.6 + 0.8) / 4 = 0.5
    a = mean_ci(v, n_boot=500, seed=3)
    b = mean_ci(v, n_boot=500, seed=3)
    assert a == b and a[0] == pytest.approx(0.5)
    assert 0.2 <= a[1] <= 0.5 <= a[2] <= 0.8


def test_all_nan_gives_nan():
    assert all(math.isnan(x) for x in mean_ci([np.nan, np.nan]))


def test_seed_case_ci_combines_seeds():
    # seed 0 always 0.5, seed 1 always 0.7: replicate means are 0.5, 0.6 or 0.7
    point = np.array([0.5, 0.7])
    reps = np.array([[0.5] * 400, [0.7] * 400])
    mean, lo, hi = seed_case_ci(point, reps)
    assert mean == pytest.approx(0.6) and lo == pytest.approx(0.5) and hi == pytest.approx(0.7)
    with pytest.raises(ValueError):
        seed_case_ci(point, reps[:1])


def test_bootstrap_indices_seeded():
    a = bootstrap_indices(10, 5, seed=7)
    assert a.shape == (5, 10) and a.min() >= 0 and a.max() < 10
    assert np.array_equal(a, bootstrap_indices(10, 5, seed=7))
    assert not np.array_equal(a, bootstrap_indices(10, 5, seed=8))
    vals = np.arange(10.0)
    reps = bootstrap_statistic(lambda r: vals[r].mean(), 10, n_boot=5, seed=7)
    assert np.allclose(reps, vals[a].mean(axis=1))
