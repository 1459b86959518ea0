"""Statistics across seeds: t-intervals, Welch tests, Fisher's exact test for divergence counts.

    summarise([0.81, 0.83, 0.80])  -> Summary(n=3, mean, sd, lo, hi)      # 95% t-interval
    welch(arm_values, ref_values)  -> Comparison(diff, lo, hi, p)         # diff = mean(arm) - mean(ref)
    paired(differences)            -> Comparison(mean, lo, hi, p)         # one-sample t on per-seed diffs
    median_interval(values)        -> (lo, hi, coverage)                  # sign-test interval of a median
    seeds_needed(spread, margin)   -> n                                   # seeds per arm to resolve a margin

Seeds are few (2-5), so intervals use Student's t with n-1 degrees of freedom, and two arms are
compared with Welch's unequal-variance t-test (two-sided), never a z-test or a bootstrap; two
quantities of the same runs (e.g. a latent path against the pixel cross-fade) are compared by a
paired t-test on the per-seed differences.
Anything that cannot be computed (n < 2, zero variance in both groups) is NaN and never
"significant".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05        # two-sided significance level used by tables and the claims report
CONFIDENCE = 0.95   # intervals shown in tables and figures


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float       # sample standard deviation (ddof=1); NaN for n < 2
    lo: float       # 95% t-interval of the mean; NaN for n < 2
    hi: float

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


@dataclass(frozen=True)
class Comparison:
    diff: float     # mean(a) - mean(b)
    lo: float       # 95% Welch interval of the difference
    hi: float
    p: float        # two-sided Welch p-value; NaN when undefined

    @property
    def significant(self) -> bool:
        return is_significant(self.p)


def is_significant(p: float, alpha: float = ALPHA) -> bool:
    return p is not None and not math.isnan(p) and p < alpha


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    m, se = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x))
    h = float(sps.t.ppf((1 + confidence) / 2, len(x) - 1)) * se
    return m - h, m + h


def summarise(values, confidence: float = CONFIDENCE) -> Summary:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    lo, hi = t_interval(x, confidence)
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return Summary(len(x), float(x.mean()), sd, lo, hi)


def welch(a, b, confidence: float = CONFIDENCE) -> Comparison:
    """Welch's t-test of mean(a) vs mean(b) with the Welch–Satterthwaite interval of the difference."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, math.nan, math.nan, math.nan)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        # identical constants in both groups (e.g. parameter counts): no sampling noise to test
        return Comparison(diff, diff, diff, math.nan)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = float(sps.t.ppf((1 + confidence) / 2, df)) * math.sqrt(se2)
    p = float(sps.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(diff, diff - h, diff + h, p)


def fisher(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided Fisher exact p-value for k_a/n_a vs k_b/n_b events (e.g. diverged runs)."""
    if n_a == 0 or n_b == 0:
        return math.nan
    return float(sps.fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)


POWER = 0.80        # power used for the smallest detectable effect


def _welch_se_df(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        return 0.0, math.nan
    return math.sqrt(se2), se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))


def one_sided_upper(a, b, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(upper one-sided ``confidence`` bound of mean(a) - mean(b), one-sided p of H1: a > b).

    The non-superiority test: "a is not better than b by more than a margin" is shown when the
    upper bound is below the margin; a significantly larger a (p < alpha) contradicts it."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    diff = float(a.mean() - b.mean())
    se, df = _welch_se_df(a, b)
    if se == 0:
        return diff, (0.0 if diff > 0 else 1.0)
    upper = diff + float(sps.t.ppf(confidence, df)) * se
    return upper, float(sps.t.sf(diff / se, df))


def detectable_effect(a, b, alpha: float = ALPHA, power: float = POWER, sided: int = 2) -> float:
    """Smallest |difference of means| a Welch test with these n's and spreads detects with ``power``:
    (t_{1-alpha/sided} + t_{power}) * se, df from Welch–Satterthwaite.  NaN for n < 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    se, df = _welch_se_df(a, b)
    if se == 0:
        return 0.0
    return (float(sps.t.ppf(1 - alpha / sided, df)) + float(sps.t.ppf(power, df))) * se


def seeds_needed(spread, margin: float, alpha: float = ALPHA, power: float = POWER, sided: int = 2,
                 paired: bool = False, max_n: int = 10 ** 7) -> int | None:
    """Seeds per arm (pairs, when ``paired``) at which the detectable effect shrinks to ``margin``.

    The smallest n with  (t_{1-alpha/sided, df} + t_{power, df}) * se(n) <= margin,  i.e.
    :func:`detectable_effect` (or :func:`detectable_effect_paired`) solved for n at the observed spread:

    * two arms, ``spread`` = (sd_a, sd_b) or one sd for both:  se(n) = sqrt((sd_a² + sd_b²) / n),
      df = (n - 1) (sd_a² + sd_b²)² / (sd_a⁴ + sd_b⁴)  (Welch–Satterthwaite with n seeds per arm;
      2n - 2 when the spreads are equal);
    * ``paired``, ``spread`` = sd of the per-seed differences:  se(n) = sd / sqrt(n),  df = n - 1.

    At the current n it agrees with the detectable effect shown beside a comparison: that effect exceeds
    the margin exactly when more seeds are needed than were run.  ``sided`` = 1 for a non-inferiority
    margin, 2 for an equivalence one.  2 when the spread is 0; None when the spread is unknown (NaN, fewer
    than 2 seeds) or the margin is not positive; ``max_n`` caps the search (a margin of ~0)."""
    sds = tuple(float(x) for x in (spread if isinstance(spread, (tuple, list)) else (spread,) * (1 if paired
                                                                                               else 2)))
    if any(math.isnan(x) for x in sds) or not margin > 0:
        return None
    var = sum(x * x for x in sds)
    if var == 0:
        return 2
    quart = sum(x ** 4 for x in sds)
    z = float(sps.norm.ppf(1 - alpha / sided)) + float(sps.norm.ppf(power))
    n = max(2, math.ceil(z * z * var / margin ** 2))       # t > z, so no smaller n can do
    while n < max_n:
        df = n - 1 if paired else (n - 1) * var * var / quart
        if (float(sps.t.ppf(1 - alpha / sided, df)) + float(sps.t.ppf(power, df))) * math.sqrt(var / n) <= margin:
            return n
        n += 1
    return max_n


def paired(d, confidence: float = CONFIDENCE) -> Comparison:
    """Paired t-test: mean of per-unit differences ``d`` (e.g. per seed) against 0, with its t-interval."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if len(d) < 2:
        return Comparison(mean, math.nan, math.nan, math.nan)
    if float(d.std(ddof=1)) == 0:
        return Comparison(mean, mean, mean, math.nan)
    lo, hi = t_interval(d, confidence)
    return Comparison(mean, lo, hi, float(sps.ttest_1samp(d, 0.0).pvalue))


def one_sided_upper_paired(d, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(upper one-sided ``confidence`` bound of mean(d), one-sided p of H1: mean(d) > 0)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d))
    if se == 0:
        return mean, (0.0 if mean > 0 else 1.0)
    df = len(d) - 1
    return mean + float(sps.t.ppf(confidence, df)) * se, float(sps.t.sf(mean / se, df))


def detectable_effect_paired(d, alpha: float = ALPHA, power: float = POWER, sided: int = 2) -> float:
    """Smallest |mean difference| a paired t-test with this n and spread detects with ``power``."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return math.nan
    se, df = float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1
    return (float(sps.t.ppf(1 - alpha / sided, df)) + float(sps.t.ppf(power, df))) * se


def median_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(lo, hi, coverage): the distribution-free interval of a median from the order statistics
    (the sign test's), ``(x_(k), x_(n+1-k))`` with the largest k whose coverage
    ``1 - 2 P(Binomial(n, 1/2) <= k - 1)`` is at least ``confidence``.  It assumes only independent
    draws, no distribution (so it suits timings, whose spread is skewed).  With 7 values it is
    (min, max) at 98.4%; below 6 values no interval reaches 95%, and (NaN, NaN, NaN) says so."""
    x = np.sort(np.asarray(values, dtype=float))
    n, k = len(x), 0
    while k < n // 2 and 1 - 2 * float(sps.binom.cdf(k, n, 0.5)) >= confidence:
        k += 1
    if k == 0:
        return math.nan, math.nan, math.nan
    return float(x[k - 1]), float(x[n - k]), 1 - 2 * float(sps.binom.cdf(k - 1, n, 0.5))
