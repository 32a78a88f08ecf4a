"""Gradient preconditioners: SparseOpt per-neuron factors, global renormalisation and clipping.

SparseOpt (science.md §2): multiply the gradient of every incoming weight of output neuron i
by f_i = sqrt(k_i / mean_j k_j), k_i = active fan-in of row i of the mask. This undoes the
1/sqrt(1 - s_i) amplification BatchNorm gives sparse neurons. Factors are mask-derived only;
`f_max` optionally caps them (f_i = min(f_i, f_max)).

The renorm ablation rescales the whole gradient to unit global norm every step (direction
only); the clip option scales it down only when its global norm exceeds a maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

RENORM_TOLERANCE = 1e-6
"""Relative distance from 1 above which a global gradient norm counts as changed by renorm."""


def neuron_scale(mask: torch.Tensor) -> torch.Tensor:
    """f_i = sqrt(k_i / mean_j k_j) for each output row i (dim 0) of `mask`; float32, shape [C_out].

    A row with k_i = 0 gets 0; an all-zero mask gives all zeros.
    """
    if mask.dim() < 1 or mask.shape[0] == 0:
        raise ValueError(f"mask must have at least one output row, got shape {tuple(mask.shape)}")
    fan_in = mask.reshape(mask.shape[0], -1).sum(dim=1, dtype=torch.float32)
    mean = fan_in.mean()
    if float(mean) == 0.0:
        return torch.zeros_like(fan_in)
    return (fan_in / mean).sqrt_()


def row_view(factors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-row `factors` [C_out] shaped [C_out, 1, ...] to broadcast over a tensor shaped `like`."""
    return factors.view(like.shape[0], *([1] * (like.dim() - 1)))


def _by_device(tensors: Sequence[torch.Tensor]) -> dict[torch.device, list[torch.Tensor]]:
    """`tensors` grouped by device, in order (fused foreach calls take one device at a time)."""
    groups: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.device, []).append(tensor)
    return groups


def global_grad_norm(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all `grads` together: a float32 0-dim tensor on the first gradient's device."""
    device = grads[0].device
    norms = [
        norm.to(device, torch.float32)
        for group in _by_device(grads).values()
        for norm in torch._foreach_norm(group)
    ]
    return torch.linalg.vector_norm(torch.stack(norms))


def _scale_grads_(grads: Sequence[torch.Tensor], factor: torch.Tensor) -> None:
    """Multiply every gradient in place by the 0-dim tensor `factor`, one fused call per device."""
    for device, group in _by_device(grads).items():
        torch._foreach_mul_(group, factor.to(device))


def renormalize_grads_(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rescale `grads` in place to unit global L2 norm (all-zero gradients stay zero); returns
    the norm before. The renorm ablation: only the gradient's direction remains."""
    norm = global_grad_norm(grads)
    _scale_grads_(grads, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny))
    return norm


def clip_grads_(grads: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place by min(1, max_norm / norm): only a global norm above `max_norm`
    changes them (by exactly that ratio); returns the norm before."""
    norm = global_grad_norm(grads)
    _scale_grads_(grads, (max_norm / norm).clamp_max(1.0))
    return norm
