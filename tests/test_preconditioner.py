"""SparseOpt factors f_i = sqrt(k_i / mean k), the corrected SGD update, and the unit-norm clip."""

from __future__ import annotations

import math

import pytest
import torch
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


@pytest.mark.parametrize("preconditioner", ["none", "sparseopt"])
def test_grad_renorm_clips_the_applied_gradient_to_unit_norm(preconditioner):
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
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in applied.values()])
    )
    torch.testing.assert_close(total, torch.tensor(1.0), rtol=1e-5, atol=0)
    # direction: proportional to the masked (and corrected) gradient
    for name, grad in grads.items():
        module = name.split(".")[0]
        if name.endswith("weight") and module in state.masks:
            mask = state.masks[module]
            factor = (
                sparseopt.neuron_scale(mask).view(-1, 1) if preconditioner == "sparseopt" else 1.0
            )
            grad = grad * factor * mask
        ratio = applied[name][grad != 0] / grad[grad != 0]
        torch.testing.assert_close(
            ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-5, atol=0
        )
        assert float(ratio[0]) < 1.0


def test_grad_renorm_leaves_small_gradients_alone():
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparseopt.attach(model, optimizer, method="dense", sparsity=0.0, grad_renorm=True)
    for param in model.parameters():
        param.grad = torch.full_like(param, 1e-4)
    optimizer.step()
    assert all(torch.equal(p.grad, torch.full_like(p, 1e-4)) for p in model.parameters())
