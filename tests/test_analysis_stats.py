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


def test_paired_intervals_reject_unpaired_input() -> None:
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_t_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_bca_interval([1.0, 2.0], [1.0])


def test_bca_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = [60.0, 60.4, 59.7, 60.2, 59.9]
    interval = stats.bca_interval(values)
    assert (interval.method, interval.n) == ("BCa bootstrap", 5)
    assert min(values) <= interval.low < statistics.mean(values) < interval.high <= max(values)
    assert stats.bca_interval(values) == interval  # fixed generator


def test_paired_bca_excludes_zero_for_the_planted_effect_and_includes_it_for_the_null() -> None:
    base = np.array([55.0, 55.4, 54.7, 55.2, 54.9])
    planted = stats.paired_bca_interval(base + PLANT, base)
    assert 0.0 < min(PLANT) <= planted.low < statistics.mean(PLANT) < planted.high <= max(PLANT)
    null = stats.paired_bca_interval(base + NULL, base)
    assert null.low < 0.0 < null.high


def test_bca_of_a_constant_sample_is_that_value() -> None:
    interval = stats.bca_interval([61.0, 61.0, 61.0])
    assert (interval.low, interval.high, interval.method, interval.n) == (
        61.0,
        61.0,
        "constant sample",
        3,
    )
    single = stats.bca_interval([61.0])
    assert math.isnan(single.low) and math.isnan(single.high) and single.n == 1


def test_bca_falls_back_to_the_percentile_bootstrap_where_it_is_undefined(monkeypatch) -> None:
    real = stats._bootstrap

    def undefined_bca(sample, method, *args):
        return (math.nan, math.nan) if method == "BCa" else real(sample, method, *args)

    monkeypatch.setattr(stats, "_bootstrap", undefined_bca)
    values = [60.0, 60.4, 59.7, 60.2, 59.9]
    interval = stats.bca_interval(values)
    assert interval.method == "percentile bootstrap (BCa undefined)"
    expected = real(np.array(values), "percentile", 0.95, stats.N_RESAMPLES, stats.SEED)
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


def test_budget_to_target_interval_when_every_resample_agrees() -> None:
    # fixed target 65: the arm's resampled means are in [60, 61] at 2 and [70, 71] at 4;
    # the baseline's never exceed 62, so it never reaches it and the speedup is infinite.
    result = stats.budget_to_target_interval(
        {2: [60.0, 61.0], 4: [70.0, 71.0]}, {2: [50.0, 51.0], 4: [60.0, 62.0]}, 65.0
    )
    assert result.budget == (4.0, 4.0)
    assert result.baseline_budget == (math.inf, math.inf)
    assert result.speedup == (math.inf, math.inf)
    assert result.reached_frac == 1.0
    assert result.method == "percentile bootstrap over seeds"


def test_budget_to_target_interval_spans_the_budgets_a_resample_can_reach() -> None:
    # default target = the baseline's resampled mean at 4 (60, 61 or 62); the arm's mean at
    # 2 is 59, 61 or 63, so it reaches the target at 2 in 5/8 of the resamples, else at 4.
    result = stats.budget_to_target_interval(
        {2: [59.0, 63.0], 4: [70.0, 70.0]}, {2: [50.0, 51.0], 4: [60.0, 62.0]}, None
    )
    assert result.budget == (2.0, 4.0)
    assert result.baseline_budget == (4.0, 4.0)
    assert result.speedup == (1.0, 2.0)
    assert result.reached_frac == 1.0


def test_budget_to_target_interval_of_an_arm_that_never_reaches_it() -> None:
    result = stats.budget_to_target_interval(
        {2: [50.0, 51.0], 4: [52.0, 53.0]}, {2: [58.0, 59.0], 4: [61.0, 62.0]}, 60.0
    )
    assert result.budget == (math.inf, math.inf) and result.reached_frac == 0.0
    assert result.baseline_budget == (4.0, 4.0)
    assert result.speedup == (0.0, 0.0)
    neither = stats.budget_to_target_interval(
        {2: [50.0, 51.0]}, {2: [50.0, 51.0], 4: [52.0, 53.0]}, 70.0
    )
    assert all(math.isnan(x) for x in neither.speedup)


def test_budget_to_target_interval_of_the_baseline_itself_and_of_single_seeds() -> None:
    itself = stats.budget_to_target_interval(None, {2: [50.0, 51.0], 4: [60.0, 62.0]}, None)
    assert (itself.budget, itself.baseline_budget, itself.speedup) == ((4.0, 4.0),) * 2 + (
        (1.0, 1.0),
    )
    single = stats.budget_to_target_interval({2: [59.0], 4: [70.0]}, {2: [50.0], 4: [60.0]}, None)
    assert single.method == "no bootstrap (one seed per budget)"
    assert (single.budget, single.baseline_budget, single.speedup) == (
        (4.0, 4.0),
        (4.0, 4.0),
        (1.0, 1.0),
    )
