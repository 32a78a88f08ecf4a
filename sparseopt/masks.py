"""Exact-count boolean masks (never Bernoulli: the nonzero count is exactly what was asked)."""

from __future__ import annotations

from collections.abc import Iterable

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


def normalized_channels(module: torch.nn.Module) -> int | None:
    """How many channels (dim 1 of its input) a BatchNorm/GroupNorm/LayerNorm normalises per
    channel-aligned feature; None for any other module (or a LayerNorm not starting at dim 1)."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return int(module.num_features)
    if isinstance(module, torch.nn.GroupNorm):
        return int(module.num_channels)
    if isinstance(module, torch.nn.LayerNorm):
        return int(module.normalized_shape[0])
    return None


def normalized_layers(model: torch.nn.Module, names: Iterable[str]) -> set[str]:
    """The modules among `names` whose every output goes straight into a normalisation layer over
    their output channels (BatchNorm, GroupNorm, LayerNorm), read from the torch.fx graph.

    SparseOpt's factor undoes what a following normalisation does to sparse rows; a layer not
    followed by one (a classifier) gets f = 1 under sparseopt_layers='normalized'. ValueError
    when torch.fx cannot trace `model`.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # any tracing failure: data-dependent control flow, custom ops
        raise ValueError(
            "sparseopt_layers='normalized' reads which layers feed a normalisation layer from "
            f"the torch.fx graph, but tracing {type(model).__name__} failed ({error}); "
            "use sparseopt_layers='all'"
        ) from None
    modules = dict(model.named_modules())
    wanted = set(names)
    calls: dict[str, list[bool]] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in wanted:
            continue
        out_channels = modules[node.target].weight.shape[0]
        calls.setdefault(node.target, []).append(
            bool(node.users)
            and all(
                user.op == "call_module"
                and normalized_channels(modules[user.target]) == out_channels
                for user in node.users
            )
        )
    return {name for name, followed in calls.items() if all(followed)}
