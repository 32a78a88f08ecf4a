"""Hyperbolic Aware Minimization (HAM): a multiplicative step after the base optimizer.

For each weight tensor with >= 2 dims (science.md §3, from the HAM authors' code):
`w *= exp(clamp(lr * (-alpha * sign(w) * g - beta), -5, 5))`. Zero weights stay exactly zero
(0 times a finite factor), so masks are kept without extra work.
"""

from __future__ import annotations

import math

import torch

from sparseopt.config import HamConfig

HAM_CLAMP = 5.0


@torch.no_grad()
def ham_update_(
    weight: torch.Tensor, grad: torch.Tensor, lr: float, alpha: float, beta: float
) -> None:
    """One HAM multiplicative update of `weight` in place, with gradient `grad` and step size `lr`."""
    factor = torch.sign(weight)
    factor.mul_(grad).mul_(-alpha * lr).sub_(beta * lr).clamp_(-HAM_CLAMP, HAM_CLAMP).exp_()
    weight.mul_(factor)


@torch.no_grad()
def ham_step(optimizer: torch.optim.Optimizer, settings: HamConfig) -> torch.Tensor | None:
    """Apply HAM to every parameter of `optimizer` with >= 2 dims and a gradient, at its group's lr.

    Fused over each group's tensors (the same element-wise operations as `ham_update_`). Returns
    a 0-dim bool tensor, left on the device so no host sync happens: whether some nonzero weight
    got a factor != 1 (HAM changed the step); None when no parameter qualified.
    """
    changed: torch.Tensor | None = None
    for group in optimizer.param_groups:
        weights = [p for p in group["params"] if p.dim() >= 2 and p.grad is not None]
        if not weights:
            continue
        lr = float(group["lr"])
        signs = torch._foreach_sign(weights)
        factors = torch._foreach_mul(signs, [w.grad for w in weights])
        torch._foreach_mul_(factors, -settings.alpha * lr)
        torch._foreach_sub_(factors, settings.beta * lr)
        torch._foreach_clamp_min_(factors, -HAM_CLAMP)
        torch._foreach_clamp_max_(factors, HAM_CLAMP)
        torch._foreach_exp_(factors)
        torch._foreach_mul_(weights, factors)
        torch._foreach_sub_(factors, 1.0)
        torch._foreach_mul_(factors, signs)  # (factor - 1) where w != 0, else 0
        largest = torch._foreach_norm(factors, ord=math.inf)
        acted = torch.stack([n.to(largest[0].device) for n in largest]).amax() > 0
        changed = acted if changed is None else changed | acted.to(changed.device)
    return changed
