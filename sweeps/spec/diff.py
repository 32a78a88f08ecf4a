"""Comparing two versions of a sweep spec: which changes would alter trials already run.

Re-running a sweep with an edited spec resumes it; an edit that only adds (arms, sparsities,
budgets, seeds, workloads, lr trials) extends it, anything else is refused with a diff.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import yaml

from sweeps.spec.cells import Cell, flatten_overrides

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec


def _removed(old: list[Any], new: list[Any]) -> list[Any]:
    return [value for value in old if value not in new]


def _cell_settings(cell: Cell) -> dict[str, Any]:
    """A cell's resolved config with the per-trial values (seed, lr) fixed, flattened."""
    dumped = cell.train_config(seed=0, lr=1.0).model_dump(mode="json")
    return flatten_overrides(dumped)


def spec_changes_that_alter_existing(old: SweepSpec, new: SweepSpec) -> list[str]:
    """Changes from `old` to `new` that would change or drop trials already run.

    Adding arms, sparsities, budgets, seeds, workloads or second-stage seeds, raising
    `search.trials_per_cell`, raising `grid.seeds.max` or changing `until_halfwidth` or `batch`
    (adaptive seeds), turning a seed list into a mapping whose initial seeds include it, and
    changing resources or storage/tracking locations are
    extensions: they return nothing. Anything else that touches existing cells is listed.
    """
    changes: list[str] = []
    if old.name != new.name:
        changes.append(f"name: {old.name!r} -> {new.name!r} (a different sweep)")
    for key in ("arms", "sparsities", "budgets"):
        gone = _removed(getattr(old.grid, key), getattr(new.grid, key))
        if gone:
            changes.append(f"grid.{key}: removed {gone}")
    gone = _removed(old.grid.search_seeds(), new.grid.search_seeds())
    if gone:
        changes.append(f"grid.seeds: removed {gone}")
    old_adaptive, new_adaptive = old.grid.adaptive, new.grid.adaptive
    if old_adaptive is not None and new_adaptive is None:
        changes.append("grid.seeds: a mapping (adaptive seeds) became a list")
    elif (
        old_adaptive is not None
        and new_adaptive is not None
        and new_adaptive.max < old_adaptive.max
    ):
        changes.append(f"grid.seeds.max: lowered {old_adaptive.max} -> {new_adaptive.max}")
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
