"""The numbers of a sweep's cell and curve runs, by the report's own rules, from the trial runs
MLflow holds.

After a batch of trials ends, the sender reads the affected cells' trial runs back from MLflow
(`analysis.fetch`, narrowed to those cells and the metrics the aggregates use) into the
export's tables (`analysis.export.build_tables`, the one builder of the trials and epochs
tables) and computes a cell's progress (trials ended; the lr leading so far under
`contract.selection`) and, once the cell is complete, its per-epoch seed means
(`analysis.dashboard.cell_curves`) and its curve points (`analysis.dashboard.budget_points`).
A cell is complete when as many of its trials have ended as the spec runs in it (or the whole
sweep has ended); only then are its numbers settled, and they are written once: MLflow cannot
change a logged value. If the sweep is extended and a complete cell gains trials, its numbers
are recomputed when it completes again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.dashboard import budget_points, cell_curves
from analysis.export import build_tables
from analysis.fetch import fetch_experiment
from contract.arms import baseline_arm
from contract.names import CELL_AGGREGATES, CELL_METRICS, CURVE_FACTORS, CURVE_FAMILIES
from contract.outcome import ENDED, Status
from contract.selection import LrTrial, rank_lr_trials
from contract.trial import Stage

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec


@dataclass(frozen=True)
class SweepShape:
    """What the spec says about a sweep's cells: trials each runs, and which cells share a
    curve or are paired with a baseline."""

    per_cell: int
    """Trials the spec runs in each cell (0: unknown, or adaptive seeds: cells complete only
    with the sweep)."""
    seeds: int = 1
    """Seeds each lr trial runs on (adaptive seeds: the initial ones)."""
    cells: dict[str, tuple[str, str, float, int]] = field(default_factory=dict)
    """Cell id -> (workload, arm, sparsity, budget)."""
    expected_text: str = "0"
    """The cell runs' `sparsesweep.trials_expected` tag: a count, or `fewest-most`
    (`SweepSpec.trials_per_cell_range`)."""

    @classmethod
    def of(cls, spec: SweepSpec | None) -> SweepShape:
        from sweeps.spec.schema import count_range_text  # (the spec imports the training config)

        if spec is None:
            return cls(0)
        cells = spec.cells()
        fewest, most = spec.trials_per_cell_range()
        per_cell = fewest if fewest == most else 0
        shape = {c.cell_id: (c.workload, c.arm, c.sparsity, c.budget) for c in cells}
        seeds = len(spec.grid.search_seeds())
        return cls(per_cell, seeds, shape, count_range_text(fewest, most))

    def related(self, cell: str) -> set[str]:
        """The cells a complete `cell`'s curve points pair with: its baseline, and the cells
        whose baseline it is (same workload, sparsity and budget)."""
        if cell not in self.cells:
            return set()
        workload, arm, sparsity, budget = self.cells[cell]
        return {
            other
            for other, (w, a, s, b) in self.cells.items()
            if other != cell
            and (w, s, b) == (workload, sparsity, budget)
            and (a == baseline_arm(arm) or baseline_arm(a) == arm)
        }

    def curve_cells(self, workload: str, arm: str, sparsity: float) -> set[str]:
        """The cells (one per budget) whose points a curve run holds."""
        return {
            cell
            for cell, (w, a, s, _) in self.cells.items()
            if (w, a) == (workload, arm) and math.isclose(s, sparsity)
        }


@dataclass(frozen=True)
class CellTables:
    """The export's trials and epochs tables of some cells' trial runs."""

    trials: pd.DataFrame
    epochs: pd.DataFrame

    def of(self, cells: Collection[str]) -> CellTables:
        """The rows of the trials of `cells` only."""
        trials = self.trials[self.trials["cell"].isin(list(cells))]
        return CellTables(trials, self.epochs[self.epochs["run_id"].isin(trials["run_id"])])


@dataclass(frozen=True)
class CellProgress:
    """Where a cell stands: trials ended, the lr leading so far, its last trial's end time."""

    ended: int
    lr: float | None
    end_time: int | None
    """Milliseconds since the epoch (None while no trial has ended)."""


def read_cells(
    tracking_uri: str, experiment: str, cells: Collection[str], metric: str
) -> CellTables:
    """The trial runs of `cells` as MLflow holds them, with the metrics the aggregates use."""
    records = fetch_experiment(tracking_uri, experiment, cells=cells, keys={*CELL_METRICS, metric})
    tables = build_tables(records)
    return CellTables(_plain(tables.trials.to_pandas()), _plain(tables.epochs.to_pandas()))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Python objects: pandas' Arrow-backed strings make the report's
    comparisons about twice as slow on tables this small."""
    text = [name for name in frame.columns if pd.api.types.is_string_dtype(frame[name])]
    return frame.astype({name: object for name in text})


def cell_progress(tables: CellTables, cell: str, metric: str, seeds: int) -> CellProgress:
    """How many of the cell's trials have ended, the lr leading so far, and when its last
    trial ended. The lr is the best-scoring lr trial under `contract.selection` among those
    with `seeds` seeds ended (the searcher's rule: an lr is ranked once all its seeds ended)."""
    trials = tables.of([cell]).trials.to_dict("records")
    ended = [row for row in trials if Status(row["status"]) in ENDED]
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in trials:
        if row["stage"] == Stage.SEARCH and present(row["lr_trial"]) and present(row["lr"]):
            groups.setdefault(int(row["lr_trial"]), []).append(row)
    final = f"final_{metric}"
    lr_trials = [
        LrTrial(
            lr_trial,
            float(rows[0]["lr"]),
            [(row["status"], row[final] if present(row[final]) else None) for row in rows],
        )
        for lr_trial, rows in groups.items()
    ]
    ranking = rank_lr_trials(lr_trials, metric, seeds, [trial.lr for trial in lr_trials])
    lr = next((trial.lr for trial in lr_trials if trial.key == ranking.best), None)
    end_times = [row["end_time"] for row in ended if not pd.isna(row["end_time"])]
    end_time = int(max(end_times).value // 1_000_000) if end_times else None
    return CellProgress(len(ended), lr, end_time)


def cell_metrics(
    tables: CellTables, cells: Collection[str], metric: str
) -> dict[str, dict[int, dict[str, float]]]:
    """Per complete cell and epoch, what its run logs (`CELL_AGGREGATES`; none if no run
    counts)."""
    from sweeps.spec.cells import cell_id  # (the spec's cells import the training config)

    part = tables.of(cells)
    curves = cell_curves(part.trials, part.epochs, metric)
    result: dict[str, dict[int, dict[str, float]]] = {cell: {} for cell in cells}
    for row in curves.to_dict("records"):
        cell = cell_id(row["workload"], row["arm"], float(row["sparsity"]), int(row["budget"]))
        if cell in result:
            result[cell][int(row["epoch"])] = {
                key: float(row[key]) for key in CELL_AGGREGATES if present(row[key])
            }
    return result


def curve_points(
    tables: CellTables, complete: Iterable[str], metric: str
) -> dict[tuple, dict[str, float]]:
    """Per curve (`CURVE_FACTORS`) and budget: the point of each of the `complete` cells
    (paired with its baseline when that cell is among them)."""
    part = tables.of(set(complete))
    if part.trials.empty:
        return {}
    points = budget_points(part.trials, metric)
    keys = [key for family in CURVE_FAMILIES for key in family]
    result: dict[tuple, dict[str, float]] = {}
    for row in points.to_dict("records"):
        curve = tuple(row[name] for name in CURVE_FACTORS)
        values = {key: float(row[key]) for key in keys if key in row and present(row[key])}
        result[(*curve, int(row["budget"]))] = values
    return result


def present(value: Any) -> bool:
    """Whether a computed value exists (not None or NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))
