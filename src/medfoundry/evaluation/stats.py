"""Means with percentile-bootstrap 95 % confidence intervals.

The transfer benchmark varies two things that a CI must cover: the training seed and the
test cases. :func:`mean_ci` resamples both for a (seeds, cases) table: each replicate draws
seeds with replacement and, independently, test cases with replacement (the *same* case
indices for every seed, since all seeds are scored on the same test images), and takes the
mean of the resulting table. For metrics that are not means of per-case values (AUROC,
balanced accuracy, mAP) each run stores metric values on case-resamples drawn from a shared
seed (:func:`bootstrap_indices`), and :func:`seed_case_ci` combines them over seeds the same
two-stage way. The interval is the percentile interval (Efron): the 2.5 % and 97.5 %
quantiles of the replicates; every function takes a ``seed`` and is deterministic.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["bootstrap_indices", "mean_ci", "seed_case_ci", "bootstrap_statistic"]


def bootstrap_indices(n: int, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement from ``range(n)``; same seed, same bytes."""
    if n < 1:
        raise ValueError(f"bootstrap_indices(): n must be >= 1, got {n}")
    rng = np.random.default_rng([seed, n])
    return rng.integers(0, n, size=(n_boot, n))


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of per-case values.

    Args:
        values: (cases,) or (seeds, cases); NaN entries (e.g. Dice of an empty class) are
            ignored in every mean.
        n_boot: number of bootstrap replicates.
        level: coverage of the interval (0.95 for a 95 % CI).
        seed: seed of the resampling.

    Returns:
        ``(mean, low, high)``; ``low == high == mean`` for a single value; all NaN if no finite value.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"mean_ci(): values must be (cases,) or (seeds, cases), got shape {np.shape(values)}")
    if not np.isfinite(v).any():
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(v))
    s, n = v.shape
    rng = np.random.default_rng([seed, s, n])
    reps = np.empty(n_boot)
    finite = np.isfinite(v)
    vz = np.where(finite, v, 0.0)
    for b in range(n_boot):
        rs = rng.integers(0, s, size=s)
        cs = rng.integers(0, n, size=n)
        num = vz[np.ix_(rs, cs)].sum()
        den = finite[np.ix_(rs, cs)].sum()
        reps[b] = num / den if den else np.nan
    lo, hi = _interval(reps, level)
    return mean, lo, hi


def seed_case_ci(point: np.ndarray, replicates: np.ndarray, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Combine per-seed case-bootstrap replicates into a mean over seeds and its CI.

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
    s, b = r.shape
    if b == 0:
        return mean, mean, mean
    rng = np.random.default_rng([seed, s, b])
    rows = rng.integers(0, s, size=(b, s))
    with np.errstate(invalid="ignore"):
        picked = r[rows, np.arange(b)[:, None]]  # (B, s): replicate b of the seeds drawn for b
        counts = np.isfinite(picked).sum(axis=1)
        reps = np.where(counts > 0, np.nansum(picked, axis=1) / np.maximum(counts, 1), np.nan)
    lo, hi = _interval(reps, level)
    return mean, lo, hi


def bootstrap_statistic(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 200,
                        seed: int = 0) -> np.ndarray:
    """``statistic(indices)`` on ``n_boot`` case-resamples of ``range(n)``; returns (n_boot,)."""
    idx = bootstrap_indices(n, n_boot, seed)
    return np.array([statistic(row) for row in idx], dtype=float)
