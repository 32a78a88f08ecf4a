"""The gradient-skew experiment reproduces 1/sqrt(1-s) with BN and ~1 without."""

from __future__ import annotations

import math

import pytest

from sparseopt.diagnostics import gradient_skew_curve, gradient_skew_ratio, plot_gradient_skew


@pytest.fixture(scope="module")
def curve():
    return gradient_skew_curve((0.5, 0.8, 0.9), seeds=3, batches=4)


def test_curve_rows_and_theory(curve):
    assert [row["sparsity"] for row in curve] == [0.5, 0.8, 0.9]
    for row in curve:
        assert set(row) == {"sparsity", "ratio_bn", "ratio_no_bn", "theory"}
        assert row["theory"] == pytest.approx(1 / math.sqrt(1 - row["sparsity"]))


def test_batchnorm_ratio_follows_inverse_sqrt_density(curve):
    for row in curve:
        assert abs(row["ratio_bn"] / row["theory"] - 1) < 0.15, row


def test_ratio_without_batchnorm_stays_near_one(curve):
    for row in curve:
        assert 0.85 <= row["ratio_no_bn"] <= 1.15, row


def test_zero_sparsity_gives_exactly_one():
    assert gradient_skew_ratio(0.0, True, seeds=1, batches=2) == 1.0
    assert gradient_skew_ratio(0.0, False, seeds=1, batches=2) == 1.0


def test_bad_sparsity_is_rejected():
    with pytest.raises(ValueError, match="sparsity"):
        gradient_skew_ratio(1.0, True)
    with pytest.raises(ValueError, match="sparsity"):
        gradient_skew_curve((0.5, -0.1))


def test_plot_writes_a_png(curve, tmp_path):
    path = plot_gradient_skew(curve, tmp_path / "plots" / "skew.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        plot_gradient_skew([], tmp_path / "none.png")
