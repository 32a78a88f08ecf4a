"""Checks a sweep spec must pass beyond its field types, each naming the field at fault.

- no credentials anywhere in it (it is stored with the sweep and logged to MLflow);
- every cell's resolved TrainConfig validates, with errors attributed to `base` or the
  workload that set the bad value;
- the lr warmup ends before the shortest budget; a `val_*` search metric has a validation
  split; `base.sparse.ham` is valid even before an arm uses it;
- dataset roots exist on this machine (run before a local launch, not on spec load).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from contract.names import SEARCH_METRICS
from sparseopt.config import DataConfig, HamConfig, TrainConfig
from sweeps.cells import Cell, touches
from sweeps.validation_errors import describe_error, join_path

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

_SECRET_KEY_RE = re.compile(
    r"password|passwd|secret|token|credential|api[_-]?key|access[_-]?key|private[_-]?key",
    re.IGNORECASE,
)
_SECRET_VALUE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]+@|\bAKIA[0-9A-Z]{16}\b")
CREDENTIALS_HINT = (
    "a spec is stored with the sweep and logged to MLflow, so it must hold no secrets; give "
    "credentials through the environment instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
    "an instance profile for S3; MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
    "MLFLOW_TRACKING_TOKEN for an MLflow server)"
)


class SpecError(ValueError):
    """A sweep spec that does not validate; the message lists every problem by field path."""


def credential_paths(payload: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of keys named like a secret and of values that embed one (URI user info,
    AWS access key ids)."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            child = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY_RE.search(str(key)):
                yield child
            else:
                yield from credential_paths(value, child)
    elif isinstance(payload, list | tuple):
        for index, value in enumerate(payload):
            yield from credential_paths(value, f"{path}[{index}]")
    elif isinstance(payload, str) and _SECRET_VALUE_RE.search(payload):
        yield path


def source_of(spec: SweepSpec, cell: Cell, dotted: str) -> str:
    """Where a cell's value at `dotted` comes from: `workloads.NAME` if it overrides it, else `base`."""
    from_workload = any(touches(dotted, key) for key in spec.workloads[cell.workload])
    return f"workloads.{cell.workload}" if from_workload else "base"


def check_cells(spec: SweepSpec) -> None:
    """Validate every cell's resolved TrainConfig (at a representative lr) and its cross-checks."""
    check_base_ham(spec.base)
    lr = spec.search.lr.representative()
    weight_decay = spec.search.weight_decay.representative() if spec.search.weight_decay else None
    for cell in spec.cells():
        payload = cell.train_payload(spec.grid.seeds[0], lr, weight_decay)
        try:
            config = TrainConfig.model_validate(payload)
        except ValidationError as error:
            raise ValueError(_attribute(spec, error, cell)) from None
        _check_warmup(spec, config, cell)
        _check_validation_split(spec, config, cell)


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
        problem = data_root_problem(cell.train_config(spec.grid.seeds[0], lr).data)
        if problem is not None:
            from_workload = any(touches("data.root", key) for key in overrides)
            root = f"workloads.{workload}" if from_workload else "base"
            raise SpecError(f"{root}.{problem}")
