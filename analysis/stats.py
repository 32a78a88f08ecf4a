"""Small statistics over seeds: bootstrap CIs, Wilcoxon signed-rank, Holm, budget-to-target.

All CIs are percentile bootstraps from `scipy.stats.bootstrap` with a fixed generator, so a
report is reproducible; with fewer than two values there is no CI (NaN, NaN). The percentile
method is used rather than BCa because BCa is undefined for the constant samples that small
seed counts often produce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0


def _mean(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(sample, axis=axis)


def _mean_difference(arm: np.ndarray, base: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(arm - base, axis=axis)


def bootstrap_mean_ci(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (over seeds)."""
    sample = np.asarray(values, dtype=float)
    if sample.size < 2:
        return math.nan, math.nan
    result = stats.bootstrap(
        (sample,),
        _mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_bootstrap_ci(
    arm: Sequence[float],
    base: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Paired percentile bootstrap CI of mean(arm - base); pairs are resampled together."""
    left, right = np.asarray(arm, dtype=float), np.asarray(base, dtype=float)
    if left.shape != right.shape:
        raise ValueError(f"arm and base must pair up, got {left.size} and {right.size} values")
    if left.size < 2:
        return math.nan, math.nan
    result = stats.bootstrap(
        (left, right),
        _mean_difference,
        paired=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (exact for small n).

    Zero differences are dropped (Wilcoxon's convention); if nothing is left the test has no
    evidence either way and the p-value is 1. With no pairs at all it is NaN.
    """
    sample = np.asarray(differences, dtype=float)
    if sample.size == 0:
        return math.nan
    if not np.any(sample != 0):
        return 1.0
    return float(stats.wilcoxon(sample, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries stay NaN."""
    raw = np.asarray(pvalues, dtype=float)
    adjusted = np.full(raw.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(raw))
    order = finite[np.argsort(raw[finite], kind="stable")]
    count = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * raw[index]))
        adjusted[index] = running
    return adjusted


def budget_to_target(budgets: Sequence[int], means: Sequence[float], target: float) -> int | None:
    """The smallest budget whose mean accuracy reaches `target` (>=), or None if none does."""
    reached = [
        int(budget)
        for budget, mean in zip(budgets, means, strict=True)
        if not math.isnan(mean) and mean >= target
    ]
    return min(reached) if reached else None
