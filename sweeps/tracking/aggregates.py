"""What the dashboard's cell and curve runs show, computed from the trials the tracker saw.

The tracker feeds every trial's epochs and end here (on its sender thread). A cell is
*complete* when as many of its trials have ended as the spec runs in it; only then are its
numbers settled: the lr chosen by `contract.selection` cannot change any more, so its
per-epoch seed means (`analysis.dashboard.cell_curves`) and its curve points
(`analysis.dashboard.budget_points`) are final. MLflow cannot change or delete a logged
metric value, so they are written once, when settled; until then each trial's end updates
the cell run's tags (trials ended, the lr leading so far). If the sweep is extended and a
complete cell gains trials, its numbers are recomputed when it completes again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.outcome import ENDED, Status
from contract.selection import best_key, group_score, seed_score
from contract.trial import Stage, TrialMeta

AGGREGATE_EPOCH_KEYS: tuple[str, ...] = ("test_acc1", "val_acc1", "test_loss")
"""Per-epoch metrics a trial's record keeps (besides the sweep's search metric)."""


@dataclass
class TrialRecord:
    """What the aggregates need of one trial: its factors, status and per-epoch values."""

    meta: dict[str, Any]
    dataset: str
    model: str
    order: int
    status: str = Status.RUNNING.value
    epochs: dict[int, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class CellProgress:
    """The live state of a cell, shown as its run's tags after every trial end."""

    ended: int
    expected: int
    best_lr: float | None
    sweep_ended: bool = False

    @property
    def complete(self) -> bool:
        """Whether every trial the spec runs in the cell has ended (or the whole sweep has: a
        cell whose lr trials repeated a config shares trials and has fewer of its own)."""
        return self.sweep_ended or (self.expected > 0 and self.ended >= self.expected)


class TrialRecords:
    """Every trial's record, by Tune trial id, plus the expected trial count per cell."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.records: dict[str, TrialRecord] = {}
        self.expected_per_cell = 0
        self.sweep_ended = False

    def observe(self, trial_id: str, config: Mapping[str, Any]) -> TrialRecord:
        """The record of a trial, created from its Tune config on first sight."""
        record = self.records.get(trial_id)
        if record is None:
            train = config["train"]
            record = TrialRecord(
                meta=dict(config["meta"]),
                dataset=str(train["data"]["name"]),
                model=str(train["model"]["name"]),
                order=len(self.records),
            )
            self.records[trial_id] = record
        return record

    def add_epochs(self, trial_id: str, config: Mapping[str, Any], entries: Iterable[dict]) -> None:
        """Keep the values the aggregates need from a trial's epoch entries."""
        record = self.observe(trial_id, config)
        keys = (*AGGREGATE_EPOCH_KEYS, self.metric)
        for entry in entries:
            values = {key: float(entry[key]) for key in keys if key in entry}
            record.epochs[int(entry["epoch"])] = values

    def end(self, trial_id: str, config: Mapping[str, Any], status: str) -> TrialRecord:
        """Mark a trial ended with `status`."""
        record = self.observe(trial_id, config)
        record.status = status
        return record

    def group_of(self, record: TrialRecord) -> tuple:
        """(workload, dataset, model, method, sparsity): the cells a curve point compares."""
        meta = record.meta
        return (meta["workload"], record.dataset, record.model, meta["method"], meta["sparsity"])

    def complete_cells(self, group: tuple) -> list[str]:
        """The cells of a group whose trials have all ended."""
        cells = {r.meta["cell"] for r in self.records.values() if self.group_of(r) == group}
        return sorted(cell for cell in cells if self.progress(cell).complete)

    def in_cell(self, cell: str) -> list[TrialRecord]:
        """The records of one cell."""
        return [record for record in self.records.values() if record.meta["cell"] == cell]

    def progress(self, cell: str) -> CellProgress:
        """Trials ended, expected, and the best lr among the cell's lr trials whose seeds all
        ended (`contract.selection`, as the searcher ranks them)."""
        members = self.in_cell(cell)
        ended = [r for r in members if Status(r.status) in ENDED]
        groups: dict[int, list[TrialRecord]] = {}
        for record in members:
            if record.meta["stage"] == Stage.SEARCH:
                groups.setdefault(int(record.meta["lr_trial"]), []).append(record)
        scores = {
            lr_trial: group_score(seed_score(r.status, self._final(r), self.metric) for r in group)
            for lr_trial, group in groups.items()
            if all(Status(r.status) in ENDED for r in group)
        }
        best = best_key(scores, self.metric)
        best_lr = None if best is None else float(groups[best][0].meta["lr"])
        return CellProgress(len(ended), self.expected_per_cell, best_lr, self.sweep_ended)

    def _final(self, record: TrialRecord) -> float | None:
        """The search metric at the trial's last epoch that has it."""
        for epoch in sorted(record.epochs, reverse=True):
            if self.metric in record.epochs[epoch]:
                return record.epochs[epoch][self.metric]
        return None

    def frames(self, records: Iterable[TrialRecord]) -> tuple[Any, Any]:
        """The records as the export's trials and epochs tables (the columns the analysis reads)."""
        import pandas as pd

        trial_rows, epoch_rows = [], []
        final_metrics = {*AGGREGATE_EPOCH_KEYS, self.metric}
        for record in records:
            meta = TrialMeta.from_dict(record.meta)
            run_id = meta.config_hash
            finals = {}
            for key in final_metrics:
                last = [
                    record.epochs[e][key] for e in sorted(record.epochs) if key in record.epochs[e]
                ]
                finals[f"final_{key}"] = last[-1] if last else math.nan
            trial_rows.append(
                {
                    "run_id": run_id,
                    "workload": meta.workload,
                    "dataset": record.dataset,
                    "model": record.model,
                    "method": meta.method,
                    "arm": meta.arm,
                    "sparsity": meta.sparsity,
                    "budget": meta.budget,
                    "seed": meta.seed,
                    "lr": meta.lr,
                    "lr_trial": meta.lr_trial,
                    "stage": meta.stage,
                    "status": record.status,
                    "start_time": record.order,
                    **finals,
                }
            )
            for epoch, values in record.epochs.items():
                epoch_rows.append({"run_id": run_id, "epoch": epoch, **values})
        epochs = pd.DataFrame(epoch_rows, columns=["run_id", "epoch", *AGGREGATE_EPOCH_KEYS])
        return pd.DataFrame(trial_rows), epochs


def cell_metrics(records: TrialRecords, cell: str) -> dict[int, dict[str, float]]:
    """Per epoch, the metrics a complete cell's run carries (empty if none of its runs count)."""
    from analysis.dashboard import cell_curves

    trials, epochs = records.frames(records.in_cell(cell))
    curves = cell_curves(trials, epochs, records.metric)
    keys = [
        column
        for column in curves.columns
        if column.endswith(("_mean", "_std")) or column == "n_seeds"
    ]
    return {
        int(row["epoch"]): {key: float(row[key]) for key in keys if not _missing(row[key])}
        for row in curves.to_dict("records")
    }


def curve_points(records: TrialRecords, cells: Iterable[str]) -> dict[tuple, dict[str, float]]:
    """Per curve run key and budget: the points of the given complete cells."""
    from analysis.dashboard import CURVE_KEY, budget_points

    members = [r for cell in cells for r in records.in_cell(cell)]
    trials, _ = records.frames(members)
    points = budget_points(trials, records.metric)
    keys = [c for c in points.columns if c.startswith(("test_acc1", "diff_vs_baseline"))]
    result: dict[tuple, dict[str, float]] = {}
    for row in points.to_dict("records"):
        curve = tuple(row[name] for name in CURVE_KEY)
        values = {key: float(row[key]) for key in keys if key in row and not _missing(row[key])}
        result[(*curve, int(row["budget"]))] = values
    return result


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
