"""Topology updaters for dynamic sparse training: when to update, how much, what to drop and grow.

- Schedule (RigL): an update every `delta_t` optimizer steps while `step < t_end * total_steps`,
  dropping the fraction `drop_fraction * (1 + cos(pi * step / (t_end * total_steps))) / 2` of
  each layer's active weights.
- Drop: the `n` active weights of smallest |w|.
- Grow: `n` of the weights that were inactive *before* the drop (so a just-dropped weight is
  never regrown), by largest score (RigL: |dense gradient|, raw or SparseOpt-corrected) or
  uniformly at random (SET) from a generator seeded by (seed, step, layer).
- Static: never updates.

All indices are flat positions in the weight's logical (row-major) order.
"""

from __future__ import annotations

import math

import torch

METHODS = ("dense", "static", "set", "rigl")
DYNAMIC_METHODS = ("set", "rigl")
REGROW_SCORES = ("raw", "corrected")


def drop_fraction_at(step: int, drop_fraction: float, t_end: float, total_steps: int) -> float:
    """Cosine-decayed drop fraction at `step`; 0 from `t_end * total_steps` on."""
    horizon = t_end * total_steps
    if step >= horizon:
        return 0.0
    return drop_fraction * (1.0 + math.cos(math.pi * step / horizon)) / 2.0


def is_update_step(step: int, delta_t: int, t_end: float, total_steps: int) -> bool:
    """True when a topology update happens right after optimizer step number `step` (1-based)."""
    return step > 0 and step % delta_t == 0 and step < t_end * total_steps


def drop_by_magnitude(mask: torch.Tensor, weight: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the `count` active entries of `mask` with the smallest |weight|."""
    magnitude = weight.detach().abs().reshape(-1).float()
    magnitude = torch.where(mask.reshape(-1), magnitude, math.inf)
    return torch.topk(magnitude, count, largest=False, sorted=False).indices


def grow_by_score(inactive: torch.Tensor, scores: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the `count` entries of `inactive` (bool, flat) with the largest |score|."""
    ranked = torch.where(inactive, scores.reshape(-1).float().abs(), -math.inf)
    return torch.topk(ranked, count, largest=True, sorted=False).indices


def grow_at_random(inactive: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Flat indices of `count` entries of `inactive` (bool, flat) drawn uniformly with `generator`."""
    candidates = inactive.nonzero().squeeze(1)
    order = torch.randperm(candidates.numel(), generator=generator, device=generator.device)
    return candidates[order[:count].to(candidates.device)]


def drop_and_grow(
    mask: torch.Tensor,
    weight: torch.Tensor,
    count: int,
    scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A new mask with `count` active weights dropped and `count` grown; the nonzero count is kept.

    Growth uses `scores` when given (RigL) or else `generator` (SET). `count` is capped by the
    number of active and of inactive entries. Drop and grow sets are disjoint by construction.
    """
    if (scores is None) == (generator is None):
        raise ValueError("drop_and_grow needs exactly one of scores (RigL) or generator (SET)")
    flat = mask.reshape(-1)
    active = int(flat.sum())
    count = max(0, min(int(count), active, flat.numel() - active))
    inactive = ~flat
    dropped = drop_by_magnitude(mask, weight, count)
    if scores is not None:
        grown = grow_by_score(inactive, scores, count)
    else:
        grown = grow_at_random(inactive, count, generator)
    new = flat.clone()
    new[dropped] = False
    new[grown] = True
    return new.view(mask.shape)
