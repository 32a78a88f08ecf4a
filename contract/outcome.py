"""The status vocabulary of a trial and the one rule that decides how a trial ended."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from contract.trial import ResultKey


class Status(str, Enum):
    """A trial's status, as the `sparsesweep.status` tag, `status` and the report show it."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    DIVERGED = "diverged"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


ENDED: tuple[Status, ...] = (Status.FINISHED, Status.STOPPED, Status.DIVERGED, Status.FAILED)
STATUSES: tuple[str, ...] = tuple(status.value for status in Status)

MLFLOW_RUN_STATUS: dict[Status, str] = {
    Status.PENDING: "SCHEDULED",
    Status.RUNNING: "RUNNING",
    Status.FINISHED: "FINISHED",
    Status.STOPPED: "KILLED",
    Status.DIVERGED: "FAILED",
    Status.FAILED: "FAILED",
}
"""MLflow's run status for each of ours (diverged and failed are both FAILED there)."""

STATUS_OF_MLFLOW_RUN: dict[str, Status] = {
    "SCHEDULED": Status.RUNNING,
    "RUNNING": Status.RUNNING,
    "FINISHED": Status.FINISHED,
    "KILLED": Status.STOPPED,
    "FAILED": Status.FAILED,
}
"""Our status read off an MLflow run that carries no (or a stale) `sparsesweep.status` tag."""


def ended_outcome(errored: bool, last_result: Mapping[str, Any] | None, budget: int) -> Status:
    """How a trial that ended did: failed (an error), diverged (non-finite loss), finished
    (reached its budget) or stopped (ended early: the scheduler stopped it).

    A trial that ended without ever reporting an epoch and without an error counts as failed.
    """
    result = last_result or {}
    if errored:
        return Status.FAILED
    if result.get(ResultKey.DIVERGED):
        return Status.DIVERGED
    epoch = result.get(ResultKey.EPOCH)
    if epoch is None:
        return Status.FAILED
    return Status.FINISHED if int(epoch) >= int(budget) else Status.STOPPED


def tune_trial_status(
    tune_status: str, last_result: Mapping[str, Any] | None, budget: int
) -> Status:
    """Our status of a Ray Tune trial from its status string (PENDING, RUNNING, PAUSED,
    TERMINATED, ERROR) and last result."""
    if tune_status in ("PENDING", "PAUSED"):
        return Status.PENDING
    if tune_status == "RUNNING":
        return Status.RUNNING
    return ended_outcome(tune_status == "ERROR", last_result, budget)
