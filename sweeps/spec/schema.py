"""The sweep spec: a YAML file validated into factorial cells (workload × arm × sparsity × budget).

A spec names the fixed factors of a sweep (workloads, arms, sparsities, epoch budgets, seeds),
the searched ones (lr, optionally weight decay) with a trial budget per cell, and how trials
run. Every cell's resolved `TrainConfig` is validated when the spec loads (`sweeps.spec.checks`),
so a bad base config fails before Ray starts. Errors name the field path (`grid.sparsities[1]`)
and the allowed values. Cells are expanded by `sweeps.spec.cells`; changes between two versions of
a spec are judged by `sweeps.spec.diff`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from analysis.errors import BadInputError
from analysis.primary import DEFAULT_ALPHA, DEFAULT_HALFWIDTH, PrimaryDeclaration, declaration
from contract.arms import parse_arm
from contract.names import DEFAULT_SEARCH_METRIC, SEARCH_METRICS, Direction, metric_direction
from sweeps.spec.cells import (
    Cell,
    expand_cells,
    flatten_overrides,
)
from sweeps.spec.credentials import CREDENTIALS_HINT, credential_paths
from sweeps.spec.messages import SEED_LIST, SEED_MAPPING, describe_error, join_path

MAX_EPOCHS = 10_000
MAX_LR = 10.0
DEFAULT_SHARD_TRIALS = 10_000
"""Trials per Tune experiment above which a sweep runs as several (`Resources.shard_trials`)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} may only contain letters, digits, '_', '.' and '-'")
    return value


def _validated_arm(name: str) -> str:
    parse_arm(name)
    return name


def _not_bool(value: Any) -> Any:
    """Refuse true/false where a number is due: pydantic's lax mode would read them as 1 and 0."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "bool_not_number", "{value} is a boolean, not a number", {"value": str(value).lower()}
        )
    return value


NOT_BOOL = BeforeValidator(_not_bool)
"""On every number of the spec, after its bounds (so the schema, and the messages, keep them)."""
Float = Annotated[float, NOT_BOOL]
Sparsity = Annotated[float, Field(gt=0.0, lt=1.0), NOT_BOOL]
Budget = Annotated[int, Field(ge=1, le=MAX_EPOCHS), NOT_BOOL]
Seed = Annotated[int, Field(ge=0), NOT_BOOL]
Count = Annotated[int, Field(ge=1), NOT_BOOL]


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdaptiveSeeds(_Strict):
    """`grid.seeds` as a mapping: seeds 0, 1, ... added until the primary interval is narrow.

    Every lr trial runs seeds 0..initial-1. Once both cells of a primary contrast (same
    workload, sparsity, budget) have ended their seeds at the lr each one's rule picks, the
    paired t-interval of arm − baseline (final test_acc1) decides: half-width above
    `until_halfwidth` points and fewer than `max` seeds: `batch` more seeds for both cells at
    their chosen lrs (`analysis.seed_rule`); else the pair stops. Cells in no primary contrast
    keep the initial seeds.
    """

    initial: Annotated[int, Field(ge=2), NOT_BOOL]
    max: Annotated[int, Field(ge=2), NOT_BOOL]
    until_halfwidth: Annotated[float, Field(gt=0.0, allow_inf_nan=False), NOT_BOOL]
    batch: Annotated[int, Field(ge=1), NOT_BOOL] = 2

    @model_validator(mode="after")
    def _max_at_least_initial(self) -> AdaptiveSeeds:
        if self.max < self.initial:
            raise ValueError(
                f".max: {self.max} is below initial ({self.initial}); allowed: an integer >= "
                f"{self.initial}"
            )
        return self


def _adaptive_seeds(value: Any) -> Any:
    """Validate a `grid.seeds` mapping here, so that its errors name `grid.seeds.<field>` (a
    union would report every member's errors)."""
    if not isinstance(value, Mapping):
        return value
    try:
        return AdaptiveSeeds.model_validate(value)
    except ValidationError as error:
        item = error.errors()[0]
        loc = tuple(item["loc"])
        message = describe_error(item, AdaptiveSeeds, loc)
        raise ValueError(f".{join_path(loc)}: {message}" if loc else message) from None


def _seeds_form(value: Any) -> str:
    """Which form of `grid.seeds` a value is, so that only that form reports its errors."""
    return SEED_MAPPING if isinstance(value, Mapping | AdaptiveSeeds) else SEED_LIST


class GridConfig(_Strict):
    """The fixed factors: every arm × sparsity × budget is a cell, run on every seed (a list),
    or on adaptively many (a mapping, `AdaptiveSeeds`)."""

    arms: list[Annotated[str, AfterValidator(_validated_arm)]] = Field(min_length=1)
    sparsities: list[Sparsity] = Field(min_length=1)
    budgets: list[Budget] = Field(min_length=1)
    seeds: Annotated[
        Annotated[Annotated[list[Seed], Field(min_length=1)], Tag(SEED_LIST)]
        | Annotated[AdaptiveSeeds, Tag(SEED_MAPPING)],
        Discriminator(_seeds_form),
        BeforeValidator(_adaptive_seeds),
    ]

    @property
    def adaptive(self) -> AdaptiveSeeds | None:
        """The adaptive-seeds rule, when `seeds` is a mapping."""
        return self.seeds if isinstance(self.seeds, AdaptiveSeeds) else None

    def search_seeds(self) -> list[int]:
        """The seeds every lr trial runs (the list, or 0..initial-1)."""
        adaptive = self.adaptive
        return list(range(adaptive.initial)) if adaptive else list(self.seeds)  # type: ignore[arg-type]

    def all_seeds(self) -> list[int]:
        """Every seed a cell may run (the list, or 0..max-1)."""
        adaptive = self.adaptive
        return list(range(adaptive.max)) if adaptive else list(self.seeds)  # type: ignore[arg-type]

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[str]) -> list[str]:
        return _reject_duplicates(
            arms, lambda arm: (parse_arm(arm).method, parse_arm(arm).modifiers)
        )

    @field_validator("sparsities", "budgets", "seeds")
    @classmethod
    def _unique(cls, values: Any) -> Any:
        return _reject_duplicates(values) if isinstance(values, list) else values


class SearchParam(_Strict):
    """A searched value: a range `{low, high, log}` (TPE) or a list `{grid: [...]}`."""

    low: Float | None = None
    high: Float | None = None
    log: bool = False
    grid: list[Float] | None = None

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
        """Raise ValueError naming `path` when a value lies outside [low, high] (or (low, high]);
        NaN lies outside every interval."""
        interval = f"{'(' if low_open else '['}{low}, {high}]"

        def bad(value: float) -> bool:
            inside = (low < value if low_open else low <= value) and value <= high
            return not inside

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
    trials_per_cell: Count | None = None
    sampler_seed: Seed = 0
    metric: Literal[SEARCH_METRICS] = DEFAULT_SEARCH_METRIC  # type: ignore[valid-type]

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
    def direction(self) -> Direction:
        """Losses are minimised, accuracies maximised (`contract.names.metric_direction`)."""
        return metric_direction(self.metric)


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

    grace_period: Count = 1
    reduction_factor: Annotated[float, Field(gt=1.0, allow_inf_nan=False), NOT_BOOL] = 2.0


class Resources(_Strict):
    """How each trial runs on the cluster.

    `executor`: `actor` trains a one-worker trial inside Tune's (reused) trial actor, with no
    process start-up per trial; `train` runs a Ray Train `TorchTrainer` (DDP over
    `workers_per_trial` workers, ~10 s of start-up per trial); `auto` picks `actor` for one
    worker and `train` for more. `shard_trials`: a sweep expecting more trials runs as
    consecutive Tune experiments (shards of whole cells, `sweeps.run.shards`) of at most this
    many trials each, so the driver's cost per trial does not grow with the sweep.
    """

    workers_per_trial: Count = 1
    cpus_per_worker: Annotated[float, Field(ge=0.0, allow_inf_nan=False), NOT_BOOL] = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0.0, allow_inf_nan=False), NOT_BOOL] = 0.0
    max_concurrent_trials: Count = 1
    max_failures: Annotated[int, Field(ge=0), NOT_BOOL] = 1
    executor: Literal["auto", "actor", "train"] = "auto"
    shard_trials: Count = DEFAULT_SHARD_TRIALS

    @property
    def trial_executor(self) -> Literal["actor", "train"]:
        """The executor trials run on (`auto` resolved)."""
        if self.executor == "auto":
            return "actor" if self.workers_per_trial == 1 else "train"
        return self.executor

    @model_validator(mode="after")
    def _schedulable(self) -> Resources:
        if self.executor == "actor" and self.workers_per_trial > 1:
            raise ValueError(
                f"executor 'actor' trains in one process, but workers_per_trial is "
                f"{self.workers_per_trial}; allowed: executor 'train' (or 'auto') for DDP over "
                "several workers, or workers_per_trial 1"
            )
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


class AnalysisConfig(_Strict):
    """The question the sweep exists to answer, declared before the data (`analysis.primary`).

    `primary`: contrasts `ARM:BASELINE` (default: every arm with a modifier against its base
    arm, e.g. `rigl+sparseopt:rigl`; `dense` a reference only); multiplicity is corrected within
    them only. `alpha`: the family-wise error rate. `target`: a test accuracy (%) the
    budget-to-target table and the budget equivalence aim at (default: each baseline's mean at
    its largest budget). `halfwidth`: the interval half-width (points) the `few_seeds` guard asks
    for. Recorded as the MLflow experiment tag `sparsesweep.primary`, which the report reads.
    """

    primary: list[str] | None = None
    alpha: Annotated[float, NOT_BOOL] = DEFAULT_ALPHA
    target: Annotated[float | None, NOT_BOOL] = None
    halfwidth: Annotated[float, NOT_BOOL] = DEFAULT_HALFWIDTH

    @model_validator(mode="after")
    def _declared(self) -> AnalysisConfig:
        self.declaration()
        return self

    def declaration(self) -> PrimaryDeclaration:
        """The report's declaration object (`analysis.primary`); ValueError naming the field."""
        try:
            return declaration(self.primary, self.alpha, self.target, self.halfwidth)
        except BadInputError as error:
            raise ValueError(str(error).removeprefix("analysis.")) from None


def count_range_text(fewest: int, most: int) -> str:
    """A planned trial count as shown: `12`, or `12-20` with adaptive seeds."""
    return str(fewest) if fewest == most else f"{fewest}-{most}"


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
    analysis: AnalysisConfig = AnalysisConfig()

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
            name: flatten_overrides(overrides) if isinstance(overrides, Mapping) else overrides
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
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        _check_search(self.search)
        for index, contrast in enumerate(self.analysis.declaration().contrasts or ()):
            missing = [arm for arm in contrast if arm not in self.grid.arms]
            if missing:
                raise ValueError(
                    f"analysis.primary[{index}]: {', '.join(missing)} is not an arm of the sweep; "
                    f"allowed: arms of grid.arms ({', '.join(self.grid.arms)})"
                )
        if self.second_stage is not None:
            for index, seed in enumerate(self.second_stage.seeds):
                if seed in self.grid.all_seeds():
                    raise ValueError(
                        f"second_stage.seeds[{index}]: seed {seed} is also in grid.seeds; "
                        "second-stage seeds must be fresh (not used by the search)"
                    )
        return self

    def cells(self) -> list[Cell]:
        """Every cell: workload × arm × sparsity × budget; dense arms get one cell (s=0) per budget."""
        if self._cells is None:
            grid = self.grid
            self._cells = list(
                expand_cells(self.base, self.workloads, grid.arms, grid.sparsities, grid.budgets)
            )
        return list(self._cells)

    def cell(self, cell_id: str) -> Cell:
        """The cell with this id; KeyError naming the known ids otherwise."""
        for cell in self.cells():
            if cell.cell_id == cell_id:
                return cell
        raise KeyError(f"no cell {cell_id!r} in sweep {self.name!r}")

    def trials_per_cell(self) -> int:
        """Tune trials one cell runs: lr trials × seeds, plus its second-stage seeds (adaptive
        seeds: the fewest, every lr trial on the initial seeds)."""
        return self.trials_per_cell_range()[0]

    def trials_per_cell_range(self) -> tuple[int, int]:
        """(fewest, most) Tune trials one cell runs; equal unless `grid.seeds` is adaptive,
        where a cell may add up to max − initial seeds at its chosen lr."""
        finals = len(self.second_stage.seeds) if self.second_stage is not None else 0
        fewest = self.search.n_trials * len(self.grid.search_seeds()) + finals
        adaptive = self.grid.adaptive
        return fewest, fewest + (adaptive.max - adaptive.initial if adaptive else 0)

    def expected_trials(self) -> int:
        """Tune trials the sweep runs: every cell's `trials_per_cell`."""
        return len(self.cells()) * self.trials_per_cell()

    def expected_trials_range(self) -> tuple[int, int]:
        """(fewest, most) Tune trials the sweep runs (adaptive seeds: only the cells of a
        primary contrast can add seeds)."""
        fewest, most = self.trials_per_cell_range()
        cells = self.cells()
        paired = {cell.cell_id for pair in self.primary_cell_pairs() for cell in pair}
        return len(cells) * fewest, len(cells) * fewest + len(paired) * (most - fewest)

    def primary_cell_pairs(self) -> list[tuple[Cell, Cell]]:
        """(arm cell, baseline cell) of every primary contrast (`analysis.primary`) in every
        workload, sparsity and budget where both ran."""
        contrasts = self.analysis.declaration().resolve(self.grid.arms).contrasts or ()
        cells = {(c.workload, c.arm, c.sparsity, c.budget): c for c in self.cells()}
        pairs = []
        for workload, arm, sparsity, budget in cells:
            for contrast_arm, baseline in contrasts:
                reference = cells.get((workload, baseline, sparsity, budget))
                if contrast_arm == arm and reference is not None:
                    pairs.append((cells[(workload, arm, sparsity, budget)], reference))
        return pairs

    def to_yaml(self) -> str:
        """The validated spec as YAML (paths made absolute), e.g. to store next to the results."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
