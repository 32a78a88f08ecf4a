"""MLflow tracking for a sweep: a parent run per cell, one child run per trial, exactly once,
and the cell and curve runs that aggregate them (`sweeps.tracking.aggregates`).

Ray's stock `MLflowLoggerCallback` opens a new run for every resumed trial and logs at
`training_iteration`; this callback instead keys every run by the trial's config hash, so a
restored or retried trial re-attaches to its run, and logs each epoch once with
`step = epoch`. Epochs a trial replays from its checkpoint (the `history` it sends on its
first report after a restart) fill in anything the tracker missed while the driver was down.

Every MLflow call runs on one background sender thread fed by an outbox the Tune hooks append
to: an unreachable tracking server (whose client retries each call for minutes) never blocks
Tune's event loop, which would stall every trial at its next report. A trial's outbox is sent
in order and an item leaves it only once MLflow has taken it. Metrics carry the time Tune
received them, so a resent batch is deduplicated by the store, and epochs MLflow already has
are skipped, so a replay never duplicates a step. The outbox is part of the callback's Tune
state: what is still unsent when the sweep stops (after `DRAIN_TIMEOUT_S` more of retries) is
sent when the sweep is resumed.

Aggregates: the hooks also keep, per trial, what the dashboard's aggregates need (with the
callback's state, so a restored sweep has them). The sender thread, after a trial's end, tags
its cell run with the cell's progress and, once the cell's trials have all ended, writes the
cell's per-epoch seed means and its curve points (`step = budget`); what MLflow already holds
is read back and compared, so a resumed sweep or a resent update never writes a step twice, and
values that changed (a sweep extended with more seeds or lrs) replace the run that held them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ray.tune import Callback

from contract.names import DEFAULT_SEARCH_METRIC, EPOCH_METRICS, Role, Tag
from contract.outcome import MLFLOW_RUN_STATUS, Status
from contract.trial import ResultKey, TrialMeta, train_payload
from sweeps.run.tune_state import ended_status, error_text
from sweeps.spec.storage import read_text
from sweeps.tracking.aggregates import TrialRecords, cell_metrics, curve_points
from sweeps.tracking.runs import (
    cell_run_name,
    cell_tags,
    curve_run_name,
    curve_tags,
    experiment_note,
    flatten,
    run_identity,
    source_tags,
    trial_run_name,
    trial_tags,
)
from sweeps.tracking.uri import DRAIN_TIMEOUT_S, is_server, probe_server

logger = logging.getLogger(__name__)

WITNESS_METRIC = "train_loss"
CELL_WITNESS = "test_acc1_mean"
"""The aggregate a cell run logs with all the others: its history says what was logged."""
CURVE_WITNESSES: dict[str, str] = {
    "test_acc1": "test_acc1_mean",
    "diff_vs_baseline": "diff_vs_baseline_mean",
}
"""Curve-run metric families (by prefix), each logged together, and the key that witnesses it."""
ERROR_TAG = "sparsesweep.error"
NOTE_TAG = "mlflow.note.content"
_AGGREGATE_TOLERANCE = 1e-9
RETRY_INTERVAL_S = 5.0
"""How often the sender retries while the tracking server is unreachable."""
COALESCE_S = 0.5
"""How long the sender lets records gather after a wake-up, so that several epochs of a trial
go in one `log_batch` (each MLflow call is a database transaction or an HTTP request)."""
_BATCH_LIMIT = 900
_SEARCH_PAGE = 10_000
_TAG_LIMIT = 5000
_REJECTED_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"}
)


def epoch_entries(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The per-epoch metric dicts a Tune result carries: replayed history, then itself (unless
    it is the NaN placeholder of the epoch the trial diverged in)."""
    yield from result.get(ResultKey.HISTORY) or ()
    if ResultKey.EPOCH in result and not result.get(ResultKey.DIVERGED):
        yield result


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_INIT_PARAMS = (
    "tracking_uri",
    "experiment_name",
    "artifact_location",
    "git_commit",
    "spec_file",
    "drain_timeout_s",
    "search_metric",
)


_TRANSIENT = frozenset(
    {
        "_client",
        "_lock",
        "_wake",
        "_stop",
        "_sender",
        "_known_runs",
        "_running_cells",
        "_fresh_runs",
        "_unlogged_params",
    }
)
"""Attributes not pickled: the client and threads, and what a restored tracker re-reads from
MLflow (`__setstate__` gives them their `__init__` values)."""


class MlflowSweepCallback(Callback):
    """Tune callback that records a sweep in MLflow without duplicate runs or steps."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_location: str | None = None,
        git_commit: str = "unknown",
        spec_file: str | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        search_metric: str = DEFAULT_SEARCH_METRIC,
    ) -> None:
        self._tracking_uri = tracking_uri
        self._experiment_name = experiment_name
        self._search_metric = search_metric
        self._artifact_location = artifact_location
        self._git_commit = git_commit
        self._spec_file = spec_file
        self._drain_timeout_s = drain_timeout_s
        self._spec_text: str | None = None
        self._client: Any = None
        self._experiment_id: str | None = None
        self._trial_runs: dict[str, str] = {}
        self._cell_runs: dict[str, str] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._outbox: dict[str, list[tuple[str, Any]]] = {}
        self._cells_to_end = False
        self._resumes: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._logged_epochs: dict[str, set[int]] = {}
        self._steps_tagged: set[str] = set()
        self._records = TrialRecords(search_metric)
        self._dirty_cells: set[str] = set()
        self._curve_runs: dict[tuple, str] = {}
        self._aggregates_logged: dict[str, dict[str, dict[int, float]]] = {}
        self._note: str | None = None
        self._known_runs: dict[tuple[str, ...], str] | None = None
        self._running_cells: set[str] = set()
        self._fresh_runs: set[str] = set()
        self._unlogged_params: dict[str, dict[str, str]] = {}
        self._failing_since: float | None = None
        self._init_threading()

    def _init_threading(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name not in _TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # built afresh, then the pickled attributes it still has: a sweep pickled by an older
        # version restores with defaults for the attributes added since
        self.__init__(**{name: state[f"_{name}"] for name in _INIT_PARAMS if f"_{name}" in state})
        self.__dict__.update(
            {name: value for name, value in state.items() if name in self.__dict__}
        )

    @property
    def client(self) -> Any:
        """A lazily created `MlflowClient` (not pickled with the callback)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._tracking_uri)
        return self._client

    # ----------------------------------------------------------------- Tune hooks (Tune's thread)
    def setup(self, **info: Any) -> None:
        if self._spec_file:
            self._spec_text = read_text(self._spec_file)
            self._follow_spec()
        self.experiment_id()
        self._start_sender()

    def _follow_spec(self) -> None:
        """Read the spec the sweep runs under now (an extension may have grown it): how many
        trials a cell runs, and the experiment's description."""
        from sweeps.spec.load import read_spec_file

        spec = read_spec_file(self._spec_file) if self._spec_file else None
        if spec is None:
            return
        finals = len(spec.second_stage.seeds) if spec.second_stage else 0
        self._records.expected_per_cell = spec.search.n_trials * len(spec.grid.seeds) + finals
        factors = {
            "workloads": list(spec.workloads),
            "arms": spec.grid.arms,
            "sparsities": spec.grid.sparsities,
            "budgets (epochs)": spec.grid.budgets,
            "seeds": spec.grid.seeds,
        }
        self._note = experiment_note(spec.name, factors, spec.search.metric)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._post(trial, "start", trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        received = int(time.time() * 1000)
        entries = [
            {
                **{key: entry[key] for key in (ResultKey.EPOCH, *EPOCH_METRICS) if key in entry},
                "timestamp": received,
            }
            for entry in epoch_entries(result)
        ]
        if entries:
            with self._lock:
                self._records.add_epochs(trial.trial_id, trial.config, entries)
            self._post(trial, "epochs", entries)
        self._note_resume(trial, result)
        self._note_steps_per_epoch(trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=True)

    def _end(self, trial: Any, errored: bool) -> None:
        """Record how the trial ended, mark its cell for aggregation, and queue its run's end."""
        status, checkpoint = ended_status(trial, errored)
        error = error_text(trial) if errored else None
        with self._lock:
            record = self._records.end(trial.trial_id, trial.config, status)
            self._dirty_cells.add(record.meta["cell"])
        self._post(trial, "end", (status, checkpoint, error))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        with self._lock:
            self._cells_to_end = True
            statuses = [getattr(trial, "status", None) for trial in trials]
            if statuses and all(status in ("TERMINATED", "ERROR") for status in statuses):
                self._records.sweep_ended = True
                self._dirty_cells.update(r.meta["cell"] for r in self._records.records.values())
        self._start_sender()
        if not self.drain(self._drain_timeout_s):
            epochs, others, pending_trials = self._unsent()
            logger.warning(
                "MLflow at %s did not take %d epoch records and %d run updates of %d trials "
                "within %g s after the sweep stopped. They are kept in the sweep's saved state "
                "and sent when the sweep is resumed (`sparsesweep resume %s`, or the same run "
                "command); every trial's checkpoints also hold its full metric history.",
                self._tracking_uri,
                epochs,
                others,
                pending_trials,
                self._drain_timeout_s,
                self._experiment_name,
            )
        self._stop.set()
        self._wake.set()

    def get_state(self) -> dict[str, Any]:
        with self._lock:
            outbox = {trial_id: list(items) for trial_id, items in self._outbox.items() if items}
            return {
                "trial_runs": dict(self._trial_runs),
                "cell_runs": dict(self._cell_runs),
                "configs": {trial_id: self._configs[trial_id] for trial_id in outbox},
                "outbox": outbox,
                "cells_to_end": self._cells_to_end,
                "records": dict(self._records.records),
                "dirty_cells": sorted(self._dirty_cells),
                "curve_runs": dict(self._curve_runs),
            }

    def set_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._trial_runs = dict(state.get("trial_runs", {}))
            self._cell_runs = dict(state.get("cell_runs", {}))
            self._configs = dict(state.get("configs", {}))
            self._outbox = {key: list(items) for key, items in state.get("outbox", {}).items()}
            self._cells_to_end = bool(state.get("cells_to_end", False))
            self._records.records = dict(state.get("records", {}))
            self._dirty_cells = set(state.get("dirty_cells", ()))
            self._curve_runs = dict(state.get("curve_runs", {}))

    # ----------------------------------------------------------------- outbox
    def drain(self, timeout_s: float) -> bool:
        """Wake the sender and wait up to `timeout_s` for an empty outbox; True if it emptied."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._unsent() == (0, 0, 0):
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.1)

    def _post(self, trial: Any, kind: str, payload: Any) -> None:
        with self._lock:
            self._configs.setdefault(trial.trial_id, trial.config)
            self._outbox.setdefault(trial.trial_id, []).append((kind, payload))
        self._wake.set()

    def _note_resume(self, trial: Any, result: dict[str, Any]) -> None:
        """Tag where a restarted attempt resumed and which corrupted checkpoints it skipped."""
        resume = (
            int(result.get(ResultKey.RESUMED_FROM_EPOCH) or 0),
            tuple(result.get(ResultKey.SKIPPED_CHECKPOINTS) or ()),
        )
        if resume == (0, ()) or self._resumes.get(trial.trial_id) == resume:
            return
        self._resumes[trial.trial_id] = resume
        epoch, skipped = resume
        tags = {Tag.RESUMED_FROM_EPOCH: str(epoch)}
        if skipped:
            tags[Tag.SKIPPED_CHECKPOINTS] = "\n".join(skipped)[:_TAG_LIMIT]
            logger.warning(
                "trial %s skipped corrupted checkpoints and resumed from epoch %d: %s",
                trial.trial_id,
                epoch,
                "; ".join(skipped),
            )
        self._post(trial, "tags", tags)

    def _note_steps_per_epoch(self, trial: Any, result: dict[str, Any]) -> None:
        """Tag the trial's optimizer steps per epoch once (the report judges ΔT against it)."""
        steps = result.get(ResultKey.STEPS_PER_EPOCH)
        if steps is None or trial.trial_id in self._steps_tagged:
            return
        self._steps_tagged.add(trial.trial_id)
        self._post(trial, "tags", {ResultKey.STEPS_PER_EPOCH: str(int(steps))})

    def _unsent(self) -> tuple[int, int, int]:
        """(epoch records, other updates, trials) still in the outbox, counting cell ends."""
        with self._lock:
            items = [item for queue in self._outbox.values() for item in queue]
            trials = sum(1 for queue in self._outbox.values() if queue)
            epochs = sum(len(payload) for kind, payload in items if kind == "epochs")
            others = len(items) - sum(1 for kind, _ in items if kind == "epochs")
            others += len(self._dirty_cells)
            return epochs, others + (len(self._cell_runs) if self._cells_to_end else 0), trials

    # ----------------------------------------------------------------- sender thread
    def _start_sender(self) -> None:
        self._stop.clear()
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(
                target=self._send_loop, name="mlflow-sweep-sender", daemon=True
            )
            self._sender.start()

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RETRY_INTERVAL_S)
            self._stop.wait(COALESCE_S)
            self._wake.clear()
            try:
                if is_server(self._tracking_uri):
                    probe_server(self._tracking_uri)  # one quick probe, not minutes of retries
                self._send_all()
            except Exception as error:  # any tracking failure must not stop training
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    epochs, others, _ = self._unsent()
                    logger.warning(
                        "MLflow at %s failed (%s); training goes on, %d epoch records and %d "
                        "run updates are buffered and retried every %.0f s",
                        self._tracking_uri,
                        error,
                        epochs,
                        others,
                        RETRY_INTERVAL_S,
                    )
                continue
            if self._failing_since is not None:
                logger.warning(
                    "MLflow at %s is reachable again after %.0f s; the buffered records are sent",
                    self._tracking_uri,
                    time.monotonic() - self._failing_since,
                )
                self._failing_since = None

    def _send_all(self) -> None:
        """Send every trial's outbox in order, then end the cell runs if the sweep ended."""
        with self._lock:
            pending = [trial_id for trial_id, queue in self._outbox.items() if queue]
        for trial_id in pending:
            while True:
                with self._lock:
                    queue = self._outbox.get(trial_id)
                    if not queue:
                        break
                    kind = queue[0][0]
                    count = 1
                    if kind == "epochs":
                        while count < len(queue) and queue[count][0] == "epochs":
                            count += 1
                    items = queue[:count]
                    config = self._configs[trial_id]
                try:
                    self._send(trial_id, config, kind, [payload for _, payload in items])
                except Exception as error:
                    if not _rejected(error):
                        raise
                    logger.error(
                        "MLflow rejected the %s update of trial %s (%s); it is dropped",
                        kind,
                        trial_id,
                        error,
                    )
                with self._lock:
                    del self._outbox[trial_id][:count]
                    if not self._outbox[trial_id] and trial_id in self._trial_runs:
                        del self._outbox[trial_id]
                        self._configs.pop(trial_id, None)
        with self._lock:
            dirty = sorted(self._dirty_cells)
        for cell in dirty:
            self._aggregate(cell)
            with self._lock:
                self._dirty_cells.discard(cell)
        with self._lock:
            cells_to_end, cell_runs = self._cells_to_end, list(self._cell_runs.values())
        if cells_to_end:
            for run_id in cell_runs:
                self.client.set_terminated(run_id, "FINISHED")
            self._running_cells.clear()
            with self._lock:
                self._cells_to_end = False

    def _send(self, trial_id: str, config: dict[str, Any], kind: str, payloads: list[Any]) -> None:
        run_id = self._attach(trial_id, config)
        if kind == "start":
            if run_id not in self._fresh_runs:  # a re-attached run: running again
                self.client.update_run(run_id, status="RUNNING")
            self._set_tags(run_id, {Tag.STATUS: Status.RUNNING.value, Tag.RAY_TRIAL_ID: trial_id})
            meta = TrialMeta.of(config)
            if meta.cell not in self._running_cells:
                self.client.update_run(self._cell_run(meta), status="RUNNING")
                self._running_cells.add(meta.cell)
        elif kind == "tags":
            self._set_tags(run_id, {k: v for payload in payloads for k, v in payload.items()})
        elif kind == "epochs":
            self._log_epochs(run_id, [entry for payload in payloads for entry in payload])
        elif kind == "end":
            (status, checkpoint_path, error), *_ = payloads
            status = Status(status)
            tags = {Tag.STATUS: status.value}
            if checkpoint_path:
                tags[Tag.CHECKPOINT_PATH] = checkpoint_path
            if error:
                tags[ERROR_TAG] = error.summary
                self.client.log_text(run_id, error.text, "error.txt")
            self._set_tags(run_id, tags)
            self.client.set_terminated(run_id, MLFLOW_RUN_STATUS[status])
        else:
            raise ValueError(f"unknown outbox item {kind!r}")

    def experiment_id(self) -> str:
        """The sweep's experiment, created on first use with an explicit artifact location."""
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self._experiment_name)
            if found is None:
                self._experiment_id = self.client.create_experiment(
                    self._experiment_name,
                    artifact_location=self._artifact_location,
                    tags={Tag.SWEEP: self._experiment_name},
                )
            else:
                self._experiment_id = found.experiment_id
            self.client.set_experiment_tag(
                self._experiment_id, Tag.SEARCH_METRIC, self._search_metric
            )
            if self._note:
                self.client.set_experiment_tag(self._experiment_id, NOTE_TAG, self._note)
        return self._experiment_id

    def _runs_by_identity(self) -> dict[tuple[str, ...], str]:
        """(role, identity...) -> run id of the experiment's trial, cell and curve runs, read in
        one paged search the first time (a restored sweep re-attaches to them; a new run needs
        no search). A trial is its config hash, a cell its id, a curve its factors."""
        if self._known_runs is None:
            known: dict[tuple[str, ...], str] = {}
            token = None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id()], max_results=_SEARCH_PAGE, page_token=token
                )
                for run in page:
                    identity = run_identity(run.data.tags)
                    if identity is not None:
                        known.setdefault(identity, run.info.run_id)
                token = page.token
                if not token:
                    break
            self._known_runs = known
        return self._known_runs

    def _cell_run(self, meta: TrialMeta) -> str:
        run_id = self._cell_runs.get(meta.cell)
        if run_id is None:
            identity = run_identity(cell_tags(meta))
            run_id = self._runs_by_identity().get(identity) or self._create_cell_run(meta)
        with self._lock:
            self._cell_runs[meta.cell] = run_id
        return run_id

    def _attach(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's run id: remembered, found by config hash, or newly created."""
        run_id = self._trial_runs.get(trial_id)
        if run_id is not None:
            return run_id
        meta, train = TrialMeta.of(config), train_payload(config)
        run_id = self._runs_by_identity().get((Role.TRIAL, meta.config_hash))
        if run_id is None:
            tags = {**source_tags(self._git_commit), **trial_tags(meta, train, self._git_commit)}
            tags[Tag.PARENT] = self._cell_run(meta)
            tags[Tag.RAY_TRIAL_ID] = trial_id
            run = self.client.create_run(
                self.experiment_id(), run_name=trial_run_name(meta), tags=tags
            )
            run_id = run.info.run_id
            self._fresh_runs.add(run_id)
            self._runs_by_identity()[(Role.TRIAL, meta.config_hash)] = run_id
            from mlflow.entities import Param

            params = [Param(key, value[:6000]) for key, value in flatten(train).items()]
            for chunk in _chunks(params, 100):
                self.client.log_batch(run_id, params=chunk)
            self.client.log_dict(run_id, config, "trial_config.json")
            self._logged_epochs[run_id] = set()
        with self._lock:
            self._trial_runs[trial_id] = run_id
        return run_id

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set several tags in one call."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v[:_TAG_LIMIT]) for k, v in tags.items()])

    def _create_cell_run(self, meta: TrialMeta) -> str:
        """A new cell run: its factors as tags and params, the source tags, the sweep's spec."""
        from mlflow.entities import Param

        tags = {**source_tags(self._git_commit), **cell_tags(meta)}
        run = self.client.create_run(self.experiment_id(), run_name=cell_run_name(meta), tags=tags)
        run_id = run.info.run_id
        self._runs_by_identity()[run_identity(tags)] = run_id
        self._aggregates_logged[f"{run_id}/{CELL_WITNESS}"] = {}  # a new run holds nothing
        params = [Param(k, v) for k, v in cell_tags(meta).items() if k != Tag.ROLE]
        self.client.log_batch(run_id, params=params)
        if self._spec_text:
            self.client.log_text(run_id, self._spec_text, "sweep_spec.yaml")
        return run_id

    # ----------------------------------------------------------------- aggregates (sender thread)
    def _aggregate(self, cell: str) -> None:
        """Tag the cell run with the cell's progress; once complete, log its aggregates and
        its group's curve points (`sweeps.tracking.aggregates`)."""
        with self._lock:
            members = self._records.in_cell(cell)
            progress = self._records.progress(cell)
        if not members:
            return
        meta = TrialMeta.from_dict(members[0].meta)
        run_id = self._cell_run(meta)
        tags = {
            "sparsesweep.trials_ended": str(progress.ended),
            "sparsesweep.trials_expected": str(progress.expected),
        }
        if progress.best_lr is not None:
            tags["lr"] = f"{progress.best_lr:.6g}"
        if not progress.complete:
            self._set_tags(run_id, tags)
            return
        with self._lock:
            metrics = cell_metrics(self._records, cell)
            group = self._records.group_of(members[0])
            points = curve_points(self._records, self._records.complete_cells(group))
        if metrics:
            run_id, tags = self._log_cell(meta, run_id, metrics, tags)
        if tags:
            self._set_tags(run_id, tags)
        for (*curve, budget), values in points.items():
            self._log_curve_point(tuple(curve), budget, values)

    def _log_cell(
        self,
        meta: TrialMeta,
        run_id: str,
        metrics: dict[int, dict[str, float]],
        tags: dict[str, str],
    ) -> tuple[str, dict[str, str]]:
        """Log a complete cell's per-epoch aggregates once, with `tags` in the same batch;
        replace the run if they changed. Returns the cell run's id (a new one if replaced)
        and the tags still to set (none if they went with the metrics)."""
        logged = self._logged_history(run_id, CELL_WITNESS)
        wanted = {
            epoch: values[CELL_WITNESS]
            for epoch, values in metrics.items()
            if CELL_WITNESS in values
        }
        if logged and not _same(logged, wanted):
            run_id = self._replace_cell_run(meta, run_id)
            logged = {}
        if logged:
            return run_id, tags
        self._log_metrics(run_id, metrics, tags)
        self._aggregates_logged[f"{run_id}/{CELL_WITNESS}"] = wanted
        return run_id, {}

    def _log_curve_point(self, curve: tuple, budget: int, values: dict[str, float]) -> None:
        """Log one budget's point on its curve run, each metric family once per step; a family
        whose logged value changed replaces the run with every point it should hold."""
        run_id = self._curve_run(curve)
        new: dict[str, float] = {}
        for prefix, witness in CURVE_WITNESSES.items():
            family = {k: v for k, v in values.items() if k.startswith(prefix)}
            if witness not in family:
                continue
            logged = self._logged_history(run_id, witness)
            if budget in logged and _same({budget: logged[budget]}, {budget: family[witness]}):
                continue
            if budget in logged:  # the replacement logs every current point, this one included
                self._replace_curve_run(curve, run_id)
                return
            new.update(family)
        if new:  # the families not logged yet, in one batch
            self._log_metrics(run_id, {budget: new})
            for witness in CURVE_WITNESSES.values():
                if witness in new:
                    self._logged_history(run_id, witness)[budget] = new[witness]

    def _curve_run(self, curve: tuple) -> str:
        """The curve run of (workload, dataset, model, method, arm, sparsity), found or created."""
        from analysis.dashboard import CURVE_KEY

        run_id = self._curve_runs.get(curve)
        if run_id is None:
            factors = dict(zip(CURVE_KEY, curve, strict=True))
            identity = run_identity(curve_tags(factors))
            run_id = self._runs_by_identity().get(identity) or self._create_curve_run(factors)
            with self._lock:
                self._curve_runs[curve] = run_id
        return run_id

    def _create_curve_run(self, factors: dict[str, Any]) -> str:
        """A new curve run; its factors go in as params with its first point's batch."""
        tags = {**source_tags(self._git_commit), **curve_tags(factors)}
        run = self.client.create_run(
            self.experiment_id(), run_name=curve_run_name(factors), tags=tags
        )
        run_id = run.info.run_id
        self._runs_by_identity()[run_identity(tags)] = run_id
        self._unlogged_params[run_id] = {
            k: v for k, v in curve_tags(factors).items() if k != Tag.ROLE
        }
        for witness in CURVE_WITNESSES.values():  # a new run holds nothing
            self._aggregates_logged[f"{run_id}/{witness}"] = {}
        return run_id

    def _replace_curve_run(self, curve: tuple, old: str) -> str:
        """Delete a curve run whose values changed and log every current point on a new one."""
        from analysis.dashboard import CURVE_KEY

        self.client.delete_run(old)
        for witness in CURVE_WITNESSES.values():
            self._aggregates_logged.pop(f"{old}/{witness}", None)
        factors = dict(zip(CURVE_KEY, curve, strict=True))
        run_id = self._create_curve_run(factors)
        workload, dataset, model, method, _, sparsity = curve
        with self._lock:
            self._curve_runs[curve] = run_id
            group = (workload, dataset, model, method, sparsity)
            points = curve_points(self._records, self._records.complete_cells(group))
        steps = {budget: values for (*key, budget), values in points.items() if tuple(key) == curve}
        self._log_metrics(run_id, steps)
        for witness in CURVE_WITNESSES.values():
            self._aggregates_logged[f"{run_id}/{witness}"] = {
                budget: values[witness] for budget, values in steps.items() if witness in values
            }
        return run_id

    def _replace_cell_run(self, meta: TrialMeta, old: str) -> str:
        """Delete a cell run whose aggregates changed; a new one takes its trial runs as children."""
        self.client.delete_run(old)
        self._aggregates_logged.pop(f"{old}/{CELL_WITNESS}", None)
        run_id = self._create_cell_run(meta)
        with self._lock:
            self._cell_runs[meta.cell] = run_id
        children = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{Tag.ROLE}` = '{Role.TRIAL}' and tags.`cell` = '{meta.cell}'",
            max_results=10_000,
        )
        for child in children:
            self.client.set_tag(child.info.run_id, Tag.PARENT, run_id)
        return run_id

    def _logged_history(self, run_id: str, key: str) -> dict[int, float]:
        """step -> value of an aggregate metric as MLflow holds it (read once, then followed)."""
        cache_key = f"{run_id}/{key}"
        if cache_key not in self._aggregates_logged:
            history = self.client.get_metric_history(run_id, key)
            self._aggregates_logged[cache_key] = {int(m.step): float(m.value) for m in history}
        return self._aggregates_logged[cache_key]

    def _log_metrics(
        self, run_id: str, steps: dict[int, dict[str, float]], tags: dict[str, str] | None = None
    ) -> None:
        """Log {step: {key: value}} in batches, `tags` and the run's unlogged params with the
        first one."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, step)
            for step, values in steps.items()
            for key, value in values.items()
        ]
        pending_tags = [RunTag(k, v[:_TAG_LIMIT]) for k, v in (tags or {}).items()]
        params = [Param(k, v) for k, v in self._unlogged_params.pop(run_id, {}).items()]
        for chunk in _chunks(metrics, _BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=chunk, tags=pending_tags, params=params)
            pending_tags, params = [], []
        if pending_tags or params:
            self.client.log_batch(run_id, tags=pending_tags, params=params)

    def _logged(self, run_id: str) -> set[int]:
        if run_id not in self._logged_epochs:
            history = self.client.get_metric_history(run_id, WITNESS_METRIC)
            self._logged_epochs[run_id] = {int(point.step) for point in history}
        return self._logged_epochs[run_id]

    def _log_epochs(self, run_id: str, entries: list[dict[str, Any]]) -> None:
        """Log the epochs MLflow does not have yet, whole epochs per batch (so a batch that
        failed half-way cannot leave an epoch that looks logged but is not)."""
        from mlflow.entities import Metric

        logged = self._logged(run_id)
        fresh: dict[int, list[Metric]] = {}
        for entry in entries:
            epoch = int(entry[ResultKey.EPOCH])
            metrics = [
                Metric(key, float(entry[key]), int(entry["timestamp"]), epoch)
                for key in EPOCH_METRICS
                if key in entry
            ]
            if metrics and epoch not in logged:
                fresh.setdefault(epoch, metrics)
        per_batch = max(1, _BATCH_LIMIT // len(EPOCH_METRICS))
        for epochs in _chunks(sorted(fresh), per_batch):
            batch = [metric for epoch in epochs for metric in fresh[epoch]]
            self.client.log_batch(run_id, metrics=batch)
            logged.update(epochs)


def _rejected(error: Exception) -> bool:
    """True when MLflow refused a request as invalid: resending it cannot help."""
    return getattr(error, "error_code", None) in _REJECTED_CODES


def _same(logged: dict[int, float], wanted: dict[int, float]) -> bool:
    """Whether two step -> value maps hold the same steps and values (to rounding)."""
    return logged.keys() == wanted.keys() and all(
        abs(logged[step] - wanted[step]) <= _AGGREGATE_TOLERANCE * max(1.0, abs(wanted[step]))
        for step in wanted
    )
