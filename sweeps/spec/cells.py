"""The cells of a sweep: workload × arm × sparsity × budget, each with its resolved TrainConfig.

A cell's trials differ only in seed and the searched values (lr, weight decay). The resolved
config of a trial is the spec's `base`, then the workload's overrides, then what the arm,
sparsity, budget, seed and searched values fix (`GRID_CONTROLLED`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.arms import ARM_CONTROLLED, parse_arm
from sparseopt.config import TrainConfig, set_dotted
from sweeps.spec.messages import format_number

GRID_CONTROLLED: tuple[str, ...] = (
    "epochs",
    "seed",
    "optim.lr",
    "sparse.sparsity",
    *ARM_CONTROLLED,
)
"""TrainConfig keys each trial gets from the grid, its arm or the search; neither a workload nor
`base` may set them (`base` may set `BASE_SETTABLE`), nor the keys of searched values."""
SEARCHED_KEYS: dict[str, str] = {"lr": "optim.lr", "weight_decay": "optim.weight_decay"}
"""The TrainConfig key each searched parameter (`search.<name>`) sets for every trial."""
BASE_SETTABLE: tuple[str, ...] = ("sparse.ham",)
"""Controlled keys `base` may still set: `sparse.ham` holds HAM's settings, which the ham arms
use (the arm only turns HAM on or off)."""


def flatten_overrides(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (empty mappings stay values)."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_overrides(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def touches(key: str, controlled: str) -> bool:
    """Whether setting dotted `key` sets (part of) dotted `controlled`, or the other way round."""
    return key == controlled or key.startswith(controlled + ".") or controlled.startswith(key + ".")


def fixed_keys(searched: Iterable[str], exempt: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The TrainConfig keys the grid, an arm or the search (`searched`: the names of the searched
    parameters) set for every trial, less `exempt`."""
    keys = (*GRID_CONTROLLED, *(SEARCHED_KEYS[name] for name in searched))
    return tuple(key for key in dict.fromkeys(keys) if key not in exempt)


def controller(key: str) -> str:
    """The spec field that sets the fixed TrainConfig `key` for every trial."""
    sources = {
        "epochs": "grid.budgets",
        "seed": "grid.seeds",
        "sparse.sparsity": "grid.sparsities",
        **{dotted: f"search.{name}" for name, dotted in SEARCHED_KEYS.items()},
    }
    return sources.get(key, "the arm (grid.arms)")


def overriding(
    overrides: Mapping[str, Any], fixed: tuple[str, ...], exempt: tuple[str, ...] = ()
) -> list[str]:
    """The dotted keys of `overrides` that set one of the `fixed` keys, so their value could
    never reach a trial; keys under an `exempt` key and empty mappings (`optim: {}`) pass."""
    return [
        key
        for key, value in overrides.items()
        if not (isinstance(value, Mapping) and not value)
        and not any(key == free or key.startswith(free + ".") for free in exempt)
        and any(touches(key, controlled) for controlled in fixed)
    ]


def cell_id(workload: str, arm: str, sparsity: float, budget: int) -> str:
    """`{workload}/{arm}/s={sparsity}/e={budget}`, e.g. `default/rigl+sparseopt/s=0.95/e=100`."""
    return f"{workload}/{arm}/s={format_number(sparsity)}/e={budget}"


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
        for key, value in parse_arm(self.arm).train_settings().items():
            set_dotted(payload, key, value)
        set_dotted(payload, "sparse.sparsity", self.sparsity)
        ham = (base_ham if base_ham is not None else {}) if "ham" in self.modifiers else None
        set_dotted(payload, "sparse.ham", ham)
        set_dotted(payload, "epochs", self.budget)
        set_dotted(payload, "seed", seed)
        set_dotted(payload, "optim.lr", lr)
        if weight_decay is not None:
            set_dotted(payload, "optim.weight_decay", weight_decay)
        return payload


def expand_cells(
    base: Mapping[str, Any],
    workloads: Mapping[str, Mapping[str, Any]],
    arms: list[str],
    sparsities: list[float],
    budgets: list[int],
) -> Iterator[Cell]:
    """Every cell: workload × arm × sparsity × budget; a dense arm gets one cell (s=0) per budget."""
    for workload, overrides in workloads.items():
        payload = copy.deepcopy(dict(base))
        for key, value in overrides.items():
            set_dotted(payload, key, copy.deepcopy(value))
        for arm_name in arms:
            arm = parse_arm(arm_name)
            for sparsity in sparsities if arm.sparse else [0.0]:
                for budget in budgets:
                    yield Cell(
                        cell_id=cell_id(workload, arm_name, sparsity, budget),
                        workload=workload,
                        arm=arm_name,
                        method=arm.method,
                        modifiers=arm.modifiers,
                        sparsity=float(sparsity),
                        budget=budget,
                        payload=payload,
                    )
