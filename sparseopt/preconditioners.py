"""Gradient preconditioners: SparseOpt per-neuron factors and the global unit-norm clip.

SparseOpt (science.md §2): multiply the gradient of every incoming weight of output neuron i
by f_i = sqrt(k_i / mean_j k_j), k_i = active fan-in of row i of the mask. This undoes the
1/sqrt(1 - s_i) amplification BatchNorm gives sparse neurons. Factors are mask-derived only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

PRECONDITIONERS = ("none", "sparseopt")


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


def row_scale_view(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`neuron_scale(mask)` shaped [C_out, 1, ...] to broadcast over a weight of mask's shape."""
    scale = neuron_scale(mask).to(dtype)
    return scale.view(mask.shape[0], *([1] * (mask.dim() - 1)))


def clip_to_unit_norm_(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Clip the global L2 norm of the gradients of `params` to 1 (in place); returns the norm before.

    This is the "gradient renormalization" ablation: it keeps the direction and removes the
    magnitude the preconditioner added. It is applied to both arms of a comparison.
    """
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm=1.0)
