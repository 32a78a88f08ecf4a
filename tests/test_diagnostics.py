"""The gradient-skew experiment reproduces 1/sqrt(1-s) with BN and ~1 without; fan-in spread;
row weights and BN scale against fan-in (exact numbers on hand-built masks and weights)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import sparseopt
from sparseopt.diagnostics import (
    fan_in_spread,
    fan_in_terciles,
    following_batchnorms,
    gradient_skew_curve,
    gradient_skew_ratio,
    pearson,
    plot_gradient_skew,
    row_weights_vs_fan_in,
    weight_fan_in_rows,
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


# rows: fan-in k_i and the value of every active weight (off-mask entries hold junk: ignored)
HAND_K = [1, 3, 2, 3, 1, 2]
HAND_V = [2.0, 1.0, 1.0, -3.0, 4.0, 0.5]


def hand_layer() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(6, 3, dtype=torch.bool)
    for row, k in enumerate(HAND_K):
        mask[row, :k] = True
    weight = torch.where(mask, torch.tensor(HAND_V).view(-1, 1), torch.tensor(9.0))
    return mask, weight


def test_fan_in_terciles_rank_rows_by_k_with_ties_by_index():
    low, high = fan_in_terciles(torch.tensor(HAND_K, dtype=torch.float64))
    assert (low.tolist(), high.tolist()) == ([0, 4], [1, 3])
    low, high = fan_in_terciles(torch.tensor([5.0, 2.0]))
    assert (low.tolist(), high.tolist()) == ([1], [0])


def test_row_weights_vs_fan_in_exact_numbers():
    mask, weight = hand_layer()
    gamma = torch.tensor([1.0, -2.0, 0.5, 1.0, 2.0, -1.0])
    running_var = torch.tensor([3.0, 0.0, 8.0, 15.0, 0.0, 3.0])  # + eps 1 -> std 2,1,3,4,1,2
    stats = row_weights_vs_fan_in(mask, weight, gamma, running_var, bn_eps=1.0)
    norms = [abs(v) * math.sqrt(k) for v, k in zip(HAND_V, HAND_K, strict=True)]
    scales = [0.5, 2.0, 0.5 / 3, 0.25, 2.0, 0.5]
    expected = {
        "k_low": 1.0, "k_high": 3.0,
        "w_abs_low": (2 + 4) / 2, "w_abs_high": (3 + 9) / 6,
        "row_norm_low": (2 + 4) / 2, "row_norm_high": 2 * math.sqrt(3),
        "corr_norm_k": statistics.correlation(norms, HAND_K),
        "corr_w_abs_k": statistics.correlation([abs(v) for v in HAND_V], HAND_K),
        "gamma_low": 1.5, "gamma_high": 1.5,
        "std_low": 1.5, "std_high": 2.5,
        "bn_scale_low": 1.25, "bn_scale_high": 1.125,
        "corr_bn_scale_k": statistics.correlation(scales, HAND_K),
    }  # fmt: skip
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-12), key


def test_row_weights_vs_fan_in_is_none_where_undefined():
    mask = torch.tensor([[0, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    weight = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    stats = row_weights_vs_fan_in(mask, weight)
    assert stats["w_abs_low"] is None  # the low tercile is the empty row
    assert stats["corr_w_abs_k"] is None  # rows with k > 0 all have k = 2
    assert stats["corr_norm_k"] == pytest.approx(
        statistics.correlation([0, 2**0.5, 8**0.5], [0, 2, 2])
    )
    assert "bn_scale_low" not in stats
    assert pearson(torch.ones(3), torch.arange(3.0)) is None


def test_following_batchnorms_reads_the_registration_order_and_checks_channels():
    state = {
        "conv.weight": torch.zeros(4, 2, 3, 3),
        "conv.weight_mask": torch.zeros(4, 2, 3, 3, dtype=torch.bool),
        "bn.weight": torch.ones(4),
        "bn.running_var": torch.ones(4),
        "conv2.weight": torch.zeros(5, 4, 1, 1),
        "bn2.weight": torch.ones(4),
        "bn2.running_var": torch.ones(4),
        "fc.weight": torch.zeros(3, 4),
        "fc.bias": torch.zeros(3),
    }
    assert following_batchnorms(state, ["conv", "conv2", "fc", "missing"]) == {
        "conv": "bn", "conv2": None, "fc": None, "missing": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    "build",
    [
        lambda: sparseopt.resnet20(num_classes=10),
        lambda: sparseopt.resnet50(num_classes=10),
        lambda: sparseopt.small_cnn(num_classes=10),
        lambda: sparseopt.mlp(64, 10),
    ],
    ids=["resnet20", "resnet50", "small_cnn", "mlp"],
)
def test_following_batchnorms_agree_with_the_traced_graph_on_our_models(build):
    model = build()
    names = list(sparseopt.maskable_weights(model))
    paired = following_batchnorms(model.state_dict(), names)
    assert {name for name, bn in paired.items() if bn} == sparseopt.normalized_layers(model, names)
    graph = torch.fx.symbolic_trace(model).graph
    traced = {
        node.target: next(iter(node.users)).target
        for node in graph.nodes
        if node.op == "call_module" and node.target in paired and len(node.users) == 1
    }
    assert all(traced[name] == bn for name, bn in paired.items() if bn)


def test_weight_fan_in_rows_pairs_each_layer_with_its_bn():
    mask, weight = hand_layer()
    state = {
        "a.weight": weight,
        "b.weight": torch.tensor([2.0, -2.0, 2.0, 2.0, 2.0, 2.0]),
        "b.running_var": torch.full((6,), 4.0 - 1e-5),
        "c.weight": torch.ones(2, 6),
    }
    masks = {"a": mask, "c": torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool), "gone": mask}  # fmt: skip
    rows = {row["layer"]: row for row in weight_fan_in_rows(masks, state)}
    assert set(rows) == {"a", "c"}  # no weight for "gone" in the state_dict
    assert rows["a"]["bn"] == "b" and rows["c"]["bn"] is None
    assert rows["a"]["bn_scale_low"] == pytest.approx(1.0) and rows["a"][
        "std_high"
    ] == pytest.approx(2.0)
    assert rows["a"]["w_abs_high"] == 2.0 and "gamma_low" not in rows["c"]
