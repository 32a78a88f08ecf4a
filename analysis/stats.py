"""Small statistics over seeds: t and BCa intervals, Wilcoxon, Holm, budget-to-target.

Every interval is an `Interval` carrying its method and its n, so that no table or report shows
an interval without them.

* The primary interval is Student's t (`t_interval`: mean ± t_{n-1} · s/√n; for paired
  differences, of arm − reference per seed). At the 3-10 seeds of a sweep it is the interval
  whose coverage holds when the per-seed values are roughly normal; percentile bootstraps
  under-cover there (at n = 5 the t-interval is about 1.6× wider).
* Beside it, the BCa bootstrap (`bca_interval`, `scipy.stats.bootstrap`, fixed generator so a
  report is reproducible). BCa is undefined for a constant sample: every resample then has the
  same mean, so the interval is that point (method `constant sample`); wherever else scipy
  cannot compute it, the percentile bootstrap stands in and the method says so.
* Budget to target (`budget_to_target_interval`): a percentile bootstrap over seeds, each
  budget's seeds resampled independently (every budget is its own run).

With fewer than two values there is no interval (NaN, NaN).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0

T = "t"
BCA = "BCa bootstrap"
CONSTANT = "constant sample"
PERCENTILE_FALLBACK = "percentile bootstrap (BCa undefined)"
TARGET_METHOD = "percentile bootstrap over seeds"
NOT_RESAMPLED = "no bootstrap (one seed per budget)"
_EXACT_TIED_MAX = 13
"""Up to this many nonzero tied differences scipy's Wilcoxon runs an exact permutation test."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval with the method that made it and the n it rests on."""

    low: float
    high: float
    method: str
    n: int


@dataclass(frozen=True)
class TargetInterval:
    """Bootstrap intervals of the budgets to target (inf: not reached) and of the speedup."""

    budget: tuple[float, float]
    baseline_budget: tuple[float, float]
    speedup: tuple[float, float]
    reached_frac: float
    method: str


def _mean(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(sample, axis=axis)


def _paired(arm: Sequence[float], reference: Sequence[float]) -> np.ndarray:
    """arm − reference per pair; ValueError if they do not pair up."""
    left, right = np.asarray(arm, dtype=float), np.asarray(reference, dtype=float)
    if left.shape != right.shape:
        raise ValueError(f"arm and base must pair up, got {left.size} and {right.size} values")
    return left - right


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student's t interval of the mean (`scipy.stats.t`); a point when the values are equal."""
    sample = np.asarray(values, dtype=float)
    n = int(sample.size)
    if n < 2:
        return Interval(math.nan, math.nan, T, n)
    mean, sem = float(sample.mean()), float(stats.sem(sample))
    if sem == 0.0:
        return Interval(mean, mean, T, n)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return Interval(float(low), float(high), T, n)


def paired_t_interval(
    arm: Sequence[float], reference: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """Paired t interval of mean(arm − reference) over seeds."""
    return t_interval(_paired(arm, reference), confidence)


def _bootstrap(
    sample: np.ndarray, method: str, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    result = stats.bootstrap(
        (sample,),
        _mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bca_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """BCa bootstrap interval of the mean; a point for a constant sample, the percentile
    bootstrap where BCa is otherwise undefined (see the module docstring)."""
    sample = np.asarray(values, dtype=float)
    n = int(sample.size)
    if n < 2:
        return Interval(math.nan, math.nan, BCA, n)
    if np.all(sample == sample[0]):
        return Interval(float(sample[0]), float(sample[0]), CONSTANT, n)
    low, high = _bootstrap(sample, "BCa", confidence, n_resamples, seed)
    if math.isfinite(low) and math.isfinite(high):
        return Interval(low, high, BCA, n)
    low, high = _bootstrap(sample, "percentile", confidence, n_resamples, seed)
    return Interval(low, high, PERCENTILE_FALLBACK, n)


def paired_bca_interval(
    arm: Sequence[float],
    reference: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """BCa interval of mean(arm − reference): resampling pairs is resampling differences."""
    return bca_interval(_paired(arm, reference), confidence, n_resamples, seed)


@dataclass(frozen=True)
class _SignedRankSum:
    """Wilcoxon's W+ (sum of the ranks of |d| over the positive d) for fixed ranks, vectorized
    over sign flips: flipping signs does not change the ranks of |d|."""

    ranks: np.ndarray

    def __call__(self, sample: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(self.ranks * (sample > 0), axis=axis)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (exact for small n).

    Zero differences are dropped (Wilcoxon's convention); if nothing is left the test has no
    evidence either way and the p-value is 1. With no pairs at all it is NaN. With tied |d| at
    up to `_EXACT_TIED_MAX` pairs, scipy's own choice is the exact sign-flip permutation test,
    which it runs one permutation at a time (seconds at 10-13 seeds); it is run here as the
    same `scipy.stats.permutation_test`, vectorized, and gives the same p-value.
    """
    sample = np.asarray(differences, dtype=float)
    if sample.size == 0:
        return math.nan
    nonzero = sample[sample != 0]
    if nonzero.size == 0:
        return 1.0
    magnitudes = np.abs(nonzero)
    tied = np.unique(magnitudes).size < magnitudes.size
    if not tied or nonzero.size > _EXACT_TIED_MAX:
        return float(stats.wilcoxon(nonzero, alternative="two-sided").pvalue)
    result = stats.permutation_test(
        (nonzero,),
        _SignedRankSum(stats.rankdata(magnitudes)),
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf,
        alternative="two-sided",
    )
    return float(result.pvalue)


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


@dataclass(frozen=True)
class _TargetStatistic:
    """The statistic `budget_to_target_interval` bootstraps: (arm budget to target, baseline
    budget to target, speedup) from the seeds of every (side, budget) entry."""

    sides: tuple[str, ...]
    budgets: tuple[int, ...]
    values: tuple[np.ndarray, ...]
    resampled: tuple[int, ...]
    target: float | None
    arm_side: str

    def __call__(self, *samples: np.ndarray, axis: int = -1) -> np.ndarray:
        """The statistic of the entries' own values (no samples) or of resampled ones."""
        means: list[np.ndarray] = [np.asarray(values.mean()) for values in self.values]
        for index, sample in zip(self.resampled, samples, strict=True):
            means[index] = np.mean(sample, axis=axis)
        columns = np.stack(np.broadcast_arrays(*means), axis=-1)
        base_means = self._side(columns, "baseline")
        goal = (
            base_means[..., -1]
            if self.target is None
            else np.full(base_means.shape[:-1], self.target)
        )
        base = self._first_reaching("baseline", base_means, goal)
        own = self._first_reaching(self.arm_side, self._side(columns, self.arm_side), goal)
        with np.errstate(invalid="ignore", divide="ignore"):
            speedup = np.where(np.isinf(own) & np.isinf(base), np.nan, base / own)
        return np.stack([own, base, speedup])

    def _side(self, columns: np.ndarray, side: str) -> np.ndarray:
        """The means of one side's budgets (ascending) on the last axis."""
        return columns[..., [i for i, name in enumerate(self.sides) if name == side]]

    def _first_reaching(self, side: str, means: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Per replicate, the smallest budget whose mean reaches `goal` (inf if none does)."""
        budgets = np.array(
            [b for b, name in zip(self.budgets, self.sides, strict=True) if name == side]
        )
        reached = means >= goal[..., None]
        return np.where(reached.any(axis=-1), budgets[np.argmax(reached, axis=-1)], np.inf)


def _quantiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The (1 ± confidence)/2 quantiles of the non-NaN replicates (inverted CDF: values that
    occurred, so budget bounds are budgets that ran)."""
    values = replicates[~np.isnan(replicates)]
    if values.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(low), float(high)


def budget_to_target_interval(
    arm: Mapping[int, Sequence[float]] | None,
    baseline: Mapping[int, Sequence[float]],
    target: float | None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> TargetInterval:
    """Bootstrap intervals of the budgets at which the arm's and the baseline's mean final
    accuracy reach the target, and of their ratio (the speedup).

    `arm` and `baseline` map each budget to its seeds' values (`arm=None`: the arm is the
    baseline). Each replicate resamples every budget's seeds independently and recomputes the
    target when it is the baseline's mean at its largest budget (`target=None`); a budget with
    one seed is held fixed. A replicate that never reaches the target scores an infinite
    budget, so the speedup (baseline budget / arm budget) is then 0 or inf, and undefined
    (left out) when neither reaches it. `reached_frac` is the share of replicates in which the
    arm reaches the target.
    """
    sides = {"baseline": baseline} if arm is None else {"arm": arm, "baseline": baseline}
    entries = [
        (side, b, values) for side, runs in sides.items() for b, values in sorted(runs.items())
    ]
    values = tuple(np.asarray(entry[2], dtype=float) for entry in entries)
    statistic = _TargetStatistic(
        sides=tuple(entry[0] for entry in entries),
        budgets=tuple(int(entry[1]) for entry in entries),
        values=values,
        resampled=tuple(i for i, sample in enumerate(values) if sample.size >= 2),
        target=target,
        arm_side="baseline" if arm is None else "arm",
    )
    if not statistic.resampled:
        replicates = statistic()[:, None]
        method = NOT_RESAMPLED
    else:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            # only the replicates are used: scipy's own interval of inf/NaN values may warn
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            result = stats.bootstrap(
                tuple(values[i] for i in statistic.resampled),
                statistic,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method="percentile",
                vectorized=True,
                paired=False,
                rng=np.random.default_rng(seed),
            )
        replicates = result.bootstrap_distribution
        method = TARGET_METHOD
    return TargetInterval(
        budget=_quantiles(replicates[0], confidence),
        baseline_budget=_quantiles(replicates[1], confidence),
        speedup=_quantiles(replicates[2], confidence),
        reached_frac=float(np.isfinite(replicates[0]).mean()),
        method=method,
    )
