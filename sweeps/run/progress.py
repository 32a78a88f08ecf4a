"""The sweep's bookkeeping callback in every Tune experiment (shard): trial index and progress.

Each of Tune's hooks records the trial's new status in the sweep's ledger (`sweeps.run.display`,
O(1): nothing on Tune's thread goes over all trials, per step or per trial) and queues it for
the shard's trial index (`sweeps.run.trial_index`), written when Tune snapshots its experiment
state (`get_state`). When an experiment starts, its restored trials are read once, so the
ledger and the index say what Tune's restored state says.

The display mode comes from the environment (`PROGRESS_ENV`, set by `launch.run_sweep`)
rather than the callback: Tune restores a resumed sweep's callbacks from its first start,
so only the environment reflects the command running now.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace
from typing import Any

from ray.tune import Callback

from contract.outcome import ENDED, Status, ended_outcome
from contract.trial import ResultKey, TrialMeta
from sweeps.run.display import MODES, PROGRESS_ENV, Mode, SweepProgress, sweep_progress
from sweeps.run.ledger import TrialEntry
from sweeps.run.shards import shard_dir, sweep_dir_of
from sweeps.run.status import tune_entries
from sweeps.run.trial_index import IndexWriter, read_index
from sweeps.spec.load import read_spec_file
from sweeps.spec.schema import SweepSpec


class RichProgressCallback(Callback):
    """The sweep's bookkeeping and display in one Tune experiment (see the module docstring);
    its only state is the spec file the sweep runs under and its shard number."""

    def __init__(self, spec_file: str, shard: int = 0) -> None:
        self._spec_file = spec_file
        self._shard = shard
        self._spec: SweepSpec | None = None
        self._progress: SweepProgress | None = None
        self._writer: IndexWriter | None = None
        self._stored: list[TrialEntry] = []
        self._reconciled = False
        self._in_flight: set[str] = set()
        """Tune ids of the trials started and not ended (nor failed over) in this process."""

    def __getstate__(self) -> dict[str, Any]:
        return {"_spec_file": self._spec_file, "_shard": self._shard}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_spec_file"], state.get("_shard", 0))

    def setup(self, **info: Any) -> None:
        mode = os.environ.get(PROGRESS_ENV, "off")
        chosen: Mode = mode if mode in MODES else "off"  # type: ignore[assignment]
        self._spec = read_spec_file(self._spec_file)
        if self._spec is None:
            return
        experiment_dir = shard_dir(sweep_dir_of(self._spec_file), self._shard)
        stored = read_index(experiment_dir)
        self._writer = IndexWriter(experiment_dir, stored)
        self._progress = sweep_progress(self._spec_file, self._spec, chosen, self._shard)
        self._stored = list((stored or {}).values())
        self._progress.ledger.record_all(self._stored)
        self._reconciled = False
        self._acknowledge_interrupts()

    # ----------------------------------------------------------------- Tune hooks
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._progress is None:
            return
        if not self._reconciled:
            checkpointed = self._reconcile(trials)
            self._progress.begin(checkpointed)
            return
        self._progress.refresh()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._in_flight.add(trial.trial_id)
        self._note(trial, Status.RUNNING)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._in_flight.discard(trial.trial_id)
        self._note(trial, Status.PENDING)  # failed within its retries: Tune starts it again

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        budget = TrialMeta.of(trial.config).budget
        self._ended(trial, ended_outcome(False, trial.last_result, budget))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, Status.FAILED)

    def get_state(self) -> None:
        """Tune is snapshotting its experiment state: write the trial index to match."""
        if self._writer is not None:
            self._writer.flush()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The experiment stopped: a trial still unended (in flight at Ctrl-C) waits for the
        next start, so the index, `status` and the summary say pending, not running."""
        if self._progress is not None:
            for trial in trials:  # Tune marks them TERMINATED at Ctrl-C, without an end hook
                if trial.trial_id in self._in_flight:
                    self._record(self._entry(trial, Status.PENDING))
            self._in_flight.clear()
        if self._writer is not None:
            self._writer.flush()
        if self._progress is not None:
            self._progress.refresh(force=True)
            self._progress.pause()

    # ----------------------------------------------------------------- internals
    def _acknowledge_interrupts(self) -> None:
        """Chain Tune's Ctrl-C handler (installed before the callbacks' setup) so the display
        says at once what stopping keeps; Tune then stops the trials and saves its state."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler) or getattr(tune_handler, "_acknowledges", False):
            return
        progress = self._progress

        def acknowledge(signum: int, frame: Any) -> None:
            if progress is not None and not progress.interrupted:
                progress.interrupt()
            tune_handler(signum, frame)

        acknowledge._acknowledges = True  # type: ignore[attr-defined]
        signal.signal(signal.SIGINT, acknowledge)

    def _reconcile(self, trials: list) -> int:
        """Once per driver start: take what Tune restored (a trial the index knows but Tune's
        snapshot does not was handed out after it: pending until handed out again); returns
        how many unfinished trials continue from a checkpoint (they reported an epoch)."""
        assert self._spec is not None
        self._reconciled = True
        restored = tune_entries(self._spec, trials)
        for entry in restored:
            self._record(entry)
        known = {entry.config_hash for entry in restored}
        for entry in self._stored:
            if entry.config_hash not in known:
                self._record(replace(entry, status=Status.PENDING))
        # a trial stopped in flight reported a value (an epoch, so a checkpoint) and waits
        checkpointed = {
            entry.config_hash
            for entry in self._stored
            if entry.status is Status.PENDING and entry.value is not None
        } | {
            entry.config_hash
            for trial, entry in zip(trials, restored, strict=True)
            if entry.status not in ENDED and (trial.last_result or {}).get(ResultKey.EPOCH)
        }
        self._stored = []
        return len(checkpointed)

    def _entry(self, trial: Any, status: Status) -> TrialEntry:
        assert self._spec is not None
        return TrialEntry.of(
            TrialMeta.of(trial.config), status, trial.last_result, self._spec.search.metric
        )

    def _record(self, entry: TrialEntry) -> bool:
        """Note a trial's status in the ledger and the index; False when it is not new."""
        assert self._progress is not None and self._writer is not None
        if not self._progress.record(entry):
            return False
        self._writer.add(entry)
        return True

    def _note(self, trial: Any, status: Status) -> None:
        if self._progress is not None:
            self._record(self._entry(trial, status))

    def _ended(self, trial: Any, status: Status) -> None:
        """A trial ended: one line for it (with its own count) when its end is news; after
        Ctrl-C an unfinished trial waits (pending) for the next start, as `status` says."""
        self._in_flight.discard(trial.trial_id)
        if self._progress is None:
            return
        if self._progress.interrupted and status in (Status.STOPPED, Status.FAILED):
            status = Status.PENDING  # stopped by the interrupt, not by the scheduler or a bug
        entry = self._entry(trial, status)
        if self._record(entry) and status is not Status.PENDING:
            self._progress.ended_line(entry)
        self._progress.refresh()
