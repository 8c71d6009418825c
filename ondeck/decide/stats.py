"""The statistics every decision shares: tolerance balls over bins, bets against them, confidence
sequences for proportions, and reading Prometheus-style histograms.

Pure numpy/scipy: no I/O, no clock. Shares are 1-D float arrays that sum to one; counts are 1-D
arrays of non-negative numbers over the same bins.

Two ideas carry most of the weight:

* **A tolerance ball instead of a point null.** "No drift" means the live bin shares ``q`` lie within
  chi distance ``radius`` of the reference shares ``p``: ``chi(q, p) = sqrt(sum((q - p)**2 / p))``
  (Cohen's *w*; PSI is about ``w**2`` for small shifts). A shift smaller than the radius is never
  evidence, however much traffic shows it, which is what keeps tiny but "significant" shifts at
  high traffic from raising alarms.
* **Bets that are valid against the whole ball.** For any positive ``v`` over the bins, the largest
  mean of ``v`` over the ball has a closed form (:func:`ball_max_mean`); dividing by it gives a
  factor whose expectation is at most 1 under every ``q`` in the ball. Products of such factors
  over rows are e-values; that is all the sequential drift test needs.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

_NORMAL = NormalDist()


def chi2_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of chi-square with ``df`` degrees of freedom."""
    from scipy import special  # lazily: scipy costs a long-running operator ~30 MB it rarely needs

    return float(special.chdtri(df, 1.0 - q))


def chi2_tail(stat: float, df: int, nc: float = 0.0) -> float:
    """P(X >= stat) for X chi-square with ``df`` degrees of freedom and noncentrality ``nc``."""
    from scipy import special

    if nc == 0:
        return float(special.chdtrc(df, stat))
    return min(1.0, max(0.0, 1.0 - float(special.chndtr(stat, df, nc))))


def normal_quantile(q: float) -> float:
    return _NORMAL.inv_cdf(q)


def normal_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return _NORMAL.cdf(-z)


# -- shares and effect sizes ------------------------------------------------------------------------
def smoothed_shares(shares: np.ndarray | list[float], rows: int) -> np.ndarray:
    """Reference shares from ``rows`` rows, with half a row added to every bin (Jeffreys).

    A bin the reference never saw must not have probability zero: one live row there would be
    infinitely surprising.
    """
    shares = np.asarray(shares, dtype=np.float64)
    rows = max(int(rows), 1)
    return (shares * rows + 0.5) / (rows + 0.5 * shares.size)


def shares_of(counts: np.ndarray, prior: np.ndarray, prior_rows: float = 1.0) -> np.ndarray:
    """Shares estimated from ``counts``, shrunk towards ``prior`` by ``prior_rows`` pseudo-rows."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + prior_rows * prior) / (counts.sum() + prior_rows)


def chi_distance(q: np.ndarray, p: np.ndarray) -> float:
    """Cohen's *w*: ``sqrt(sum((q - p)**2 / p))``, the effect size the tolerance ball is cut in."""
    return float(np.sqrt(np.sum((q - p) ** 2 / p)))


def psi(q: np.ndarray, p: np.ndarray) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))`` (both shares must be positive)."""
    return float(np.sum((q - p) * np.log(q / p)))


def bin_centres(edges: np.ndarray | list[float]) -> np.ndarray:
    """A representative value per bin; the two open-ended bins get their neighbour's width."""
    e = np.asarray(edges, dtype=np.float64)
    if e.size == 0:
        return np.zeros(1)
    if e.size == 1:
        return np.array([e[0] - 0.5, e[0] + 0.5])
    inner = (e[:-1] + e[1:]) / 2
    return np.concatenate([[e[0] - (e[1] - e[0]) / 2], inner, [e[-1] + (e[-1] - e[-2]) / 2]])


def binned_wasserstein(q: np.ndarray, p: np.ndarray, centres: np.ndarray) -> float:
    """Earth mover's distance between two binned distributions with the mass at the bin centres."""
    return float(np.sum(np.abs(np.cumsum(q - p)[:-1]) * np.diff(centres)))


def reference_allowance(bins: int, rows: int, alpha: float) -> float:
    """How far (chi distance) a reference of ``rows`` rows may sit from its own population.

    ``rows * chi(p_hat, p)**2`` is about chi-square with ``bins - 1`` degrees of freedom, so this
    is its ``1 - alpha`` quantile, scaled back. The tolerance ball adds it to the minimum effect:
    a 400-row reference cannot tell the small shifts a 50,000-row reference can.
    """
    if bins < 2:
        return 0.0
    return math.sqrt(chi2_quantile(1 - alpha, bins - 1) / max(rows, 1))


# -- bets that are valid against a tolerance ball ---------------------------------------------------
def ball_max_mean(v: np.ndarray, p: np.ndarray, radius: float) -> np.ndarray:
    """``max E_q[v]`` over ``{q : sum(q) = 1, chi(q, p) <= radius}`` for each row of ``v``.

    With ``q = p + d``: ``E_q[v] = E_p[v] + sum(d * v)`` and Cauchy-Schwarz in the ``1/p`` metric
    gives ``max sum(d * v) = radius * sd_p(v)``. Leaving out ``q >= 0`` only enlarges the set, so
    the bound is safe.
    """
    mean = v @ p
    var = np.maximum((v * v) @ p - mean * mean, 0.0)
    return mean + radius * np.sqrt(var)


def ball_log_bets(alternatives: np.ndarray, p: np.ndarray, radius: float, grid: int = 24) -> np.ndarray:
    """Log betting factors per bin, one row per alternative, each valid against the whole ball.

    For an alternative ``a`` the ideal bet is ``a / q*`` with ``q*`` the KL projection of ``a`` onto
    the ball. We search the segment ``q_t = p + t (a - p)`` for the ``t`` whose normalised bet grows
    fastest if ``a`` is true; normalising by :func:`ball_max_mean` keeps the bet valid whatever
    ``t`` turns out to be. An alternative inside the ball gets the zero bet (factor 1 everywhere).
    """
    a = np.atleast_2d(np.asarray(alternatives, dtype=np.float64))            # alternatives x bins
    ts = np.linspace(0.0, 0.98, grid)
    q = p + ts[None, :, None] * (a - p)[:, None, :]                          # alternatives x grid x bins
    v = a[:, None, :] / q
    mean = v @ p
    sd = np.sqrt(np.maximum((v * v) @ p - mean * mean, 0.0))
    log_v = np.log(v) - np.log(mean + radius * sd)[..., None]
    growth = np.einsum("agk,ak->ag", log_v, a)
    best = growth.argmax(axis=1)
    out = log_v[np.arange(a.shape[0]), best]
    outside = np.sqrt(np.sum((a - p) ** 2 / p, axis=1)) > radius
    out[~(outside & (growth[np.arange(a.shape[0]), best] > 0))] = 0.0
    return out


def tilt(p: np.ndarray, direction: np.ndarray, target: float, max_strength: float = 50.0) -> np.ndarray | None:
    """``p * exp(s * direction)``, renormalised, with ``s > 0`` chosen so that its chi distance from
    ``p`` is ``target``; ``None`` if no tilt along ``direction`` gets that far."""
    def at(s: float) -> np.ndarray:
        w = p * np.exp(s * (direction - direction.max()))
        return w / w.sum()

    if chi_distance(at(max_strength), p) < target:
        return None
    lo, hi = 0.0, max_strength
    for _ in range(60):  # bisection; the distance grows monotonically with s along one direction
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi_distance(at(mid), p) < target else (lo, mid)
    return at(hi)


# -- fixed-sample test against a tolerance ball -----------------------------------------------------
def ball_test(counts: np.ndarray, p: np.ndarray, radius: float) -> tuple[float, float]:
    """Pearson's statistic for ``counts`` against shares ``p`` and its p-value for the null "the
    true shares are within ``radius`` of ``p``" (asymptotic).

    At the edge of the ball the statistic is about non-central chi-square with noncentrality
    ``n * radius**2``, and its tail grows with the noncentrality, so the edge is the worst case.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n <= 0 or p.size < 2:
        return 0.0, 1.0
    stat = float(n * np.sum((counts / n - p) ** 2 / p))
    nc = n * radius * radius
    pval = chi2_tail(stat, p.size - 1, nc)
    return stat, float(pval)


def two_sample_ball_test(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[float, float, float]:
    """Two samples of counts over the same bins: Pearson's statistic, its p-value for "their shares
    are within ``radius`` of each other", and the bias-corrected chi distance between them."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = a.sum(), b.sum()
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    if na <= 0 or nb <= 0 or a.size < 2:
        return 0.0, 1.0, 0.0
    pooled = (a + b) / (na + nb)
    stat = float(np.sum((a - na * pooled) ** 2 / (na * pooled)) + np.sum((b - nb * pooled) ** 2 / (nb * pooled)))
    n_eff = na * nb / (na + nb)
    df = a.size - 1
    nc = n_eff * radius * radius
    pval = chi2_tail(stat, df, nc)
    effect = math.sqrt(max(stat - df, 0.0) / n_eff)
    return stat, float(pval), effect


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (valid under any dependence between the tests)."""
    names = sorted(p_values, key=p_values.get)
    m, running, out = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        out[name] = running
    return out


# -- confidence sequences for proportions -----------------------------------------------------------
# These accept numpy arrays as well as numbers (the benchmarks evaluate thousands of streams at once).
def mixture_radius(variance, alpha: float, scale: float):
    """Half-width of the normal-mixture confidence sequence for a mean whose estimate has
    ``variance`` (Robbins; Howard et al. 2021). Valid over every look at once (asymptotically):
    crossing it at any time is a false alarm with probability at most ``alpha``.

    ``scale`` is the effect size the mixture is tuned for: the sequence is tightest when its width
    is about ``scale``.
    """
    info = 1.0 / np.maximum(variance, 1e-300)
    g = 1.0 + scale * scale * info
    return np.sqrt(g / (scale * scale * info * info) * (2.0 * math.log(1.0 / alpha) + np.log(g)))


def always_valid_p(estimate, variance, scale: float):
    """``1 / M``: the always-valid p-value of "the mean is zero" from the same normal mixture."""
    info = 1.0 / np.maximum(variance, 1e-300)
    g = 1.0 + scale * scale * info
    z = info * estimate
    log_m = -0.5 * np.log(g) + scale * scale * z * z / (2.0 * g)
    return np.minimum(1.0, np.exp(-log_m))


def proportion_variance(successes, trials):
    """Variance of a proportion's estimate, with one pseudo-success and one pseudo-failure so that
    0/n and n/n do not look certain."""
    p = (successes + 1.0) / (trials + 2.0)
    return p * (1.0 - p) / np.maximum(trials, 1.0)


def difference_sequence(x1, n1, x2, n2, alpha: float, scale: float) -> dict[str, Any]:
    """Anytime-valid interval for ``x2/n2 - x1/n1`` (second minus first)."""
    diff = x2 / n2 - x1 / n1
    var = proportion_variance(x1, n1) + proportion_variance(x2, n2)
    r = mixture_radius(var, alpha, scale)
    return {"estimate": diff, "lower": diff - r, "upper": diff + r, "p_value": always_valid_p(diff, var, scale)}


def excess_test(x1, n1, x2, n2, margin: float, alpha: float) -> dict[str, float]:
    """One-sided test of "``x2/n2`` exceeds ``x1/n1`` by more than ``margin``" (``x1 = n1 = 0``: a
    single proportion against the fixed level ``margin``), at one look of level ``alpha``.

    Returns the estimated excess, its one-sided lower confidence bound and the p-value.
    """
    excess = x2 / n2 - (x1 / n1 if n1 else 0.0)
    se = math.sqrt(proportion_variance(x2, n2) + (proportion_variance(x1, n1) if n1 else 0.0))
    return {"estimate": float(excess), "lower": float(excess - normal_quantile(1 - alpha) * se),
            "p_value": float(normal_tail((excess - margin) / se))}


def log_ratio_sequence(x1, n1, x2, n2, alpha: float, scale: float) -> dict[str, Any]:
    """Anytime-valid interval for ``ln((x2/n2) / (x1/n1))`` (delta method on the log scale)."""
    p1, p2 = (x1 + 1.0) / (n1 + 2.0), (x2 + 1.0) / (n2 + 2.0)
    est = np.log(p2 / p1)
    var = (1 - p1) / (np.maximum(n1, 1.0) * p1) + (1 - p2) / (np.maximum(n2, 1.0) * p2)
    r = mixture_radius(var, alpha, scale)
    return {"estimate": est, "lower": est - r, "upper": est + r}


# -- Prometheus-style histograms --------------------------------------------------------------------
def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Like PromQL's ``histogram_quantile``: ``buckets`` are ``(le, cumulative count)`` ascending,
    the last ``le`` being ``inf``; linear within the bucket holding the rank."""
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def share_above(x: float, buckets: list[tuple[float, float]]) -> float:
    """Share of observations above ``x``, interpolating linearly within its bucket as
    :func:`histogram_quantile` does (above the last finite bound: the ``+Inf`` bucket's share)."""
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if x < le:
            if math.isinf(le):
                return (total - prev_c) / total
            below = prev_c + (c - prev_c) * (x - prev_le) / (le - prev_le)
            return (total - below) / total
        prev_le, prev_c = le, c
    return 0.0
