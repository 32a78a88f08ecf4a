"""Per-cell progress of a sweep, read from its Tune experiment state (no Ray cluster needed).

Trial statuses come from `contract.outcome` and the best lr from `contract.selection`, the
rules the tracker and the searcher use, so `status`, MLflow and the searcher never disagree.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from contract.outcome import ENDED, Status
from contract.selection import best_key, group_score, seed_score
from contract.trial import Stage, TrialMeta
from sweeps.run.tune_state import trial_status, tune_retries, tune_trials
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import locate


@dataclass(frozen=True)
class CellStatus:
    """Trial counts of one cell by status, and its best lr so far by the lr-selection rule."""

    cell_id: str
    expected: int
    counts: Counter = field(default_factory=Counter)
    best_value: float | None = None
    best_lr: float | None = None

    def count(self, status: Status) -> int:
        """Trials of this cell in `status` (pending: not started yet, or waiting to start)."""
        if status is Status.PENDING:
            started = sum(n for key, n in self.counts.items() if key != Status.PENDING.value)
            return max(self.expected - started, 0)
        return self.counts[status.value]


def sweep_status(spec: SweepSpec) -> list[CellStatus]:
    """One row per cell of the spec, in spec order."""
    return cell_statuses(spec, tune_trials(locate(spec).experiment_dir))


def cell_statuses(spec: SweepSpec, trials: list[Any]) -> list[CellStatus]:
    """One row per cell of the spec from the sweep's Tune trials."""
    metric = spec.search.metric
    per_cell = spec.search.n_trials * len(spec.grid.seeds)
    if spec.second_stage is not None:
        per_cell += len(spec.second_stage.seeds)
    counts: dict[str, Counter] = defaultdict(Counter)
    groups: dict[str, dict[int, list[tuple[Status, float | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    lrs: dict[tuple[str, int], float] = {}
    retries = tune_retries(spec)
    for trial in trials:
        meta = TrialMeta.of(trial.config)
        status = trial_status(trial, retries)
        counts[meta.cell][status.value] += 1
        if meta.stage == Stage.SEARCH:
            value = (trial.last_result or {}).get(metric)
            groups[meta.cell][meta.lr_trial].append((status, value))
            lrs[(meta.cell, meta.lr_trial)] = meta.lr
    rows = []
    for cell in spec.cells():
        complete = {
            lr_trial: group_score(seed_score(status, value, metric) for status, value in members)
            for lr_trial, members in groups[cell.cell_id].items()
            if len(members) >= len(spec.grid.seeds)
            and all(status in ENDED for status, _ in members)
        }
        best = best_key(complete, metric)
        rows.append(
            CellStatus(
                cell_id=cell.cell_id,
                expected=per_cell,
                counts=counts[cell.cell_id],
                best_value=None if best is None else complete[best],
                best_lr=None if best is None else lrs[(cell.cell_id, best)],
            )
        )
    return rows
