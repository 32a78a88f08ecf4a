"""MLflow tracking for a sweep: the Ray Tune callback whose hooks record every trial in the
sweep's durable outbox (`sweeps.tracking.outbox`), from which one background thread
(`sweeps.tracking.sender`) writes a parent run per cell, one child run per trial, and the
cell and curve runs that aggregate them.

Ray's stock `MLflowLoggerCallback` opens a new run for every resumed trial and logs at
`training_iteration`; this tracker instead keys every run by the trial's config hash, so a
restored or retried trial re-attaches to its run, and logs each epoch once with
`step = epoch`. Epochs a trial replays from its checkpoint (the `history` it sends on its
first report after a restart) fill in anything the tracker missed while the driver was down.

The hooks run on Tune's thread and only append records to the outbox (no MLflow call, not in
`setup` either): an unreachable or slow tracking server never blocks Tune's event loop.
Every MLflow call runs on the sender thread, at whatever rate MLflow takes records. The outbox
is synced to disk at each snapshot of Tune's experiment state; the callback's own pickled
state is only its settings. At the end of the sweep the hook waits for the outbox to empty,
showing progress, until MLflow has taken nothing for `SPARSESWEEP_MLFLOW_DRAIN_S` (read at
each start); whatever is left waits in the outbox for the next start of the sweep, `resume`
or `sparsesweep sync`, which send it first.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback

from contract.names import DEFAULT_SEARCH_METRIC, EPOCH_METRICS, Tag
from contract.trial import ResultKey
from sweeps.run.tune_state import ENDED_TUNE_STATUSES, ended_status, error_text
from sweeps.spec.storage import OUTBOX_DIR
from sweeps.tracking.outbox import Outbox
from sweeps.tracking.records import (
    TIME,
    end_record,
    epochs_record,
    now_ms,
    pause_record,
    start_record,
    sweep_end_record,
    tags_record,
    trial_hash,
)
from sweeps.tracking.sender import Destination, Sender
from sweeps.tracking.uri import drain_timeout_s

logger = logging.getLogger(__name__)

_SETTINGS = (
    "tracking_uri",
    "experiment_name",
    "artifact_location",
    "spec_file",
    "search_metric",
    "outbox_dir",
)
"""The constructor's arguments: all the callback pickles (Tune keeps it with the Tuner)."""


def epoch_entries(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch metric dicts a Tune result carries: replayed history, then itself (unless
    it is the NaN placeholder of the epoch the trial diverged in)."""
    entries = list(result.get(ResultKey.HISTORY) or ())
    if ResultKey.EPOCH in result and not result.get(ResultKey.DIVERGED):
        entries.append(result)
    return entries


def report_progress(line: str) -> None:
    """Show the end-of-sweep drain's progress on stderr."""
    print(line, file=sys.stderr, flush=True)


class MlflowSweepCallback(Callback):
    """Tune callback that records a sweep in MLflow without losing or repeating a record."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_location: str | None = None,
        spec_file: str | None = None,
        search_metric: str = DEFAULT_SEARCH_METRIC,
        outbox_dir: str | None = None,
    ) -> None:
        self._tracking_uri = tracking_uri
        self._experiment_name = experiment_name
        self._artifact_location = artifact_location
        self._spec_file = spec_file
        self._search_metric = search_metric
        self._outbox_dir = outbox_dir
        self._outbox: Outbox | None = None
        self._sender: Sender | None = None
        self._waiting: list[dict[str, Any]] = []
        self._active = False
        self._resumes: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._steps_tagged: set[str] = set()
        self._started: set[str] = set()
        self._in_flight: set[str] = set()
        """Trials started and not ended in this process: at Ctrl-C Tune marks them TERMINATED
        without an end hook, yet they resume at the next start."""
        self._hashes: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {f"_{name}": getattr(self, f"_{name}") for name in _SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a sweep started by an older version pickled more: only the settings are kept
        self.__init__(**{name: state[f"_{name}"] for name in _SETTINGS if f"_{name}" in state})

    @property
    def outbox_dir(self) -> Path:
        """The sweep's outbox: as given, else `mlflow_outbox/` beside the stored spec."""
        if self._outbox_dir:
            return Path(self._outbox_dir)
        if not self._spec_file:
            raise ValueError("MlflowSweepCallback needs outbox_dir or spec_file")
        return Path(self._spec_file).parent / OUTBOX_DIR

    # ----------------------------------------------------------------- Tune hooks (Tune's thread)
    def setup(self, **info: Any) -> None:
        self._drain_s = drain_timeout_s()  # today's setting, also for a restored sweep
        self._outbox = Outbox(self.outbox_dir)
        for record in self._waiting:
            self._outbox.append(record)
        self._waiting = []
        self._active = False
        destination = Destination(
            self._tracking_uri,
            self._experiment_name,
            self._search_metric,
            self._artifact_location,
            self._spec_file,
        )
        self._sender = Sender(self._outbox, destination)
        self._sender.start()

    def _hash(self, trial: Any) -> str:
        """The trial's config hash (Tune's trial id never changes its config)."""
        found = self._hashes.get(trial.trial_id)
        if found is None:
            found = self._hashes[trial.trial_id] = trial_hash(trial.config)
        return found

    def _append(self, record: dict[str, Any]) -> None:
        if self._outbox is None:  # before setup (a restored sweep's old state)
            self._waiting.append(record)
            return
        self._outbox.append(record)
        self._sender.wake()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._active = True
        record = start_record(trial.config, trial.trial_id, now_ms())
        self._started.add(record["trial"])
        self._in_flight.add(record["trial"])
        self._append(record)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._active = True
        received = now_ms()
        entries = [
            {
                **{key: entry[key] for key in (ResultKey.EPOCH, *EPOCH_METRICS) if key in entry},
                TIME: received,
            }
            for entry in epoch_entries(result)
        ]
        config_hash = self._hash(trial)
        if entries:
            self._append(epochs_record(config_hash, entries))
        self._note_resume(config_hash, result)
        self._note_steps_per_epoch(config_hash, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=True)

    def _end(self, trial: Any, errored: bool) -> None:
        self._active = True
        self._in_flight.discard(self._hash(trial))
        status = ended_status(trial, errored)
        error = error_text(trial) if errored else None
        pair = None if error is None else (error.summary, error.text)
        started = self._hash(trial) in self._started
        record = end_record(trial.config, status, pair, now_ms(), not started)
        self._append(record)

    def get_state(self) -> dict[str, Any] | None:
        """Called at every snapshot of Tune's experiment state: the outbox is synced to disk
        with it. Nothing else to save: the records live in the outbox."""
        if self._outbox is not None:
            self._outbox.sync()
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Tune restores state only a sweep tracked by an older version saved: the records its
        pickled outbox still held go to the outbox."""
        for record in legacy_records(state):
            self._append(record)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Record how the sweep stopped, then wait for MLflow to take the outbox."""
        at = now_ms()
        unended = [
            t
            for t in trials
            if getattr(t, "status", None) not in ENDED_TUNE_STATUSES
            or self._hash(t) in self._in_flight
        ]
        for trial in unended:
            self._append(pause_record(self._hash(trial), at))
        if self._active or unended:  # a re-run that ran nothing changes nothing
            self._append(sweep_end_record(complete=bool(trials) and not unended, at=at))
        self.finish()

    def finish(self) -> int:
        """Wait for MLflow (progress on stderr), stop the sender, release the outbox; returns
        the records still pending."""
        if self._outbox is None or self._sender is None:
            return 0
        self._outbox.sync()
        pending = self._sender.drain(self._drain_s, report_progress)
        self._sender.stop()
        self._outbox.close()
        self._outbox, self._sender = None, None
        if pending:
            logger.warning(
                "MLflow at %s did not take %d records within %g s of the last one it took; "
                "they wait in %s",
                self._tracking_uri,
                pending,
                self._drain_s,
                self.outbox_dir,
            )
        return pending

    def _note_resume(self, config_hash: str, result: dict[str, Any]) -> None:
        """Tag where a restarted attempt resumed and which corrupted checkpoints it skipped."""
        resume = (
            int(result.get(ResultKey.RESUMED_FROM_EPOCH) or 0),
            tuple(result.get(ResultKey.SKIPPED_CHECKPOINTS) or ()),
        )
        if resume == (0, ()) or self._resumes.get(config_hash) == resume:
            return
        self._resumes[config_hash] = resume
        epoch, skipped = resume
        tags = {Tag.RESUMED_FROM_EPOCH: str(epoch)}
        if skipped:
            tags[Tag.SKIPPED_CHECKPOINTS] = "\n".join(
                skipped
            )  # the writer cuts it to MLflow's limit
            logger.warning(
                "trial %s skipped corrupted checkpoints and resumed from epoch %d: %s",
                config_hash,
                epoch,
                "; ".join(skipped),
            )
        self._append(tags_record(config_hash, tags))

    def _note_steps_per_epoch(self, config_hash: str, result: dict[str, Any]) -> None:
        """Tag the trial's optimizer steps per epoch once (the report judges ΔT against it)."""
        steps = result.get(ResultKey.STEPS_PER_EPOCH)
        if steps is None or config_hash in self._steps_tagged:
            return
        self._steps_tagged.add(config_hash)
        self._append(tags_record(config_hash, {ResultKey.STEPS_PER_EPOCH: str(int(steps))}))


def legacy_records(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The unsent items of an older tracker's pickled outbox, as outbox records."""
    records: list[dict[str, Any]] = []
    configs = state.get("configs", {})
    at = now_ms()
    for trial_id, items in state.get("outbox", {}).items():
        config = configs.get(trial_id)
        if config is None:
            continue
        config_hash = trial_hash(config)
        for kind, payload in items:
            if kind == "start":
                records.append(start_record(config, trial_id, at))
            elif kind == "epochs":
                entries = [
                    {**{k: v for k, v in e.items() if k != "timestamp"}, TIME: e["timestamp"]}
                    for e in payload
                ]
                records.append(epochs_record(config_hash, entries))
            elif kind == "tags":
                records.append(tags_record(config_hash, dict(payload)))
            elif kind == "end":
                status, _, error = payload  # (status, checkpoint path, error)
                pair = None if error is None else (error.summary, error.text)
                records.append(end_record(config, str(status), pair, at))
    return records
