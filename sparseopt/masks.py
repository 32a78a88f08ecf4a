"""Exact-count boolean masks (never Bernoulli: the nonzero count is exactly what was asked)."""

from __future__ import annotations

import torch


def random_mask(
    shape: tuple[int, ...] | torch.Size, nonzeros: int, generator: torch.Generator
) -> torch.Tensor:
    """A boolean mask of `shape` with exactly `nonzeros` True entries, chosen uniformly."""
    numel = 1
    for dim in shape:
        numel *= int(dim)
    if not 0 <= nonzeros <= numel:
        raise ValueError(
            f"nonzeros must be in [0, {numel}] for shape {tuple(shape)}, got {nonzeros}"
        )
    order = torch.randperm(numel, generator=generator, device=generator.device)
    flat = torch.zeros(numel, dtype=torch.bool, device=generator.device)
    flat[order[:nonzeros]] = True
    return flat.view(*shape)


def layer_generator(
    seed: int, step: int, layer_index: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A generator seeded by (seed, step, layer) so every DDP rank draws the same numbers."""
    generator = torch.Generator(device=device)
    generator.manual_seed(
        (int(seed) * 1_000_003 + int(step) * 7_919 + int(layer_index)) % (2**63 - 1)
    )
    return generator


MASKABLE_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def maskable_weights(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Module name -> weight of every nn.Conv1d/2d/3d and nn.Linear, in module order.

    These weights are the sparsity denominator (never BatchNorm, never biases). A weight
    shared by several modules is listed once, under its first name.
    """
    found: dict[str, torch.nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        is_new = isinstance(weight, torch.nn.Parameter) and id(weight) not in seen
        if isinstance(module, MASKABLE_TYPES) and is_new:
            seen.add(id(weight))
            found[name] = weight
    return found
