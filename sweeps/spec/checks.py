"""Checks a sweep spec must pass beyond its field types, each naming the field at fault.

- no credentials anywhere in it (it is stored with the sweep and logged to MLflow);
- `base` and the workloads set nothing the grid, an arm or the search sets for every trial;
- every cell's resolved TrainConfig validates, with errors attributed to `base` or the
  workload that set the bad value;
- the lr warmup ends before the shortest budget; a `val_*` search metric has a validation
  split; `base.sparse.ham` is valid even before an arm uses it; every sparsity leaves each
  maskable layer of the model at least one weight (`sweeps.spec.model_layers`);
- dataset roots exist on this machine (run before a local launch, not on spec load).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contract.names import SEARCH_METRICS
from sparseopt.config import DataConfig, HamConfig, TrainConfig
from sweeps.spec.cells import (
    BASE_SETTABLE,
    Cell,
    controller,
    fixed_keys,
    flatten_overrides,
    overriding,
    touches,
)
from sweeps.spec.messages import SpecError, describe_error, format_number, join_path
from sweeps.spec.model_layers import (
    DeadLayers,
    dead_layers,
    largest_alive_sparsity,
    maskable_shapes,
)
from sweeps.spec.schema import SweepSpec


def source_of(spec: SweepSpec, cell: Cell, dotted: str) -> str:
    """Where a cell's value at `dotted` comes from: `workloads.NAME` if it overrides it, else `base`."""
    from_workload = any(touches(dotted, key) for key in spec.workloads[cell.workload])
    return f"workloads.{cell.workload}" if from_workload else "base"


def check_fixed_keys(spec: SweepSpec) -> None:
    """`base` and the workloads may not set a key the grid, an arm or the search sets for every
    trial: the value would never reach a trial (`--set base.optim.lr=0.05` would do nothing)."""
    searched = tuple(spec.search.params)
    sources = {"base": (flatten_overrides(spec.base), BASE_SETTABLE, "base")}
    for name, overrides in spec.workloads.items():
        sources[f"workloads.{name}"] = (overrides, (), "a workload")
    for root, (overrides, exempt, who) in sources.items():
        fixed = fixed_keys(searched, exempt)
        for key in overriding(overrides, fixed, exempt):
            owner = next(controlled for controlled in fixed if touches(key, controlled))
            raise ValueError(
                f"{root}.{key}: {controller(owner)} sets {owner} for every trial, so this value "
                f"would never be used; allowed: leave it out ({who} may not set any of: "
                f"{', '.join(fixed)})"
            )


def check_cells(spec: SweepSpec) -> None:
    """Validate every cell's resolved TrainConfig (at a representative lr) and its cross-checks."""
    check_base_ham(spec.base)
    lr = spec.search.lr.representative()
    weight_decay = spec.search.weight_decay.representative() if spec.search.weight_decay else None
    for cell in spec.cells():
        payload = cell.train_payload(spec.grid.search_seeds()[0], lr, weight_decay)
        try:
            config = TrainConfig.model_validate(payload)
        except ValidationError as error:
            raise ValueError(_attribute(spec, error, cell)) from None
        _check_warmup(spec, config, cell)
        _check_validation_split(spec, config, cell)
        _check_layers_alive(spec, config, cell)


def check_base_ham(base: Mapping[str, Any]) -> None:
    """`base.sparse.ham` configures the ham arms; check it even when no arm uses it yet."""
    sparse = base.get("sparse")
    ham = sparse.get("ham") if isinstance(sparse, Mapping) else None
    if ham is None:
        return
    try:
        HamConfig.model_validate(ham)
    except ValidationError as error:
        lines = [
            f"{join_path(('base', 'sparse', 'ham', *item['loc']))}: "
            f"{describe_error(item, HamConfig, tuple(item['loc']))}"
            for item in error.errors()
        ]
        raise ValueError("\n".join(lines)) from None


def _check_warmup(spec: SweepSpec, config: TrainConfig, cell: Cell) -> None:
    """The lr warmup must end before the shortest budget does (the scheduler rejects it)."""
    warmup = config.schedule.warmup_epochs
    if config.schedule.kind == "warmup_cosine" and warmup >= cell.budget:
        root = source_of(spec, cell, "schedule.warmup_epochs")
        index = spec.grid.budgets.index(cell.budget)
        raise ValueError(
            f"{root}.schedule.warmup_epochs: {warmup} epochs of warmup must end before "
            f"the budget grid.budgets[{index}] = {cell.budget} does; lower the warmup "
            "(e.g. --set base.schedule.warmup_epochs=0.5) or raise the budget"
        )


def _check_layers_alive(spec: SweepSpec, config: TrainConfig, cell: Cell) -> None:
    """The cell's model builds for its data, and every maskable layer keeps at least one
    weight at the cell's sparsity."""
    try:
        shapes = maskable_shapes(config.model, config.data)
    except ValueError as error:  # a model the data cannot feed (e.g. resnet50 on 1 channel)
        root = source_of(spec, cell, "model.name")
        raise ValueError(f"{root}.model.name: {error} (in cell {cell.cell_id})") from None
    if cell.sparsity == 0.0:
        return
    try:
        dead = dead_layers(shapes, config.sparse, cell.sparsity)
    except ValueError as error:
        root = source_of(spec, cell, "sparse.dense_layers")
        raise ValueError(f"{root}.sparse.dense_layers: {error} (in cell {cell.cell_id})") from None
    if dead is not None:
        largest = largest_alive_sparsity(shapes, config.sparse)
        raise ValueError(_dead_layers_message(spec, config, cell, dead, largest))


def _dead_layers_message(
    spec: SweepSpec, config: TrainConfig, cell: Cell, dead: DeadLayers, largest: float
) -> str:
    """`grid.sparsities[i]: ... leaves no weight in ...; allowed: a sparsity <= largest`."""
    model = f"{config.model.name} (workload {cell.workload}, {config.sparse.distribution})"
    if dead.everything:
        what = f"any of the {len(dead.names)} layers of {model}"
    else:
        first = dead.names[0]
        more = f" and {len(dead.names) - 1} more layers" if len(dead.names) > 1 else ""
        what = f"layer {first!r} ({dead.sizes[first]:,} weights){more} of {model}"
    index = spec.grid.sparsities.index(cell.sparsity)
    return (
        f"grid.sparsities[{index}]: {format_number(cell.sparsity)} leaves no weight in {what}; "
        f"allowed: a sparsity <= {format_number(largest)}, the largest that keeps a weight in "
        "every layer"
    )


def _check_validation_split(spec: SweepSpec, config: TrainConfig, cell: Cell) -> None:
    """A `val_*` search metric needs a validation split to measure it on."""
    if not spec.search.metric.startswith("val_") or config.data.val_fraction > 0:
        return
    root = source_of(spec, cell, "data.val_fraction")
    others = [metric for metric in SEARCH_METRICS if not metric.startswith("val_")]
    raise ValueError(
        f"{root}.data.val_fraction: 0 leaves no validation split, but search.metric is "
        f"{spec.search.metric!r}; allowed: a val_fraction in (0, 1) (e.g. 0.1), or a "
        f"search.metric that is not measured on it ({', '.join(others)})"
    )


def _attribute(spec: SweepSpec, error: ValidationError, cell: Cell) -> str:
    """Name the base/workload path that produced a TrainConfig error."""
    lines = []
    for item in error.errors():
        root = source_of(spec, cell, ".".join(str(part) for part in item["loc"]))
        path = join_path((root, *item["loc"]))
        message = describe_error(item, TrainConfig, tuple(item["loc"]))
        lines.append(f"{path}: {message} (in cell {cell.cell_id})")
    return "\n".join(lines)


def data_root_problem(data: DataConfig) -> str | None:
    """Why `data.root` cannot serve `data.name` on this machine (None when it can or needn't)."""
    if data.name not in ("cifar100", "imagenet") or not data.root:
        return None
    if data.name == "cifar100" and data.download:
        return None
    root = Path(data.root).expanduser()
    if root.is_dir():
        return None
    allowed = (
        "an existing directory holding cifar-100-python/, or data.download=true to fetch it"
        if data.name == "cifar100"
        else "an existing directory holding ImageFolder trees train/<class>/ and val/<class>/"
    )
    return (
        f"data.root: {root} does not exist (data.name={data.name!r}, "
        f"data.download={str(data.download).lower()}); allowed: {allowed}"
    )


def check_data_roots(spec: SweepSpec) -> None:
    """Raise SpecError when a workload reads a dataset root missing on this machine."""
    lr = spec.search.lr.representative()
    for workload, overrides in spec.workloads.items():
        cell = next(cell for cell in spec.cells() if cell.workload == workload)
        problem = data_root_problem(cell.train_config(spec.grid.search_seeds()[0], lr).data)
        if problem is not None:
            from_workload = any(touches("data.root", key) for key in overrides)
            root = f"workloads.{workload}" if from_workload else "base"
            raise SpecError(f"{root}.{problem}")
