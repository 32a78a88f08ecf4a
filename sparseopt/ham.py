"""Hyperbolic Aware Minimization (HAM): a multiplicative step after the base optimizer.

For each weight tensor with >= 2 dims (science.md §3, from the HAM authors' code):
`w *= exp(clamp(lr * (-alpha * sign(w) * g - beta), -5, 5))`. Zero weights stay exactly zero
(0 times a finite factor), so masks are kept without extra work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

HAM_CLAMP = 5.0


@dataclass(frozen=True)
class HamSettings:
    """HAM coefficients: alpha scales the sign-aligned gradient, beta is the shrinkage."""

    alpha: float = 200.0
    beta: float = 1e-3

    @classmethod
    def parse(cls, value: object) -> HamSettings | None:
        """Accept None, a mapping with keys alpha/beta, or any object with those attributes."""
        if value is None:
            return None
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"alpha", "beta"})
            if unknown:
                raise ValueError(f"ham has unknown keys {unknown}; allowed keys: alpha, beta")
            settings = cls(**{key: float(val) for key, val in value.items()})
        elif hasattr(value, "alpha") and hasattr(value, "beta"):
            settings = cls(alpha=float(value.alpha), beta=float(value.beta))
        else:
            raise ValueError(
                f"ham must be None or a mapping {{'alpha': ..., 'beta': ...}}, got {value!r}"
            )
        if settings.alpha <= 0 or settings.beta < 0:
            raise ValueError(
                f"ham needs alpha > 0 and beta >= 0, got alpha={settings.alpha}, beta={settings.beta}"
            )
        return settings


@torch.no_grad()
def ham_update_(
    weight: torch.Tensor, grad: torch.Tensor, lr: float, alpha: float, beta: float
) -> None:
    """One HAM multiplicative update of `weight` in place, with gradient `grad` and step size `lr`."""
    factor = torch.sign(weight)
    factor.mul_(grad).mul_(-alpha * lr).sub_(beta * lr).clamp_(-HAM_CLAMP, HAM_CLAMP).exp_()
    weight.mul_(factor)


@torch.no_grad()
def ham_step(optimizer: torch.optim.Optimizer, settings: HamSettings) -> torch.Tensor | None:
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
