"""The gradient-skew experiment (science.md §1): BatchNorm amplifies sparse neurons' gradients.

Definition of the measured ratio, for one sparsity s and one setting (with or without BN):

- Network: `mlp(64, 10, hidden, depth=2)` on sklearn digits (64 -> hidden -> hidden -> 10;
  Linear -> BatchNorm1d -> ReLU blocks, or Linear -> ReLU without BN), freshly initialised.
- Dense net D and sparse net S share their initial weights, except that S's *first hidden
  layer* weight is multiplied by an exact uniform random mask M with round((1 - s) * numel)
  ones (`sparseopt.masks.random_mask`). Only that layer is masked: its input (the pixels) is
  then the same in both nets, which is the setting of the theory; masking later layers too
  would also shrink the backward signal of the no-BN net.
- Both nets are in training mode (BN uses batch statistics) and see the same batches.
- ratio = [sum over seeds and batches of mean_{M=1} |dL/dW_S|] /
          [sum over seeds and batches of mean_{M=1} |dL/dW_D|],
  i.e. the mean absolute gradient per active weight of the masked layer in S, divided by the
  same quantity in D at the same positions (the weights are not updated between batches).

Theory: with BN, each neuron's pre-activation variance shrinks by (1 - s), and BN divides its
gradient by the std, so ratio ≈ 1 / sqrt(1 - s); without BN, ratio ≈ 1. Measured with the
defaults (hidden 256, 5 seeds x 8 batches of 128): with BN within 5% of theory for s in
[0.5, 0.95]; without BN ≈ 0.95-0.89, slightly below 1 because the sparse net's smaller logits
give a softer softmax (with a 10x smaller classifier init it is 0.99-1.00).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sparseopt.data import load_digits_arrays
from sparseopt.masks import layer_generator, random_mask
from sparseopt.models import mlp
from sparseopt.preconditioners import neuron_scale

NUM_CLASSES = 10


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def gradient_skew_ratio(
    sparsity: float,
    batchnorm: bool,
    *,
    hidden: int = 256,
    seeds: int = 5,
    batches: int = 8,
    batch_size: int = 128,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """The sparse-to-dense mean |grad| ratio of the first hidden layer (see the module docstring).

    `data` = (images, labels) to sample batches from; defaults to the digits training split.
    """
    _check_sparsity(sparsity)
    if seeds < 1 or batches < 1 or batch_size < 2:
        raise ValueError(
            f"need seeds >= 1, batches >= 1, batch_size >= 2; got {seeds}, {batches}, {batch_size}"
        )
    images, labels = data if data is not None else load_digits_arrays()[:2]
    in_features = images[0].numel()
    sparse_total = dense_total = 0.0
    for seed in range(seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dense = mlp(in_features, NUM_CLASSES, hidden, depth=2, batchnorm=batchnorm)
        sparse = copy.deepcopy(dense)
        dense_layer, sparse_layer = dense[1], sparse[1]
        shape = sparse_layer.weight.shape
        nonzeros = round((1.0 - sparsity) * sparse_layer.weight.numel())
        mask = random_mask(shape, nonzeros, layer_generator(seed, 0, 0))
        with torch.no_grad():
            sparse_layer.weight.mul_(mask)
        batch_gen = torch.Generator().manual_seed(seed)
        for _ in range(batches):
            index = torch.randperm(len(labels), generator=batch_gen)[:batch_size]
            for net in (dense, sparse):
                net.train()
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(images[index]), labels[index]).backward()
            sparse_total += sparse_layer.weight.grad[mask].abs().mean().item()
            dense_total += dense_layer.weight.grad[mask].abs().mean().item()
    return sparse_total / dense_total


def gradient_skew_curve(
    sparsities: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
    *,
    hidden: int = 256,
    seeds: int = 5,
    batches: int = 8,
    batch_size: int = 128,
) -> list[dict[str, float]]:
    """[{"sparsity", "ratio_bn", "ratio_no_bn", "theory"}] per sparsity; theory = 1/sqrt(1-s)."""
    for sparsity in sparsities:
        _check_sparsity(sparsity)
    data = load_digits_arrays()[:2]
    settings = {"hidden": hidden, "seeds": seeds, "batches": batches, "batch_size": batch_size}
    return [
        {
            "sparsity": float(sparsity),
            "ratio_bn": gradient_skew_ratio(sparsity, True, data=data, **settings),
            "ratio_no_bn": gradient_skew_ratio(sparsity, False, data=data, **settings),
            "theory": 1.0 / math.sqrt(1.0 - sparsity),
        }
        for sparsity in sparsities
    ]


def plot_gradient_skew(curve: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Save the measured ratios (with and without BN) against 1/sqrt(1-s) as an image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curve:
        raise ValueError("curve is empty: nothing to plot")
    points = sorted(curve, key=lambda row: row["sparsity"])
    xs = [row["sparsity"] for row in points]
    grid = [min(xs) + (max(xs) - min(xs)) * i / 200 for i in range(201)]
    figure, axis = plt.subplots(figsize=(5, 3.6))
    axis.plot(grid, [1.0 / math.sqrt(1.0 - x) for x in grid], "k--", label="theory 1/√(1−s)")
    axis.plot(xs, [row["ratio_bn"] for row in points], "o-", label="with BatchNorm")
    axis.plot(xs, [row["ratio_no_bn"] for row in points], "s-", label="without BatchNorm")
    axis.set_xlabel("sparsity s of the first hidden layer")
    axis.set_ylabel("sparse / dense mean |grad|")
    axis.set_title("Gradient skew (MLP on digits)")
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def fan_in_spread(masks: Mapping[str, torch.Tensor]) -> list[dict[str, float | int | str]]:
    """Per layer, how unequal the active fan-ins k_i of its output neurons are.

    SparseOpt can only change training where the k_i of one layer differ (it rescales neuron i
    by f_i = sqrt(k_i / mean k)); with equal k_i it is a per-layer constant that BN undoes.
    Rows: layer, rows, fan_in (N), mean_k, cv_k (std/mean of k_i), f_min, f_max, empty_rows.
    """
    rows: list[dict[str, float | int | str]] = []
    for name, mask in masks.items():
        fan_in = mask.reshape(mask.shape[0], -1).sum(dim=1, dtype=torch.float64)
        mean = float(fan_in.mean())
        factors = neuron_scale(mask)
        rows.append(
            {
                "layer": name,
                "rows": int(mask.shape[0]),
                "fan_in": int(mask[0].numel()),
                "mean_k": mean,
                "cv_k": float(fan_in.std(unbiased=False)) / mean if mean > 0 else 0.0,
                "f_min": float(factors.min()),
                "f_max": float(factors.max()),
                "empty_rows": int((fan_in == 0).sum()),
            }
        )
    return rows


BN_EPS = 1e-5
"""BatchNorm's eps (PyTorch's default, that of every model here): a state_dict does not hold it."""


def following_batchnorms(
    model_state: Mapping[str, torch.Tensor], layers: Iterable[str]
) -> dict[str, str | None]:
    """Layer -> the BatchNorm registered right after it, when that BN normalises the layer's
    output channels (else None), read from a model state_dict's key order.

    A checkpoint holds no graph, only the state_dict, whose keys follow module registration
    order; in our models (resnet20, resnet50, small_cnn, mlp) every conv/linear that feeds a
    BN is registered right before it, the same pairs `normalized_layers` reads from the graph.
    """
    modules = list(dict.fromkeys(key.rsplit(".", 1)[0] for key in model_state if "." in key))
    position = {name: index for index, name in enumerate(modules)}
    paired: dict[str, str | None] = {}
    for layer in layers:
        index = position.get(layer)
        after = modules[index + 1] if index is not None and index + 1 < len(modules) else None
        weight = model_state.get(f"{layer}.weight")
        running_var = model_state.get(f"{after}.running_var") if after else None
        matches = (
            weight is not None
            and running_var is not None
            and running_var.shape == (weight.shape[0],)
        )
        paired[layer] = after if matches else None
    return paired


def fan_in_terciles(fan_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the low and high fan-in terciles: rows ranked by k_i (ties by row index),
    the first and the last max(1, rows // 3) of them."""
    order = torch.argsort(fan_in, stable=True)
    size = max(1, fan_in.numel() // 3)
    return order[:size], order[-size:]


def pearson(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Pearson correlation of two equally long 1-d tensors (float64); None if either is constant."""
    if x.numel() == 0 or bool(x.max() == x.min()) or bool(y.max() == y.min()):
        return None
    dx, dy = x.double() - x.double().mean(), y.double() - y.double().mean()
    scale = float(dx.norm() * dy.norm())
    return float((dx * dy).sum()) / scale if scale > 0 else None


def _mean_or_none(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if values.numel() else None


def row_weights_vs_fan_in(
    mask: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor | None = None,
    bn_running_var: torch.Tensor | None = None,
    bn_eps: float = BN_EPS,
) -> dict[str, float | None]:
    """How one layer's row weights and its following BN's per-channel scale vary with fan-in k_i.

    SparseOpt's f_i > 1 on high-fan-in rows can inflate their weights; a following BN divides
    that growth out (its running std grows with the row), so the network does not see it, but
    RigL's layer-wide magnitude ranking does. Keys (low/high: the `fan_in_terciles`):
    k_low, k_high (mean k_i); w_abs_low, w_abs_high (mean |w| over the tercile's active
    weights); row_norm_low, row_norm_high (mean row L2 norm); corr_norm_k (Pearson r of row L2
    norm with k_i, all rows); corr_w_abs_k (r of the row's mean |w| with k_i, rows with k_i > 0);
    with a BN: gamma_low/high (mean |gamma_i|), std_low/high (mean sqrt(running_var_i + eps)),
    bn_scale_low/high (mean |gamma_i| / std_i: the scale BN applies to row i's output) and
    corr_bn_scale_k. None where undefined (a constant series, a tercile without active weights).
    """
    rows = mask.shape[0]
    active = mask.reshape(rows, -1).double()
    magnitude = weight.detach().reshape(rows, -1).double().abs() * active
    fan_in = active.sum(dim=1)
    abs_sum = magnitude.sum(dim=1)
    row_norm = magnitude.square().sum(dim=1).sqrt()
    low, high = fan_in_terciles(fan_in)
    nonempty = fan_in > 0
    result: dict[str, float | None] = {}
    for tercile, index in (("low", low), ("high", high)):
        weights = float(fan_in[index].sum())
        result[f"k_{tercile}"] = float(fan_in[index].mean())
        result[f"w_abs_{tercile}"] = float(abs_sum[index].sum()) / weights if weights else None
        result[f"row_norm_{tercile}"] = float(row_norm[index].mean())
    result["corr_norm_k"] = pearson(row_norm, fan_in)
    result["corr_w_abs_k"] = pearson(abs_sum[nonempty] / fan_in[nonempty], fan_in[nonempty])
    if bn_weight is not None and bn_running_var is not None:
        gamma = bn_weight.detach().double().abs()
        std = (bn_running_var.detach().double() + bn_eps).sqrt()
        for name, values in (("gamma", gamma), ("std", std), ("bn_scale", gamma / std)):
            result[f"{name}_low"] = _mean_or_none(values[low])
            result[f"{name}_high"] = _mean_or_none(values[high])
        result["corr_bn_scale_k"] = pearson(gamma / std, fan_in)
    return result


def weight_fan_in_rows(
    masks: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> list[dict[str, float | str | None]]:
    """`row_weights_vs_fan_in` for every masked layer of one checkpoint (its masks and model
    state_dict), with "layer" and "bn" (the `following_batchnorms` name, or None); layers whose
    weight the state_dict lacks are left out."""
    norms = following_batchnorms(model_state, masks)
    rows: list[dict[str, float | str | None]] = []
    for name, mask in masks.items():
        weight = model_state.get(f"{name}.weight")
        if weight is None:
            continue
        bn = norms[name]
        running_var = model_state[f"{bn}.running_var"] if bn else None
        gamma = model_state.get(f"{bn}.weight") if bn else None
        if running_var is not None and gamma is None:  # affine=False: gamma is 1
            gamma = torch.ones_like(running_var)
        stats = row_weights_vs_fan_in(mask, weight, gamma, running_var)
        rows.append({"layer": name, "bn": bn, **stats})
    return rows


def row_norm_trace(sparse_state: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Layer -> one entry per topology update from a sparse state_dict's row trace (recorded
    with `SparseConfig.trace_rows`): {"step", "norm_before", "active_before", "norm_after",
    "active_after"}, each a list indexed by row, i.e. by output neuron, whose index is fixed
    from initialisation on (so a row can be followed through the updates, unlike a tercile
    re-ranked at every checkpoint). Norms are the row's weight L2 norm right before the drop
    and right after the grow. Empty when the run traced nothing."""
    trace = sparse_state.get("row_trace")
    if not trace:
        return {}
    steps = [int(step) for step in trace["steps"].tolist()]
    return {
        layer: [
            {"step": step, **{key: values[index].tolist() for key, values in fields.items()}}
            for index, step in enumerate(steps)
        ]
        for layer, fields in trace["layers"].items()
    }
