"""HAM: the multiplicative post-step update keeps zeros zero and matches a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sparseopt
from sparseopt.config import HamConfig
from sparseopt.ham import ham_step, ham_update_


def test_ham_update_matches_hand_computation_with_clamping():
    weight = torch.tensor([[0.5, -0.2, 0.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    grad = torch.tensor([[0.1, 0.3, 7.0], [-100.0, -100.0, 0.5]], dtype=torch.float64)
    lr, alpha, beta = 0.1, 200.0, 1e-3

    def expected(w: float, g: float) -> float:
        sign = (w > 0) - (w < 0)
        return w * math.exp(min(5.0, max(-5.0, lr * (-alpha * sign * g - beta))))

    hand = [
        [expected(w, g) for w, g in zip(wr, gr, strict=True)]
        for wr, gr in zip(weight.tolist(), grad.tolist(), strict=True)
    ]
    ham_update_(weight, grad, lr, alpha, beta)
    torch.testing.assert_close(weight, torch.tensor(hand, dtype=torch.float64), rtol=1e-12, atol=0)
    assert weight[0, 2] == 0 and weight[1, 2] == 0
    assert weight[1, 0] == pytest.approx(math.exp(5.0))  # lr * alpha * 100 = 2000, clamped to 5
    assert weight[1, 1] == pytest.approx(-math.exp(-5.0))


def test_ham_in_attach_uses_the_masked_gradient_and_skips_1d_params():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    lr = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    state = sparseopt.attach(model, optimizer, method="static", sparsity=0.75, preconditioner="sparseopt",
                             ham={"alpha": 200.0, "beta": 1e-3})  # fmt: skip
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(3)
    grads = {
        name: torch.randn(p.shape, generator=generator) for name, p in model.named_parameters()
    }
    for name, param in model.named_parameters():
        param.grad = grads[name].clone()
    optimizer.step()
    for name, param in model.named_parameters():
        grad = grads[name]
        module = name.split(".")[0]
        if name.endswith("weight") and module in state.masks:
            mask = state.masks[module]
            grad = grad * sparseopt.neuron_scale(mask).view(-1, 1) * mask
            sgd = before[name] - lr * grad
            factor = torch.exp(torch.clamp(lr * (-200.0 * torch.sign(sgd) * grad - 1e-3), -5, 5))
            torch.testing.assert_close(param.detach(), sgd * factor, rtol=1e-6, atol=0)
            assert torch.count_nonzero(param[~mask]) == 0
            assert not torch.equal(param.detach(), sgd)
        else:
            torch.testing.assert_close(
                param.detach(), before[name] - lr * grad, rtol=1e-6, atol=1e-9
            )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"alpha": 1.0, "gamma": 0.0}, "gamma"),
        ({"alpha": 0.0}, "greater than 0"),
        ({"beta": -1.0}, "greater than or equal to 0"),
        (3.0, "valid dictionary"),
    ],
)
def test_bad_ham_settings_are_rejected_by_attach_naming_the_field(value, message):
    model = nn.Sequential(nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=rf"ham(.|\n)*{message}"):
        sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, ham=value)


def test_ham_settings_accept_mappings_and_config_objects():
    model = nn.Sequential(nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, ham={"alpha": 3.0})
    assert state.config.ham == HamConfig(alpha=3.0, beta=1e-3)
    state.detach()
    config = HamConfig(alpha=5.0, beta=0.0)
    state = sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, ham=config)
    assert state.config.ham == config


def test_ham_step_equals_ham_update_per_tensor_and_reports_whether_it_changed_a_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Conv1d(5, 3, 1))
    with torch.no_grad():
        model[0].weight[0] = 0.0
    optimizer = torch.optim.SGD(
        [{"params": [model[0].weight, model[1].weight], "lr": 0.05},
         {"params": [model[2].weight, model[2].bias], "lr": 0.2}]
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator)
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}
    ham_update_(expected["0.weight"], model[0].weight.grad, 0.05, 200.0, 1e-3)
    ham_update_(expected["2.weight"], model[2].weight.grad, 0.2, 200.0, 1e-3)
    changed = ham_step(optimizer, HamConfig())
    assert changed.dtype == torch.bool and bool(changed)
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), expected[name]), name
    assert torch.count_nonzero(model[0].weight[0]) == 0

    for group in optimizer.param_groups:
        group["lr"] = 0.0
    assert not bool(ham_step(optimizer, HamConfig()))  # every factor is exp(0) = 1
    model[0].weight.grad = model[2].weight.grad = None
    assert ham_step(optimizer, HamConfig()) is None  # no >= 2-dim weight with a gradient
