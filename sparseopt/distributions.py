"""Layer-wise density distributions (uniform, ERK) with exact integer nonzero counts.

Conventions (science.md §4, §7):

- Sparsity is over the maskable weights (conv/linear weights). With `dense_in_budget=True`
  (default) layers named in `dense_layers` are dense *and counted inside the budget*: the total
  nonzeros over all layers equal `round((1 - sparsity) * total)`, so the sparse layers become a
  little sparser to pay for them. With `dense_in_budget=False` the dense layers are excluded from
  the denominator: the other layers hold exactly `round((1 - sparsity) * total_of_others)`.
- `round` is Python's (half to even), applied once to the total target.
- Per-layer integer counts come from the largest-remainder method: each layer gets
  `floor(density * numel)`, then the layers with the largest fractional parts get one more
  until the total is met (ties broken by layer order). This makes the total exact, never
  Bernoulli-drifting, and never above a layer's size.
- The density functions return `count / numel`, so `layer_nonzeros` reproduces their counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Shapes = Mapping[str, tuple[int, ...]]


def _numel(shape: Iterable[int]) -> int:
    return math.prod(int(dim) for dim in shape)


def _check_inputs(shapes: Shapes, sparsity: float, dense_layers: Iterable[str]) -> tuple[str, ...]:
    if not shapes:
        raise ValueError("shapes must name at least one layer, got an empty mapping")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    for name, shape in shapes.items():
        if len(shape) < 1 or any(int(dim) < 1 for dim in shape):
            raise ValueError(
                f"shapes[{name!r}] must be a non-empty shape of positive sizes, got {tuple(shape)}"
            )
    dense = tuple(dense_layers)
    unknown = [name for name in dense if name not in shapes]
    if unknown:
        raise ValueError(
            f"dense_layers names unknown layers {unknown}; known layers: {sorted(shapes)}"
        )
    return dense


def _budget(
    shapes: Shapes, sparsity: float, dense: tuple[str, ...], dense_in_budget: bool
) -> tuple[list[str], int]:
    """The layers left to distribute over, and the nonzeros they must hold in total."""
    rest = [name for name in shapes if name not in dense]
    dense_numel = sum(_numel(shapes[name]) for name in dense)
    if dense_in_budget:
        target = round((1.0 - sparsity) * sum(_numel(shape) for shape in shapes.values()))
        budget = target - dense_numel
        if budget < 0:
            raise ValueError(
                f"dense_layers {list(dense)} hold {dense_numel} weights, more than the budget of "
                f"{target} nonzeros at sparsity {sparsity} (dense_in_budget=True); lower the "
                "sparsity, keep fewer layers dense, or pass dense_in_budget=False"
            )
    else:
        budget = round((1.0 - sparsity) * sum(_numel(shapes[name]) for name in rest))
    return rest, budget


def _largest_remainder(
    shapes: Shapes, real_counts: Mapping[str, float], target: int
) -> dict[str, int]:
    """Integer counts close to `real_counts` that sum exactly to `target` (each in [0, numel])."""
    sizes = {name: _numel(shapes[name]) for name in real_counts}
    counts = {
        name: min(sizes[name], max(0, math.floor(value))) for name, value in real_counts.items()
    }
    remainders = {name: real_counts[name] - counts[name] for name in real_counts}
    order = list(real_counts)
    missing = target - sum(counts.values())
    if missing > 0:
        growable = [name for name in order if counts[name] < sizes[name]]
        growable.sort(key=lambda name: -remainders[name])
        if missing > len(growable):
            raise ValueError(f"cannot place {target} nonzeros in layers of sizes {sizes}")
        for name in growable[:missing]:
            counts[name] += 1
    elif missing < 0:
        shrinkable = [name for name in order if counts[name] > 0]
        shrinkable.sort(key=lambda name: remainders[name])
        for name in shrinkable[:-missing]:
            counts[name] -= 1
    return counts


def _densities_from_real(
    shapes: Shapes, dense: Iterable[str], real: Mapping[str, float], budget: int
) -> dict[str, float]:
    counts = _largest_remainder(
        shapes, {name: real[name] * _numel(shapes[name]) for name in real}, budget
    )
    densities = {}
    for name, shape in shapes.items():
        densities[name] = 1.0 if name in dense else counts[name] / _numel(shape)
    return densities


def uniform_densities(
    shapes: Shapes, sparsity: float, dense_layers: Iterable[str] = (), dense_in_budget: bool = True
) -> dict[str, float]:
    """Same density in every non-dense layer; totals exact (see the module docstring)."""
    dense = _check_inputs(shapes, sparsity, dense_layers)
    rest, budget = _budget(shapes, sparsity, dense, dense_in_budget)
    rest_numel = sum(_numel(shapes[name]) for name in rest)
    density = budget / rest_numel if rest_numel else 0.0
    return _densities_from_real(shapes, dense, {name: density for name in rest}, budget)


def erk_densities(
    shapes: Shapes, sparsity: float, dense_layers: Iterable[str] = (), dense_in_budget: bool = True
) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities: density ∝ sum(shape) / prod(shape), kernel dims included.

    The scale ε is solved so the non-dense layers hold the budget exactly; a layer whose
    density ε·raw would exceed 1 is made dense and ε re-solved (one layer at a time, largest
    raw score first, as in the RigL reference code), so nothing is clipped without
    redistribution.
    """
    dense = _check_inputs(shapes, sparsity, dense_layers)
    rest, budget = _budget(shapes, sparsity, dense, dense_in_budget)
    raw = {name: sum(int(d) for d in shapes[name]) / _numel(shapes[name]) for name in rest}
    saturated: list[str] = []
    while True:
        free = [name for name in rest if name not in saturated]
        free_budget = budget - sum(_numel(shapes[name]) for name in saturated)
        divisor = sum(raw[name] * _numel(shapes[name]) for name in free)
        if not free or divisor == 0.0:
            epsilon = 0.0
            break
        epsilon = free_budget / divisor
        over = [name for name in free if epsilon * raw[name] > 1.0]
        if not over:
            break
        saturated.append(max(over, key=lambda name: raw[name]))
    real = {name: 1.0 if name in saturated else epsilon * raw[name] for name in rest}
    return _densities_from_real(shapes, dense, real, budget)


def layer_nonzeros(shapes: Shapes, densities: Mapping[str, float]) -> dict[str, int]:
    """Exact integer nonzeros per layer: largest remainder to `round(sum(density * numel))`."""
    if set(shapes) != set(densities):
        raise ValueError(
            f"densities must name exactly the layers of shapes; missing {sorted(set(shapes) - set(densities))}, "
            f"extra {sorted(set(densities) - set(shapes))}"
        )
    for name, density in densities.items():
        if not 0.0 <= float(density) <= 1.0:
            raise ValueError(f"densities[{name!r}] must be in [0, 1], got {density!r}")
    real = {name: float(densities[name]) * _numel(shapes[name]) for name in shapes}
    return _largest_remainder(shapes, real, round(sum(real.values())))
