"""Small statistics over seeds: t and BCa intervals, Wilcoxon, Holm, budget equivalence.

Every interval is an `Interval` carrying its method and its n, so that no table or report shows
an interval without them.

* The primary interval is Student's t (`t_interval`: mean ± t_{n-1} · s/√n; for paired
  differences, of arm − reference per seed). At the 3-10 seeds of a sweep it is the interval
  whose coverage holds when the per-seed values are roughly normal; percentile bootstraps
  under-cover there (at n = 5 the t-interval is about 1.6× wider).
* Beside it, the BCa bootstrap (`bca_interval`, `scipy.stats.bootstrap`, fixed generator so a
  report is reproducible), from `MIN_BOOTSTRAP_N` seeds on: below that a bootstrap
  resamples too few values to say anything (at n = 2 it has three possible means) and no
  bootstrap interval is given (method `NO_BOOTSTRAP`). BCa is undefined for a constant
  sample: every resample then has the same mean, so the interval is that point (method
  `constant sample`); wherever else scipy cannot compute it, the percentile bootstrap stands
  in and the method says so.
* Budget equivalence (`budget_equivalence`): the budget at which the baseline's mean accuracy
  (piecewise linear in log budget between the budgets that ran) first reaches a level, over
  the arm's budget; its interval is a percentile bootstrap over seeds, resampled paired
  (a seed's runs at every budget of both arms move together).
* Budget to target on the grid (`budget_to_target_interval`): a percentile bootstrap over
  seeds, each budget's seeds resampled independently (every budget is its own run).
* Pooled over cells (`pooled_interval`, the primary verdict's): the mean of the cells' mean
  paired differences, every cell weighted the same and every seed of every cell counted,
  with a seed-clustered CR2 t-interval (Bell-McCaffrey degrees of freedom); with the same
  seeds in every cell it is the t-interval of the per-seed means over cells.
* Multiplicity: `holm` within a family; `min_wilcoxon_p` is the smallest p-value the exact
  two-sided Wilcoxon test can give at n pairs, so `family size × min_wilcoxon_p(n) > alpha`
  means the family cannot reject anything whatever the data.

With fewer than two values there is no interval (NaN, NaN).
"""

from __future__ import annotations

import dataclasses
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
EQUIVALENCE_METHOD = "paired percentile bootstrap over seeds"
MIN_BOOTSTRAP_N = 8
"""Fewest values a bootstrap interval is computed from (below: `NO_BOOTSTRAP`)."""
NO_BOOTSTRAP = f"no bootstrap (n < {MIN_BOOTSTRAP_N}: too few seeds to resample)"
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


POOLED = "seed-clustered t (CR2, cell means)"
"""Method of `pooled_interval` (tables name it in their `method` column)."""


@dataclass(frozen=True)
class PooledInterval:
    """A pooled estimate over cells with its interval and what the interval rests on."""

    estimate: float
    low: float
    high: float
    method: str
    pairs: int
    """Paired seed results pooled, over every cell."""
    seeds: int
    """Distinct seeds among them (the clusters)."""
    cells: int
    df: float
    """Degrees of freedom of the t quantile (NaN without an interval)."""


def pooled_interval(
    cells: Sequence[Mapping[object, float]], confidence: float = CONFIDENCE
) -> PooledInterval:
    """The mean over cells of each cell's mean paired difference (each mapping: seed ->
    difference in one cell), with a t-interval clustered by seed (method `POOLED`).

    Every cell weighs the same whatever its seeds (an adaptive sweep adds seeds to some cells
    only), and every seed of every cell counts. The variance is the cluster-robust sandwich
    with seeds as clusters and the CR2 small-sample adjustment (Bell & McCaffrey 2002: each
    cell's residuals scaled by √(n_c / (n_c − 1)), which makes it unbiased for independent
    seeds whatever each cell's n), and the t quantile takes the Bell-McCaffrey degrees of
    freedom tr(K)² / tr(K²), K = Qᵀ M Q (Imbens & Kolesár 2016). When every cell has the
    same seeds it is exactly the t-interval, over seeds, of each seed's mean over the cells
    (n − 1 degrees of freedom). No interval while a cell has fewer than two pairs or there
    are fewer than two seeds."""
    values = [{seed: float(value) for seed, value in cell.items()} for cell in cells]
    values = [cell for cell in values if cell]
    seeds = list(dict.fromkeys(seed for cell in values for seed in cell))
    pairs = sum(len(cell) for cell in values)
    if not values:
        return PooledInterval(math.nan, math.nan, math.nan, POOLED, 0, 0, 0, math.nan)
    means = [math.fsum(cell.values()) / len(cell) for cell in values]
    estimate = math.fsum(means) / len(values)
    found = PooledInterval(
        estimate, math.nan, math.nan, POOLED, pairs, len(seeds), len(values), math.nan
    )
    if len(seeds) < 2 or min(len(cell) for cell in values) < 2:
        return found
    column = {seed: index for index, seed in enumerate(seeds)}
    score = np.zeros(len(seeds))
    blocks = []
    for cell, mean in zip(values, means, strict=True):
        n = len(cell)
        weight = math.sqrt(n / (n - 1)) / (len(values) * n)
        rows = np.zeros((n, len(seeds)))
        for row, (seed, value) in enumerate(cell.items()):
            score[column[seed]] += weight * (value - mean)
            rows[row, column[seed]] = weight
        blocks.append((rows, rows - rows.mean(axis=0)))
    variance = float(np.sum(score**2))
    k = sum(rows.T @ centred for rows, centred in blocks)
    df = float(np.trace(k) ** 2 / np.trace(k @ k))
    if variance == 0.0:
        return dataclasses.replace(found, low=estimate, high=estimate, df=df)
    half = float(stats.t.ppf((1.0 + confidence) / 2, df)) * math.sqrt(variance)
    return dataclasses.replace(found, low=estimate - half, high=estimate + half, df=df)


ACCURACY_RANGE = (0.0, 100.0)


def accuracy_t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The t-interval of a mean accuracy (%), within [0, 100]: a few seeds that spread widely
    give a t-interval past the possible range (at n = 2 it can reach 130 %)."""
    interval = t_interval(values, confidence)
    low, high = (_within(bound, *ACCURACY_RANGE) for bound in (interval.low, interval.high))
    return Interval(low, high, interval.method, interval.n)


def _within(value: float, low: float, high: float) -> float:
    """`value` clipped to [low, high] (NaN stays NaN)."""
    return value if math.isnan(value) else min(max(value, low), high)


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
    """BCa bootstrap interval of the mean from `MIN_BOOTSTRAP_N` values on; a point for a
    constant sample, the percentile bootstrap where BCa is otherwise undefined (see the module
    docstring)."""
    sample = np.asarray(values, dtype=float)
    n = int(sample.size)
    if n < MIN_BOOTSTRAP_N:
        return Interval(math.nan, math.nan, NO_BOOTSTRAP, n)
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


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give at n
    nonzero pairs: every difference of one sign, 2 / 2^n (1 without pairs)."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def seeds_for_halfwidth(sd: float, halfwidth: float, confidence: float = CONFIDENCE) -> int | None:
    """The fewest seeds whose t-interval of the mean is at most ± `halfwidth` when the values
    spread with standard deviation `sd`: the smallest n >= 2 with t_{n-1} · sd / √n <= halfwidth
    (None when sd is not finite)."""
    if not halfwidth > 0:
        raise ValueError(f"halfwidth must be positive, got {halfwidth}")
    if not math.isfinite(sd):
        return None
    quantile = (1.0 + confidence) / 2
    n = 2
    while stats.t.ppf(quantile, n - 1) * sd / math.sqrt(n) > halfwidth:
        n += 1
    return n


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
    target: float | None
    arm_side: str

    def __call__(self, *samples: np.ndarray, axis: int = -1) -> np.ndarray:
        """The statistic of resampled seeds, one sample per (side, budget) entry."""
        means = [np.mean(sample, axis=axis) for sample in samples]
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
    occurred, so budget bounds are budgets that ran, and infinite replicates are allowed)."""
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
    target when it is the baseline's mean at its largest budget (`target=None`). A replicate
    that never reaches the target scores an infinite budget, so the speedup (baseline budget /
    arm budget) is then 0 or inf, and undefined (left out) when neither reaches it.
    `reached_frac` is the share of replicates in which the arm reaches the target. With fewer
    than `MIN_BOOTSTRAP_N` seeds at some budget there is no interval (NaN, `NO_BOOTSTRAP`).
    """
    sides = {"baseline": baseline} if arm is None else {"arm": arm, "baseline": baseline}
    entries = [
        (side, b, values) for side, runs in sides.items() for b, values in sorted(runs.items())
    ]
    values = tuple(np.asarray(entry[2], dtype=float) for entry in entries)
    if min(sample.size for sample in values) < MIN_BOOTSTRAP_N:
        nan = (math.nan, math.nan)
        return TargetInterval(nan, nan, nan, math.nan, NO_BOOTSTRAP)
    statistic = _TargetStatistic(
        sides=tuple(entry[0] for entry in entries),
        budgets=tuple(int(entry[1]) for entry in entries),
        target=target,
        arm_side="baseline" if arm is None else "arm",
    )
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # only the replicates are used: scipy's own interval of inf/NaN values may warn
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            values,
            statistic,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            paired=False,
            rng=np.random.default_rng(seed),
        )
    replicates = result.bootstrap_distribution
    return TargetInterval(
        budget=_quantiles(replicates[0], confidence),
        baseline_budget=_quantiles(replicates[1], confidence),
        speedup=_quantiles(replicates[2], confidence),
        reached_frac=float(np.isfinite(replicates[0]).mean()),
        method=TARGET_METHOD,
    )


INSIDE, BELOW_GRID, BEYOND_GRID = "", "below the grid", "beyond the grid"
"""Where a crossing lies: inside the budgets that ran, at or below the smallest (the curve
already reaches the level there: the true crossing may be smaller), or past the largest."""


def _crossing(budgets: np.ndarray, means: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Per row, the budget at which the curve through (log budget, mean) first reaches `level`
    (linear in log budget between the budgets that ran); the smallest budget when it already
    reaches it there, inf when it never does. `means`: (..., budgets), `level`: (...)."""
    reached = means >= level[..., None]
    first = np.argmax(reached, axis=-1)
    below = np.take_along_axis(means, np.maximum(first - 1, 0)[..., None], -1)[..., 0]
    above = np.take_along_axis(means, first[..., None], -1)[..., 0]
    logs = np.log(budgets)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.clip((level - below) / (above - below), 0.0, 1.0)
    inside = np.exp(logs[np.maximum(first - 1, 0)] + fraction * (logs[first] - logs[first - 1]))
    crossing = np.where(first == 0, budgets[0], inside)
    return np.where(reached.any(axis=-1), crossing, np.inf)


def crossing_budget(budgets: Sequence[float], means: Sequence[float], level: float) -> float:
    """The budget at which the mean-accuracy curve first reaches `level`, linear in log budget
    between the budgets that ran (budgets ascending); the smallest budget if it already
    reaches it there (below the grid), inf if it never does (beyond the grid)."""
    values = np.asarray(means, dtype=float)[None, :]
    return float(_crossing(np.asarray(budgets, dtype=float), values, np.array([level]))[0])


@dataclass(frozen=True)
class Equivalence:
    """How many baseline epochs an arm's accuracy is worth, at one probe: an arm budget (the
    arm's mean there is the level) or a fixed target accuracy (both sides' crossings)."""

    probe: str
    """`e=<budget>` or `target=<accuracy>`."""
    level: float
    arm_budget: float
    baseline_budget: float
    speedup: float
    """baseline_budget / arm_budget."""
    where: str
    """`INSIDE`, `BELOW_GRID` or `BEYOND_GRID`: where the point's crossings lie."""
    interval: Interval
    """Of the speedup."""
    outside_frac: float
    """Share of bootstrap replicates whose crossing lies outside the grid (bounds, not values)."""


@dataclass(frozen=True)
class _EquivalenceStatistic:
    """Per probe: (speedup, arm budget, baseline budget, outside-the-grid flag) from seed
    indices: the rows of `values` (seeds × columns, NaN where a seed did not run) averaged."""

    values: np.ndarray
    arm_budgets: np.ndarray
    baseline_budgets: np.ndarray
    probes: tuple[tuple[str, float], ...]

    def __call__(self, seeds: np.ndarray, axis: int = -1) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a budget no resampled seed ran
            means = np.nanmean(self.values[seeds], axis=-2)
        arm = means[..., : self.arm_budgets.size]
        base = means[..., self.arm_budgets.size :]
        rows = []
        for kind, value in self.probes:
            if kind == "budget":
                column = int(np.flatnonzero(self.arm_budgets == value)[0])
                level = arm[..., column]
                own = np.full(level.shape, value)
                outside_own = np.zeros(level.shape, dtype=bool)
            else:
                level = np.full(means.shape[:-1], value)
                own = _crossing(self.arm_budgets, arm, level)
                outside_own = (own == self.arm_budgets[0]) | np.isinf(own)
            other = _crossing(self.baseline_budgets, base, level)
            outside = outside_own | (other == self.baseline_budgets[0]) | np.isinf(other)
            with np.errstate(invalid="ignore", divide="ignore"):
                speedup = np.where(np.isinf(own) & np.isinf(other), np.nan, other / own)
            rows += [speedup, own, other, outside.astype(float)]
        return np.stack(rows)


def budget_equivalence(
    arm: Mapping[int, Mapping[int, float]],
    baseline: Mapping[int, Mapping[int, float]],
    target: float | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> list[Equivalence]:
    """The budget the baseline needs to match the arm, on a continuous scale (module
    docstring): at each of the arm's budgets and, given a `target` accuracy, at that target.

    `arm` and `baseline` map each budget to {seed: final accuracy}. The speedup is the
    baseline's crossing of the level over the arm's budget (at a target: over the arm's own
    crossing). Its interval is a percentile bootstrap resampling seeds paired across budgets
    and arms, from `MIN_BOOTSTRAP_N` seeds on; a crossing outside the grid is a bound, and the
    share of replicates where that happens is `outside_frac`. The baseline needs two budgets.
    """
    arm_budgets = np.array(sorted(arm), dtype=float)
    baseline_budgets = np.array(sorted(baseline), dtype=float)
    if baseline_budgets.size < 2:
        return []
    seeds = sorted({s for runs in (*arm.values(), *baseline.values()) for s in runs})
    columns = [arm[int(b)] for b in arm_budgets] + [baseline[int(b)] for b in baseline_budgets]
    values = np.array([[column.get(s, math.nan) for column in columns] for s in seeds])
    probes: tuple[tuple[str, float], ...] = tuple(("budget", float(b)) for b in arm_budgets)
    if target is not None:
        probes += (("target", float(target)),)
    statistic = _EquivalenceStatistic(values, arm_budgets, baseline_budgets, probes)
    indices = np.arange(len(seeds))
    point = statistic(indices[None, :])[:, 0]
    replicates = None
    if len(seeds) >= MIN_BOOTSTRAP_N:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            replicates = stats.bootstrap(
                (indices,),
                statistic,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method="percentile",
                vectorized=True,
                rng=np.random.default_rng(seed),
            ).bootstrap_distribution
    results = []
    for index, (kind, value) in enumerate(probes):
        speedup, own, other, _ = point[4 * index : 4 * index + 4]
        if replicates is None:
            interval = Interval(math.nan, math.nan, NO_BOOTSTRAP, len(seeds))
            outside_frac = math.nan
        else:
            low, high = _quantiles(replicates[4 * index], confidence)
            interval = Interval(low, high, EQUIVALENCE_METHOD, len(seeds))
            outside_frac = float(replicates[4 * index + 3].mean())
        results.append(
            Equivalence(
                probe=f"e={int(value)}" if kind == "budget" else f"target={value:g}",
                level=_level(values, arm_budgets, kind, value),
                arm_budget=float(own),
                baseline_budget=float(other),
                speedup=float(speedup),
                where=_where(float(own), float(other), arm_budgets, baseline_budgets, kind),
                interval=interval,
                outside_frac=outside_frac,
            )
        )
    return results


def _level(values: np.ndarray, arm_budgets: np.ndarray, kind: str, value: float) -> float:
    """A probe's accuracy level: the arm's mean at the budget, or the target itself."""
    if kind != "budget":
        return value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a budget no seed ran: NaN
        return float(np.nanmean(values[:, int(np.flatnonzero(arm_budgets == value)[0])]))


def _where(
    own: float, other: float, arm_budgets: np.ndarray, baseline_budgets: np.ndarray, kind: str
) -> str:
    """Where a point's crossings lie (`INSIDE`, `BELOW_GRID`, `BEYOND_GRID`)."""
    crossings = [(other, baseline_budgets)]
    if kind == "target":
        crossings.append((own, arm_budgets))
    if any(math.isinf(value) for value, _ in crossings):
        return BEYOND_GRID
    if any(value == budgets[0] for value, budgets in crossings):
        return BELOW_GRID
    return INSIDE
