"""Early stopping within a cell: one ASHA instance per cell, never comparing across budgets.

Ray's ASHA ranks every trial of an experiment against every other at the same `epoch`
milestone; here a trial only competes with the trials of its own cell (same arm, sparsity
and epoch budget, so the same lr schedule), and `max_t` is that cell's budget.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from contract.trial import ResultKey, TrialMeta


class CellASHAScheduler(FIFOScheduler):
    """Routes each trial to the ASHA scheduler of its cell (`TrialMeta.cell`)."""

    def __init__(self, metric: str, mode: str, grace_period: int, reduction_factor: float) -> None:
        super().__init__()
        self._metric = metric
        self._mode = mode
        self._grace_period = grace_period
        self._reduction_factor = reduction_factor
        self._cells: dict[str, AsyncHyperBandScheduler] = {}
        self._members: set[str] = set()  # trial ids added to their cell's scheduler
        self._stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return not (metric and metric != self._metric) and not (mode and mode != self._mode)

    def _cell_scheduler(self, trial: Any) -> AsyncHyperBandScheduler:
        meta = TrialMeta.of(trial.config)
        cell, budget = meta.cell, meta.budget
        if cell not in self._cells:
            self._cells[cell] = AsyncHyperBandScheduler(
                time_attr=ResultKey.EPOCH,
                metric=self._metric,
                mode=self._mode,
                max_t=budget,
                grace_period=min(self._grace_period, budget),
                reduction_factor=self._reduction_factor,
                brackets=1,
            )
        return self._cells[cell]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._cell_scheduler(trial).on_trial_add(tune_controller, trial)
        self._members.add(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id not in self._members:  # a trial restored with the experiment
            self.on_trial_add(tune_controller, trial)
        action = self._cell_scheduler(trial).on_trial_result(tune_controller, trial, result)
        self._stopped += action == self.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if trial.trial_id in self._members:
            self._members.discard(trial.trial_id)
            self._cell_scheduler(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if trial.trial_id in self._members:
            self._members.discard(trial.trial_id)
            self._cell_scheduler(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"CellASHA: {len(self._cells)} cells, {self._stopped} trials stopped early"
