"""The maskable layers of a cell's model, and whether a sparsity leaves each of them a weight.

A sparsity so high that a layer keeps no weight trains a network that cannot pass a signal
(`small_cnn` at 0.99999 keeps none in any layer). The spec check refuses it, naming the layer
and the largest sparsity that keeps every layer alive, computed with the same distribution
(`sparseopt.erk_densities` / `uniform_densities`) and integer counts (`layer_nonzeros`) the
masks are built with. Shapes come from building the model once per (model, input) on the CPU,
or on the meta device (no weights allocated) for the large ones.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from sparseopt.config import IMAGENET_CROP, DataConfig, ModelConfig, SparseConfig

Shapes = dict[str, tuple[int, ...]]

META_MODELS = frozenset({"resnet50"})
"""Models built on the meta device for their shapes (allocating their weights takes seconds)."""
IMAGENET_CLASSES = 1000
"""ImageNet's classes when the root's `train/` folder cannot be counted on this machine."""
_SEARCH_STEPS = 60


@dataclass(frozen=True)
class DeadLayers:
    """The layers a sparsity leaves without a weight, out of all maskable layers of a model."""

    names: tuple[str, ...]
    sizes: dict[str, int]

    @property
    def everything(self) -> bool:
        """Whether no layer keeps a weight (the whole model is empty)."""
        return len(self.names) == len(self.sizes)


def model_inputs(data: DataConfig) -> tuple[int, int, int]:
    """(classes, input channels, image size) of a dataset, read off its config, not its files."""
    if data.name == "digits":
        return 10, 1, 8
    if data.name == "synthetic":
        return data.synthetic_num_classes, 3, data.synthetic_image_size
    if data.name == "cifar100":
        return 100, 3, 32
    train = Path(data.root or "").expanduser() / "train"
    classes = sum(1 for path in train.iterdir() if path.is_dir()) if train.is_dir() else 0
    return classes or IMAGENET_CLASSES, 3, IMAGENET_CROP


def maskable_shapes(model: ModelConfig, data: DataConfig) -> Shapes:
    """Name -> weight shape of every maskable layer of the model a trial builds."""
    return dict(_shapes(model.model_dump_json(), *model_inputs(data)))


@functools.cache
def _shapes(
    model_json: str, classes: int, in_channels: int, image_size: int
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    import torch

    from sparseopt.masks import maskable_weights
    from sparseopt.models import build_model

    model = ModelConfig.model_validate(json.loads(model_json))
    device = "meta" if model.name in META_MODELS else "cpu"
    with torch.device(device):
        network = build_model(model, classes, in_channels, image_size)
    return tuple((name, tuple(weight.shape)) for name, weight in maskable_weights(network).items())


def layer_counts(shapes: Shapes, sparse: SparseConfig, sparsity: float) -> dict[str, int]:
    """Nonzeros per layer at `sparsity`, exactly as the masks get them."""
    from sparseopt.distributions import erk_densities, layer_nonzeros, uniform_densities

    distribute = erk_densities if sparse.distribution == "erk" else uniform_densities
    densities = distribute(shapes, sparsity, sparse.dense_layers, sparse.dense_in_budget)
    return layer_nonzeros(shapes, densities)


def dead_layers(shapes: Shapes, sparse: SparseConfig, sparsity: float) -> DeadLayers | None:
    """The layers left without a weight at `sparsity`; None when every layer keeps one."""
    counts = layer_counts(shapes, sparse, sparsity)
    dead = tuple(name for name, count in counts.items() if count == 0)
    if not dead:
        return None
    return DeadLayers(dead, {name: math.prod(shape) for name, shape in shapes.items()})


def largest_alive_sparsity(shapes: Shapes, sparse: SparseConfig) -> float:
    """The largest sparsity (rounded down to 4 decimals when that still fits) at which every
    layer keeps a weight; 0 when even the dense model does not (dense layers over budget)."""
    alive, dead = 0.0, 1.0
    if dead_layers(shapes, sparse, alive) is not None:
        return 0.0
    for _ in range(_SEARCH_STEPS):
        middle = (alive + dead) / 2
        if dead_layers(shapes, sparse, middle) is None:
            alive = middle
        else:
            dead = middle
    rounded = math.floor(alive * 1e4) / 1e4
    return rounded if rounded > 0 and dead_layers(shapes, sparse, rounded) is None else alive
