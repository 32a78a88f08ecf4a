"""Topology updaters for dynamic sparse training: when to update, how much, what to drop and grow.

- Schedule (RigL): an update every `delta_t` optimizer steps while `step < t_end * total_steps`,
  dropping the fraction `drop_fraction * (1 + cos(pi * step / (t_end * total_steps))) / 2` of
  each layer's active weights.
- Drop: the `n` active weights of smallest drop score, ranked over the whole layer:
  "magnitude" |w|, or "row_normalized" |w| / ||w_row|| (w_row: the weights of the weight's
  output row, i.e. its neuron's incoming weights), which makes the ranking blind to how large a
  row's weights are as a whole.
- Grow: `n` of the weights that were inactive *before* the drop (so a just-dropped weight is
  never regrown), by largest score (RigL: |dense gradient|, raw or SparseOpt-corrected) or
  uniformly at random (SET) from a generator seeded by (seed, step, layer).
- Static: never updates. Dense: no masks.

Each method is a `TopologyUpdater` subclass registered under its name: `UPDATERS` is the
method registry, and importing this module fails unless it holds exactly the names of
`contract.arms.METHOD_TRAITS` (whose traits each class takes on). All indices are flat
positions in the weight's logical (row-major) order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch

from contract.arms import METHOD_TRAITS, MethodTraits


def drop_fraction_at(step: int, drop_fraction: float, t_end: float, total_steps: int) -> float:
    """Cosine-decayed drop fraction at `step`; 0 from `t_end * total_steps` on."""
    horizon = t_end * total_steps
    if step >= horizon:
        return 0.0
    return drop_fraction * (1.0 + math.cos(math.pi * step / horizon)) / 2.0


def is_update_step(step: int, delta_t: int, t_end: float, total_steps: int) -> bool:
    """True when a topology update happens right after optimizer step number `step` (1-based)."""
    return step > 0 and step % delta_t == 0 and step < t_end * total_steps


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|w| as float32: RigL's and SET's drop score."""
    return weight.detach().abs().float()


def row_normalized_scores(weight: torch.Tensor) -> torch.Tensor:
    """|w| / ||w_row|| as float32, w_row = the weights of the same output row (dim 0); a row whose
    weights are all zero scores 0 everywhere."""
    magnitude = magnitude_scores(weight)
    rows = magnitude.reshape(magnitude.shape[0], -1)
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return (rows / norms.clamp_min(torch.finfo(norms.dtype).tiny)).view_as(magnitude)


DROP_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "magnitude": magnitude_scores,
    "row_normalized": row_normalized_scores,
}
"""`SparseConfig.drop_scores` -> the per-weight score whose smallest active entries are dropped."""


def drop_smallest(mask: torch.Tensor, scores: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the `count` active entries of `mask` with the smallest `scores`."""
    ranked = torch.where(mask.reshape(-1), scores.reshape(-1).float(), math.inf)
    return torch.topk(ranked, count, largest=False, sorted=False).indices


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
    drop_scores: str = "magnitude",
) -> torch.Tensor:
    """A new mask with `count` active weights dropped and `count` grown; the nonzero count is kept.

    Drop ranks by `DROP_SCORES[drop_scores]`; growth uses `scores` when given (RigL) or else
    `generator` (SET). `count` is capped by the number of active and of inactive entries.
    Drop and grow sets are disjoint by construction.
    """
    if (scores is None) == (generator is None):
        raise ValueError("drop_and_grow needs exactly one of scores (RigL) or generator (SET)")
    flat = mask.reshape(-1)
    active = int(flat.sum())
    count = max(0, min(int(count), active, flat.numel() - active))
    inactive = ~flat
    dropped = drop_smallest(mask, DROP_SCORES[drop_scores](weight), count)
    if scores is not None:
        grown = grow_by_score(inactive, scores, count)
    else:
        grown = grow_at_random(inactive, count, generator)
    new = flat.clone()
    new[dropped] = False
    new[grown] = True
    return new.view(mask.shape)


UPDATERS: dict[str, type[TopologyUpdater]] = {}
"""The method registry: method name -> its updater class (filled as the classes are defined)."""


class TopologyUpdater:
    """A DST method's masks: whether it has any and how an update regrows them.

    A subclass names its method (`class RigL(TopologyUpdater, method="rigl")`), takes that
    method's `contract.arms.MethodTraits` and registers itself in `UPDATERS`; a dynamic method
    must define `new_mask`.
    """

    method: ClassVar[str]
    traits: ClassVar[MethodTraits]

    def __init_subclass__(cls, *, method: str, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if method not in METHOD_TRAITS or method in UPDATERS:
            raise TypeError(
                f"{cls.__name__}: method {method!r} must be a name of contract.arms.METHOD_TRAITS "
                f"({', '.join(METHOD_TRAITS)}) without an updater yet"
            )
        cls.method, cls.traits = method, METHOD_TRAITS[method]
        if cls.traits.dynamic != ("new_mask" in vars(cls)):
            raise TypeError(f"{cls.__name__}: a dynamic method, and only one, defines new_mask")
        UPDATERS[method] = cls

    @staticmethod
    def new_mask(
        mask: torch.Tensor,
        weight: torch.Tensor,
        count: int,
        drop_scores: str,
        scores: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The layer's mask after dropping and growing `count` weights (dynamic methods only)."""
        raise NotImplementedError


class Dense(TopologyUpdater, method="dense"):
    """No masks: every weight trains."""


class Static(TopologyUpdater, method="static"):
    """A fixed random mask, drawn once."""


class SET(TopologyUpdater, method="set"):
    """Sparse Evolutionary Training: drop by score, grow uniformly at random."""

    @staticmethod
    def new_mask(
        mask: torch.Tensor,
        weight: torch.Tensor,
        count: int,
        drop_scores: str,
        scores: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Grow at random with `generator` (`scores` unused)."""
        return drop_and_grow(mask, weight, count, generator=generator, drop_scores=drop_scores)


class RigL(TopologyUpdater, method="rigl"):
    """Rigging the Lottery: drop by score, grow the inactive weights of largest |gradient|."""

    @staticmethod
    def new_mask(
        mask: torch.Tensor,
        weight: torch.Tensor,
        count: int,
        drop_scores: str,
        scores: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Grow by `scores` (all zero when the layer got no gradient; `generator` unused)."""
        if scores is None:
            scores = torch.zeros_like(weight, dtype=torch.float32)
        return drop_and_grow(mask, weight, count, scores=scores, drop_scores=drop_scores)


if set(UPDATERS) != set(METHOD_TRAITS):
    raise ImportError(
        f"sparseopt.topology has updaters for {sorted(UPDATERS)} but contract.arms names the "
        f"methods {sorted(METHOD_TRAITS)}: every method needs exactly one updater class"
    )
