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


def test_studentized_is_the_default_and_corrects_skew():
    from medfoundry.evaluation.stats import CI_METHODS

    assert CI_METHODS[0] == "studentized"
    x = np.random.default_rng(0).lognormal(size=30)
    mean, lo, hi = mean_ci(x, seed=1)
    assert mean_ci(x, seed=1) == (mean, lo, hi)
    _, p_lo, p_hi = mean_ci(x, seed=1, method="percentile")
    # Right-skewed data: the studentized interval reaches further up than the percentile one.
    assert lo < mean < hi and hi - mean > mean - lo
    assert hi > p_hi


def test_studentized_matches_t_interval_on_normal_data():
    from scipy import stats as st

    x = np.random.default_rng(3).normal(10.0, 2.0, size=200)
    mean, lo, hi = mean_ci(x, n_boot=4000, seed=0)
    t_lo, t_hi = st.t.interval(0.95, x.size - 1, loc=x.mean(), scale=st.sem(x))
    assert lo == pytest.approx(t_lo, abs=0.06) and hi == pytest.approx(t_hi, abs=0.06)


def test_bca_agrees_with_scipy():
    from scipy import stats as st

    from medfoundry.evaluation.stats import bootstrap_ci

    x = np.random.default_rng(4).exponential(size=40)
    want = st.bootstrap((x,), np.mean, n_resamples=6000, method="BCa", random_state=0).confidence_interval
    _, lo, hi = mean_ci(x, n_boot=6000, method="bca")
    assert lo == pytest.approx(want.low, rel=0.04) and hi == pytest.approx(want.high, rel=0.04)
    # The general form on a statistic of case indices gives the same interval for the mean.
    point, g_lo, g_hi = bootstrap_ci(lambda idx: x[idx].mean(), x.size, n_boot=6000)
    assert point == pytest.approx(x.mean())
    assert g_lo == pytest.approx(want.low, rel=0.04) and g_hi == pytest.approx(want.high, rel=0.04)
    with pytest.raises(ValueError, match="one seed"):
        mean_ci(np.ones((2, 5)), method="bca")
    with pytest.raises(ValueError, match="method"):
        mean_ci(x, method="normal")


def test_paired_difference_exact_sign_flip():
    from medfoundry.evaluation.stats import paired_difference

    a = np.array([2.0, 4.0, 6.0])
    b = np.array([1.0, 2.0, 3.0])
    res = paired_difference(a, b)
    # differences 1, 2, 3: of the 8 sign flips only all-plus and all-minus reach |mean| = 2
    assert res.difference == 2.0 and res.p_value == pytest.approx(2 / 8) and res.n == 3
    assert res.low <= 2.0 <= res.high
    # (seeds, cases): per-case differences are averaged over seeds; a NaN pair is left out.
    a2 = np.array([[1.0, 1.0, np.nan, 1.0], [1.0, 1.0, 1.0, 1.0]])
    res2 = paired_difference(a2, np.zeros_like(a2))
    assert res2.n == 4 and res2.p_value == pytest.approx(2 / 16)
    with pytest.raises(ValueError, match="shape"):
        paired_difference(a, b[:2])


def test_paired_difference_random_flips_are_seeded():
    from medfoundry.evaluation.stats import paired_difference

    rng = np.random.default_rng(9)
    a, b = rng.normal(size=40), rng.normal(size=40)
    first = paired_difference(a, b, n_perm=2000, seed=2)
    assert first == paired_difference(a, b, n_perm=2000, seed=2)
    assert 0 < first.p_value <= 1
    shifted = paired_difference(a + 1.0, a, n_perm=2000)
    # All differences are 1: a random flip reaches |mean| = 1 only by drawing all signs equal.
    assert shifted.p_value == pytest.approx(1 / 2001)


def test_paired_bootstrap_difference_from_replicates():
    from medfoundry.evaluation.stats import paired_bootstrap_difference

    rng = np.random.default_rng(5)
    reps_b = rng.random((3, 300))
    better = paired_bootstrap_difference([0.8, 0.8, 0.8], reps_b + 0.1, [0.7, 0.7, 0.7], reps_b)
    assert better.difference == pytest.approx(0.1) and better.p_value == 0.0
    assert better.low == pytest.approx(0.1) and better.high == pytest.approx(0.1)
    noise = paired_bootstrap_difference([0.5] * 3, rng.random((3, 300)), [0.5] * 3, rng.random((3, 300)))
    assert noise.low < 0 < noise.high and noise.p_value > 0.05


def test_paired_seed_difference_aligns_seeds():
    from medfoundry.evaluation.stats import paired_seed_difference

    rng = np.random.default_rng(6)
    reps = rng.random((3, 100))
    # b lists its seeds in another order and lacks seed 1: pairs are (0, 0) and (2, 2)
    res = paired_seed_difference([0, 1, 2], [0.9, 0.0, 0.7], reps + [[0.2], [9.0], [0.2]],
                                 [2, 0], [0.5, 0.7], reps[[2, 0]])
    assert res.difference == pytest.approx(0.2) and res.low == pytest.approx(0.2) and res.n == 100
    # no replicates: per-seed figures, exact sign flips over 2 seeds
    res = paired_seed_difference([0, 2], [0.9, 0.7], None, [2, 0], [0.5, 0.7], None)
    assert res.difference == pytest.approx(0.2) and res.p_value == pytest.approx(0.5) and res.n == 2
    assert math.isnan(paired_seed_difference([0], [1.0], None, [1], [1.0], None).difference)
    with pytest.raises(ValueError, match="seeds"):
        paired_seed_difference([0, 1], [1.0], None, [0], [1.0], None)



def test_mean_ci_batch_equals_mean_ci_row_by_row():
    from medfoundry.evaluation.stats import CI_METHODS, mean_ci_batch

    rng = np.random.default_rng(11)
    x = rng.gamma(2.0, size=(7, 25))
    x[2, 3] = np.nan  # a row with NaN takes the per-row path
    x[4] = 0.5        # constant row: a point interval
    for method in CI_METHODS:
        got = np.array(mean_ci_batch(x, n_boot=300, seed=4, method=method))
        want = np.array([mean_ci(row, n_boot=300, seed=4, method=method) for row in x]).T
        assert np.allclose(got, want, rtol=1e-12, atol=1e-14), method
        assert got[1, 4] == got[2, 4] == 0.5
        assert np.array_equal(got, np.array(mean_ci_batch(x, n_boot=300, seed=4, method=method)))
    other = np.array(mean_ci_batch(x, n_boot=300, seed=5))
    assert not np.allclose(other[1:], np.array(mean_ci_batch(x, n_boot=300, seed=4))[1:])
    with pytest.raises(ValueError, match=r"mean_ci_batch\(\): samples must be \(k, cases\)"):
        mean_ci_batch(np.ones(5))
    with pytest.raises(ValueError, match="method"):
        mean_ci_batch(x, method="tilting")


def test_studentized_two_values_known_limits():
    from medfoundry.evaluation.stats import mean_ci_batch

    # Resamples of {0, 1}: {0,0} and {1,1} (se* = 0, t* = -inf / +inf, 1/4 each) and {0,1}
    # (t* = 0): the 2.5 % and 97.5 % t-quantiles are infinite, the limits the range of the data.
    assert mean_ci([0.0, 1.0], n_boot=2000, seed=3) == (0.5, 0.0, 1.0)
    means, lows, highs = mean_ci_batch([[0.0, 1.0], [2.0, 4.0]], n_boot=2000, seed=3)
    assert means.tolist() == [0.5, 3.0] and lows.tolist() == [0.0, 2.0] and highs.tolist() == [1.0, 4.0]


def test_studentized_coverage_smoke():
    from medfoundry.evaluation.stats import mean_ci_batch

    # 400 normal samples of 20: the 95 % interval holds the mean 0 in 95 % of them; the binomial
    # sd of the count is 1.1 %, so 91-99 % leaves more than 3 sd either side.
    x = np.random.default_rng(21).normal(size=(400, 20))
    _, lo, hi = mean_ci_batch(x, n_boot=400, seed=0)
    assert 0.91 <= np.mean((lo <= 0) & (0 <= hi)) <= 0.99
    # Exponential data (skewness 2) at n = 20: still close to the target.
    y = np.random.default_rng(22).exponential(size=(400, 20))
    _, lo, hi = mean_ci_batch(y, n_boot=400, seed=0)
    assert np.mean((lo <= 1) & (1 <= hi)) >= 0.88


def test_mean_ci_batch_slicing_does_not_change_the_interval(monkeypatch):
    import medfoundry.evaluation.stats as stats

    x = np.random.default_rng(12).exponential(size=(5, 40))
    whole = {m: np.array(stats.mean_ci_batch(x, n_boot=200, seed=1, method=m)) for m in stats.CI_METHODS}
    # Hold at most 50 values at once: one row per pass and one resample per slice.
    monkeypatch.setattr(stats, "_BATCH_ELEMENTS", 50)
    for method, want in whole.items():
        got = np.array(stats.mean_ci_batch(x, n_boot=200, seed=1, method=method))
        assert np.allclose(got, want, rtol=1e-12, atol=1e-14), method
