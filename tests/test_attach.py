"""attach(): mask buffers, exact counts, masked weights/gradients/optimizer state, bad input, detach."""

from __future__ import annotations

import itertools
import math
import typing

import pytest
import torch
from torch import nn

import sparseopt
from contract import arms
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


def test_attach_is_validated_by_sparse_config_with_options_over_a_config():
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, total_steps=10)
    assert state.config == SparseConfig()
    state.detach()
    base = SparseConfig(method="set", sparsity=0.8, delta_t=7)
    state = sparseopt.attach(model, optimizer, base, total_steps=10, sparsity=0.5)
    assert state.config == base.model_copy(update={"sparsity": 0.5})
    assert state.config.delta_t == 7 and base.sparsity == 0.8


def test_attach_with_a_config_saves_every_field():
    cfg = SparseConfig(
        method="set",
        sparsity=0.8,
        distribution="uniform",
        preconditioner="sparseopt",
        grad_clip=0.5,
        f_max=1.5,
        sparseopt_layers="normalized",
        scale_weight_decay=True,
        ham={"alpha": 10.0, "beta": 0.0},
        delta_t=7,
        drop_fraction=0.2,
        t_end=0.5,
        drop_scores="row_normalized",
        trace_rows=True,
        dense_layers=("8",),
        dense_in_budget=False,
    )
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, cfg, total_steps=50, seed=3)
    assert state.config is cfg
    saved = state.state_dict()["config"]
    assert saved == {**cfg.model_dump(mode="json"), "total_steps": 50, "seed": 3}


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
        ({"drop_scores": "gradient"}, "drop_scores"),
        (
            {"method": "static", "drop_scores": "row_normalized"},
            "drop_scores='row_normalized' needs a dynamic",
        ),
        (
            {"method": "dense", "sparsity": 0.0, "preconditioner": "sparseopt"},
            "preconditioner='sparseopt' needs a sparse method",
        ),
        ({"trace_rows": "often"}, "trace_rows"),
        ({"ham": {"alpha": 1.0, "gamma": 2.0}}, "ham"),
        ({"ham": {"alpha": -1.0}}, "ham"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"grad_clip": float("inf")}, "grad_clip"),
        ({"f_max": -1.0, "preconditioner": "sparseopt"}, "f_max"),
        ({"sparseopt_layers": "some"}, "sparseopt_layers"),
        ({"grad_renorm": True, "grad_clip": 1.0}, "grad_renorm=True and sparse.grad_clip=1.0"),
        ({"unknown_option": 1}, "unknown_option"),
        ({"f_max": 1.0}, "f_max=1.0 needs sparse.preconditioner='sparseopt'"),
        (
            {"sparseopt_layers": "normalized"},
            "sparseopt_layers='normalized' needs sparse.preconditioner",
        ),
        ({"scale_weight_decay": True}, "scale_weight_decay=True needs sparse.preconditioner"),
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


def test_sparse_config_validates_the_new_options_like_attach():
    assert SparseConfig(grad_clip=1.0).grad_clip == 1.0
    with pytest.raises(ValueError, match=r"grad_renorm=True and sparse\.grad_clip=1\.0 exclude"):
        SparseConfig(grad_renorm=True, grad_clip=1.0)
    for options in (
        {"f_max": 1.0},
        {"sparseopt_layers": "normalized"},
        {"scale_weight_decay": True},
    ):
        with pytest.raises(ValueError, match=r"needs sparse\.preconditioner='sparseopt'"):
            SparseConfig(**options)
        assert SparseConfig(preconditioner="sparseopt", **options)
    with pytest.raises(ValueError, match="f_max"):
        SparseConfig(preconditioner="sparseopt", f_max=0.0)


def test_scale_weight_decay_refuses_an_optimizer_it_cannot_scale():
    model = tiny_net()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01, weight_decay=1e-4)
    with pytest.raises(ValueError, match=r"scale_weight_decay=True .* RMSprop"):
        sparseopt.attach(model, optimizer, method="static", preconditioner="sparseopt",
                         scale_weight_decay=True)  # fmt: skip


# ---------------------------------------------------------------- the hot path's fast path
class GenericSGD(torch.optim.SGD):
    """SGD under another type: sparseopt cannot know it is element-wise, so it masks state too."""


class GenericAdam(torch.optim.Adam):
    """Adam under another type (the generic path)."""


class GenericAdamW(torch.optim.AdamW):
    """AdamW under another type (the generic path)."""


FAST_VS_GENERIC = {
    "sgd": (torch.optim.SGD, GenericSGD, {"lr": 0.1}),
    "sgd_momentum_wd": (torch.optim.SGD, GenericSGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}),
    "sgd_nesterov_wd": (torch.optim.SGD, GenericSGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    "adam": (torch.optim.Adam, GenericAdam, {"lr": 1e-2}),
    "adam_wd_amsgrad": (torch.optim.Adam, GenericAdam, {"lr": 1e-2, "weight_decay": 1e-3, "amsgrad": True}),
    "adamw_wd": (torch.optim.AdamW, GenericAdamW, {"lr": 1e-2, "weight_decay": 0.1}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FAST_VS_GENERIC))
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_fast_path_equals_the_generic_path_bit_for_bit_and_keeps_zeros(case, method):
    """SGD/Adam/AdamW skip masking state and weights; a zero gradient on zero weight and state
    must then leave all three exactly zero: the trajectory equals the masked (generic) one
    bit for bit, through lazily created state and topology updates."""
    fast_type, generic_type, options = FAST_VS_GENERIC[case]
    runs = []
    for optimizer_type in (fast_type, generic_type):
        model = tiny_net()
        optimizer = optimizer_type(model.parameters(), **options)
        state = sparseopt.attach(model, optimizer, method=method, sparsity=0.9,
                                 preconditioner="sparseopt", total_steps=40, delta_t=2)  # fmt: skip
        assert sparseopt.state.is_elementwise(optimizer) == (optimizer_type is fast_type)
        train_steps(model, optimizer, 7, check=lambda m=model, o=optimizer, s=state: assert_zero_off_mask(m, o, s.masks))  # fmt: skip
        assert state.last_update is not None and state.last_update.step == 6
        assert sum(state.last_update.grown.values()) > 0
        runs.append((model.state_dict(), optimizer.state_dict()["state"], state.state_dict()))
    (fast_model, fast_state, fast_sparse), (slow_model, slow_state, slow_sparse) = runs
    assert all(torch.equal(fast_model[key], slow_model[key]) for key in fast_model)
    for index, values in fast_state.items():
        for key, value in values.items():
            assert torch.equal(value, slow_state[index][key]), (index, key)
    assert all(
        torch.equal(fast_sparse["masks"][n], slow_sparse["masks"][n]) for n in fast_sparse["masks"]
    )


class MixingMomentum(torch.optim.Optimizer):
    """A toy optimizer that mixes elements: its buffer adds the mean gradient to every entry."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                buffer = self.state[param].setdefault("buffer", torch.zeros_like(param))
                buffer.mul_(0.9).add_(param.grad).add_(param.grad.mean())
                param.add_(buffer, alpha=-group["lr"])


def test_an_unknown_optimizer_keeps_the_generic_path_and_its_zeros():
    model = tiny_net()
    optimizer = MixingMomentum(model.parameters(), lr=0.05)
    state = sparseopt.attach(
        model, optimizer, method="rigl", sparsity=0.9, total_steps=40, delta_t=3
    )
    assert not sparseopt.state.is_elementwise(optimizer)
    train_steps(
        model, optimizer, 7, check=lambda: assert_zero_off_mask(model, optimizer, state.masks)
    )
    assert state.last_update is not None


def test_adam_without_eps_is_not_element_wise_safe():
    """0 / (sqrt(0) + eps) is 0 only for eps > 0: Adam with eps=0 takes the generic path."""
    assert sparseopt.state.is_elementwise(torch.optim.Adam(tiny_net().parameters()))
    assert not sparseopt.state.is_elementwise(torch.optim.Adam(tiny_net().parameters(), eps=0.0))


def test_weights_written_after_attach_are_masked_on_the_first_step():
    model = tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = sparseopt.attach(model, optimizer, method="static", sparsity=0.9)
    with torch.no_grad():
        for weight in sparseopt.maskable_weights(model).values():
            weight.fill_(0.5)
    train_steps(model, optimizer, 1)
    assert_zero_off_mask(model, optimizer, state.masks)


def every_arm_name() -> list[str]:
    """Each method with each subset of modifiers, in canonical order."""
    return [
        "+".join([method, *modifiers])
        for method in arms.METHODS
        for size in range(len(arms.MODIFIERS) + 1)
        for modifiers in itertools.combinations(arms.MODIFIERS, size)
    ]


def valid_arms() -> list:
    """Every arm the contract's grammar accepts."""
    found = []
    for name in every_arm_name():
        try:
            found.append(arms.parse_arm(name))
        except ValueError:
            continue
    return found


def arm_fields(name: str) -> dict:
    """The SparseConfig fields an arm name sets (its grammar aside), at a valid sparsity."""
    method, *modifiers = name.split("+")
    fields = {"method": method, "sparsity": 0.0 if method == "dense" else 0.9}
    for modifier in arms.MODIFIER_TABLE:
        fields[modifier.field] = modifier.on if modifier.name in modifiers else modifier.off
    return fields


def test_an_arm_is_valid_exactly_when_the_sparse_config_it_sets_is():
    valid = 0
    for name in every_arm_name():
        try:
            arms.parse_arm(name)
        except ValueError as error:
            with pytest.raises(ValueError):
                SparseConfig(**arm_fields(name))
            assert "needs" in str(error) or "exclude" in str(error), name
            continue
        assert SparseConfig(**arm_fields(name)).modifiers() == set(name.split("+")[1:]), name
        valid += 1
    assert valid == len(valid_arms()) > 50


def test_the_contract_tables_agree_with_sparse_config_and_the_implementations():
    from sparseopt.config import Distribution, DropScores, Method
    from sparseopt.state import DISTRIBUTIONS
    from sparseopt.topology import DROP_SCORES, UPDATERS

    defaults = SparseConfig()
    for modifier in arms.MODIFIER_TABLE:
        assert getattr(defaults, modifier.field) == modifier.off, modifier.name
    assert typing.get_args(Method) == arms.METHODS == tuple(UPDATERS)
    assert {name: cls.traits for name, cls in UPDATERS.items()} == arms.METHOD_TRAITS
    assert set(typing.get_args(Distribution)) == set(DISTRIBUTIONS)
    assert set(typing.get_args(DropScores)) == set(DROP_SCORES)


def test_every_arm_of_the_contract_is_a_valid_sparse_config_and_attaches():
    checked = 0
    for arm in valid_arms():
        fields = {key.removeprefix("sparse."): value for key, value in arm.train_settings().items()}
        fields["sparsity"] = 0.0 if arm.method == "dense" else 0.9
        fields["ham"] = {} if "ham" in arm.modifiers else None
        cfg = SparseConfig(**fields)
        model = tiny_net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)
        state = sparseopt.attach(model, optimizer, cfg, total_steps=10, seed=0)
        assert cfg.modifiers() == arm.modifiers, arm.name
        expected = {"renorm", "clip", "cap", "wdscale", "ham"} & arm.modifiers
        assert set(state.modifiers) == expected, arm.name
        checked += 1
    assert checked > 50
