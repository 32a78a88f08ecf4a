"""analysis.stats against hand-computed values."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from analysis import stats

PLANT = [2.0, 2.5, 1.5, 3.0, 2.2]
NULL = [0.5, -0.4, 0.3, -0.6, 0.25]


def test_bootstrap_ci_brackets_the_mean_within_the_sample_range() -> None:
    values = [60.0, 60.4, 59.7, 60.2, 59.9]
    low, high = stats.bootstrap_mean_ci(values)
    assert min(values) <= low < statistics.mean(values) < high <= max(values)
    assert stats.bootstrap_mean_ci(values) == (low, high)  # fixed generator: reproducible


def test_bootstrap_ci_needs_two_values_and_is_a_point_for_constant_samples() -> None:
    assert all(math.isnan(x) for x in stats.bootstrap_mean_ci([61.0]))
    assert stats.bootstrap_mean_ci([61.0, 61.0, 61.0]) == pytest.approx((61.0, 61.0))


def test_paired_ci_excludes_zero_for_the_planted_effect_and_includes_it_for_the_null() -> None:
    base = np.array([55.0, 55.4, 54.7, 55.2, 54.9])
    low, high = stats.paired_bootstrap_ci(base + PLANT, base)
    assert 0.0 < min(PLANT) <= low < statistics.mean(PLANT) < high <= max(PLANT)
    low, high = stats.paired_bootstrap_ci(base + NULL, base)
    assert low < 0.0 < high


def test_paired_ci_rejects_unpaired_input() -> None:
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_bootstrap_ci([1.0, 2.0], [1.0])


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
