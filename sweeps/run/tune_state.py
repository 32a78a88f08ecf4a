"""The one reader of what Ray Tune saved about a sweep's trials: their statuses (with the
failures their error logs record), error text, last results, the trials an experiment state
records as ended, and its snapshot files (the newest one's size; older ones pruned).

Everything else (launch, search, status, progress, the MLflow tracker) asks this module, so a
trial's status is read one way. It imports only `contract` and `sweeps.spec`: the tracker,
which sits below `sweeps.run`'s launcher, may use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.outcome import Status, ended_outcome, tune_trial_status
from contract.trial import TrialMeta
from sweeps.spec.storage import is_remote

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec

ERROR_TAIL_LINES = 20
"""Lines of a failed trial's traceback kept in its error text."""


def tune_retries(spec: SweepSpec) -> int:
    """Tune's retries of a failed trial: Ray Train retries its own workers (`max_failures`
    of its FailureConfig), so Tune retries only trials of the actor executor."""
    return spec.resources.max_failures if spec.resources.trial_executor == "actor" else 0


def tune_trials(experiment_dir: str) -> list[Any]:
    """The Tune trials recorded in a sweep's experiment state (none if it has no state yet),
    without their result files: Tune's `ExperimentAnalysis` would also load every trial's
    results into a DataFrame (2 GB and half a minute at 12,800 trials), which no status needs."""
    from ray.tune import ExperimentAnalysis

    class TrialsOnly(ExperimentAnalysis):
        def _fetch_trial_dataframes(self) -> dict:
            return {}

    try:
        return list(TrialsOnly(experiment_dir).trials)
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


TERMINATED = "TERMINATED"
ENDED_TUNE_STATUSES = (TERMINATED, "ERROR")
"""The statuses Tune gives a trial that will not run again in this experiment."""
STATE_PREFIX = "experiment_state-"
SESSION_FILES: tuple[tuple[str, str], ...] = (
    (STATE_PREFIX, ".json"),
    ("searcher-state-", ".pkl"),
    ("search_gen_state-", ".json"),
    ("callback-states-", ".pkl"),
)
"""(prefix, suffix) of the files each driver start of a Tune experiment writes, named after
that start's time (`<prefix><YYYY-mm-dd_HH-MM-SS><suffix>`); Tune restores from the newest."""


def _session_files(experiment_dir: str) -> tuple[Any, dict[str, list[str]]]:
    """(filesystem, {session: its snapshot files' paths}) of a local or remote experiment."""
    import pyarrow.fs

    target = (
        experiment_dir if is_remote(experiment_dir) else Path(experiment_dir).resolve().as_uri()
    )
    filesystem, root = pyarrow.fs.FileSystem.from_uri(target)
    selector = pyarrow.fs.FileSelector(root, allow_not_found=True, recursive=False)
    sessions: dict[str, list[str]] = {}
    for info in filesystem.get_file_info(selector):
        for prefix, suffix in SESSION_FILES:
            if info.base_name.startswith(prefix) and info.base_name.endswith(suffix):
                session = info.base_name[len(prefix) : -len(suffix)]
                sessions.setdefault(session, []).append(info.path)
    return filesystem, sessions


def newest_state_size(experiment_dir: str) -> int:
    """Bytes of the newest experiment-state snapshot (0 without one)."""
    filesystem, sessions = _session_files(experiment_dir)
    states = [
        path
        for session in sessions.values()
        for path in session
        if path.rsplit("/", 1)[-1].startswith(STATE_PREFIX)
    ]
    if not states:
        return 0
    return int(filesystem.get_file_info(max(states)).size or 0)


def prune_old_states(experiment_dir: str) -> int:
    """Delete the snapshot files of every driver start older than the one Tune restores from
    (each start writes a full copy of the experiment state); returns how many were deleted."""
    filesystem, sessions = _session_files(experiment_dir)
    with_state = [
        session
        for session, paths in sessions.items()
        if any(path.rsplit("/", 1)[-1].startswith(STATE_PREFIX) for path in paths)
    ]
    if not with_state:
        return 0
    newest = max(with_state)
    deleted = 0
    for session, paths in sessions.items():
        if session < newest:
            for path in paths:
                filesystem.delete_file(path)
                deleted += 1
    return deleted


def ended_trials(experiment_dir: Path, trial_ids: set[str]) -> dict[str, dict]:
    """{trial id: last result} of those `trial_ids` the newest experiment state in
    `experiment_dir` records as TERMINATED (Tune's `experiment_state-<time>.json`)."""
    states = sorted(experiment_dir.glob(f"{STATE_PREFIX}*.json"))
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


def ended_status(trial: Any, errored: bool) -> str:
    """Our status of an ended trial (`contract.outcome.ended_outcome`)."""
    last = trial.last_result or {}
    return ended_outcome(errored, last, TrialMeta.of(trial.config).budget).value
