"""`attach`: sparse training through optimizer step hooks, and the `SparseState` it returns.

Its settings are one `sparseopt.config.SparseConfig` (validated there, the option rules included);
the method's topology updater comes from the registry `sparseopt.topology.UPDATERS`.

The model is never rewritten: each maskable module gets a boolean buffer `weight_mask` (so
`model.state_dict()` carries it), its weight is zeroed off-mask in place, and everything else
happens in the optimizer's step pre/post hooks. The forward graph is untouched, which keeps
`torch.compile`, DDP and AMP working and leaves `p.grad` dense for RigL.

Per optimizer step:

- pre-step: keep |raw| or |corrected| dense gradients when a RigL update is due; multiply
  p.grad by the SparseOpt row factors f_i (capped at `f_max`; 1 on layers SparseOpt skips) and
  zero it off-mask, in one fused pass; then optionally rescale the whole gradient (over all
  parameters with gradients, after masking) to unit global norm (`grad_renorm`) or clip its norm
  to `grad_clip`; then optionally scale the weight decay of each row by f_i.
- post-step: HAM if enabled; the topology update when due (`sparseopt.topology`), recorded
  row by row in `row_trace` when `trace_rows` is on (a cost of update steps only).

Keeping masked weights and optimizer state exactly zero costs no extra pass for SGD, Adam and
AdamW (exact types, eps > 0): they update every element from that element's own gradient,
weight and state only, so a zero gradient on a zero weight with zero state leaves all three zero
(momentum, nesterov, L2 and decoupled decay, amsgrad included; `tests/test_attach.py` checks it
bit for bit against the generic path). Any other optimizer gets the generic path: optimizer state
is zeroed off-mask before the step, weights and state after it. Weights and state are also
re-zeroed once on the first step and after any model state_dict load, which covers weights set
after `attach`. A topology update zeroes dropped weights, their gradients and their state;
regrown weights start from zero weights and zero state.

Masking multiplies by cached 0/1 tensors of the weight's dtype in fused `torch._foreach_mul_`
calls (boolean `masked_fill_` is far slower on CPU); so a non-finite gradient stays non-finite,
as it would in dense training. The caches follow `model.to(...)` and model state_dict loads.

Activity counters record, per modifier in use (renorm, clip, cap, wdscale, ham), on how many
steps it changed the update; flags computed on the device are summed there and read once by
`activity()`, so counting adds no host sync per step.

Randomness comes only from generators seeded by (seed, step, layer), so every DDP rank builds
the same masks; RigL ranks p.grad as seen by `optimizer.step` (after DDP's all-reduce, i.e. the
mean gradient). A rank-0 broadcast of the masks after each update guards against drift.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from contract.names import ACTIVITY_METRICS
from sparseopt.config import SparseConfig
from sparseopt.distributions import erk_densities, layer_nonzeros, uniform_densities
from sparseopt.ham import ham_step
from sparseopt.masks import layer_generator, maskable_weights, normalized_layers, random_mask
from sparseopt.preconditioners import (
    RENORM_TOLERANCE,
    clip_grads_,
    neuron_scale,
    renormalize_grads_,
    row_view,
)
from sparseopt.topology import UPDATERS, drop_fraction_at, is_update_step

MASK_BUFFER = "weight_mask"
DISTRIBUTIONS = {"erk": erk_densities, "uniform": uniform_densities}
"""`SparseConfig.distribution` -> the function giving each layer's density."""
STATE_FORMAT = "sparseopt.SparseState/2"
LEGACY_FORMAT = "sparseopt.SparseState/1"
"""Format of state_dicts saved before grad_clip existed: their grad_renorm=True clipped at 1."""
INIT_STEP = 0
ELEMENTWISE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
"""Optimizers whose update of an element reads only that element's gradient, weight and state."""
MODIFIERS = tuple(ACTIVITY_METRICS)
"""Modifiers whose activity is counted: renorm, clip, cap, wdscale, ham."""


@dataclass(frozen=True)
class TopologyUpdate:
    """What the most recent topology update did: its step, drop fraction and per-layer counts."""

    step: int
    drop_fraction: float
    dropped: dict[str, int]
    grown: dict[str, int]


@dataclass(frozen=True)
class RowUpdate:
    """One topology update of one layer, row by row (row i = output neuron i, fixed for the run):
    the L2 norm of its weights and its active count right before the drop and right after the
    grow (regrown weights start at zero, so the norm after is that of the weights kept)."""

    norm_before: torch.Tensor
    active_before: torch.Tensor
    norm_after: torch.Tensor
    active_after: torch.Tensor


ROW_TRACE_FIELDS = ("norm_before", "active_before", "norm_after", "active_after")

NEW_CONFIG_DEFAULTS: dict[str, Any] = {
    "grad_clip": None,
    "f_max": None,
    "sparseopt_layers": "all",
    "scale_weight_decay": False,
    "drop_scores": "magnitude",
    "trace_rows": False,
}
"""Config fields added after the first state_dict format; a saved config without them had these."""


def _saved_config(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The config of a saved state_dict in today's terms (missing keys at their defaults; a legacy
    grad_renorm=True, which clipped the norm at 1, becomes grad_clip=1.0)."""
    fmt = state_dict.get("format")
    if fmt not in (STATE_FORMAT, LEGACY_FORMAT):
        raise ValueError(f"state_dict format must be {STATE_FORMAT!r}, got {fmt!r}")
    saved = {**NEW_CONFIG_DEFAULTS, **dict(state_dict["config"])}
    if fmt == LEGACY_FORMAT and saved.get("grad_renorm"):
        saved.update(grad_renorm=False, grad_clip=1.0)
    return saved


def _row_stats(layer: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row L2 norm of the weight as float32, per-row active count as int32), on the CPU."""
    rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    norms = torch.linalg.vector_norm(rows.float(), dim=1)
    active = layer.mask.reshape(layer.mask.shape[0], -1).sum(dim=1, dtype=torch.int32)
    return norms.cpu(), active.cpu()


@dataclass
class _Layer:
    """One masked weight plus the hot-path caches derived from its mask."""

    name: str
    index: int
    module: torch.nn.Module
    weight: torch.nn.Parameter
    count: int
    ever_active: torch.Tensor
    group: int | None
    source: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    grad_mult: torch.Tensor | None = None
    decay_delta: torch.Tensor | None = None
    capped: bool = False
    scaled: bool = False
    updatable: bool = field(init=False)

    def __post_init__(self) -> None:
        self.updatable = 0 < self.count < self.weight.numel()

    @property
    def mask(self) -> torch.Tensor:
        return getattr(self.module, MASK_BUFFER)


def _multiply_all(tensors: list[torch.Tensor], factors: list[torch.Tensor]) -> None:
    """`tensors[i] *= factors[i]` in place for every i, as one fused foreach call (like torch.optim)."""
    if tensors:
        torch._foreach_mul_(tensors, factors)


def is_elementwise(optimizer: torch.optim.Optimizer) -> bool:
    """Whether zeros off-mask (gradient, weight, state) stay zero through `optimizer.step` with no
    masking of state or weights: SGD, Adam and AdamW exactly (not subclasses), every eps > 0."""
    return type(optimizer) in ELEMENTWISE_OPTIMIZERS and all(
        float(group.get("eps", 1.0)) > 0 for group in optimizer.param_groups
    )


def _decoupled_decay(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> bool:
    """Whether `group`'s weight decay shrinks the weights directly (AdamW) instead of entering
    the gradient (SGD, Adam's L2)."""
    return isinstance(optimizer, torch.optim.AdamW) or bool(
        group.get("decoupled_weight_decay", False)
    )


class SparseState:
    """Masks, schedule and hooks of one sparse training run; created by `attach`."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: SparseConfig,
        total_steps: int | None,
        seed: int,
        broadcast_masks: bool = True,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.updater = UPDATERS[config.method]
        counted = isinstance(total_steps, numbers.Integral) and not isinstance(total_steps, bool)
        if self.updater.traits.dynamic and not (counted and total_steps > 0):
            raise ValueError(
                f"total_steps must be a positive int for method={config.method!r}, "
                f"got {total_steps!r}"
            )
        if config.scale_weight_decay and type(optimizer) not in ELEMENTWISE_OPTIMIZERS:
            raise ValueError(
                "scale_weight_decay=True scales the weight decay of torch.optim.SGD, Adam and "
                f"AdamW only (the decay sparseopt knows how to scale); got {type(optimizer).__name__}"
            )
        self.config = config
        self.total_steps = int(total_steps) if counted else None
        self.seed = int(seed)
        self.modifiers = tuple(name for name in MODIFIERS if name in config.modifiers())
        """The modifiers of `MODIFIERS` this run uses, in that order (their activity is counted)."""
        self.optimizer = optimizer
        self.broadcast_masks = broadcast_masks
        self.step = 0
        self.last_update: TopologyUpdate | None = None
        self.row_trace: list[tuple[int, dict[str, RowUpdate]]] = []
        """(step, layer -> `RowUpdate`) per topology update, when `config.trace_rows` is on."""
        weights = maskable_weights(model)
        if not weights:
            raise ValueError("model has no maskable weights (nn.Conv1d/2d/3d or nn.Linear)")
        unknown = [name for name in config.dense_layers if name not in weights]
        if unknown:
            raise ValueError(
                f"dense_layers names unknown layers {unknown}; maskable layers: {list(weights)}"
            )
        self.num_maskable = sum(w.numel() for w in weights.values())
        self._weights = weights
        self._layers: list[_Layer] = []
        self._hot: list[_Layer] = []
        self._scores: dict[str, torch.Tensor] | None = None
        self._dirty = False
        self._remask = True
        self._elementwise = is_elementwise(optimizer)
        self._detached_masks: dict[str, torch.Tensor] | None = None
        self._sparseopt_layers = self._layers_with_sparseopt(model, weights)
        self.reset_activity()
        if self.updater.traits.sparse:
            self._build_masks(model, weights)
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        self._handles += [
            layer.module.register_load_state_dict_post_hook(self._on_model_load)
            for layer in self._layers
        ]

    # ----------------------------------------------------------------- construction
    def _layers_with_sparseopt(
        self, model: torch.nn.Module, weights: dict[str, torch.nn.Parameter]
    ) -> frozenset[str]:
        """The maskable layers whose gradient SparseOpt scales (`sparseopt_layers`)."""
        s = self.config
        if s.preconditioner != "sparseopt":
            return frozenset()
        if s.sparseopt_layers == "normalized":
            return frozenset(normalized_layers(model, weights))
        return frozenset(weights)

    def _build_masks(self, model: torch.nn.Module, weights: dict[str, torch.nn.Parameter]) -> None:
        s = self.config
        shapes = {name: tuple(w.shape) for name, w in weights.items()}
        densities = DISTRIBUTIONS[s.distribution](
            shapes, s.sparsity, s.dense_layers, s.dense_in_budget
        )
        counts = layer_nonzeros(shapes, densities)
        modules = dict(model.named_modules())
        groups = {
            id(param): index
            for index, group in enumerate(self.optimizer.param_groups)
            for param in group["params"]
        }
        for name in weights:
            if hasattr(modules[name], MASK_BUFFER):
                raise ValueError(
                    f"module {name!r} already has {MASK_BUFFER!r}: detach() the previous state first"
                )
        with torch.no_grad():
            for index, (name, weight) in enumerate(weights.items()):
                generator = layer_generator(self.seed, INIT_STEP, index)
                mask = random_mask(weight.shape, counts[name], generator).to(weight.device)
                modules[name].register_buffer(MASK_BUFFER, mask, persistent=True)
                layer = _Layer(
                    name=name,
                    index=index,
                    module=modules[name],
                    weight=weight,
                    count=counts[name],
                    ever_active=mask.clone(),
                    group=groups.get(id(weight)),
                )
                self._layers.append(layer)
                self._refresh(layer)
                weight.mul_(layer.keep)
        self._hot = [layer for layer in self._layers if layer.count < layer.weight.numel()]

    def _refresh(self, layer: _Layer) -> None:
        """Rebuild the cached float mask and SparseOpt factors from the module's mask buffer."""
        mask = layer.mask
        layer.source = mask
        layer.keep = mask.to(layer.weight.dtype)
        layer.ever_active = layer.ever_active.to(mask.device)
        layer.scale = layer.decay_delta = None
        layer.grad_mult = layer.keep
        layer.capped = layer.scaled = False
        if layer.name in self._sparseopt_layers and layer.count < layer.weight.numel():
            factors = neuron_scale(mask)
            f_max = self.config.f_max
            if f_max is not None:
                layer.capped = bool((factors > f_max).any())
                factors = factors.clamp_max(f_max)
            nonempty = mask.reshape(mask.shape[0], -1).any(dim=1)
            layer.scaled = bool((factors[nonempty] != 1).any())
            layer.scale = row_view(factors.to(layer.weight.dtype), layer.weight)
            layer.grad_mult = layer.keep * layer.scale
            if self.config.scale_weight_decay:
                layer.decay_delta = layer.scale - 1

    def _on_model_load(self, module: torch.nn.Module, incompatible_keys: object) -> None:
        self._dirty = True

    def _sync_caches(self) -> None:
        """Follow mask buffers that were replaced (`model.to`, assign-loads) or loaded in place;
        weights and state are then re-zeroed off-mask before the step."""
        for layer in self._hot:
            if self._dirty or layer.mask is not layer.source:
                if int(layer.mask.sum()) != layer.count:
                    raise ValueError(
                        f"the mask of {layer.name!r} now has {int(layer.mask.sum())} nonzeros but this "
                        f"attach() keeps {layer.count}: was a model state_dict of another sparsity loaded?"
                    )
                self._refresh(layer)
                layer.ever_active |= layer.mask
                self._remask = True
        self._dirty = False

    # ----------------------------------------------------------------- hot path
    def _state_tensors(self, layer: _Layer) -> list[torch.Tensor]:
        """The optimizer-state tensors of `layer`'s weight shaped like it (momentum, Adam moments...)."""
        state = self.optimizer.state.get(layer.weight)
        if not state:
            return []
        shape = layer.weight.shape
        return [v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == shape]

    def _mask_optimizer_state(self, layer: _Layer, keep: torch.Tensor) -> None:
        """Multiply every optimizer-state tensor shaped like the weight by the 0/1 tensor `keep`."""
        for value in self._state_tensors(layer):
            value.mul_(keep)

    def _state_and_keeps(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """All weight-shaped optimizer-state tensors of the masked layers, each with its 0/1 mask."""
        tensors: list[torch.Tensor] = []
        keeps: list[torch.Tensor] = []
        for layer in self._hot:
            values = self._state_tensors(layer)
            tensors += values
            keeps += [layer.keep] * len(values)
        return tensors, keeps

    def _mask_weights_and_state(self) -> None:
        """Zero every masked weight and its weight-shaped optimizer state off-mask (one fused call)."""
        state_tensors, keeps = self._state_and_keeps()
        _multiply_all(
            [layer.weight for layer in self._hot] + state_tensors,
            [layer.keep for layer in self._hot] + keeps,
        )

    def _weight_decay(self, layer: _Layer) -> float:
        """The current weight decay of `layer`'s parameter group (0 outside the optimizer)."""
        if layer.group is None:
            return 0.0
        return float(self.optimizer.param_groups[layer.group].get("weight_decay", 0.0))

    @torch.no_grad()
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._sync_caches()
        if self._remask:
            self._mask_weights_and_state()
            self._remask = False
        s = self.config
        with_grad = [layer for layer in self._hot if layer.weight.grad is not None]
        if self.updater.traits.gradient_growth and self._update_due(self.step + 1):
            self._keep_scores(with_grad)
        _multiply_all(
            [layer.weight.grad for layer in with_grad], [layer.grad_mult for layer in with_grad]
        )
        self._elementwise = is_elementwise(optimizer)
        if not self._elementwise:
            _multiply_all(*self._state_and_keeps())
        if s.grad_renorm or s.grad_clip is not None:
            self._normalize_gradient(optimizer)
        if s.scale_weight_decay:
            self._scale_weight_decay(with_grad)
        if s.f_max is not None:
            self._count("cap", any(layer.capped for layer in with_grad))

    def _keep_scores(self, with_grad: list[_Layer]) -> None:
        """Store RigL's regrowth scores: |raw gradient|, or |f_i * gradient| when corrected."""
        corrected = self.config.regrow_scores == "corrected"
        self._scores = {}
        for layer in with_grad:
            if layer.updatable:
                grad = layer.weight.grad
                use_scale = corrected and layer.scale is not None
                self._scores[layer.name] = (grad * layer.scale).abs_() if use_scale else grad.abs()

    def _normalize_gradient(self, optimizer: torch.optim.Optimizer) -> None:
        """Renormalise the global gradient to unit norm, or clip it at `grad_clip`; count acts."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        grads = [grad for grad in grads if grad is not None]
        if not grads:
            return
        if self.config.grad_renorm:
            norm = renormalize_grads_(grads)
            self._count("renorm", (norm - 1.0).abs() > RENORM_TOLERANCE)
        else:
            max_norm = float(self.config.grad_clip)
            self._count("clip", clip_grads_(grads, max_norm) > max_norm)

    def _scale_weight_decay(self, with_grad: list[_Layer]) -> None:
        """Make row i's effective weight decay f_i * wd * w, for L2 decay (added to the gradient by
        the optimizer: add (f_i - 1) * wd * w to it) or decoupled decay (AdamW shrinks w by
        (1 - lr * wd): rescale w by (1 - lr * wd * f_i) / (1 - lr * wd) first)."""
        decaying = [(layer, self._weight_decay(layer)) for layer in with_grad if layer.scaled]
        decaying = [(layer, decay) for layer, decay in decaying if decay > 0]
        self._count("wdscale", bool(decaying))
        coupled: list[tuple[_Layer, float]] = []
        decoupled: list[tuple[_Layer, float]] = []
        for layer, decay in decaying:
            group = self.optimizer.param_groups[layer.group]
            if not _decoupled_decay(self.optimizer, group):
                coupled.append((layer, decay))
                continue
            shrink = float(group["lr"]) * decay
            if shrink == 1.0:
                raise ValueError(
                    "scale_weight_decay with decoupled weight decay needs lr * weight_decay != 1 "
                    f"(got lr={group['lr']}, weight_decay={decay})"
                )
            decoupled.append((layer, -shrink / (1.0 - shrink)))
        if coupled:
            torch._foreach_addcmul_(
                [layer.weight.grad for layer, _ in coupled],
                [layer.weight for layer, _ in coupled],
                [layer.decay_delta for layer, _ in coupled],
                [decay for _, decay in coupled],
            )
        if decoupled:
            ratios = torch._foreach_mul(
                [layer.decay_delta for layer, _ in decoupled], [c for _, c in decoupled]
            )
            torch._foreach_add_(ratios, 1.0)
            _multiply_all([layer.weight for layer, _ in decoupled], ratios)

    @torch.no_grad()
    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.step += 1
        self._activity_steps += 1
        if not self._elementwise:
            self._mask_weights_and_state()
        if self.config.ham is not None:
            changed = ham_step(optimizer, self.config.ham)
            self._count("ham", False if changed is None else changed)
        if self.updater.traits.dynamic and self._update_due(self.step):
            self._update_topology()
        self._scores = None

    def _update_due(self, step: int) -> bool:
        """Whether a topology update follows optimizer step `step` (dynamic methods only)."""
        s = self.config
        return is_update_step(step, s.delta_t, s.t_end, self.total_steps)

    # ----------------------------------------------------------------- activity
    def _count(self, modifier: str, acted: bool | torch.Tensor) -> None:
        """Add one step's "modifier changed the update" flag: host bools on the host, device
        flags on their device (summed there, read by `activity`)."""
        if isinstance(acted, torch.Tensor):
            flag = acted.to(torch.int64)
            total = self._device_counts.get(modifier)
            self._device_counts[modifier] = flag if total is None else total.add_(flag)
        else:
            self._host_counts[modifier] += int(acted)

    def activity(self) -> dict[str, float]:
        """Modifier -> fraction of the optimizer steps since `reset_activity()` on which it changed
        the update, for the modifiers this run uses (`modifiers`); 0.0 when no step ran. Reads
        each device counter once (the only host syncs of the counting)."""
        steps = self._activity_steps
        fractions = {}
        for modifier in self.modifiers:
            device = self._device_counts.get(modifier)
            acted = self._host_counts[modifier] + (0 if device is None else int(device))
            fractions[modifier] = acted / steps if steps else 0.0
        return fractions

    def reset_activity(self) -> None:
        """Start counting modifier activity afresh (e.g. at the start of each epoch)."""
        self._activity_steps = 0
        self._host_counts = dict.fromkeys(MODIFIERS, 0)
        self._device_counts: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- topology
    def _update_topology(self) -> None:
        s = self.config
        fraction = drop_fraction_at(self.step, s.drop_fraction, s.t_end, self.total_steps)
        updatable = [layer for layer in self._hot if layer.updatable]
        before = {layer.name: _row_stats(layer) for layer in updatable} if s.trace_rows else {}
        new_masks = [
            self.updater.new_mask(
                layer.mask,
                layer.weight,
                round(fraction * layer.count),
                drop_scores=s.drop_scores,
                scores=(self._scores or {}).get(layer.name),
                generator=layer_generator(self.seed, self.step, layer.index),
            )
            for layer in updatable
        ]
        self._broadcast(new_masks)
        dropped, grown = {}, {}
        for layer, new in zip(updatable, new_masks, strict=True):
            old = layer.mask
            dropped[layer.name] = int((old & ~new).sum())
            grown[layer.name] = int((new & ~old).sum())
            kept = (old & new).to(layer.weight.dtype)
            layer.weight.mul_(kept)
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(kept)
            self._mask_optimizer_state(layer, kept)
            old.copy_(new)
            layer.ever_active |= new
            self._refresh(layer)
        self.last_update = TopologyUpdate(self.step, fraction, dropped, grown)
        if s.trace_rows:
            rows = {
                layer.name: RowUpdate(*before[layer.name], *_row_stats(layer))
                for layer in updatable
            }
            self.row_trace.append((self.step, rows))

    def _broadcast(self, masks: list[torch.Tensor]) -> None:
        """Overwrite `masks` with rank 0's copies when torch.distributed runs on several ranks."""
        if not masks or not self.broadcast_masks:
            return
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        flat = torch.cat([mask.reshape(-1) for mask in masks]).to(torch.uint8)
        dist.broadcast(flat, src=0)
        offset = 0
        for mask in masks:
            mask.copy_(flat[offset : offset + mask.numel()].view(mask.shape).bool())
            offset += mask.numel()

    # ----------------------------------------------------------------- queries
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Module name -> boolean mask (the live buffers while attached); empty for method='dense'."""
        if self._detached_masks is not None:
            return dict(self._detached_masks)
        return {layer.name: layer.mask for layer in self._layers}

    def layer_densities(self) -> dict[str, float]:
        """Fraction of active weights per maskable layer (1.0 everywhere for method='dense')."""
        masks = self.masks
        return {
            name: (float(masks[name].sum()) / w.numel() if name in masks else 1.0)
            for name, w in self._weights.items()
        }

    def sparsity(self) -> float:
        """Fraction of zero-masked weights over all maskable weights (`num_maskable`)."""
        active = sum(int(mask.sum()) for mask in self.masks.values())
        inactive = sum(layer.weight.numel() for layer in self._layers) - active
        return inactive / self.num_maskable

    def itop_rate(self) -> float:
        """In-Time Over-Parameterization rate: fraction of maskable weights ever active so far."""
        if not self._layers:
            return 1.0
        ever = sum(int(layer.ever_active.sum()) for layer in self._layers)
        return ever / self.num_maskable

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: config, step, masks, ever-active bitmaps,
        and the row trace (`row_trace_state`)."""
        return {
            "format": STATE_FORMAT,
            "config": self._config_dict(),
            "step": self.step,
            "masks": {name: mask.detach().cpu().clone() for name, mask in self.masks.items()},
            "ever_active": {layer.name: layer.ever_active.cpu().clone() for layer in self._layers},
            "last_update": None if self.last_update is None else asdict(self.last_update),
            "row_trace": self.row_trace_state(),
        }

    def _config_dict(self) -> dict[str, Any]:
        """The identity of this sparse run: the config's JSON fields, total_steps and seed."""
        return {
            **self.config.model_dump(mode="json"),
            "total_steps": self.total_steps,
            "seed": self.seed,
        }

    def row_trace_state(self) -> dict[str, Any]:
        """`row_trace` as stacked tensors: "steps" [U] and, per traced layer, each `RowUpdate`
        field as a [U, rows] tensor (U = the updates so far; empty when tracing is off)."""
        layers: dict[str, dict[str, torch.Tensor]] = {}
        for name in self.row_trace[0][1] if self.row_trace else ():
            layers[name] = {
                key: torch.stack([getattr(rows[name], key) for _, rows in self.row_trace])
                for key in ROW_TRACE_FIELDS
            }
        steps = torch.tensor([step for step, _ in self.row_trace], dtype=torch.int64)
        return {"steps": steps, "layers": layers}

    def _load_row_trace(self, saved: Mapping[str, Any] | None) -> None:
        """Inverse of `row_trace_state` (None: a state_dict from before the trace existed)."""
        self.row_trace = []
        if saved is None:
            return
        for index, step in enumerate(saved["steps"].tolist()):
            rows = {
                name: RowUpdate(*(fields[key][index].clone() for key in ROW_TRACE_FIELDS))
                for name, fields in saved["layers"].items()
            }
            self.row_trace.append((int(step), rows))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`; the config and the layer names/shapes must match this state.

        Older state_dicts load too: settings added since are read at their defaults, and a legacy
        grad_renorm=True (which clipped the norm at 1) as grad_clip=1.0.
        """
        ours, theirs = self._config_dict(), _saved_config(state_dict)
        differing = sorted(
            key for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key)
        )
        if differing:
            details = ", ".join(
                f"{key}: saved {theirs.get(key)!r} vs attached {ours.get(key)!r}"
                for key in differing
            )
            raise ValueError(f"state_dict config differs from this attach() call: {details}")
        masks, ever = state_dict["masks"], state_dict["ever_active"]
        if set(masks) != {layer.name for layer in self._layers}:
            raise ValueError(
                f"state_dict masks name layers {sorted(masks)}, expected {[layer.name for layer in self._layers]}"
            )
        with torch.no_grad():
            for layer in self._layers:
                saved = masks[layer.name]
                if (
                    tuple(saved.shape) != tuple(layer.weight.shape)
                    or int(saved.sum()) != layer.count
                ):
                    raise ValueError(
                        f"state_dict mask {layer.name!r} has shape {tuple(saved.shape)} and "
                        f"{int(saved.sum())} nonzeros; expected {tuple(layer.weight.shape)} and {layer.count}"
                    )
                layer.mask.copy_(saved)
                layer.ever_active = ever[layer.name].to(layer.mask.device, torch.bool).clone()
                self._refresh(layer)
                layer.weight.mul_(layer.keep)
                self._mask_optimizer_state(layer, layer.keep)
        self.step = int(state_dict["step"])
        self._remask = False
        last = state_dict.get("last_update")
        self.last_update = None if last is None else TopologyUpdate(**last)
        self._load_row_trace(state_dict.get("row_trace"))
        self._dirty = False

    def detach(self) -> None:
        """Remove the hooks and the mask buffers; weights stay as they are. `masks` stays readable."""
        if self._detached_masks is not None:
            return
        self._detached_masks = {layer.name: layer.mask for layer in self._layers}
        for handle in self._handles:
            handle.remove()
        for layer in self._layers:
            delattr(layer.module, MASK_BUFFER)
        self._handles = []


def attach(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: SparseConfig | None = None,
    *,
    total_steps: int | None = None,
    seed: int = 0,
    broadcast_masks: bool = True,
    **options: Any,
) -> SparseState:
    """Make `model` sparse and drive masks, SparseOpt, HAM and topology updates from `optimizer`'s hooks.

    The sparse settings are a `SparseConfig` (its defaults, or `config`), with `options`
    (`method="rigl", sparsity=0.95, ...`) overriding its fields; they are validated by
    `SparseConfig`, whose error names each bad field. Its fields:

    method: "dense" (no masks; sparsity must be 0) | "static" (fixed random mask) | "set"
    (random regrowth) | "rigl" (gradient regrowth). sparsity: zero fraction of the maskable
    weights (conv/linear weights, see `maskable_weights`), distributed by `distribution`
    ("erk" | "uniform", see `sparseopt.distributions`). preconditioner: "none" | "sparseopt".
    regrow_scores: RigL growth ranks |raw dense gradient| ("raw") or |f_i * g| with f from the
    pre-drop mask ("corrected"; inactive weights of a row with k_i = 0 then score 0).
    grad_renorm: rescale the whole gradient to unit global norm every step, after the
    preconditioner (direction only). grad_clip: None, or clip the global gradient norm to at most
    this value (excludes grad_renorm). f_max: None, or cap SparseOpt's factors at f_max.
    sparseopt_layers: "all" | "normalized" (SparseOpt only on layers whose output feeds a
    BatchNorm/GroupNorm/LayerNorm, see `normalized_layers`; others get f = 1).
    scale_weight_decay: scale row i's weight decay by the same f_i as its gradient (SGD, Adam,
    AdamW). ham: None or {"alpha", "beta"}. delta_t, drop_fraction, t_end: set/rigl update every
    `delta_t` steps while step < t_end * total_steps, dropping the cosine-decayed
    `drop_fraction`. drop_scores (set/rigl): drop the active weights of smallest |w|
    ("magnitude") or |w| / ||w_row|| ("row_normalized", per output row). trace_rows: record
    each update's per-row weight norm and active count (`SparseState.row_trace`, saved in
    `state_dict`). dense_layers: module names kept dense, inside the budget unless
    dense_in_budget=False.

    total_steps: optimizer steps of the whole run (needed by set/rigl). seed: seeds mask
    generators by (seed, step, layer). broadcast_masks: after each update, copy rank 0's masks
    when torch.distributed is initialized.
    """
    base = SparseConfig() if config is None else config
    merged = SparseConfig.model_validate({**dict(base), **options}) if options else base
    return SparseState(model, optimizer, merged, total_steps, seed, broadcast_masks)
