"""Coverage of the bootstrap intervals of ``medfoundry.evaluation.stats.mean_ci`` by simulation.

For each distribution and sample size, draws ``--trials`` samples (seeded), computes the 95 %
interval of the mean with each method (:func:`mean_ci_batch`, equal to ``mean_ci`` row by
row), and counts how often it holds the true mean. Prints per row the coverage with its
Monte-Carlo standard error ``sqrt(p (1 - p) / trials)``, the share of misses on each side,
the mean width, and the verdict against the target 94-96 %: ``met`` when the estimate lies in
it, ``not met`` otherwise (``not met (<2 SE)`` when the gap is within twice the Monte-Carlo
error). ``--out`` also writes the rows as JSON (atomic write).

Distributions (true mean): normal(0, 1) (0); exponential(1) (1, skewness 2); gamma(2)
(2, skewness 1.41); lognormal(0, 0.5) (exp(1/8), skewness 1.75); lognormal(0, 1) (exp(1/2),
skewness 6.2, a heavy tail); beta(8, 2) (0.8, skewness -0.82: a Dice-like score). Samples of
``--chunk`` trials share their bootstrap indices (seed from ``--seed`` and the chunk), which leaves each
trial's coverage that of ``mean_ci``; ``--seed`` draws another sample set.

``--candidates`` adds intervals that were tried and not kept as the default, so that the
figures in docs/evaluation_protocols.md can be rerun: ``variance-stabilised`` (Tibshirani
1988: the standard error of each replicate, exact for the mean, fitted as a linear function of
the replicate mean; the bootstrap on the scale ``g = integral 1 / se`` that this makes
variance-stable; limits mapped back) and ``tilting`` (Efron's exponential-tilting interval:
each limit is the mean of the tilted distribution ``w_i ~ exp(lambda x_i)`` under which the
observed mean is the 2.5 % tail, the tail probability computed by importance-weighting the
same replicates).

Usage::

    python benchmarks/bootstrap_coverage.py --trials 4000 --boot 2000 --n 10,30,100 --candidates
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.special import logsumexp

from medfoundry.evaluation.stats import CI_METHODS, mean_ci, mean_ci_batch
from medfoundry.utils import atomic_write_json

TARGET = (0.94, 0.96)
LEVEL = 0.95

DISTRIBUTIONS = {
    "normal": (lambda rng, k, n: rng.normal(size=(k, n)), 0.0),
    "exponential": (lambda rng, k, n: rng.exponential(size=(k, n)), 1.0),
    "gamma(2)": (lambda rng, k, n: rng.gamma(2.0, size=(k, n)), 2.0),
    "lognormal(sigma=0.5)": (lambda rng, k, n: rng.lognormal(0.0, 0.5, size=(k, n)), math.exp(0.125)),
    "lognormal(sigma=1)": (lambda rng, k, n: rng.lognormal(0.0, 1.0, size=(k, n)), math.exp(0.5)),
    "beta(8,2)": (lambda rng, k, n: rng.beta(8.0, 2.0, size=(k, n)), 0.8),
}


def _replicates(x: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.random.default_rng([seed, 7, x.shape[1]]).integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    xs = x[:, idx]
    return idx, xs.mean(axis=2), xs.std(axis=2, ddof=1) / math.sqrt(x.shape[1])


def variance_stabilised(x: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tibshirani's variance-stabilised bootstrap interval of each row's mean (candidate)."""
    _, means, ses = _replicates(x, n_boot, seed)
    mean = x.mean(axis=1)
    dm = means - mean[:, None]
    slope = ((dm - dm.mean(1, keepdims=True)) * (ses - ses.mean(1, keepdims=True))).mean(1) / dm.var(1)
    se0 = np.maximum(ses.mean(1) - slope * dm.mean(1), 1e-300)  # fitted se at the observed mean
    flat = np.abs(slope) < 1e-12
    s = np.where(flat, 1.0, slope)[:, None]
    # g(theta) = integral from mean to theta of 1 / (se0 + slope u) du: a log (identity when flat)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(flat[:, None], dm / se0[:, None], np.log1p(np.maximum(s * dm / se0[:, None], -1 + 1e-15)) / s)
    q_lo, q_hi = np.quantile(g, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=1)

    def back(v: np.ndarray) -> np.ndarray:
        return mean + np.where(flat, v * se0, se0 * np.expm1(s[:, 0] * v) / s[:, 0])

    return back(-q_hi), back(-q_lo)


def tilting(x: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Efron's exponential-tilting interval of each row's mean (candidate)."""
    idx, means, _ = _replicates(x, n_boot, seed)
    k, n = x.shape
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    mean, sd = x.mean(axis=1), x.std(axis=1, ddof=1)
    z = (x - mean[:, None]) / np.where(sd > 0, sd, 1.0)[:, None]
    alpha = (1 - LEVEL) / 2

    def limit(sign: float) -> np.ndarray:
        # bisection on |lambda| in [0, 5] standard deviations^-1: the tail of the observed mean
        # under the tilted distribution falls from 1/2 to 0 as the tilt grows
        lo, hi = np.zeros(k), np.full(k, 5.0)
        tail = (means <= mean[:, None]) if sign > 0 else (means >= mean[:, None])
        for _ in range(40):
            lam = sign * (lo + hi) / 2
            log_nw = lam[:, None] * z  # log(n w_i) of the tilted distribution
            log_nw -= logsumexp(log_nw, axis=1, keepdims=True) - math.log(n)
            log_lr = (counts @ log_nw.T).T  # (k, n_boot) log likelihood ratio of each replicate
            w = np.exp(log_lr - log_lr.max(axis=1, keepdims=True))  # scaled: only ratios matter
            p = (w * tail).sum(1) / w.sum(1)
            further = p > alpha
            lo, hi = np.where(further, (lo + hi) / 2, lo), np.where(further, hi, (lo + hi) / 2)
        log_w = sign * (lo + hi)[:, None] / 2 * z
        wi = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        return (wi * x).sum(1) / wi.sum(1)

    return limit(-1.0), limit(1.0)


CANDIDATES = {"variance-stabilised": variance_stabilised, "tilting": tilting}


def simulate(trials: int, sizes: list[int], n_boot: int, seed: int, chunk: int, candidates: bool) -> list[dict]:
    methods = list(CI_METHODS) + (list(CANDIDATES) if candidates else [])
    rows = []
    for n in sizes:
        for d, (name, (draw, truth)) in enumerate(DISTRIBUTIONS.items()):
            rng = np.random.default_rng([seed, d, n])
            above = dict.fromkeys(methods, 0)  # truth above the interval (upper limit too low)
            below = dict.fromkeys(methods, 0)
            width = dict.fromkeys(methods, 0.0)
            for c, start in enumerate(range(0, trials, chunk)):
                x = draw(rng, min(chunk, trials - start), n)
                boot_seed = 1_000_003 * seed + c
                for method in methods:
                    if method in CANDIDATES:
                        lo, hi = CANDIDATES[method](x, n_boot, boot_seed)
                    else:
                        _, lo, hi = mean_ci_batch(x, n_boot=n_boot, level=LEVEL, seed=boot_seed, method=method)
                    above[method] += int(np.count_nonzero(hi < truth))
                    below[method] += int(np.count_nonzero(lo > truth))
                    width[method] += float(np.sum(hi - lo))
            for method in methods:
                cov = 1.0 - (above[method] + below[method]) / trials
                se = math.sqrt(cov * (1 - cov) / trials)
                rows.append({"distribution": name, "n": n, "method": method, "trials": trials, "boot": n_boot,
                             "coverage": cov, "mc_se": se, "miss_upper": above[method] / trials,
                             "miss_lower": below[method] / trials, "mean_width": width[method] / trials,
                             "verdict": verdict(cov, se)})
            print(f"  done n={n} {name}", flush=True)
    return rows


def verdict(coverage: float, se: float) -> str:
    if TARGET[0] <= coverage <= TARGET[1]:
        return "met"
    gap = TARGET[0] - coverage if coverage < TARGET[0] else coverage - TARGET[1]
    return "not met (<2 SE)" if gap < 2 * se else "not met"


def interval_times(n_boot: int, n: int = 30, repeats: int = 20) -> dict[str, float]:
    """Milliseconds of one ``mean_ci`` call per method on a sample of ``n`` values."""
    x = np.random.default_rng(0).lognormal(size=n)
    out = {}
    for method in CI_METHODS:
        mean_ci(x, n_boot=n_boot, method=method)  # warm-up
        t0 = time.perf_counter()
        for r in range(repeats):
            mean_ci(x, n_boot=n_boot, seed=r, method=method)
        out[method] = 1000 * (time.perf_counter() - t0) / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000, help="simulated samples per distribution and n")
    parser.add_argument("--n", default="10,30,100", help="comma-separated sample sizes")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap replicates per interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=100, help="trials computed at once")
    parser.add_argument("--candidates", action="store_true", help="also the intervals not kept as default")
    parser.add_argument("--out", default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    try:
        sizes = [int(v) for v in args.n.split(",")]
    except ValueError:
        parser.error(f"--n: expected comma-separated integers, got {args.n!r}")
    if args.trials < 1 or args.boot < 2 or args.chunk < 1 or min(sizes) < 2:
        parser.error("--trials and --chunk must be >= 1, --boot and every --n >= 2")
    t0 = time.perf_counter()
    rows = simulate(args.trials, sizes, args.boot, args.seed, args.chunk, args.candidates)
    elapsed = time.perf_counter() - t0
    times = interval_times(args.boot)
    print(f"95 % intervals of the mean, {args.trials} samples per row, {args.boot} replicates each, "
          f"seed {args.seed}; target {100 * TARGET[0]:.0f}-{100 * TARGET[1]:.0f} %; {elapsed:.0f} s")
    print(f"{'distribution':<21} {'n':>4} {'method':<20} {'coverage':>8} {'MC SE':>6} {'truth<lo/>hi':>12} "
          f"{'width':>8}  verdict")
    for r in rows:
        print(f"{r['distribution']:<21} {r['n']:>4} {r['method']:<20} {100 * r['coverage']:7.1f}% "
              f"{100 * r['mc_se']:5.1f}% {100 * r['miss_lower']:5.1f}/{100 * r['miss_upper']:<5.1f} "
              f"{r['mean_width']:8.3f}  {r['verdict']}")
    print("one mean_ci call, n = 30: " + ", ".join(f"{m} {ms:.1f} ms" for m, ms in times.items()))
    if args.out:
        atomic_write_json(args.out, {"rows": rows, "interval_ms_n30": times, "seconds": elapsed,
                                     "args": vars(args)})


if __name__ == "__main__":
    main()
