"""analysis.stats against hand-computed values."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis import stats

PLANT = [2.0, 2.5, 1.5, 3.0, 2.2]
NULL = [0.5, -0.4, 0.3, -0.6, 0.25]
T975 = {3: 3.182446305284263, 4: 2.7764451051977987}  # Student t quantile 0.975 by df (tables)


def _hand_t(values: list[float]) -> tuple[float, float]:
    """mean ± t_{0.975, n-1} · s / sqrt(n)."""
    n = len(values)
    half = T975[n - 1] * statistics.stdev(values) / math.sqrt(n)
    return statistics.mean(values) - half, statistics.mean(values) + half


def test_t_interval_equals_the_hand_computation() -> None:
    interval = stats.t_interval(PLANT)
    assert (interval.low, interval.high) == pytest.approx(_hand_t(PLANT))
    assert (interval.low, interval.high) == pytest.approx((1.545334, 2.934666), abs=1e-6)
    assert (interval.method, interval.n) == ("t", 5)


def test_paired_t_interval_is_the_t_interval_of_the_differences() -> None:
    base = [55.0, 55.4, 54.7, 55.2]
    arm = [b + d for b, d in zip(base, PLANT[:4], strict=True)]
    interval = stats.paired_t_interval(arm, base)
    assert (interval.low, interval.high) == pytest.approx(_hand_t(PLANT[:4]))
    assert interval.n == 4
    null = stats.paired_t_interval(np.array(base) + NULL[:4], base)
    assert null.low < 0.0 < null.high


def test_t_interval_needs_two_values_and_is_a_point_for_equal_values() -> None:
    single = stats.t_interval([61.0])
    assert math.isnan(single.low) and math.isnan(single.high) and single.n == 1
    constant = stats.t_interval([61.0, 61.0, 61.0])
    assert (constant.low, constant.high, constant.method) == (61.0, 61.0, "t")


def test_an_accuracy_interval_stays_within_0_and_100() -> None:
    # n=2: 79.5 ± 12.706 · 27.58 / sqrt(2) = [-168, 327] -> [0, 100], its n beside it
    wide = stats.accuracy_t_interval([99.0, 60.0])
    assert (wide.low, wide.high, wide.method, wide.n) == (0.0, 100.0, "t", 2)
    assert stats.accuracy_t_interval(PLANT) == stats.t_interval(PLANT)
    single = stats.accuracy_t_interval([61.0])
    assert math.isnan(single.low) and math.isnan(single.high)


def test_paired_intervals_reject_unpaired_input() -> None:
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_t_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_bca_interval([1.0, 2.0], [1.0])


TEN = [60.0, 60.4, 59.7, 60.2, 59.9, 60.1, 59.8, 60.3, 60.0, 59.6]
PLANT_10 = [2.0, 2.5, 1.5, 3.0, 2.2, 1.8, 2.7, 2.1, 2.4, 1.9]
NULL_10 = [0.5, -0.4, 0.3, -0.6, 0.25, -0.1, 0.2, -0.3, 0.4, -0.2]


def test_bca_interval_brackets_the_mean_and_is_reproducible() -> None:
    interval = stats.bca_interval(TEN)
    assert (interval.method, interval.n) == ("BCa bootstrap", 10)
    assert min(TEN) <= interval.low < statistics.mean(TEN) < interval.high <= max(TEN)
    assert stats.bca_interval(TEN) == interval  # fixed generator


def test_no_bootstrap_interval_below_eight_values() -> None:
    below = stats.bca_interval(TEN[:7])
    assert math.isnan(below.low) and math.isnan(below.high)
    assert (below.method, below.n) == ("no bootstrap (n < 8: too few seeds to resample)", 7)
    assert stats.bca_interval(TEN[:8]).method == "BCa bootstrap"
    assert stats.paired_bca_interval([1.0, 2.0], [0.0, 0.5]).method == below.method


def test_paired_bca_excludes_zero_for_the_planted_effect_and_includes_it_for_the_null() -> None:
    base = np.array(TEN) - 5.0
    planted = stats.paired_bca_interval(base + PLANT_10, base)
    assert 0.0 < min(PLANT_10) <= planted.low < statistics.mean(PLANT_10) < planted.high
    assert planted.high <= max(PLANT_10)
    null = stats.paired_bca_interval(base + NULL_10, base)
    assert null.low < 0.0 < null.high


def test_bca_of_a_constant_sample_is_that_value() -> None:
    interval = stats.bca_interval([61.0] * 8)
    assert (interval.low, interval.high, interval.method, interval.n) == (
        61.0,
        61.0,
        "constant sample",
        8,
    )
    single = stats.bca_interval([61.0])
    assert math.isnan(single.low) and math.isnan(single.high) and single.n == 1


def test_bca_falls_back_to_the_percentile_bootstrap_where_it_is_undefined(monkeypatch) -> None:
    real = stats._bootstrap

    def undefined_bca(sample, method, *args):
        return (math.nan, math.nan) if method == "BCa" else real(sample, method, *args)

    monkeypatch.setattr(stats, "_bootstrap", undefined_bca)
    interval = stats.bca_interval(TEN)
    assert interval.method == "percentile bootstrap (BCa undefined)"
    expected = real(np.array(TEN), "percentile", 0.95, stats.N_RESAMPLES, stats.SEED)
    assert (interval.low, interval.high) == expected


@pytest.mark.parametrize(
    ("differences", "expected"),
    [
        (PLANT, 2 / 2**5),  # all 5 positive: exact two-sided p = 2 * 1/32
        (PLANT[:4], 2 / 2**4),
        (NULL, 1.0),  # W+ = 1+2+4 = 7, W- = 8: P(W <= 7) = 16/32, doubled and capped
        ([1.0, 2.0, 3.0, 4.0, -5.0], 20 / 32),  # W- = 5: 10 of 32 sign patterns have W <= 5
        ([0.0, 0.0], 1.0),
    ],
)
def test_wilcoxon_exact_p_values(differences: list[float], expected: float) -> None:
    assert stats.wilcoxon_p(differences) == pytest.approx(expected)


@pytest.mark.parametrize(
    "differences",
    [
        [1.0] * 10,
        [1.0, 1.0, 2.0, -2.0, 3.0, 0.5, 0.5, -1.0, 2.0, 2.0],
        [0.0, 1.0, 1.0, -1.0, 2.0, 3.0],
        [0.2, 0.2, -0.2, 0.4, 0.1, 0.1, 0.3, 0.3, -0.5, 0.6, 0.7, 0.7, 0.1],
    ],
)
def test_wilcoxon_with_ties_matches_scipys_exact_permutation_test(differences) -> None:
    expected = scipy_stats.wilcoxon(differences, zero_method="wilcox").pvalue
    assert stats.wilcoxon_p(differences) == pytest.approx(expected)


def test_wilcoxon_without_pairs_is_nan() -> None:
    assert math.isnan(stats.wilcoxon_p([]))


def test_holm_step_down() -> None:
    # sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = stats.holm([0.02, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.5)
    assert math.isnan(adjusted[1])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_budget_to_target_on_the_papers_rigl_numbers_at_097() -> None:
    budgets = [100, 200, 300, 500]
    baseline = [52.53, 54.87, 56.50, 57.32]
    sparseopt = [53.95, 57.01, 57.62, 58.35]
    assert stats.budget_to_target(budgets, baseline, 57.32) == 500
    assert stats.budget_to_target(budgets, sparseopt, 57.32) == 300
    assert stats.budget_to_target(budgets, sparseopt, 70.0) is None
    assert stats.budget_to_target(budgets, [math.nan, 60.0, 59.0, 61.0], 58.0) == 200


def _eight(values: list[float]) -> list[float]:
    """Two seeds' values repeated to the 8 seeds a bootstrap needs (same set of means)."""
    return values * (8 // len(values))


def test_budget_to_target_interval_when_every_resample_agrees() -> None:
    # fixed target 65: the arm's resampled means are in [60, 61] at 2 and [70, 71] at 4;
    # the baseline's never exceed 62, so it never reaches it and the speedup is infinite.
    result = stats.budget_to_target_interval(
        {2: _eight([60.0, 61.0]), 4: _eight([70.0, 71.0])},
        {2: _eight([50.0, 51.0]), 4: _eight([60.0, 62.0])},
        65.0,
    )
    assert result.budget == (4.0, 4.0)
    assert result.baseline_budget == (math.inf, math.inf)
    assert result.speedup == (math.inf, math.inf)
    assert result.reached_frac == 1.0
    assert result.method == "percentile bootstrap over seeds"


def test_budget_to_target_interval_spans_the_budgets_a_resample_can_reach() -> None:
    # default target = the baseline's resampled mean at 4 (60 to 62); the arm's mean at 2
    # spreads from 59 to 63, so some resamples reach the target at 2, the others at 4.
    result = stats.budget_to_target_interval(
        {2: _eight([59.0, 63.0]), 4: [70.0] * 8},
        {2: _eight([50.0, 51.0]), 4: _eight([60.0, 62.0])},
        None,
    )
    assert result.budget == (2.0, 4.0)
    assert result.baseline_budget == (4.0, 4.0)
    assert result.speedup == (1.0, 2.0)
    assert result.reached_frac == 1.0


def test_budget_to_target_interval_of_an_arm_that_never_reaches_it() -> None:
    result = stats.budget_to_target_interval(
        {2: _eight([50.0, 51.0]), 4: _eight([52.0, 53.0])},
        {2: _eight([58.0, 59.0]), 4: _eight([61.0, 62.0])},
        60.0,
    )
    assert result.budget == (math.inf, math.inf) and result.reached_frac == 0.0
    assert result.baseline_budget == (4.0, 4.0)
    assert result.speedup == (0.0, 0.0)
    neither = stats.budget_to_target_interval(
        {2: _eight([50.0, 51.0])}, {2: _eight([50.0, 51.0]), 4: _eight([52.0, 53.0])}, 70.0
    )
    assert all(math.isnan(x) for x in neither.speedup)


def test_budget_to_target_interval_of_the_baseline_itself_and_below_eight_seeds() -> None:
    baseline = {2: _eight([50.0, 51.0]), 4: _eight([60.0, 62.0])}
    itself = stats.budget_to_target_interval(None, baseline, None)
    assert (itself.budget, itself.baseline_budget, itself.speedup) == ((4.0, 4.0),) * 2 + (
        (1.0, 1.0),
    )
    few = stats.budget_to_target_interval({2: [59.0] * 7, 4: [70.0] * 8}, baseline, None)
    assert few.method == "no bootstrap (n < 8: too few seeds to resample)"
    assert all(math.isnan(x) for x in (*few.budget, *few.speedup, few.reached_frac))


@pytest.mark.parametrize("n", range(1, 13))
def test_min_wilcoxon_p_is_the_exact_p_of_n_differences_of_one_sign(n: int) -> None:
    one_sign = [float(i) for i in range(1, n + 1)]
    assert stats.min_wilcoxon_p(n) == pytest.approx(stats.wilcoxon_p(one_sign))
    assert stats.min_wilcoxon_p(n) == pytest.approx(min(1.0, 2 / 2**n))


def test_min_wilcoxon_p_decides_whether_a_family_can_reject() -> None:
    # 10 seeds: 2/1024; Holm's smallest adjusted p is m times that
    assert stats.min_wilcoxon_p(10) == 0.001953125
    assert 24 * stats.min_wilcoxon_p(10) == 0.046875  # <= 0.05: 24 cells can reject
    assert 26 * stats.min_wilcoxon_p(10) > 0.05  # 26 cannot, whatever the data
    assert stats.min_wilcoxon_p(0) == 1.0


def test_seeds_for_halfwidth_against_the_t_table() -> None:
    # sd 2, ±1: n=17: t16 = 2.1199 -> 2.1199 * 2 / sqrt(17) = 1.028 > 1;
    #           n=18: t17 = 2.1098 -> 0.9946 <= 1
    assert stats.seeds_for_halfwidth(2.0, 1.0) == 18
    assert stats.seeds_for_halfwidth(0.0, 1.0) == 2
    assert stats.seeds_for_halfwidth(math.nan, 1.0) is None
    with pytest.raises(ValueError, match="halfwidth"):
        stats.seeds_for_halfwidth(1.0, 0.0)


def test_crossing_budget_interpolates_on_log_budget() -> None:
    budgets, means = [2, 4, 8, 16], [60.0, 70.0, 80.0, 90.0]  # 10 points per doubling
    assert stats.crossing_budget(budgets, means, 75.0) == pytest.approx(2**2.5)
    assert stats.crossing_budget(budgets, means, 60.0) == 2.0  # reached at the first budget
    assert stats.crossing_budget(budgets, means, 55.0) == 2.0  # below the grid: a bound
    assert stats.crossing_budget(budgets, means, 95.0) == math.inf
    # not monotone: the first crossing counts (between 2 and 4, three quarters of the way)
    assert stats.crossing_budget(budgets, [60.0, 80.0, 70.0, 90.0], 75.0) == pytest.approx(2**1.75)


OFFSETS = [0.3, -0.2, 0.5, -0.4, 0.1, 0.0, -0.3, 0.2, 0.4, -0.6]


def _curve(budget: float, seed: int) -> float:
    """Accuracy 50 + 10·log2(budget) plus the seed's own offset."""
    return 50.0 + 10.0 * math.log2(budget) + OFFSETS[seed]


def test_budget_equivalence_of_an_arm_exactly_one_and_a_half_times_faster() -> None:
    # the arm at budget b is the baseline at 1.5 b, seed by seed: every paired resample
    # shifts both curves alike, so the answer 1.5 holds in every replicate
    seeds = range(len(OFFSETS))
    budgets = (2, 4, 8, 16)
    arm = {b: {s: _curve(1.5 * b, s) for s in seeds} for b in budgets}
    baseline = {b: {s: _curve(b, s) for s in seeds} for b in budgets}
    results = {r.probe: r for r in stats.budget_equivalence(arm, baseline, target=75.0)}
    assert list(results) == ["e=2", "e=4", "e=8", "e=16", "target=75"]
    for probe, budget in (("e=2", 2), ("e=4", 4), ("e=8", 8)):
        found = results[probe]
        assert found.baseline_budget == pytest.approx(1.5 * budget)
        assert found.speedup == pytest.approx(1.5)
        assert (found.interval.low, found.interval.high) == pytest.approx((1.5, 1.5))
        assert (found.interval.method, found.interval.n) == (
            "paired percentile bootstrap over seeds",
            10,
        )
        assert (found.where, found.outside_frac) == ("", 0.0)
    beyond = results["e=16"]  # the baseline would need 24 epochs: past its largest budget
    assert (beyond.baseline_budget, beyond.where, beyond.outside_frac) == (
        math.inf,
        "beyond the grid",
        1.0,
    )
    target = results["target=75"]  # baseline reaches 75 at 2^2.5 (offsets average 0)
    assert target.baseline_budget == pytest.approx(2**2.5)
    assert target.arm_budget == pytest.approx(2**2.5 / 1.5)
    assert target.speedup == pytest.approx(1.5)
    assert (target.interval.low, target.interval.high) == pytest.approx((1.5, 1.5))


def test_budget_equivalence_below_the_grid_and_with_few_seeds() -> None:
    seeds = range(7)
    arm = {b: {s: _curve(b, s) - 20.0 for s in seeds} for b in (2, 4)}  # worse everywhere
    baseline = {b: {s: _curve(b, s) for s in seeds} for b in (2, 4)}
    low, high = stats.budget_equivalence(arm, baseline)
    assert (low.baseline_budget, low.speedup, low.where) == (2.0, 1.0, "below the grid")
    assert (high.speedup, high.where) == (0.5, "below the grid")  # at most 2 / 4
    assert high.interval.method == "no bootstrap (n < 8: too few seeds to resample)"
    assert math.isnan(high.interval.low) and high.interval.n == 7
    assert stats.budget_equivalence(arm, {2: baseline[2]}) == []  # one baseline budget
