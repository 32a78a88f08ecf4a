"""Layer-wise densities: exact totals, densities <= 1, dense layers inside/outside the budget."""

from __future__ import annotations

import math

import pytest

from sparseopt.distributions import erk_densities, layer_nonzeros, uniform_densities


def resnet20_shapes() -> dict[str, tuple[int, ...]]:
    """The maskable weight shapes of a CIFAR ResNet-20 (16/32/64 channels, 100 classes)."""
    shapes: dict[str, tuple[int, ...]] = {"conv1": (16, 3, 3, 3)}
    in_ch = 16
    for stage, out_ch in enumerate((16, 32, 64), start=1):
        for block in range(3):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1"] = (out_ch, in_ch, 3, 3)
            shapes[f"{prefix}.conv2"] = (out_ch, out_ch, 3, 3)
            if in_ch != out_ch:
                shapes[f"{prefix}.shortcut.0"] = (out_ch, in_ch, 1, 1)
            in_ch = out_ch
    shapes["fc"] = (100, 64)
    return shapes


TINY = {"conv1": (8, 3, 3, 3), "conv2": (16, 8, 3, 3), "fc": (10, 16)}


def total(shapes: dict[str, tuple[int, ...]], names=None) -> int:
    return sum(math.prod(shapes[n]) for n in (names or shapes))


@pytest.mark.parametrize("distribution", [erk_densities, uniform_densities])
@pytest.mark.parametrize("shapes", [TINY, resnet20_shapes()], ids=["tiny", "resnet20"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99])
def test_total_is_exact_and_densities_at_most_one(distribution, shapes, sparsity):
    densities = distribution(shapes, sparsity)
    counts = layer_nonzeros(shapes, densities)
    assert sum(counts.values()) == round((1 - sparsity) * total(shapes))
    for name, density in densities.items():
        assert 0.0 <= density <= 1.0
        assert counts[name] == round(density * math.prod(shapes[name]))


def test_erk_saturates_small_layers_and_redistributes():
    shapes = resnet20_shapes()
    densities = erk_densities(shapes, 0.5)
    saturated = [name for name, d in densities.items() if d == 1.0]
    assert "conv1" in saturated and "fc" in saturated
    assert len(saturated) < len(shapes)
    counts = layer_nonzeros(shapes, densities)
    assert sum(counts.values()) == round(0.5 * total(shapes))


def test_erk_density_is_proportional_to_sum_over_product_of_dims():
    shapes = resnet20_shapes()
    densities = erk_densities(shapes, 0.95)
    assert all(d < 1.0 for d in densities.values())
    # count_i = eps * raw_i * numel_i up to rounding (< 1), so density_i / raw_i = eps +- 1 / sum(shape_i)
    ratio = {
        name: densities[name] * math.prod(shape) / sum(shape) for name, shape in shapes.items()
    }
    for a in shapes:
        for b in shapes:
            assert abs(ratio[a] - ratio[b]) <= 1 / sum(shapes[a]) + 1 / sum(shapes[b])


def test_erk_hand_computed_counts():
    # raw = 8/16 and 10/16; eps = 16 / (8 + 10) -> real counts 7.11 and 8.89 -> 7 and 9
    shapes = {"a": (4, 4), "b": (2, 8)}
    assert layer_nonzeros(shapes, erk_densities(shapes, 0.5)) == {"a": 7, "b": 9}


def test_largest_remainder_breaks_ties_by_layer_order():
    shapes = {"a": (10,), "b": (10,), "c": (10,)}
    assert layer_nonzeros(shapes, {"a": 0.33, "b": 0.33, "c": 0.33}) == {"a": 4, "b": 3, "c": 3}
    assert layer_nonzeros(shapes, {"a": 0.31, "b": 0.35, "c": 0.34}) == {"a": 3, "b": 4, "c": 3}


@pytest.mark.parametrize("distribution", [erk_densities, uniform_densities])
def test_dense_layers_inside_budget(distribution):
    shapes = resnet20_shapes()
    densities = distribution(shapes, 0.9, dense_layers=("conv1", "fc"))
    counts = layer_nonzeros(shapes, densities)
    assert densities["conv1"] == 1.0 and densities["fc"] == 1.0
    assert sum(counts.values()) == round(0.1 * total(shapes))


@pytest.mark.parametrize("distribution", [erk_densities, uniform_densities])
def test_dense_layers_outside_budget(distribution):
    shapes = resnet20_shapes()
    densities = distribution(shapes, 0.9, dense_layers=("fc",), dense_in_budget=False)
    counts = layer_nonzeros(shapes, densities)
    others = [name for name in shapes if name != "fc"]
    assert counts["fc"] == 6400
    assert sum(counts[n] for n in others) == round(0.1 * total(shapes, others))


def test_uniform_gives_equal_densities():
    shapes = resnet20_shapes()
    densities = uniform_densities(shapes, 0.9)
    for name, density in densities.items():
        assert abs(density - 0.1) <= 1.0 / math.prod(shapes[name])


def test_infeasible_dense_layers_name_the_argument_and_numbers():
    with pytest.raises(ValueError, match=r"dense_layers.*6400.*396"):
        erk_densities(TINY | {"big": (100, 64)}, 0.95, dense_layers=("big",))


def test_unknown_dense_layer_is_rejected():
    with pytest.raises(ValueError, match=r"dense_layers.*nope"):
        uniform_densities(TINY, 0.9, dense_layers=("nope",))


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_bad_sparsity_is_rejected(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        erk_densities(TINY, sparsity)


def test_layer_nonzeros_checks_its_inputs():
    with pytest.raises(ValueError, match="densities"):
        layer_nonzeros(TINY, {"conv1": 0.5})
    with pytest.raises(ValueError, match=r"densities\['fc'\]"):
        layer_nonzeros(TINY, {"conv1": 0.5, "conv2": 0.5, "fc": 1.5})
