"""Verdicts that pool evidence and know their power: per-file and pooled verdicts (mixed), colour at
matched rate, trained-on metrics never counted, underpowered margins and the seeds they need, confounds
beside each comparison, untestable divergence, pending files, and evaluation subsets that depend only on
(dataset, split, n).  Each test fails on the claims report of 61a7dc1."""
from __future__ import annotations

import numpy as np

from bench import stats

# --------------------------------------------------------------------------- stats.seeds_needed


def test_seeds_needed_solves_the_detectable_effect_for_n():
    a, b = [0.10, 0.30, 0.20], [0.50, 0.20, 0.40]
    spread = (float(np.std(a, ddof=1)), float(np.std(b, ddof=1)))
    mde = stats.detectable_effect(a, b)
    # at the current n the detectable effect is the margin these seeds resolve: no more seeds needed
    assert stats.seeds_needed(spread, mde * 1.0001) == 3
    assert stats.seeds_needed(spread, mde * 0.9999) == 4
    # a tenth of the margin: the smallest n whose detectable effect (Welch df, n seeds per arm) fits it
    n = stats.seeds_needed(spread, mde / 10)

    def effect(k):
        var, quart = sum(x * x for x in spread), sum(x ** 4 for x in spread)
        df = (k - 1) * var * var / quart
        return (stats.sps.t.ppf(0.975, df) + stats.sps.t.ppf(0.8, df)) * (var / k) ** 0.5
    assert effect(n) <= mde / 10 < effect(n - 1) and n > 100
    d = [0.10, 0.12, 0.08]
    assert stats.seeds_needed(float(np.std(d, ddof=1)), stats.detectable_effect_paired(d) * 1.0001, paired=True) == 3
    # one-sided (non-inferiority) margins need fewer seeds than two-sided (equivalence) ones
    assert stats.seeds_needed(0.1, 0.05, sided=1) < stats.seeds_needed(0.1, 0.05, sided=2)
    assert stats.seeds_needed(0.0, 0.01) == 2
    assert stats.seeds_needed(float("nan"), 0.01) is None and stats.seeds_needed(0.1, 0.0) is None
