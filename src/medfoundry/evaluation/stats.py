"""Bootstrap confidence intervals and paired comparisons of methods.

The transfer benchmark varies two things that a CI must cover: the training seed and the
test cases. :func:`mean_ci` resamples both for a (seeds, cases) table: each replicate draws
seeds with replacement and, independently, test cases with replacement (the *same* case
indices for every seed, since all seeds are scored on the same test images).

Interval methods (``method=``):

* ``"studentized"`` (bootstrap-t, the default of :func:`mean_ci`): the replicates of
  ``t = (mean* - mean) / se*`` calibrate ``mean - t·se``. Second-order accurate, it corrects
  both the small-sample width and the skew of the mean of skewed data, which the percentile
  and BCa intervals miss; it had the best coverage of every interval tried (normal, skewed
  and Dice-like data, n = 10 to 100; table and the methods not kept in
  docs/evaluation_protocols.md, figures from ``benchmarks/bootstrap_coverage.py``). Heavy
  tails still under-cover at small n (lognormal with sigma 1: about 92 % at n = 30). ``se`` of
  a (seeds, cases) table is the plug-in ``sqrt(var(seed means) / seeds + var(case means) /
  cases)``. The interval is clipped to the range of the finite values, where the t replicates
  of tiny samples (n < 5) are unbounded.
* ``"bca"``: bias-corrected and accelerated percentile interval (Efron 1987), with the
  acceleration from the jackknife; for any statistic of the cases (:func:`bootstrap_ci`).
* ``"percentile"``: the 2.5 % and 97.5 % quantiles of the replicates (Efron's percentile
  interval), the only choice when just the replicates are known (:func:`seed_case_ci`).

:func:`mean_ci_batch` computes :func:`mean_ci` for many samples at once (rows of a (k, cases)
array), vectorised: for rankings, per-class tables and coverage simulations.

For metrics that are not means of per-case values (AUROC, balanced accuracy, mAP) each run
stores metric values on case-resamples drawn from a shared seed (:func:`bootstrap_indices`),
and :func:`seed_case_ci` combines them over seeds the same two-stage way. Two methods scored
on the same cases and seeds are compared by :func:`paired_difference` (per-case values),
:func:`paired_bootstrap_difference` (stored replicates) or :func:`paired_seed_difference`
(runs keyed by seed, on the seeds both have). Every function takes a ``seed`` and
is deterministic.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "bootstrap_indices",
    "mean_ci",
    "mean_ci_batch",
    "seed_case_ci",
    "bootstrap_statistic",
    "bootstrap_ci",
    "paired_difference",
    "paired_bootstrap_difference",
    "paired_seed_difference",
    "PairedDifference",
    "CI_METHODS",
]

CI_METHODS = ("studentized", "bca", "percentile")
_CHUNK = 256  # replicates evaluated at once: bounds memory for large (seeds, cases) tables
_BATCH_ELEMENTS = 1 << 22  # resampled values held at once by mean_ci_batch (32 MiB of float64)


class PairedDifference(NamedTuple):
    """Mean of ``a - b``, its CI and the two-sided p-value of "no difference"."""

    difference: float
    low: float
    high: float
    p_value: float
    n: int  # cases (or replicates) the comparison rests on


def bootstrap_indices(n: int, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement from ``range(n)``; same seed, same bytes."""
    if n < 1:
        raise ValueError(f"bootstrap_indices(): n must be >= 1, got {n}")
    rng = np.random.default_rng([seed, n])
    return rng.integers(0, n, size=(n_boot, n))


def _check_level(level: float, name: str) -> None:
    if not 0 < level < 1:
        raise ValueError(f"{name}(): level must lie in (0, 1), got {level}")


def _check_method(method: str, allowed: tuple[str, ...], name: str) -> None:
    if method not in allowed:
        raise ValueError(f"{name}(): method must be one of {allowed}, got {method!r}")


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _as_table(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"{name}(): values must be (cases,) or (seeds, cases), got shape {np.shape(values)}")
    return v


def _mean_se(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the finite entries of each (seeds, cases) table in a (..., seeds, cases) stack,
    and the plug-in standard error sqrt(var(seed means)/seeds + var(case means)/cases)."""
    finite = np.isfinite(tables)
    z = np.where(finite, tables, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = z.sum(axis=(-1, -2)) / finite.sum(axis=(-1, -2))
        var_terms = []
        for axis in (-1, -2):  # -1: seed (row) means, -2: case (column) means
            count = finite.sum(axis=axis)
            means = z.sum(axis=axis) / np.maximum(count, 1)
            valid = count > 0
            k = valid.sum(axis=-1)
            centre = np.where(valid, means, 0.0).sum(axis=-1) / np.maximum(k, 1)
            ss = np.where(valid, (means - centre[..., None]) ** 2, 0.0).sum(axis=-1)
            var_terms.append(np.where(k > 1, ss / np.maximum(k - 1, 1) / np.maximum(k, 1), 0.0))
    return mean, np.sqrt(var_terms[0] + var_terms[1])


def _two_stage_replicates(v: np.ndarray, n_boot: int, seed: int, studentized: bool
                          ) -> tuple[np.ndarray, np.ndarray]:
    s, n = v.shape
    rng = np.random.default_rng([seed, s, n])
    rows = rng.integers(0, s, size=(n_boot, s))
    cols = rng.integers(0, n, size=(n_boot, n))
    means, ses = np.empty(n_boot), np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        r, c = rows[start:start + _CHUNK], cols[start:start + _CHUNK]
        tables = v[r[:, :, None], c[:, None, :]]  # (chunk, s, n)
        if studentized:
            means[start:start + len(r)], ses[start:start + len(r)] = _mean_se(tables)
        else:
            finite = np.isfinite(tables)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[start:start + len(r)] = np.where(finite, tables, 0.0).sum(axis=(1, 2)) / finite.sum(axis=(1, 2))
    return means, ses


def _studentized(mean: float, se: float, means: np.ndarray, ses: np.ndarray, level: float,
                 bounds: tuple[float, float]) -> tuple[float, float]:
    if not se > 0:
        return mean, mean
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (means - mean) / ses
    # A replicate of identical values has se* = 0: its t is +-inf (kept, as the extreme it is)
    # or 0/0 (dropped); the clip below bounds what infinite quantiles would give.
    t = t[~np.isnan(t)]
    if t.size == 0:
        return mean, mean
    t = np.clip(t, -1e300, 1e300)
    alpha = (1.0 - level) / 2.0
    t_lo, t_hi = np.quantile(t, [alpha, 1.0 - alpha])
    low = min(max(mean - t_hi * se, bounds[0]), mean)
    high = max(min(mean - t_lo * se, bounds[1]), mean)
    return float(low), float(high)


def _bca(point: float, reps: np.ndarray, jack: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    jack = jack[np.isfinite(jack)]
    if reps.size == 0:
        return float("nan"), float("nan")
    b = reps.size
    below = (np.count_nonzero(reps < point) + 0.5 * np.count_nonzero(reps == point)) / b
    z0 = ndtri(np.clip(below, 0.5 / b, 1 - 0.5 / b))
    d = jack.mean() - jack if jack.size else np.zeros(0)
    denom = 6.0 * np.sum(d ** 2) ** 1.5
    accel = float(np.sum(d ** 3) / denom) if denom > 0 else 0.0
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    adjusted = ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    lo, hi = np.quantile(reps, adjusted)
    return float(lo), float(hi)


def mean_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
            method: str = "studentized") -> tuple[float, float, float]:
    """Mean of per-case values and its bootstrap CI.

    Args:
        values: (cases,) or (seeds, cases); NaN entries (e.g. Dice of an empty class) are
            ignored in every mean.
        n_boot: number of bootstrap replicates.
        level: coverage of the interval (0.95 for a 95 % CI).
        seed: seed of the resampling.
        method: ``"studentized"`` (default), ``"percentile"``, or ``"bca"`` (one seed only:
            the jackknife runs over cases).

    Returns:
        ``(mean, low, high)``; ``low == high == mean`` for a single value; all NaN if no finite value.
    """
    _check_level(level, "mean_ci")
    _check_method(method, CI_METHODS, "mean_ci")
    v = _as_table(values, "mean_ci")
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(finite.mean())
    if method == "bca" and v.shape[0] != 1:
        raise ValueError(f"mean_ci(): method 'bca' needs one seed (cases,), got shape {v.shape}")
    if v.shape[0] == 1 and (method == "bca" or finite.size == v.size):
        # One seed: the vectorised path of mean_ci_batch (BCa resamples the finite cases only).
        m, lo, hi = _rows_ci(finite[None, :], n_boot, level, seed, method)
        return float(m[0]), float(lo[0]), float(hi[0])
    means, ses = _two_stage_replicates(v, n_boot, seed, studentized=method == "studentized")
    if method == "percentile":
        lo, hi = _interval(means, level)
        return mean, lo, hi
    _, se = _mean_se(v)
    lo, hi = _studentized(mean, float(se), means, ses, level, (float(finite.min()), float(finite.max())))
    return mean, lo, hi


def mean_ci_batch(samples, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                  method: str = "studentized") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mean_ci` of every row of a (k, cases) array in one vectorised pass.

    Row ``i`` gives ``mean_ci(samples[i], n_boot, level, seed, method)`` (up to the summation
    order, ~1e-15 relative): every row is resampled with the same case indices (those of
    ``seed``), which keeps each row's interval that of :func:`mean_ci` (rows are separate
    samples, e.g. the metrics of a ranking or the trials of a coverage simulation). Rows
    holding NaN or inf take the per-row path.

    Returns:
        ``(means, lows, highs)``, each of shape (k,).
    """
    _check_level(level, "mean_ci_batch")
    _check_method(method, CI_METHODS, "mean_ci_batch")
    x = np.asarray(samples, dtype=float)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"mean_ci_batch(): samples must be (k, cases), got shape {np.shape(samples)}")
    clean = np.isfinite(x).all(axis=1)
    out = np.empty((3, x.shape[0]))
    if clean.any():
        out[:, clean] = _rows_ci(x[clean], n_boot, level, seed, method)
    for i in np.flatnonzero(~clean):
        out[:, i] = mean_ci(x[i], n_boot=n_boot, level=level, seed=seed, method=method)
    return out[0], out[1], out[2]


def _case_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The case resamples of a one-seed table in :func:`_two_stage_replicates` (same stream)."""
    rng = np.random.default_rng([seed, 1, n])
    rng.integers(0, 1, size=(n_boot, 1))  # the seed draw of a one-row table: kept for the same stream
    return rng.integers(0, n, size=(n_boot, n))


def _rows_ci(x: np.ndarray, n_boot: int, level: float, seed: int, method: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and CI of each row of a finite (k, n) array, resampled with shared case indices."""
    k, n = x.shape
    idx = _case_indices(n, n_boot, seed)
    alpha = (1.0 - level) / 2.0
    mean = x.mean(axis=1)
    lows, highs = np.empty(k), np.empty(k)
    step = max(1, _BATCH_ELEMENTS // (n_boot * n))
    for a in range(0, k, step):
        rows = slice(a, a + step)
        means, ses = _resampled_moments(x[rows], idx, with_se=method == "studentized")
        if method == "percentile":
            lows[rows], highs[rows] = np.quantile(means, [alpha, 1.0 - alpha], axis=1)
        elif method == "bca":
            lows[rows], highs[rows] = _bca_rows(x[rows], mean[rows], means, level)
        else:
            lows[rows], highs[rows] = _studentized_rows(x[rows], mean[rows], means, ses, alpha)
    return mean, lows, highs


def _resampled_moments(x: np.ndarray, idx: np.ndarray, with_se: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean (and standard error) of each row of ``x`` on each resample ``idx[b]``: (rows, n_boot).
    Resamples are taken in slices so that at most ``_BATCH_ELEMENTS`` values are held at once."""
    k, n = x.shape
    n_boot = idx.shape[0]
    means, ses = np.empty((k, n_boot)), np.zeros((k, n_boot))
    step = max(1, _BATCH_ELEMENTS // (k * n))
    for b in range(0, n_boot, step):
        xs = x[:, idx[b:b + step]]  # (rows, slice, n)
        means[:, b:b + step] = xs.mean(axis=2)
        if with_se and n > 1:
            ses[:, b:b + step] = xs.std(axis=2, ddof=1) / np.sqrt(n)
    return means, ses


def _studentized_rows(x: np.ndarray, mean: np.ndarray, means: np.ndarray, ses: np.ndarray,
                      alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise :func:`_studentized`, for finite rows resampled with shared indices."""
    n = x.shape[1]
    se = x.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(x.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (means - mean[:, None]) / ses
    t = np.clip(t, -1e300, 1e300)  # NaN stays NaN
    nan_rows = np.isnan(t).any(axis=1)
    t_lo, t_hi = np.quantile(np.where(nan_rows[:, None], 0.0, t), [alpha, 1.0 - alpha], axis=1)
    for i in np.flatnonzero(nan_rows):  # 0/0 replicates are dropped, as in _studentized
        kept = t[i][~np.isnan(t[i])]
        t_lo[i], t_hi[i] = np.quantile(kept, [alpha, 1.0 - alpha]) if kept.size else (0.0, 0.0)
    low = np.minimum(np.maximum(mean - t_hi * se, x.min(axis=1)), mean)
    high = np.maximum(np.minimum(mean - t_lo * se, x.max(axis=1)), mean)
    flat = ~(se > 0)
    return np.where(flat, mean, low), np.where(flat, mean, high)


def _bca_rows(x: np.ndarray, mean: np.ndarray, means: np.ndarray, level: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise :func:`_bca` of the mean: jackknife acceleration in closed form."""
    k, n = x.shape
    b = means.shape[1]
    below = ((means < mean[:, None]).sum(axis=1) + 0.5 * (means == mean[:, None]).sum(axis=1)) / b
    z0 = ndtri(np.clip(below, 0.5 / b, 1 - 0.5 / b))
    if n > 1:
        jack = (x.sum(axis=1, keepdims=True) - x) / (n - 1)
        d = jack.mean(axis=1, keepdims=True) - jack
        denom = 6.0 * np.sum(d ** 2, axis=1) ** 1.5
        with np.errstate(invalid="ignore", divide="ignore"):
            accel = np.where(denom > 0, np.sum(d ** 3, axis=1) / np.where(denom > 0, denom, 1.0), 0.0)
    else:
        accel = np.zeros(k)
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    zz = z0[:, None] + z[None, :]
    probs = ndtr(z0[:, None] + zz / (1 - accel[:, None] * zz))  # (k, 2)
    # np.quantile's default (linear) rule at a different pair of probabilities per row
    ordered = np.sort(means, axis=1)
    pos = probs * (b - 1)
    lo_i = np.clip(np.floor(pos).astype(int), 0, b - 1)
    hi_i = np.minimum(lo_i + 1, b - 1)
    frac = pos - lo_i
    rows = np.arange(k)[:, None]
    low_v, high_v = ordered[rows, lo_i], ordered[rows, hi_i]
    vals = low_v + frac * (high_v - low_v)
    return vals[:, 0], vals[:, 1]


def seed_case_ci(point: np.ndarray, replicates: np.ndarray, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Combine per-seed case-bootstrap replicates into a mean over seeds and its CI.

    A percentile interval: only the replicates of the metric are stored, not what a
    studentized or BCa interval needs (per-replicate standard errors, jackknife values).

    Args:
        point: (seeds,) metric of each seed on the full test set.
        replicates: (seeds, B) metric of each seed on case-resample ``b``; resample ``b`` must
            use the same case indices for every seed (see :func:`bootstrap_indices`).
        level: coverage of the interval.
        seed: seed of the seed-resampling.

    Returns:
        ``(mean over seeds of point, low, high)``.
    """
    p = np.asarray(point, dtype=float).reshape(-1)
    r = np.asarray(replicates, dtype=float)
    if r.ndim != 2 or r.shape[0] != p.size:
        raise ValueError(f"seed_case_ci(): replicates must be (seeds={p.size}, B), got {r.shape}")
    if not np.isfinite(p).any():
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(p))
    reps = _seed_case_replicates(r, seed)
    if reps.size == 0:
        return mean, mean, mean
    lo, hi = _interval(reps, level)
    return mean, lo, hi


def _seed_case_replicates(r: np.ndarray, seed: int) -> np.ndarray:
    """Replicate ``b``: the mean over a resample of seeds of their case-replicate ``b``."""
    s, b = r.shape
    if b == 0:
        return np.zeros(0)
    rng = np.random.default_rng([seed, s, b])
    rows = rng.integers(0, s, size=(b, s))
    with np.errstate(invalid="ignore"):
        picked = r[rows, np.arange(b)[:, None]]  # (B, s): replicate b of the seeds drawn for b
        counts = np.isfinite(picked).sum(axis=1)
        return np.where(counts > 0, np.nansum(picked, axis=1) / np.maximum(counts, 1), np.nan)


def bootstrap_statistic(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 200,
                        seed: int = 0) -> np.ndarray:
    """``statistic(indices)`` on ``n_boot`` case-resamples of ``range(n)``; returns (n_boot,)."""
    idx = bootstrap_indices(n, n_boot, seed)
    return np.array([statistic(row) for row in idx], dtype=float)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0, method: str = "bca") -> tuple[float, float, float]:
    """Point value and CI of any statistic of ``n`` cases (AUROC, balanced accuracy, mAP...).

    Args:
        statistic: maps an array of case indices (with repeats) to the metric on those cases.
        n: number of cases.
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: seed of the resampling (:func:`bootstrap_indices`).
        method: ``"bca"`` (default; ``n`` extra calls for the jackknife) or ``"percentile"``.

    Returns:
        ``(statistic(range(n)), low, high)``.
    """
    _check_level(level, "bootstrap_ci")
    _check_method(method, ("bca", "percentile"), "bootstrap_ci")
    point = float(statistic(np.arange(n)))
    reps = bootstrap_statistic(statistic, n, n_boot, seed)
    if method == "percentile":
        lo, hi = _interval(reps, level)
        return point, lo, hi
    everyone = np.arange(n)
    jack = np.array([statistic(np.delete(everyone, i)) for i in range(n)], dtype=float) if n > 1 else np.zeros(0)
    lo, hi = _bca(point, reps, jack, level)
    return point, lo, hi


def _sign_flip_p(diff: np.ndarray, n_perm: int, seed: int) -> float:
    """Two-sided sign-flip permutation p-value of mean(diff) = 0 (exact when 2**n <= n_perm)."""
    n = diff.size
    observed = abs(diff.mean())
    # Relative slack: flips that reproduce |mean| up to rounding count as "as extreme".
    slack = 1e-12 * max(observed, np.abs(diff).max(initial=0.0))
    if 2 ** n <= n_perm:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        stats = np.abs(signs @ diff) / n
        return float(np.mean(stats >= observed - slack))
    rng = np.random.default_rng([seed, n, n_perm])
    hits = 0
    for start in range(0, n_perm, _CHUNK):
        signs = rng.choice((-1.0, 1.0), size=(min(_CHUNK, n_perm - start), n))
        hits += int(np.count_nonzero(np.abs(signs @ diff) / n >= observed - slack))
    return (hits + 1) / (n_perm + 1)


def paired_difference(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0, n_perm: int = 10000,
                      method: str = "studentized") -> PairedDifference:
    """Compare two methods scored on the same cases (and seeds): mean of ``a - b``, CI, p-value.

    Args:
        a: per-case values of method A, (cases,) or (seeds, cases).
        b: the same cases (and seeds, in the same order) scored by method B.
        n_boot: bootstrap replicates of the CI.
        level: coverage of the CI.
        seed: seed of the resampling and of the permutations.
        n_perm: random sign flips when ``2 ** cases`` exceeds it (else all flips, exact).
        method: interval of :func:`mean_ci` on the differences.

    Returns:
        :class:`PairedDifference`: the mean difference with its two-stage bootstrap CI, and
        the two-sided p-value of a sign-flip permutation test on the per-case differences
        averaged over seeds (under "no difference" each case's sign is arbitrary). Pairs with
        a NaN on either side are left out; ``n`` counts the cases used.
    """
    da, db = _as_table(a, "paired_difference"), _as_table(b, "paired_difference")
    if da.shape != db.shape:
        raise ValueError(f"paired_difference(): a has shape {da.shape}, b {db.shape}; they must match")
    diff = da - db
    mean, lo, hi = mean_ci(diff, n_boot=n_boot, level=level, seed=seed, method=method)
    finite = np.isfinite(diff)
    counts = finite.sum(axis=0)
    per_case = np.where(finite, diff, 0.0).sum(axis=0)[counts > 0] / counts[counts > 0]
    p = _sign_flip_p(per_case, n_perm, seed) if per_case.size else float("nan")
    return PairedDifference(mean, lo, hi, p, int(per_case.size))


def paired_bootstrap_difference(point_a, replicates_a, point_b, replicates_b, level: float = 0.95,
                                seed: int = 0) -> PairedDifference:
    """Compare two methods from their stored case-bootstrap replicates (same seeds, same resamples).

    For metrics that are not means of per-case values (AUROC, mAP...), where only the
    per-seed figure and its replicates on shared case resamples are kept (see
    :func:`seed_case_ci`): the replicates of ``a - b`` are paired by seed and resample.

    Args:
        point_a: (seeds,) metric of method A per seed on the full test set.
        replicates_a: (seeds, B) its case-bootstrap replicates.
        point_b: (seeds,) method B, the same seeds in the same order.
        replicates_b: (seeds, B) on the same case resamples as ``replicates_a``.
        level: coverage of the CI.
        seed: seed of the seed-resampling.

    Returns:
        :class:`PairedDifference`: mean over seeds of ``a - b`` with its percentile CI, and the
        paired-bootstrap two-sided p-value ``min(1, 2 min(P(d* <= 0), P(d* >= 0)))`` (the
        smallest ``1 - level`` at which the interval excludes 0); ``n`` counts the replicates.
    """
    pa, pb = np.asarray(point_a, dtype=float).reshape(-1), np.asarray(point_b, dtype=float).reshape(-1)
    ra, rb = np.asarray(replicates_a, dtype=float), np.asarray(replicates_b, dtype=float)
    if pa.shape != pb.shape or ra.shape != rb.shape:
        raise ValueError(f"paired_bootstrap_difference(): points {pa.shape} vs {pb.shape} and replicates "
                         f"{ra.shape} vs {rb.shape} must match")
    mean, lo, hi = seed_case_ci(pa - pb, ra - rb, level=level, seed=seed)
    reps = _seed_case_replicates(ra - rb, seed) if ra.ndim == 2 and ra.shape[0] == pa.size else np.zeros(0)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return PairedDifference(mean, lo, hi, float("nan"), 0)
    p = min(1.0, 2.0 * min(np.mean(reps <= 0), np.mean(reps >= 0)))
    return PairedDifference(mean, lo, hi, float(p), int(reps.size))


def paired_seed_difference(seeds_a, point_a, replicates_a, seeds_b, point_b, replicates_b,
                           level: float = 0.95, seed: int = 0) -> PairedDifference:
    """Compare two methods run under (partly) the same seeds, on the seeds both have.

    Each run is one seed's figure on the full test set plus, optionally, its replicates on
    shared case resamples. With replicates of equal length on both sides this is
    :func:`paired_bootstrap_difference` (seeds x cases); otherwise the seeds are the only
    paired units and :func:`paired_difference` runs on the per-seed figures (with 3 seeds its
    sign-flip p-value cannot fall below 0.25: that is all 3 seeds can say).

    Args:
        seeds_a: (runs_a,) seed of each run of method A.
        point_a: (runs_a,) its figure on the full test set.
        replicates_a: (runs_a, B) its case-bootstrap replicates, or ``None``.
        seeds_b, point_b, replicates_b: the same for method B.
        level: coverage of the CI.
        seed: seed of the resampling.

    Returns:
        :class:`PairedDifference` of ``a - b``; all NaN with ``n == 0`` when no seed is shared.
    """
    sa = [int(x) for x in np.asarray(seeds_a).reshape(-1)]
    sb = [int(x) for x in np.asarray(seeds_b).reshape(-1)]
    pa, pb = np.asarray(point_a, dtype=float).reshape(-1), np.asarray(point_b, dtype=float).reshape(-1)
    if len(sa) != pa.size or len(sb) != pb.size:
        raise ValueError(f"paired_seed_difference(): {len(sa)} seeds for {pa.size} figures of a, "
                         f"{len(sb)} for {pb.size} of b; they must match")
    common = sorted(set(sa) & set(sb))
    if not common:
        return PairedDifference(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    ia, ib = [sa.index(x) for x in common], [sb.index(x) for x in common]
    ra = None if replicates_a is None else np.asarray(replicates_a, dtype=float)
    rb = None if replicates_b is None else np.asarray(replicates_b, dtype=float)
    if (ra is not None and rb is not None and ra.ndim == rb.ndim == 2 and ra.shape[1] == rb.shape[1] > 0
            and ra.shape[0] == pa.size and rb.shape[0] == pb.size):
        return paired_bootstrap_difference(pa[ia], ra[ia], pb[ib], rb[ib], level=level, seed=seed)
    return paired_difference(pa[ia], pb[ib], level=level, seed=seed)
