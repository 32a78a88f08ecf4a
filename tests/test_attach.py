"""attach(): mask buffers, exact counts, masked weights/gradients/optimizer state, bad input, detach."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

import sparseopt
from sparseopt.config import SparseConfig
from sparseopt.distributions import erk_densities, layer_nonzeros, uniform_densities


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, check=None) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=generator)
        y = torch.randint(0, 10, (4,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if check is not None:
            check()


def assert_zero_off_mask(model: nn.Module, optimizer: torch.optim.Optimizer, masks: dict) -> None:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = modules[name].weight
        assert torch.count_nonzero(weight[~mask]) == 0
        assert weight.grad is None or torch.count_nonzero(weight.grad[~mask]) == 0
        for value in optimizer.state[weight].values():
            if torch.is_tensor(value) and value.shape == weight.shape:
                assert torch.count_nonzero(value[~mask]) == 0


def shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(w.shape) for name, w in sparseopt.maskable_weights(model).items()}


def test_maskable_weights_are_conv_and_linear_weights_in_order():
    weights = sparseopt.maskable_weights(tiny_net())
    assert list(weights) == ["0", "3", "8"]
    assert [tuple(w.shape) for w in weights.values()] == [(8, 3, 3, 3), (16, 8, 3, 3), (10, 16)]


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_masks_are_buffers_with_exact_counts_and_weights_zeroed(distribution):
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(
        model, optimizer, method="static", sparsity=0.8, distribution=distribution
    )
    densities = {"erk": erk_densities, "uniform": uniform_densities}[distribution](
        shapes_of(model), 0.8
    )
    expected = layer_nonzeros(shapes_of(model), densities)
    assert {name: int(mask.sum()) for name, mask in state.masks.items()} == expected
    assert {f"{name}.weight_mask" for name in expected} <= set(model.state_dict())
    for name, mask in state.masks.items():
        assert mask.dtype == torch.bool
        assert model.state_dict()[f"{name}.weight_mask"] is not None
    assert_zero_off_mask(model, optimizer, state.masks)
    total = sum(w.numel() for w in sparseopt.maskable_weights(model).values())
    assert state.num_maskable == total
    assert state.sparsity() == 1 - sum(expected.values()) / total
    assert state.layer_densities() == {
        n: expected[n] / math.prod(shapes_of(model)[n]) for n in expected
    }
    assert state.itop_rate() == sum(expected.values()) / total


def test_masks_depend_on_the_seed_only():
    masks = []
    for seed in (0, 0, 1):
        model = tiny_net()
        state = sparseopt.attach(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            method="static",
            sparsity=0.8,
            seed=seed,
        )
        masks.append(state.masks)
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    assert not all(torch.equal(masks[0][n], masks[2][n]) for n in masks[0])


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, amsgrad=True),
    ],
    ids=["sgd_momentum", "sgd_nesterov", "adam", "adamw_amsgrad"],
)
def test_static_masks_keep_weights_grads_and_state_zero_after_every_step(make_optimizer):
    model = tiny_net()
    optimizer = make_optimizer(model.parameters())
    state = sparseopt.attach(
        model, optimizer, method="static", sparsity=0.9, preconditioner="sparseopt"
    )
    before = {name: mask.clone() for name, mask in state.masks.items()}
    train_steps(
        model, optimizer, 5, check=lambda: assert_zero_off_mask(model, optimizer, state.masks)
    )
    assert state.step == 5
    assert all(torch.equal(before[n], state.masks[n]) for n in before)
    assert state.last_update is None


def test_dense_layers_stay_dense():
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(
        model, optimizer, method="rigl", sparsity=0.8, total_steps=8, delta_t=2, dense_layers=("8",)
    )
    train_steps(model, optimizer, 6)
    assert bool(state.masks["8"].all())
    assert state.layer_densities()["8"] == 1.0
    assert state.last_update is not None and "8" not in state.last_update.dropped


def test_dense_method_has_no_masks_and_only_ham_changes_the_update():
    plain, dense, dense_ham = tiny_net(), tiny_net(), tiny_net()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (plain, dense, dense_ham)]
    state = sparseopt.attach(dense, optimizers[1], method="dense", sparsity=0.0)
    sparseopt.attach(
        dense_ham, optimizers[2], method="dense", sparsity=0.0, ham={"alpha": 200.0, "beta": 1e-3}
    )
    assert state.masks == {}
    assert not any(key.endswith("weight_mask") for key in dense.state_dict())
    assert state.sparsity() == 0.0 and state.itop_rate() == 1.0
    assert set(state.layer_densities().values()) == {1.0}
    for model, optimizer in zip((plain, dense, dense_ham), optimizers, strict=True):
        train_steps(model, optimizer, 1)
    assert state.step == 1
    assert all(
        torch.equal(a, b) for a, b in zip(plain.parameters(), dense.parameters(), strict=True)
    )
    assert not torch.equal(plain[3].weight, dense_ham[3].weight)
    assert torch.equal(plain[3].bias, dense_ham[3].bias)


def test_attach_defaults_match_sparse_config():
    defaults = SparseConfig()
    signature = inspect.signature(sparseopt.attach).parameters
    for field in (
        "method",
        "sparsity",
        "distribution",
        "preconditioner",
        "regrow_scores",
        "grad_renorm",
        "ham",
        "delta_t",
        "drop_fraction",
        "t_end",
        "dense_layers",
        "dense_in_budget",
    ):
        assert signature[field].default == getattr(defaults, field), field


def test_attach_from_config_passes_every_field():
    cfg = SparseConfig(
        method="set",
        sparsity=0.8,
        distribution="uniform",
        preconditioner="sparseopt",
        grad_renorm=True,
        ham={"alpha": 10.0, "beta": 0.0},
        delta_t=7,
        drop_fraction=0.2,
        t_end=0.5,
        dense_layers=("8",),
        dense_in_budget=False,
    )
    model = tiny_net()
    state = sparseopt.attach_from_config(
        model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, total_steps=50, seed=3
    )
    settings = state.settings.to_dict()
    for key, value in cfg.model_dump(mode="json").items():
        assert settings[key] == value, key
    assert settings["total_steps"] == 50 and settings["seed"] == 3


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.5}, "sparsity"),
        ({"method": "dense", "sparsity": 0.5}, "sparsity"),
        ({"method": "snip"}, "method"),
        ({"distribution": "er"}, "distribution"),
        ({"preconditioner": "adam"}, "preconditioner"),
        ({"regrow_scores": "mean"}, "regrow_scores"),
        ({"regrow_scores": "corrected"}, "regrow_scores"),
        ({"delta_t": 0}, "delta_t"),
        ({"t_end": 1.5}, "t_end"),
        ({"drop_fraction": 2.0}, "drop_fraction"),
        ({"total_steps": None}, "total_steps"),
        ({"total_steps": 0}, "total_steps"),
        ({"dense_layers": ("nope",)}, "dense_layers"),
        ({"method": "dense", "sparsity": 0.0, "dense_layers": ("nope",)}, "dense_layers"),
        ({"dense_layers": "8"}, "dense_layers"),
        ({"dense_layers": ("3",), "sparsity": 0.99}, "dense_layers"),
        ({"ham": {"alpha": 1.0, "gamma": 2.0}}, "ham"),
        ({"ham": {"alpha": -1.0}}, "ham"),
    ],
)
def test_bad_input_names_the_argument(kwargs, argument):
    model = tiny_net()
    arguments = {"method": "rigl", "sparsity": 0.9, "total_steps": 100} | kwargs
    with pytest.raises(ValueError, match=argument):
        sparseopt.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), **arguments)


def test_attach_twice_is_refused_and_detach_removes_hooks_and_buffers():
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, method="static", sparsity=0.9)
    with pytest.raises(ValueError, match="detach"):
        sparseopt.attach(model, optimizer, method="static", sparsity=0.9)
    masks = {name: mask.clone() for name, mask in state.masks.items()}
    state.detach()
    assert not any(key.endswith("weight_mask") for key in model.state_dict())
    assert all(torch.equal(masks[n], state.masks[n]) for n in masks)
    train_steps(model, optimizer, 1)
    assert state.step == 0
    assert torch.count_nonzero(model[3].weight[~masks["3"]]) > 0


def test_loading_a_model_state_dict_refreshes_the_masks_used_by_the_hooks():
    source, target = tiny_net(), tiny_net()
    sparseopt.attach(
        source, torch.optim.SGD(source.parameters(), lr=0.1), method="static", sparsity=0.9, seed=1
    )
    optimizer = torch.optim.SGD(target.parameters(), lr=0.1)
    state = sparseopt.attach(target, optimizer, method="static", sparsity=0.9, seed=2)
    target.load_state_dict(source.state_dict())
    train_steps(target, optimizer, 1)
    assert_zero_off_mask(target, optimizer, state.masks)
    assert torch.equal(state.masks["3"], source[3].weight_mask)


def test_works_under_torch_compile():
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = sparseopt.attach(
        model,
        optimizer,
        method="rigl",
        sparsity=0.9,
        preconditioner="sparseopt",
        total_steps=8,
        delta_t=2,
    )
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    train_steps(
        compiled, optimizer, 3, check=lambda: assert_zero_off_mask(model, optimizer, state.masks)
    )
    assert state.last_update is not None and state.last_update.step == 2
