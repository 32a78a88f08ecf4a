"""The sweep spec: a YAML file validated into factorial cells (workload × arm × sparsity × budget).

A spec names the fixed factors of a sweep (workloads, arms, sparsities, epoch budgets, seeds),
the searched ones (lr, optionally weight decay) with a trial budget per cell, and how trials
run. Every cell's resolved `TrainConfig` is validated when the spec loads, so a bad base
config fails before Ray starts. Errors name the field path (`grid.sparsities[1]`) and the
allowed values.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from sparseopt.config import (
    DataConfig,
    HamConfig,
    TrainConfig,
    apply_overrides,
    load_yaml_mapping,
    set_dotted,
)

METHODS: tuple[str, ...] = ("dense", "static", "set", "rigl")
MODIFIERS: tuple[str, ...] = ("sparseopt", "corrected", "ham", "renorm")
METRICS: tuple[str, ...] = (
    "val_acc1",
    "val_acc5",
    "val_loss",
    "test_acc1",
    "test_acc5",
    "test_loss",
    "train_acc1",
    "train_loss",
)
MAX_EPOCHS = 10_000
MAX_LR = 10.0
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

# Fields each trial's TrainConfig gets from the grid or the search; a workload may not set them.
GRID_CONTROLLED: tuple[str, ...] = (
    "epochs",
    "seed",
    "optim.lr",
    "sparse.method",
    "sparse.sparsity",
    "sparse.preconditioner",
    "sparse.regrow_scores",
    "sparse.grad_renorm",
    "sparse.ham",
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
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


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} may only contain letters, digits, '_', '.' and '-'")
    return value


@dataclass(frozen=True)
class Arm:
    """A parsed arm name: DST method plus modifiers (docs/conventions.md)."""

    name: str
    method: str
    modifiers: frozenset[str]

    @property
    def sparse(self) -> bool:
        """Whether the arm trains a sparse network (every method but dense)."""
        return self.method != "dense"


def parse_arm(name: str) -> Arm:
    """Parse `METHOD[+modifier...]`; raise ValueError naming the allowed methods/modifiers."""
    parts = name.split("+")
    method, modifiers = parts[0], parts[1:]
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r} in arm {name!r}; allowed methods: {', '.join(METHODS)}"
        )
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise ValueError(
                f"unknown modifier {modifier!r} in arm {name!r}; "
                f"allowed modifiers: {', '.join(MODIFIERS)}"
            )
    if len(set(modifiers)) != len(modifiers):
        raise ValueError(f"arm {name!r} repeats a modifier")
    canonical = sorted(modifiers, key=MODIFIERS.index)
    if modifiers != canonical:
        suggestion = "+".join([method, *canonical])
        raise ValueError(
            f"arm {name!r}: write modifiers in the order {', '.join(MODIFIERS)} "
            f"(here: {suggestion!r}) so every arm has one name"
        )
    mods = frozenset(modifiers)
    if "corrected" in mods and (method != "rigl" or "sparseopt" not in mods):
        raise ValueError(
            f"arm {name!r}: 'corrected' (RigL regrowth scored on the SparseOpt-corrected "
            "gradient) needs method rigl and the 'sparseopt' modifier, e.g. 'rigl+sparseopt+corrected'"
        )
    if method == "dense" and "sparseopt" in mods:
        raise ValueError(
            f"arm {name!r}: 'sparseopt' has no effect on a dense network (every f_i = 1); "
            "allowed modifiers for dense: ham, renorm"
        )
    return Arm(name=name, method=method, modifiers=mods)


def _validated_arm(name: str) -> str:
    parse_arm(name)
    return name


Sparsity = Annotated[float, Field(gt=0.0, lt=1.0)]
Budget = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
Seed = Annotated[int, Field(ge=0)]


def _reject_duplicates(values: list[Any], normalise: Any = None) -> list[Any]:
    """Raise `[i]: ...` (joined onto the field path by the formatter) for a repeated value."""
    seen: dict[Any, int] = {}
    for index, value in enumerate(values):
        key = normalise(value) if normalise else value
        if key in seen:
            raise ValueError(
                f"[{index}]: {value!r} duplicates [{seen[key]}] "
                "(each value must appear once: duplicates would repeat cells)"
            )
        seen[key] = index
    return values


def format_number(value: float) -> str:
    """Shortest exact text of a number for cell ids: 0.95 -> '0.95', 0.0 -> '0', 2.0 -> '2'."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridConfig(_Strict):
    """The fixed factors: every arm × sparsity × budget is a cell, run on every seed."""

    arms: list[Annotated[str, AfterValidator(_validated_arm)]] = Field(min_length=1)
    sparsities: list[Sparsity] = Field(min_length=1)
    budgets: list[Budget] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[str]) -> list[str]:
        return _reject_duplicates(
            arms, lambda arm: (parse_arm(arm).method, parse_arm(arm).modifiers)
        )

    @field_validator("sparsities", "budgets", "seeds")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return _reject_duplicates(values)


class SearchParam(_Strict):
    """A searched value: a range `{low, high, log}` (TPE) or a list `{grid: [...]}`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    grid: list[float] | None = None

    @field_validator("grid")
    @classmethod
    def _unique_grid(cls, values: list[float] | None) -> list[float] | None:
        if values is not None:
            if not values:
                raise ValueError("must list at least one value")
            _reject_duplicates(values)
        return values

    @model_validator(mode="after")
    def _one_form(self) -> SearchParam:
        if self.grid is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either {low, high, log} or {grid: [...]}, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give either {low, high, log} (both low and high) or {grid: [...]}")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self

    @property
    def is_grid(self) -> bool:
        """Whether this parameter is a list of values rather than a range."""
        return self.grid is not None

    def representative(self) -> float:
        """A value inside the search space (geometric/arithmetic middle, or the first grid value)."""
        if self.grid is not None:
            return self.grid[0]
        assert self.low is not None and self.high is not None
        if self.log:
            return math.sqrt(self.low * self.high)
        return (self.low + self.high) / 2.0

    def check_bounds(self, path: str, low: float, high: float, low_open: bool) -> None:
        """Raise ValueError naming `path` when a value lies outside [low, high] (or (low, high])."""
        interval = f"{'(' if low_open else '['}{low}, {high}]"

        def bad(value: float) -> bool:
            return value > high or value < low or (low_open and value == low)

        if self.grid is not None:
            for index, value in enumerate(self.grid):
                if bad(value):
                    raise ValueError(f"{path}.grid[{index}]: must be in {interval}, got {value}")
            return
        assert self.low is not None and self.high is not None
        if bad(self.low):
            raise ValueError(f"{path}.low: must be in {interval}, got {self.low}")
        if bad(self.high):
            raise ValueError(f"{path}.high: must be in {interval}, got {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"{path}.low: must be > 0 with log: true, got {self.low}")


class SearchConfig(_Strict):
    """The per-cell search: Optuna TPE (seeded) over ranges, or GridSampler when all are grids."""

    lr: SearchParam
    weight_decay: SearchParam | None = None
    trials_per_cell: int | None = Field(None, ge=1)
    sampler_seed: int = Field(0, ge=0)
    metric: Literal[METRICS] = "val_acc1"  # type: ignore[valid-type]

    @property
    def params(self) -> dict[str, SearchParam]:
        """The searched parameters by name (`lr`, and `weight_decay` when searched)."""
        found = {"lr": self.lr}
        if self.weight_decay is not None:
            found["weight_decay"] = self.weight_decay
        return found

    @property
    def sampler(self) -> Literal["grid", "tpe"]:
        """`grid` (Optuna GridSampler) when every parameter is a grid, else `tpe`."""
        return "grid" if all(p.is_grid for p in self.params.values()) else "tpe"

    def grid_size(self) -> int:
        """Number of grid points (product of grid lengths; only meaningful for the grid sampler)."""
        return math.prod(len(p.grid or ()) for p in self.params.values())

    @property
    def n_trials(self) -> int:
        """Optuna trials (lr values) per cell: trials_per_cell, or the whole grid if omitted."""
        return self.trials_per_cell if self.trials_per_cell is not None else self.grid_size()

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Losses are minimised, accuracies maximised."""
        return "minimize" if self.metric.endswith("_loss") else "maximize"


def _check_search(search: SearchConfig) -> None:
    """Bounds of the searched values and the trial budget (messages carry full field paths)."""
    search.lr.check_bounds("search.lr", 0.0, MAX_LR, low_open=True)
    if search.weight_decay is not None:
        search.weight_decay.check_bounds("search.weight_decay", 0.0, 1.0, low_open=False)
    if search.sampler == "grid":
        size = search.grid_size()
        if search.trials_per_cell is not None and search.trials_per_cell > size:
            raise ValueError(
                f"search.trials_per_cell: {search.trials_per_cell} exceeds the grid size {size} "
                f"(product of the search.*.grid lengths); allowed: 1..{size}, or omit it"
            )
    elif search.trials_per_cell is None:
        raise ValueError(
            "search.trials_per_cell: required (an integer >= 1) when a searched value is a "
            "{low, high} range"
        )


class SecondStage(_Strict):
    """Re-run each cell's best lr on fresh seeds (stage `final`)."""

    seeds: list[Seed] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, values: list[int]) -> list[int]:
        return _reject_duplicates(values)


class EarlyStopping(_Strict):
    """ASHA within a cell on the search metric, time attribute `epoch`."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)


class Resources(_Strict):
    """How each trial runs on the cluster."""

    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, ge=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    max_concurrent_trials: int = Field(1, ge=1)
    max_failures: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _schedulable(self) -> Resources:
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise ValueError(
                "cpus_per_worker and gpus_per_worker are both 0: a worker needs some resource; "
                "allowed: cpus_per_worker > 0 (e.g. 0.5) or gpus_per_worker > 0"
            )
        if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker}: Ray accepts a fraction below 1 or a "
                "whole number of GPUs; allowed: a number in [0, 1) or an integer"
            )
        return self


def _flatten_overrides(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten_overrides(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _touches(key: str, controlled: str) -> bool:
    return key == controlled or key.startswith(controlled + ".") or controlled.startswith(key + ".")


@dataclass(frozen=True)
class Cell:
    """One cell of the factorial: its trials differ only in seed and searched values."""

    cell_id: str
    workload: str
    arm: str
    method: str
    modifiers: frozenset[str]
    sparsity: float
    budget: int
    payload: Mapping[str, Any] = field(repr=False, compare=False, hash=False)

    def train_config(self, seed: int, lr: float, weight_decay: float | None = None) -> TrainConfig:
        """The resolved TrainConfig: base ⊕ workload ⊕ arm ⊕ sparsity ⊕ budget ⊕ seed ⊕ lr (⊕ wd)."""
        return TrainConfig.model_validate(self.train_payload(seed, lr, weight_decay))

    def train_payload(
        self, seed: int, lr: float, weight_decay: float | None = None
    ) -> dict[str, Any]:
        """The unvalidated dict behind `train_config` (used to attribute validation errors)."""
        payload = copy.deepcopy(dict(self.payload))
        sparse = payload.setdefault("sparse", {})
        base_ham = sparse.get("ham") if isinstance(sparse, dict) else None
        set_dotted(payload, "sparse.method", self.method)
        set_dotted(payload, "sparse.sparsity", self.sparsity)
        set_dotted(
            payload,
            "sparse.preconditioner",
            "sparseopt" if "sparseopt" in self.modifiers else "none",
        )
        set_dotted(
            payload, "sparse.regrow_scores", "corrected" if "corrected" in self.modifiers else "raw"
        )
        set_dotted(payload, "sparse.grad_renorm", "renorm" in self.modifiers)
        ham = (base_ham if base_ham is not None else {}) if "ham" in self.modifiers else None
        set_dotted(payload, "sparse.ham", ham)
        set_dotted(payload, "epochs", self.budget)
        set_dotted(payload, "seed", seed)
        set_dotted(payload, "optim.lr", lr)
        if weight_decay is not None:
            set_dotted(payload, "optim.weight_decay", weight_decay)
        return payload


class SweepSpec(BaseModel):
    """A whole sweep: identity, storage, base config, factors, search, stages and resources."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str
    storage_path: str = "./sweep_results"
    tracking_uri: str = "sqlite:///mlflow.db"
    base: dict[str, Any] = Field(default_factory=dict)
    workloads: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"default": {}})
    grid: GridConfig
    search: SearchConfig
    second_stage: SecondStage | None = None
    early_stopping: EarlyStopping | None = None
    resources: Resources = Resources()

    _cells: list[Cell] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, payload: Any) -> Any:
        found = list(credential_paths(payload))
        if found:
            raise ValueError(f"{', '.join(found)}: looks like a credential; {CREDENTIALS_HINT}")
        return payload

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        return _check_name(value, "name")

    @field_validator("storage_path")
    @classmethod
    def _absolute_storage(cls, value: str) -> str:
        if not value:
            raise ValueError("must be a local directory or a URI such as s3://bucket/path")
        if _URI_RE.match(value):
            return value
        return os.path.abspath(os.path.expanduser(value))

    @field_validator("tracking_uri")
    @classmethod
    def _absolute_sqlite(cls, value: str) -> str:
        prefix = "sqlite:///"
        if value.startswith(prefix) and not value[len(prefix) :].startswith("/"):
            return prefix + os.path.abspath(value[len(prefix) :])
        return value

    @field_validator("workloads", mode="before")
    @classmethod
    def _flat_workloads(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            name: _flatten_overrides(overrides) if isinstance(overrides, Mapping) else overrides
            for name, overrides in value.items()
        }

    @field_validator("workloads")
    @classmethod
    def _workload_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError(
                "must name at least one workload (omit the key for a single 'default' workload)"
            )
        for name, overrides in value.items():
            _check_name(name, "workload name")
            for key in overrides:
                if not key or any(not part for part in key.split(".")):
                    raise ValueError(f".{name}: bad dotted key {key!r} (e.g. data.name)")
                for controlled in GRID_CONTROLLED:
                    if _touches(key, controlled):
                        raise ValueError(
                            f".{name}.{key}: set by the grid/search for every trial; a workload "
                            f"may not set any of: {', '.join(GRID_CONTROLLED)}"
                        )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        _check_search(self.search)
        if self.second_stage is not None:
            for index, seed in enumerate(self.second_stage.seeds):
                if seed in self.grid.seeds:
                    raise ValueError(
                        f"second_stage.seeds[{index}]: seed {seed} is also in grid.seeds; "
                        "second-stage seeds must be fresh (not used by the search)"
                    )
        self._check_base_ham()
        lr = self.search.lr.representative()
        weight_decay = (
            self.search.weight_decay.representative() if self.search.weight_decay else None
        )
        for cell in self.cells():
            payload = cell.train_payload(self.grid.seeds[0], lr, weight_decay)
            try:
                config = TrainConfig.model_validate(payload)
            except ValidationError as error:
                raise ValueError(self._attribute(error, cell)) from None
            self._check_warmup(config, cell)
            self._check_validation_split(config, cell)
        return self

    def _check_base_ham(self) -> None:
        """`base.sparse.ham` configures the ham arms; check it even when no arm uses it yet."""
        sparse = self.base.get("sparse")
        ham = sparse.get("ham") if isinstance(sparse, Mapping) else None
        if ham is None:
            return
        try:
            HamConfig.model_validate(ham)
        except ValidationError as error:
            lines = [
                f"{_join_path(('base', 'sparse', 'ham', *item['loc']))}: "
                f"{describe_error(item, HamConfig, tuple(item['loc']))}"
                for item in error.errors()
            ]
            raise ValueError("\n".join(lines)) from None

    def _check_warmup(self, config: TrainConfig, cell: Cell) -> None:
        """The lr warmup must end before the shortest budget does (the scheduler rejects it)."""
        warmup = config.schedule.warmup_epochs
        if config.schedule.kind == "warmup_cosine" and warmup >= cell.budget:
            root = self._source(cell, "schedule.warmup_epochs")
            index = self.grid.budgets.index(cell.budget)
            raise ValueError(
                f"{root}.schedule.warmup_epochs: {warmup} epochs of warmup must end before "
                f"the budget grid.budgets[{index}] = {cell.budget} does; lower the warmup "
                "(e.g. --set base.schedule.warmup_epochs=0.5) or raise the budget"
            )

    def _check_validation_split(self, config: TrainConfig, cell: Cell) -> None:
        """A `val_*` search metric needs a validation split to measure it on."""
        if not self.search.metric.startswith("val_") or config.data.val_fraction > 0:
            return
        root = self._source(cell, "data.val_fraction")
        raise ValueError(
            f"{root}.data.val_fraction: 0 leaves no validation split, but search.metric is "
            f"{self.search.metric!r}; allowed: a val_fraction in (0, 1) (e.g. 0.1), or a "
            f"search.metric that is not measured on it ({', '.join(METRICS[3:])})"
        )

    def _source(self, cell: Cell, dotted: str) -> str:
        """Where a cell's value at `dotted` comes from: `workloads.NAME` if it overrides it, else `base`."""
        from_workload = any(_touches(dotted, key) for key in self.workloads[cell.workload])
        return f"workloads.{cell.workload}" if from_workload else "base"

    def _attribute(self, error: ValidationError, cell: Cell) -> str:
        """Name the base/workload path that produced a TrainConfig error."""
        lines = []
        for item in error.errors():
            root = self._source(cell, ".".join(str(part) for part in item["loc"]))
            path = _join_path((root, *item["loc"]))
            message = describe_error(item, TrainConfig, tuple(item["loc"]))
            lines.append(f"{path}: {message} (in cell {cell.cell_id})")
        return "\n".join(lines)

    def cells(self) -> list[Cell]:
        """Every cell: workload × arm × sparsity × budget; dense arms get one cell (s=0) per budget."""
        if self._cells is None:
            self._cells = list(self._expand())
        return list(self._cells)

    def _expand(self) -> Iterator[Cell]:
        for workload, overrides in self.workloads.items():
            payload = copy.deepcopy(self.base)
            for key, value in overrides.items():
                set_dotted(payload, key, copy.deepcopy(value))
            for arm_name in self.grid.arms:
                arm = parse_arm(arm_name)
                sparsities = self.grid.sparsities if arm.sparse else [0.0]
                for sparsity in sparsities:
                    for budget in self.grid.budgets:
                        yield Cell(
                            cell_id=f"{workload}/{arm_name}/s={format_number(sparsity)}/e={budget}",
                            workload=workload,
                            arm=arm_name,
                            method=arm.method,
                            modifiers=arm.modifiers,
                            sparsity=float(sparsity),
                            budget=budget,
                            payload=payload,
                        )

    def cell(self, cell_id: str) -> Cell:
        """The cell with this id; KeyError naming the known ids otherwise."""
        for cell in self.cells():
            if cell.cell_id == cell_id:
                return cell
        raise KeyError(f"no cell {cell_id!r} in sweep {self.name!r}")

    def expected_trials(self) -> int:
        """Tune trials the sweep runs: cells × lr trials × seeds, plus cells × second-stage seeds."""
        cells = len(self.cells())
        total = cells * self.search.n_trials * len(self.grid.seeds)
        if self.second_stage is not None:
            total += cells * len(self.second_stage.seeds)
        return total

    def to_yaml(self) -> str:
        """The validated spec as YAML (paths made absolute), e.g. to store next to the results."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _join_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _options(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a (possibly `X | None`) schema node, resolved."""
    node = _resolve(node, defs)
    if "anyOf" not in node:
        return [node]
    return [_resolve(option, defs) for option in node["anyOf"] if option.get("type") != "null"]


def _schema_at(model: type[BaseModel], loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The JSON-schema node of the field at `loc` (list indexes and dict keys followed)."""
    schema = _schema(model)
    defs = schema.get("$defs", {})
    node: dict[str, Any] | None = schema
    for part in loc:
        if node is None:
            return None
        step = None
        for option in _options(node, defs):
            if isinstance(part, int) and "items" in option:
                step = option["items"]
            elif part in option.get("properties", {}):
                step = option["properties"][part]
            elif isinstance(option.get("additionalProperties"), dict):
                step = option["additionalProperties"]
            if step is not None:
                break
        node = step
    return None if node is None else _resolve(node, defs)


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else format_number(value)


def _allowed(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """What a schema node accepts, in words: `an integer in [1, 10000]`, `one of 'a', 'b'`."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        return " or ".join(_allowed(option, defs) for option in node["anyOf"])
    if "enum" in node or "const" in node:
        return "one of " + ", ".join(repr(value) for value in node.get("enum", [node.get("const")]))
    kind = node.get("type")
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        low, high = (
            node.get("minimum", node.get("exclusiveMinimum")),
            node.get("maximum", node.get("exclusiveMaximum")),
        )
        left = "(" if "exclusiveMinimum" in node else "["
        right = ")" if "exclusiveMaximum" in node else "]"
        if low is not None and high is not None:
            return f"{noun} in {left}{_number(low)}, {_number(high)}{right}"
        if low is not None:
            return f"{noun} {'>' if left == '(' else '>='} {_number(low)}"
        if high is not None:
            return f"{noun} {'<' if right == ')' else '<='} {_number(high)}"
        return noun
    if kind == "array":
        size = "a non-empty list" if node.get("minItems", 0) >= 1 else "a list"
        return f"{size}, each item {_allowed(node.get('items', {}), defs)}"
    if kind == "object" and "properties" in node:
        return f"a mapping with keys {', '.join(node['properties'])}"
    return {
        "boolean": "true or false",
        "string": "a string",
        "object": "a mapping",
        "null": "null",
    }.get(kind, "see the schema")


_SELF_EXPLAINED = ("value_error", "assertion_error", "literal_error", "enum", "extra_forbidden")


def describe_error(item: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """A pydantic error item's message plus what the field allows (its keys or values)."""
    message = item["msg"].removeprefix("Value error, ")
    defs = _schema(model).get("$defs", {})
    if item["type"] == "extra_forbidden":
        owner = _schema_at(model, tuple(loc[:-1]))
        keys = [
            key for option in _options(owner or {}, defs) for key in option.get("properties", {})
        ]
        if keys:
            message += f"; allowed keys: {', '.join(keys)}"
    elif item["type"] not in _SELF_EXPLAINED:
        node = _schema_at(model, loc)
        if node is not None:
            message += f" (allowed: {_allowed(node, defs)})"
    return message


def format_validation_error(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per problem: `field.path[i]: message (allowed ...)`; `model` defaults to SweepSpec."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        message = describe_error(item, model or SweepSpec, loc)
        if not loc:
            lines.append(message)
        elif message.startswith(("[", ".")):
            lines.append(f"{_join_path(loc)}{message}")
        else:
            lines.append(f"{_join_path(loc)}: {message}")
    return "\n".join(lines)


def parse_spec(payload: Mapping[str, Any]) -> SweepSpec:
    """Validate a spec dict; raise SpecError listing each problem by field path."""
    if not isinstance(payload, Mapping):
        raise SpecError(f"a sweep spec is a mapping at the top level, got {type(payload).__name__}")
    try:
        return SweepSpec.model_validate(dict(payload))
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def resolve_spec_path(path: str | os.PathLike[str]) -> Path:
    """A spec file path; a bare name like `quickstart` also finds the bundled sweeps/configs."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    bundled = CONFIGS_DIR / f"{candidate.name.removesuffix('.yaml')}.yaml"
    if candidate.parent == Path(".") and bundled.exists():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"sweep spec {str(path)!r} not found (bundled specs: {known})")


def load_spec(path: str | os.PathLike[str], overrides: list[str] | None = None) -> SweepSpec:
    """Read a YAML spec, apply `key.sub=value` overrides (values parsed as YAML), validate."""
    loaded = load_yaml_mapping(str(resolve_spec_path(path)))
    return parse_spec(apply_overrides(loaded, overrides or []))


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
            from_workload = any(_touches("data.root", key) for key in overrides)
            root = f"workloads.{workload}" if from_workload else "base"
            raise SpecError(f"{root}.{problem}")


# ---- comparing two versions of a spec (resume with an edited spec) -------------------------


def _removed(old: list[Any], new: list[Any]) -> list[Any]:
    return [value for value in old if value not in new]


def _cell_settings(cell: Cell) -> dict[str, Any]:
    """A cell's resolved config with the per-trial values (seed, lr) fixed, flattened."""
    dumped = cell.train_config(seed=0, lr=1.0).model_dump(mode="json")
    return _flatten_overrides(dumped)


def spec_changes_that_alter_existing(old: SweepSpec, new: SweepSpec) -> list[str]:
    """Changes from `old` to `new` that would change or drop trials already run.

    Adding arms, sparsities, budgets, seeds, workloads or second-stage seeds, raising
    `search.trials_per_cell`, and changing resources or storage/tracking locations are
    extensions: they return nothing. Anything else that touches existing cells is listed.
    """
    changes: list[str] = []
    if old.name != new.name:
        changes.append(f"name: {old.name!r} -> {new.name!r} (a different sweep)")
    for key in ("arms", "sparsities", "budgets", "seeds"):
        gone = _removed(getattr(old.grid, key), getattr(new.grid, key))
        if gone:
            changes.append(f"grid.{key}: removed {gone}")
    gone_workloads = [name for name in old.workloads if name not in new.workloads]
    if gone_workloads:
        changes.append(f"workloads: removed {gone_workloads}")
    old_search = old.search.model_dump(exclude={"trials_per_cell"})
    new_search = new.search.model_dump(exclude={"trials_per_cell"})
    for key, value in old_search.items():
        if new_search[key] != value:
            changes.append(f"search.{key}: {value!r} -> {new_search[key]!r}")
    if new.search.n_trials < old.search.n_trials:
        changes.append(
            f"search.trials_per_cell: lowered {old.search.n_trials} -> {new.search.n_trials}"
        )
    if old.second_stage is not None:
        if new.second_stage is None:
            changes.append("second_stage: removed")
        else:
            gone = _removed(old.second_stage.seeds, new.second_stage.seeds)
            if gone:
                changes.append(f"second_stage.seeds: removed {gone}")
    if old.early_stopping != new.early_stopping:
        before = old.early_stopping.model_dump() if old.early_stopping else None
        after = new.early_stopping.model_dump() if new.early_stopping else None
        changes.append(f"early_stopping: {before} -> {after}")
    changes.extend(_config_changes(old, new))
    return changes


def _config_changes(old: SweepSpec, new: SweepSpec) -> list[str]:
    """Fields of the resolved TrainConfig that differ between the two specs in shared cells."""
    new_cells = {cell.cell_id: cell for cell in new.cells()}
    shared = [(cell, new_cells[cell.cell_id]) for cell in old.cells() if cell.cell_id in new_cells]
    differing: dict[str, tuple[Any, Any, int]] = {}
    for old_cell, new_cell in shared:
        before, after = _cell_settings(old_cell), _cell_settings(new_cell)
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                first = differing.get(key)
                count = first[2] + 1 if first else 1
                differing[key] = (before.get(key), after.get(key), count)
    return [
        f"base/workloads: {key} {b!r} -> {a!r} in {n} of {len(shared)} existing cells"
        for key, (b, a, n) in differing.items()
    ]


def spec_diff_text(old: SweepSpec, new: SweepSpec) -> str:
    """A human-readable diff of two specs, saying whether it only extends the sweep."""
    before = yaml.safe_dump(old.model_dump(mode="json"), sort_keys=False).splitlines()
    after = yaml.safe_dump(new.model_dump(mode="json"), sort_keys=False).splitlines()
    diff = list(difflib.unified_diff(before, after, "old spec", "new spec", lineterm="", n=1))
    if not diff:
        return "The specs are identical."
    altering = spec_changes_that_alter_existing(old, new)
    if altering:
        verdict = ["Changes that would alter or drop trials already run:"]
        verdict += [f"  - {change}" for change in altering]
    else:
        verdict = ["The new spec only extends the sweep (existing trials stay valid)."]
    return "\n".join([*verdict, "", *diff])
