"""The one reader of what Ray Tune saved about a sweep's trials: their statuses (with the
failures their error logs record), error text, last results, and the trials an experiment
state records as ended.

Everything else (launch, search, status, progress, the MLflow tracker) asks this module, so a
trial's status is read one way. It imports only `contract` and `sweeps.spec`: the tracker,
which sits below `sweeps.run`'s launcher, may use it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.outcome import ENDED, Status, ended_outcome, tune_trial_status
from contract.trial import ResultKey, TrialMeta

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec

ERROR_TAIL_LINES = 20
"""Lines of a failed trial's traceback kept in its error text."""


@dataclass
class SweepSummary:
    """What `fit()` left behind, compared with what the spec expects."""

    expected: int
    statuses: Counter = field(default_factory=Counter)

    @property
    def ended(self) -> int:
        return sum(self.statuses[status.value] for status in ENDED)

    @property
    def complete(self) -> bool:
        return self.ended >= self.expected


def tune_retries(spec: SweepSpec) -> int:
    """Tune's retries of a failed trial: Ray Train retries its own workers (`max_failures`
    of its FailureConfig), so Tune retries only trials of the actor executor."""
    return spec.resources.max_failures if spec.resources.trial_executor == "actor" else 0


def tune_trials(experiment_dir: str) -> list[Any]:
    """The Tune trials recorded in a sweep's experiment state (none if it has no state yet)."""
    from ray.tune import ExperimentAnalysis

    try:
        return list(ExperimentAnalysis(experiment_dir).trials)
    except (ValueError, FileNotFoundError):
        return []


def trial_status(trial: Any, tune_retries: int) -> Status:
    """Our status of a Tune trial (`contract.outcome.tune_trial_status`).

    Tune does not save a trial's state again after the failure that exhausts its retries: its
    saved state still says PENDING (waiting for the retry). The trial's error log counts every
    failure, so a pending trial that failed more than `tune_retries` times has failed.
    """
    budget = TrialMeta.of(trial.config).budget
    status = tune_trial_status(trial.status, trial.last_result, budget)
    if status is Status.PENDING and recorded_failures(trial) > tune_retries:
        return Status.FAILED
    return status


def recorded_failures(trial: Any) -> int:
    """How many failures the trial's error log on storage records (0 without one)."""
    filename = trial.run_metadata.error_filename
    if not filename or trial.storage is None:
        return 0
    path = f"{trial.storage.trial_fs_path.rstrip('/')}/{filename}"
    try:
        with trial.storage.storage_filesystem.open_input_stream(path) as stream:
            text = stream.read().decode(errors="replace")
    except (OSError, FileNotFoundError):
        return 0
    return sum(line.startswith("Failure # ") for line in text.splitlines())


def summarise(trials: list[Any], expected: int, tune_retries: int) -> SweepSummary:
    """Count a sweep's Tune trials by status."""
    summary = SweepSummary(expected=expected)
    for trial in trials:
        summary.statuses[trial_status(trial, tune_retries).value] += 1
    return summary


TERMINATED = "TERMINATED"


def ended_trials(experiment_dir: Path, trial_ids: set[str]) -> dict[str, dict]:
    """{trial id: last result} of those `trial_ids` the newest experiment state in
    `experiment_dir` records as TERMINATED (Tune's `experiment_state-<time>.json`)."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not trial_ids or not states:
        return {}
    with open(states[-1]) as handle:
        trial_data = json.load(handle)["trial_data"]
    ended: dict[str, dict] = {}
    for trial_json, run_json in trial_data:
        trial = json.loads(trial_json)
        if trial["trial_id"] in trial_ids and trial["status"] == TERMINATED:
            ended[trial["trial_id"]] = json.loads(run_json).get("last_result") or {}
    return ended


@dataclass(frozen=True)
class ErrorText:
    """A failed trial's error: a one-line summary for a tag, the full text for an artifact."""

    summary: str
    text: str


def error_text(trial: Any) -> ErrorText | None:
    """The last failure Tune recorded for a trial (its error file), or None if there is none."""
    filename = getattr(trial.run_metadata, "error_filename", None)
    if not filename or not trial.local_path:
        return None
    try:
        text = Path(trial.local_path, filename).read_text(errors="replace")
    except OSError:
        return None
    last = text.rsplit("Failure # ", 1)[-1]
    lines = [line for line in last.splitlines() if line.strip()]
    if not lines:
        return None
    exception = next((line for line in reversed(lines) if looks_like_exception(line)), lines[0])
    tail = "\n".join(lines[-ERROR_TAIL_LINES:])
    return ErrorText(summary=exception.strip()[:500], text=f"{exception.strip()}\n\n{tail}\n")


def looks_like_exception(line: str) -> bool:
    """`SomeError: message` (the last line of a Python traceback)."""
    head = line.split(":", 1)[0].strip()
    return ":" in line and head.isidentifier() and head.endswith(("Error", "Exception", "Exit"))


def ended_status(trial: Any, errored: bool) -> tuple[str, str | None]:
    """(our status, checkpoint path) of an ended trial (`contract.outcome.ended_outcome`)."""
    last = trial.last_result or {}
    checkpoint = last.get(ResultKey.CHECKPOINT_PATH)
    status = ended_outcome(errored, last, TrialMeta.of(trial.config).budget)
    return status.value, str(checkpoint) if checkpoint else None
