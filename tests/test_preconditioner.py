"""SparseOpt factors f_i = sqrt(k_i / mean k) and their options (cap, normalised layers, scaled
weight decay), gradient renorm and clip, and the activity counters of each modifier."""

from __future__ import annotations

import math

import pytest
import torch
from test_attach import assert_zero_off_mask, tiny_net, train_steps
from torch import nn

import sparseopt


def test_neuron_scale_hand_values():
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.tensor([math.sqrt(0.5), math.sqrt(1.5), 0.0, math.sqrt(2.0)])
    torch.testing.assert_close(sparseopt.neuron_scale(mask), expected, rtol=0, atol=1e-7)


def test_neuron_scale_uses_the_whole_conv_row_and_handles_empty_masks():
    mask = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    assert torch.equal(sparseopt.neuron_scale(mask), torch.zeros(2))
    mask[0] = True  # k = (12, 0), mean 6
    torch.testing.assert_close(sparseopt.neuron_scale(mask), torch.tensor([math.sqrt(2.0), 0.0]))
    assert torch.equal(sparseopt.neuron_scale(torch.ones(5, 7, dtype=torch.bool)), torch.ones(5))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 6))


def fake_gradients(model: nn.Module, seed: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grads = {}
    for name, param in model.named_parameters():
        grads[name] = torch.randn(param.shape, generator=generator)
        param.grad = grads[name].clone()
    return grads


@pytest.mark.parametrize("preconditioner", ["none", "sparseopt"])
def test_sgd_update_is_lr_times_f_times_grad(preconditioner):
    model = net()
    lr = 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    state = sparseopt.attach(
        model,
        optimizer,
        method="static",
        sparsity=0.7,
        preconditioner=preconditioner,
        dense_layers=("3",),
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = fake_gradients(model)
    optimizer.step()
    for name, param in model.named_parameters():
        module = name.split(".")[0]
        grad = grads[name]
        if name.endswith("weight") and module in state.masks:
            mask = state.masks[module]
            if preconditioner == "sparseopt" and module == "0":
                grad = grad * sparseopt.neuron_scale(mask).view(-1, 1)
            expected = (before[name] - lr * grad) * mask
        else:
            expected = before[name] - lr * grad
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-7)
    factors = sparseopt.neuron_scale(state.masks["0"])
    assert preconditioner == "none" or not torch.allclose(factors, torch.ones_like(factors))


def test_dense_layers_get_factor_one_even_with_sparseopt():
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(
        model,
        optimizer,
        method="static",
        sparsity=0.5,
        preconditioner="sparseopt",
        dense_layers=("3",),
    )
    grads = fake_gradients(model)
    optimizer.step()
    assert torch.equal(model[3].weight.grad, grads["3.weight"])
    scaled = (
        grads["0.weight"] * sparseopt.neuron_scale(state.masks["0"]).view(-1, 1) * state.masks["0"]
    )
    assert torch.equal(model[0].weight.grad, scaled)


def global_norm(model: nn.Module) -> torch.Tensor:
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()])
    )


@pytest.mark.parametrize("preconditioner", ["none", "sparseopt"])
def test_grad_renorm_rescales_the_applied_gradient_to_unit_norm(preconditioner):
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(
        model,
        optimizer,
        method="static",
        sparsity=0.7,
        preconditioner=preconditioner,
        grad_renorm=True,
    )
    grads = fake_gradients(model)
    optimizer.step()
    applied = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert abs(float(global_norm(model)) - 1.0) < 1e-6
    # direction: proportional to the masked (and corrected) gradient, one ratio for all
    ratios = []
    for name, grad in grads.items():
        module = name.split(".")[0]
        if name.endswith("weight") and module in state.masks:
            mask = state.masks[module]
            factor = (
                sparseopt.neuron_scale(mask).view(-1, 1) if preconditioner == "sparseopt" else 1.0
            )
            grad = grad * factor * mask
        ratios.append(applied[name][grad != 0] / grad[grad != 0])
    ratio = torch.cat(ratios)
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-5, atol=0)
    assert float(ratio[0]) < 1.0


@pytest.mark.parametrize("value", [1e-4, 0.0])
def test_grad_renorm_scales_small_gradients_up_and_leaves_zero_ones_zero(value):
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, grad_renorm=True)
    for param in model.parameters():
        param.grad = torch.full_like(param, value)
    optimizer.step()
    count = sum(p.numel() for p in model.parameters())
    expected = 1.0 / math.sqrt(count) if value else 0.0
    for param in model.parameters():
        torch.testing.assert_close(param.grad, torch.full_like(param, expected), rtol=1e-6, atol=0)
    assert state.activity() == {"renorm": 1.0}


@pytest.mark.parametrize("scale", [0.5, 0.999, 3.0])
def test_grad_clip_acts_only_when_the_norm_exceeds_the_maximum(scale):
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, grad_clip=2.0)
    fake_gradients(model)
    norm = float(global_norm(model))
    for param in model.parameters():
        param.grad.mul_(2.0 * scale / norm)
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    before_norm = float(global_norm(model))
    optimizer.step()
    if before_norm <= 2.0:
        assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
        assert state.activity() == {"clip": 0.0}
    else:
        assert abs(float(global_norm(model)) - 2.0) < 2e-6
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.grad, before[name] * (2.0 / before_norm))
        assert state.activity() == {"clip": 1.0}


def test_renorm_and_clip_exclude_each_other():
    model = net()
    with pytest.raises(ValueError, match=r"grad_renorm=True and sparse\.grad_clip=1\.0 exclude"):
        sparseopt.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), method="static",
                         grad_renorm=True, grad_clip=1.0)  # fmt: skip


def applied_factors(model: nn.Module, module: str, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row, the factor the hooks applied to the gradient (read on active entries)."""
    weight = dict(model.named_modules())[module].weight
    mask = dict(model.named_modules())[module].weight_mask
    raw = grads[f"{module}.weight"]
    ratios = torch.where(mask, weight.grad / raw, torch.nan)
    return torch.nanmean(ratios, dim=1)


def test_f_max_caps_the_factors_and_leaves_lower_rows_untouched():
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, method="static", sparsity=0.7,
                             preconditioner="sparseopt", f_max=1.0, dense_layers=("3",))  # fmt: skip
    mask = state.masks["0"]
    factors = sparseopt.neuron_scale(mask)
    assert (factors > 1.0).any() and (factors < 1.0).any()
    grads = fake_gradients(model)
    optimizer.step()
    capped = factors.clamp_max(1.0)
    expected = grads["0.weight"] * (mask.float() * capped.view(-1, 1))
    assert torch.equal(model[0].weight.grad, expected)
    measured = applied_factors(model, "0", grads)
    torch.testing.assert_close(measured.max(), torch.tensor(1.0), rtol=1e-6, atol=0)
    below = factors <= 1.0
    assert torch.equal(
        model[0].weight.grad[below], (grads["0.weight"] * mask.float() * factors.view(-1, 1))[below]
    )
    assert state.activity() == {"cap": 1.0}


def test_f_max_above_every_factor_changes_nothing_and_never_acts():
    grads_seen = []
    for f_max in (None, 100.0):
        model = net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        state = sparseopt.attach(model, optimizer, method="static", sparsity=0.7,
                                 preconditioner="sparseopt", f_max=f_max)  # fmt: skip
        fake_gradients(model)
        optimizer.step()
        grads_seen.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads_seen, strict=True))
    assert state.activity() == {"cap": 0.0}


@pytest.mark.parametrize(
    ("build", "excluded"),
    [
        (lambda: sparseopt.resnet20(num_classes=100), {"fc"}),
        (lambda: sparseopt.resnet50(num_classes=1000), {"fc"}),
        (lambda: sparseopt.small_cnn(num_classes=10), {"11"}),
        (lambda: sparseopt.mlp(64, 10), {"7"}),
        (lambda: sparseopt.small_cnn(num_classes=10, batchnorm=False), {"0", "2", "4", "8"}),
        (lambda: sparseopt.mlp(64, 10, batchnorm=False), {"1", "3", "5"}),
    ],
    ids=["resnet20", "resnet50", "small_cnn", "mlp", "small_cnn_no_bn", "mlp_no_bn"],
)
def test_normalized_layers_exclude_exactly_the_layers_without_a_following_norm(build, excluded):
    model = build()
    names = sparseopt.maskable_weights(model)
    assert set(names) - sparseopt.normalized_layers(model, names) == excluded


def test_normalized_layers_accepts_layer_and_group_norm_and_checks_channels():
    model = nn.Sequential(
        nn.Linear(8, 6), nn.LayerNorm(6), nn.Linear(6, 5), nn.GroupNorm(1, 5),
        nn.Linear(5, 4), nn.BatchNorm1d(3 + 1), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2),
    )  # fmt: skip
    names = sparseopt.maskable_weights(model)
    assert sparseopt.normalized_layers(model, names) == {"0", "2", "4"}


def test_normalized_needs_a_traceable_model():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    model = Branchy()
    with pytest.raises(
        ValueError, match=r"sparseopt_layers='normalized' .* tracing Branchy failed"
    ):
        sparseopt.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), method="static",
                         sparsity=0.5, preconditioner="sparseopt", sparseopt_layers="normalized")  # fmt: skip


def test_sparseopt_layers_normalized_gives_the_classifier_factor_one():
    grads_by_option = {}
    for option in ("all", "normalized"):
        model = sparseopt.resnet20(num_classes=100)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        state = sparseopt.attach(model, optimizer, method="static", sparsity=0.9,
                                 preconditioner="sparseopt", sparseopt_layers=option)  # fmt: skip
        grads = fake_gradients(model)
        optimizer.step()
        grads_by_option[option] = {n: p.grad.clone() for n, p in model.named_parameters()}
    masks = state.masks
    fc = grads["fc.weight"] * masks["fc"]
    assert torch.equal(grads_by_option["normalized"]["fc.weight"], fc)
    assert not torch.equal(grads_by_option["all"]["fc.weight"], fc)
    for name in ("conv1.weight", "layer3.2.conv2.weight"):
        assert torch.equal(grads_by_option["normalized"][name], grads_by_option["all"][name])


def weight_decay_case(optimizer_type, **options):
    model = net()
    optimizer = optimizer_type(model.parameters(), **options)
    state = sparseopt.attach(model, optimizer, method="static", sparsity=0.7,
                             preconditioner="sparseopt", scale_weight_decay=True)  # fmt: skip
    before = {name: p.detach().clone().double() for name, p in model.named_parameters()}
    return model, optimizer, state, before


def test_scale_weight_decay_is_exact_for_sgd():
    lr, wd = 0.1, 0.05
    model, optimizer, state, before = weight_decay_case(torch.optim.SGD, lr=lr, weight_decay=wd)
    grads = fake_gradients(model)
    optimizer.step()
    for name, param in model.named_parameters():
        module = name.split(".")[0]
        grad, w = grads[name].double(), before[name]
        if name.endswith("weight") and module in state.masks:
            mask = state.masks[module].double()
            f = sparseopt.neuron_scale(state.masks[module]).double().view(-1, 1)
            expected = (w - lr * f * (grad * mask + wd * w)) * mask
        else:
            expected = w - lr * (grad + wd * w)
        torch.testing.assert_close(param.detach().double(), expected, rtol=1e-6, atol=1e-8)
    assert state.activity() == {"wdscale": 1.0}


def test_scale_weight_decay_is_exact_for_adam_l2():
    """Adam's first step moves each element by lr * g / (|g| + eps), g = f * (grad + wd * w)."""
    lr, wd, eps = 0.01, 0.5, 1e-8
    model, optimizer, state, before = weight_decay_case(torch.optim.Adam, lr=lr, weight_decay=wd)
    grads = fake_gradients(model)
    optimizer.step()
    mask = state.masks["0"].double()
    f = sparseopt.neuron_scale(state.masks["0"]).double().view(-1, 1)
    g = f * (grads["0.weight"].double() * mask + wd * before["0.weight"])
    expected = (before["0.weight"] - lr * g / (g.abs() + eps)) * mask
    torch.testing.assert_close(model[0].weight.detach().double(), expected, rtol=1e-6, atol=1e-8)


def test_scale_weight_decay_is_exact_for_adamw_decoupled_decay():
    """With zero gradients AdamW's update is pure decay: w * (1 - lr * wd * f_i) per row."""
    lr, wd = 0.01, 0.5
    model, optimizer, state, before = weight_decay_case(torch.optim.AdamW, lr=lr, weight_decay=wd)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for module in ("0", "3"):
        f = sparseopt.neuron_scale(state.masks[module]).double().view(-1, 1)
        expected = before[f"{module}.weight"] * (1 - lr * wd * f)
        torch.testing.assert_close(dict(model.named_parameters())[f"{module}.weight"].double(), expected, rtol=1e-6, atol=1e-9)  # fmt: skip
    torch.testing.assert_close(model[1].weight.double(), before["1.weight"] * (1 - lr * wd))


# ---------------------------------------------------------------- activity counters
def dense_case(**options):
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return (
        model,
        optimizer,
        sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, **options),
    )


def step_with_norm(model: nn.Module, optimizer: torch.optim.Optimizer, norm: float) -> None:
    """One step whose global gradient norm is exactly `norm` (a single nonzero entry)."""
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    model[0].weight.grad[0, 0] = norm
    optimizer.step()


def test_activity_counts_renorm_only_on_steps_whose_norm_is_not_one():
    model, optimizer, state = dense_case(grad_renorm=True)
    for norm in (1.0, 2.0, 1.0 + 1e-7, 0.5):
        step_with_norm(model, optimizer, norm)
    assert state.activity() == {"renorm": 0.5}


def test_activity_counts_clip_only_above_the_maximum_and_resets():
    model, optimizer, state = dense_case(grad_clip=1.0)
    for norm in (0.5, 2.0, 1.0, 3.0):
        step_with_norm(model, optimizer, norm)
    assert state.activity() == {"clip": 0.5}
    state.reset_activity()
    assert state.activity() == {"clip": 0.0}
    step_with_norm(model, optimizer, 4.0)
    assert state.activity() == {"clip": 1.0}


def test_activity_of_cap_wdscale_and_ham_counts_the_steps_they_changed():
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    state = sparseopt.attach(model, optimizer, method="static", sparsity=0.7,
                             preconditioner="sparseopt", f_max=1.0, scale_weight_decay=True,
                             ham={"alpha": 200.0, "beta": 1e-3})  # fmt: skip
    fake_gradients(model)
    optimizer.step()  # all act
    fake_gradients(model)
    optimizer.param_groups[0]["weight_decay"] = 0.0
    optimizer.step()  # no decay to scale
    optimizer.param_groups[0]["weight_decay"] = 1e-3
    fake_gradients(model)
    optimizer.param_groups[0]["lr"] = 0.0
    optimizer.step()  # HAM's factor is exp(0) = 1
    optimizer.param_groups[0]["lr"] = 0.1
    fake_gradients(model)
    for module in ("0", "3"):
        model[int(module)].weight.grad = None
    optimizer.step()  # no masked layer (nor any >= 2-dim weight) has a gradient: none acts
    assert state.modifiers == ("cap", "wdscale", "ham")
    assert state.activity() == {"cap": 0.75, "wdscale": 0.5, "ham": 0.5}


@pytest.mark.parametrize(
    "options",
    [
        {"grad_renorm": True},
        {"grad_clip": 0.1},
        {"preconditioner": "sparseopt", "f_max": 1.0},
        {"preconditioner": "sparseopt", "sparseopt_layers": "normalized"},
        {"preconditioner": "sparseopt", "scale_weight_decay": True},
        {"drop_scores": "row_normalized", "trace_rows": True},
        {
            "preconditioner": "sparseopt",
            "regrow_scores": "corrected",
            "f_max": 1.0,
            "scale_weight_decay": True,
            "grad_clip": 1.0,
            "ham": {},
            "drop_scores": "row_normalized",
        },
    ],
    ids=["renorm", "clip", "cap", "normalized", "wdscale", "rownorm", "all"],
)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw"])
def test_every_option_keeps_masked_weights_and_state_zero(options, optimizer_name):
    model = tiny_net()
    optimizer = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    }[optimizer_name](model.parameters())
    state = sparseopt.attach(model, optimizer, method="rigl", sparsity=0.9, total_steps=40, delta_t=2, **options)  # fmt: skip
    train_steps(
        model, optimizer, 5, check=lambda: assert_zero_off_mask(model, optimizer, state.masks)
    )
    assert state.last_update is not None
    assert set(state.activity()) == set(state.modifiers)
