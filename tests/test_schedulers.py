"""Early stopping compares a trial only with the trials of its own cell."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler
from sweep_helpers import trial_meta

from sweeps.run.schedulers import CellASHAScheduler


def trial(trial_id: str, cell: str, budget: int = 4) -> SimpleNamespace:
    meta = trial_meta(cell=cell, budget=budget)
    return SimpleNamespace(trial_id=trial_id, config={"meta": meta.to_dict()})


def test_asha_ranks_within_a_cell_only() -> None:
    scheduler = CellASHAScheduler(metric="val_acc1", mode="max", grace_period=1, reduction_factor=2)
    strong, weak, other = trial("a1", "A"), trial("a2", "A"), trial("b1", "B")
    for item in (strong, weak, other):
        scheduler.on_trial_add(None, item)
    assert (
        scheduler.on_trial_result(None, strong, {"epoch": 1, "val_acc1": 90.0})
        == TrialScheduler.CONTINUE
    )
    assert (
        scheduler.on_trial_result(None, weak, {"epoch": 1, "val_acc1": 10.0}) == TrialScheduler.STOP
    )
    # Far below cell A's rung, but alone in cell B: not stopped.
    assert (
        scheduler.on_trial_result(None, other, {"epoch": 1, "val_acc1": 5.0})
        == TrialScheduler.CONTINUE
    )
    assert "1 trials stopped early" in scheduler.debug_string()


def test_trial_reaching_its_cell_budget_stops_and_restored_trials_are_adopted() -> None:
    scheduler = CellASHAScheduler(metric="val_acc1", mode="max", grace_period=1, reduction_factor=2)
    restored = trial("r1", "C", budget=2)
    assert (
        scheduler.on_trial_result(None, restored, {"epoch": 1, "val_acc1": 50.0})
        == TrialScheduler.CONTINUE
    )
    assert (
        scheduler.on_trial_result(None, restored, {"epoch": 2, "val_acc1": 60.0})
        == TrialScheduler.STOP
    )
    scheduler.on_trial_complete(None, restored, {"epoch": 2, "val_acc1": 60.0})
    scheduler.on_trial_complete(None, restored, {"epoch": 2, "val_acc1": 60.0})
