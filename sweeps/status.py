"""Per-cell progress of a sweep, read from its Tune experiment state (no Ray cluster needed)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sweeps.launch import locate
from sweeps.spec import SweepSpec


@dataclass(frozen=True)
class CellStatus:
    """Trial counts of one cell and its best single-trial value so far."""

    cell_id: str
    expected: int
    done: int
    running: int
    pending: int
    failed: int
    best_value: float | None
    best_lr: float | None


def _load_trials(experiment_dir: str) -> list[Any]:
    from ray.tune import ExperimentAnalysis

    try:
        return list(ExperimentAnalysis(experiment_dir).trials)
    except (ValueError, FileNotFoundError):
        return []


def sweep_status(spec: SweepSpec) -> list[CellStatus]:
    """One row per cell of the spec, in spec order."""
    metric = spec.search.metric
    maximise = spec.search.direction == "maximize"
    per_cell = spec.search.n_trials * len(spec.grid.seeds)
    if spec.second_stage is not None:
        per_cell += len(spec.second_stage.seeds)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    best: dict[str, tuple[float, float]] = {}
    for trial in _load_trials(locate(spec).experiment_dir):
        meta = (trial.config or {}).get("meta", {})
        cell = meta.get("cell")
        if cell is None:
            continue
        result = trial.last_result or {}
        if trial.status == "ERROR" or result.get("diverged"):
            counts[cell]["failed"] += 1
        elif trial.status == "TERMINATED":
            counts[cell]["done"] += 1
        elif trial.status == "RUNNING":
            counts[cell]["running"] += 1
        value = result.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            current = best.get(cell)
            better = current is None or (value > current[0] if maximise else value < current[0])
            if better:
                best[cell] = (float(value), float(meta.get("lr", math.nan)))
    rows = []
    for cell in spec.cells():
        seen = counts[cell.cell_id]
        started = seen["done"] + seen["running"] + seen["failed"]
        value, lr = best.get(cell.cell_id, (None, None))
        rows.append(
            CellStatus(
                cell_id=cell.cell_id,
                expected=per_cell,
                done=seen["done"],
                running=seen["running"],
                pending=max(per_cell - started, 0),
                failed=seen["failed"],
                best_value=value,
                best_lr=lr,
            )
        )
    return rows
