"""The gradient-skew experiment reproduces 1/sqrt(1-s) with BN and ~1 without; fan-in spread."""

from __future__ import annotations

import math

import pytest
import torch

from sparseopt.diagnostics import (
    fan_in_spread,
    gradient_skew_curve,
    gradient_skew_ratio,
    plot_gradient_skew,
)


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


def test_fan_in_spread_of_hand_made_masks():
    # rows with k = 1, 3 (conv [2, 1, 2, 2]) and k = 2, 2, 0, 4 (linear [4, 4])
    conv = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    conv[0, 0, 0, 0] = True
    conv[1, 0, :, :] = True
    conv[1, 0, 1, 1] = False
    linear = torch.tensor(
        [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool
    )
    rows = {row["layer"]: row for row in fan_in_spread({"conv": conv, "fc": linear})}
    assert rows["conv"]["rows"] == 2 and rows["conv"]["fan_in"] == 4
    assert rows["conv"]["mean_k"] == 2.0 and rows["conv"]["cv_k"] == pytest.approx(0.5)
    assert rows["conv"]["f_min"] == pytest.approx(math.sqrt(0.5))
    assert rows["conv"]["f_max"] == pytest.approx(math.sqrt(1.5))
    assert rows["fc"]["mean_k"] == 2.0 and rows["fc"]["empty_rows"] == 1
    assert rows["fc"]["cv_k"] == pytest.approx(math.sqrt(2.0) / 2.0)
    assert rows["fc"]["f_min"] == 0.0 and rows["fc"]["f_max"] == pytest.approx(math.sqrt(2.0))


def test_fan_in_spread_is_zero_for_equal_rows():
    (row,) = fan_in_spread({"w": torch.ones(3, 5, dtype=torch.bool)})
    assert row["cv_k"] == 0.0 and row["f_min"] == row["f_max"] == 1.0
