"""The tracker's one background thread: every MLflow call a sweep's tracking makes runs here.

It reads the outbox (`sweeps.tracking.outbox`) in order, a batch at a time: whatever is
waiting, up to the writer's `batch_records`, so the slower MLflow is, the larger the batches
and the fewer the calls per record. For a batch it creates the runs that do not exist yet, writes each
trial's params, tags, new epochs and status (`sweeps.tracking.writers`), updates the cell and
curve runs of the cells whose trials ended (`sweeps.tracking.aggregates`), and only then
acknowledges the batch. When MLflow fails, the batch is written again from its start once
MLflow answers (tried every `RETRY_INTERVAL_S`).

Why every record lands exactly once, even when a driver killed mid-batch leaves a batch
half-written:

* One run per trial (its config hash), cell and curve: the run index
  (`sweeps.tracking.run_index`) records the intent before a run is created and the run once
  it exists; an intent left open by a killed process is resolved by looking the run up in
  MLflow by its identity tags before anything is created.
* Params are written again only with the same values; tags are set, not added.
* Each epoch of a trial once: the sender knows which epochs each trial run holds (for a run
  of an earlier process it reads the steps of `WITNESS_METRIC` once) and writes only the
  others, whole epochs per call; a record written twice carries the same timestamps, which
  the store keeps once.
* A curve run's figure (accuracy vs budget, `analysis.plots.budget_curve`) is drawn again
  from the points it holds whenever they change.
* Statuses and end times come from the records (the time the hook ran), so writing them
  again changes nothing; a cell or curve run's status is set only when it changes.

A run the index holds that the store no longer does (a user deleted it, the store was
replaced or wiped) is not an outage: the writer says so (`MissingRunsError`), the sender
forgets it and writes the batch again, which creates a trial's run anew from its config (the
batch's, or the one this process last saw it start with) and a curve run with all its current
points; it says so once in the log. A trial run it cannot create again (no config known) stops
the sender with an error naming the run and the store (`RunLostError`): no retry could help.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from contract.names import CELL_AGGREGATES, CURVE_FACTORS, CURVE_FAMILIES, EPOCH_METRICS, Role, Tag
from contract.outcome import MLFLOW_RUN_STATUS, Status
from contract.trial import TrialMeta, train_payload
from sweeps.tracking.aggregates import (
    CellTables,
    SweepShape,
    cell_metrics,
    cell_progress,
    curve_points,
    read_cells,
)
from sweeps.tracking.experiment import ensure_experiment, experiment_tags
from sweeps.tracking.outbox import Outbox
from sweeps.tracking.records import TIME, Batch, Kind, TrialUpdate, collate, now_ms
from sweeps.tracking.run_index import Identity, RunIndex
from sweeps.tracking.runs import (
    IDENTITY_TAGS,
    cell_run_name,
    cell_tags,
    curve_run_name,
    curve_tags,
    flatten,
    git_commit,
    run_identity,
    source_tags,
    trial_run_name,
    trial_tags,
)
from sweeps.tracking.uri import bound_http_retries, is_server, probe_server
from sweeps.tracking.writers import (
    ClientWriter,
    MissingRunsError,
    NewRun,
    RunUpdate,
    RunWriter,
    does_not_exist,
    make_writer,
)

logger = logging.getLogger(__name__)

RETRY_INTERVAL_S = 5.0
"""How often the sender tries again while MLflow fails."""
POLL_S = 1.0
"""How long an idle sender waits for a new record before looking anyway."""
COALESCE_S = 0.25
"""How long the sender lets records gather after a wake-up (a trial's start, epochs and end
go in one batch), except while the sweep's end waits for it."""
STOP_WAIT_S = 10.0
"""How long stopping waits for a batch in flight."""
HUNG_BATCH_S = 600.0
"""A batch in flight this long means MLflow hangs: the end of the sweep stops waiting."""
WITNESS_METRIC = "train_loss"
"""Logged at every epoch with all the others: its steps say which epochs a trial run holds."""
CELL_WITNESS = CELL_AGGREGATES[0]
"""Logged with all of a cell run's aggregates: its steps say which epochs were logged."""
_CURVE_METRICS = tuple(key for family in CURVE_FAMILIES for key in family)
_AGGREGATE_TOLERANCE = 1e-9
_SEARCH_PAGE = 10_000
FINISHED, RUNNING, SCHEDULED = "FINISHED", "RUNNING", MLFLOW_RUN_STATUS[Status.PENDING]


class RunLostError(RuntimeError):
    """A run MLflow no longer holds cannot be created again: the sender stops."""


@dataclass(frozen=True)
class Destination:
    """Where a sweep's records go, and the spec that says what its cells are."""

    tracking_uri: str
    experiment_name: str
    search_metric: str
    artifact_location: str | None = None
    spec_file: str | None = None


class Sender:
    """Sends one outbox to MLflow on a background thread (`start`, `drain`, `stop`)."""

    def __init__(self, outbox: Outbox, destination: Destination) -> None:
        self._outbox = outbox
        self._to = destination
        self._index = RunIndex(outbox.directory, destination.tracking_uri)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._draining = False
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._busy_since: float | None = None
        self._acked_at = time.monotonic()
        self._client: Any = None
        self._writer: RunWriter | None = None
        self._experiment_id: str | None = None
        self._shape = SweepShape(0)
        self._spec_text: str | None = None
        self._source: dict[str, str] = {}
        self._git_commit = "unknown"
        self._seeded = self._index.existed
        self._logged: dict[str, set[int]] = {}
        self._needs_params: set[str] = set()
        self._history: dict[tuple[str, str], dict[int, float]] = {}
        self._created: dict[str, Identity] = {}
        """Trial runs created by the batch in flight (recorded in the index once written)."""
        self._configs: dict[str, dict[str, Any]] = {}
        """The config of each trial started and not ended in this process (a trial run gone
        from MLflow is created again from it)."""
        self._gone: set[Identity] = set()
        """Trials whose runs MLflow lost and that have not been created again yet."""
        self._batch: list[dict[str, Any]] = []
        """The records of the batch in flight (counted only when a lost run is re-created)."""
        self._recreated: dict[Identity, str] = {}
        """Trial runs MLflow lost that the batch in flight creates again (their names)."""
        self.error: str | None = None
        """Why the thread stopped for good (None while it runs or stopped when asked)."""

    # ---------------------------------------------------------------- control (other threads)
    def start(self) -> None:
        """Start the thread (it sends what the outbox already holds first)."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="mlflow-sweep-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New records are waiting."""
        self._wake.set()

    def drain(self, stall_s: float, report: Callable[[str], None]) -> int:
        """Wait until the outbox is empty, or MLflow has failed (or, between batches, taken
        nothing) for `stall_s` seconds, or Ctrl-C; a batch in flight is waited for (up to
        `HUNG_BATCH_S`), however slow. `report` receives a progress line about every second.
        Returns the records still pending."""
        self._draining = True
        self._wake.set()
        started = shown = time.monotonic()
        first = self._outbox.pending
        shown_at = first
        try:
            while (pending := self._outbox.pending) > 0:
                now = time.monotonic()
                if self._stalled(now, started, stall_s):
                    if self.error:
                        report(f"MLflow: {self.error}")
                    break
                if now - shown >= 1.0:
                    rate = (shown_at - pending) / (now - shown)
                    report(f"MLflow: {pending:,} records to write, {rate:,.0f}/s")
                    shown, shown_at = now, pending
                time.sleep(0.05)
        except KeyboardInterrupt:
            report("MLflow: stopped waiting (Ctrl-C)")
        finally:
            self._draining = False
        pending = self._outbox.pending
        if first and not pending:
            elapsed = time.monotonic() - started
            report(f"MLflow: {first:,} records written in {elapsed:.1f} s")
        return pending

    def _stalled(self, now: float, since: float, stall_s: float) -> bool:
        """Whether waiting (since `since`) for MLflow has stopped making sense (`drain`)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        failing, busy = self._failing_since, self._busy_since
        if busy is not None:
            return now - busy >= HUNG_BATCH_S
        if failing is not None:
            return now - max(failing, since) >= stall_s
        return now - max(self._acked_at, since) >= stall_s

    def stop(self) -> None:
        """Stop the thread (waiting up to `STOP_WAIT_S` for a batch in flight)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)
        if self._writer is not None:
            self._writer.close()
        self._index.close()

    # ---------------------------------------------------------------- the thread
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._busy_since = time.monotonic()
            try:
                sent = self._send_or_forget()
            except RunLostError as error:
                self._busy_since = None
                self.error = str(error)
                logger.error("%s", error)
                return
            except Exception as error:  # any tracking failure: keep the records, try again
                self._busy_since = None
                self._failed(error)
                self._stopping.wait(RETRY_INTERVAL_S)
                continue
            self._busy_since = None
            self._recovered()
            if not sent:
                self._wake.wait(POLL_S)
                self._wake.clear()
                if not self._draining:
                    self._stopping.wait(COALESCE_S)

    def _failed(self, error: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning(
                "MLflow at %s failed (%s); training goes on, %d records wait in %s and are "
                "sent when it answers (tried every %.0f s)",
                self._to.tracking_uri,
                error,
                self._outbox.pending,
                self._outbox.directory,
                RETRY_INTERVAL_S,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            logger.warning(
                "MLflow at %s answers again after %.0f s; the waiting records are sent",
                self._to.tracking_uri,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    def _send_or_forget(self) -> bool:
        """`_send_batch`; runs the store no longer holds are forgotten and the batch is
        written again at once (True: look for work without waiting)."""
        try:
            return self._send_batch()
        except MissingRunsError as missing:
            self._forget_missing(missing.run_ids)
            return True

    def _send_batch(self) -> bool:
        """Write the next batch of records to MLflow and acknowledge it; False if none."""
        writer = self._writer or ClientWriter  # (before the first connection: the smaller)
        records, end = self._outbox.read(self._outbox.acked, writer.batch_records)
        if not records:
            return False
        self._batch = records
        if is_server(self._to.tracking_uri):
            probe_server(self._to.tracking_uri)  # one quick probe, not minutes of retries
        self._connect()
        self._deliver(collate(records))
        self._outbox.ack(end, len(records))
        self._acked_at = time.monotonic()
        return True

    def _connect(self) -> None:
        """The client, the writer, the experiment and the spec (once per process)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            bound_http_retries()
            self._client = MlflowClient(tracking_uri=self._to.tracking_uri)
        if self._writer is None:
            self._writer = make_writer(self._to.tracking_uri, self._client)
        if self._experiment_id is None:
            spec = self._read_spec()
            tags = {} if spec is None else experiment_tags(spec, str(self._outbox.directory))
            self._experiment_id = ensure_experiment(
                self._client, self._to.experiment_name, self._to.artifact_location, tags
            )
            self._shape = SweepShape.of(spec)
            self._git_commit = git_commit()
            self._source = source_tags(self._git_commit)
        if not self._seeded:
            self._seed_index()

    def _read_spec(self) -> Any:
        from sweeps.spec.load import read_spec_file
        from sweeps.spec.storage import read_text

        if not self._to.spec_file:
            return None
        self._spec_text = read_text(self._to.spec_file)
        return read_spec_file(self._to.spec_file)

    def _seed_index(self) -> None:
        """A sweep tracked before the run index existed: index its runs in one paged search."""
        found: dict[Identity, str] = {}
        token = None
        while True:
            page = self._client.search_runs(
                [self._experiment_id], max_results=_SEARCH_PAGE, page_token=token
            )
            for run in page:
                identity = run_identity(run.data.tags)
                if identity is not None:
                    found.setdefault(identity, run.info.run_id)
            token = page.token
            if not token:
                break
        self._index.add(found.items())
        self._needs_params.update(found.values())  # an old version may have missed them
        self._seeded = True

    # ---------------------------------------------------------------- one batch
    def _deliver(self, batch: Batch) -> None:
        for config_hash, update in batch.trials.items():
            if update.state == Kind.START and update.config is not None:
                self._configs[config_hash] = update.config
        runs = self._trial_runs(batch.trials)
        known = [
            run_id
            for config_hash, run_id in runs.items()
            if run_id not in self._logged and batch.trials[config_hash].epochs
        ]
        if known:
            self._logged.update(self._writer.logged_steps(known, WITNESS_METRIC))
        updates, new_epochs, started, ended = [], {}, set(), set()
        for config_hash, update in batch.trials.items():
            run_id = runs.get(config_hash)
            if run_id is None:
                continue
            written, epochs = self._trial_update(update, run_id)
            updates.append(written)
            new_epochs[run_id] = epochs
            if update.cell is not None and update.state == Kind.START:
                started.add(update.cell)
            if update.cell is not None and update.state == Kind.END:
                ended.add(update.cell)
        statuses = self._cell_statuses(started, RUNNING)
        self._writer.update([*updates, *statuses.values()])
        self._index.add((identity, run_id) for run_id, identity in self._created.items())
        self._said_recreated()
        for config_hash, update in batch.trials.items():
            if update.state in (Kind.END, Kind.PAUSE):
                self._configs.pop(config_hash, None)
        self._index.set_statuses((identity, u.status) for identity, u in statuses.items())
        for run_id, epochs in new_epochs.items():
            if epochs:
                self._logged[run_id].update(epochs)
        self._needs_params.difference_update(u.run_id for u in updates if u.params)
        sweep_end = batch.sweep_end
        complete = sweep_end is not None and bool(sweep_end["complete"])
        if complete:
            ended |= {
                identity[1]
                for identity in self._index.runs(Role.CELL)
                if self._index.aggregated(identity[1]) != self._shape.per_cell
                or self._index.status(identity) != FINISHED
            }
        if ended:
            self._aggregate(ended, complete)
        if sweep_end is not None:
            self._end_sweep(complete, sweep_end[TIME])

    def _trial_runs(self, trials: dict[str, TrialUpdate]) -> dict[str, str]:
        """The run of every trial of the batch that has or gets one (trials only paused, or
        known by no config, get none)."""
        runs: dict[str, str] = {}
        missing: list[TrialUpdate] = []
        self._created = {}
        for config_hash, update in trials.items():
            identity = (Role.TRIAL, config_hash)
            run_id = self._index.get(identity) or self._recover(identity)
            update.config = update.config or self._configs.get(config_hash)
            if run_id is not None:
                runs[config_hash] = run_id
            elif update.config is not None:  # it started or ended in this batch
                missing.append(update)
            elif identity in self._gone:
                raise RunLostError(
                    f"the run of trial {config_hash} is missing from MLflow at "
                    f"{self._to.tracking_uri} (deleted, or the store was replaced) and cannot "
                    f"be created again: no config of it waits in {self._outbox.directory}; "
                    "restore the run (MLflow's trash) or use the store that holds it"
                )
            elif update.state != Kind.PAUSE:
                logger.error("no MLflow run for trial %s and no config to create one", config_hash)
        if missing:
            metas = [TrialMeta.of(update.config) for update in missing]
            cell_runs = self._cell_runs({meta.cell: meta for meta in metas})
            new = []
            for update, meta in zip(missing, metas, strict=True):
                tags = {
                    **self._source,
                    **trial_tags(meta, train_payload(update.config)),
                    Tag.PARENT: cell_runs[meta.cell],
                }
                start = update.first_time or update.time
                new.append(NewRun(self._experiment_id, trial_run_name(meta), tags, start))
            identities = [(Role.TRIAL, update.config_hash) for update in missing]
            self._recreated = {
                identity: run.run_name
                for identity, run in zip(identities, new, strict=True)
                if identity in self._gone
            }
            created = self._create(identities, new)
            for update, run_id in zip(missing, created, strict=True):
                runs[update.config_hash] = run_id
                self._logged[run_id] = set()
                self._needs_params.add(run_id)
            self._created = dict(zip(created, identities, strict=True))
        return runs

    def _forget_missing(self, run_ids: frozenset[str]) -> None:
        """Runs the store holds no active run for: forget them (all of the sweep's, if its
        experiment is gone too), so that writing the batch again creates them anew."""
        if self._experiment_gone():
            self._experiment_id = None
            gone = {
                run: identity
                for role in IDENTITY_TAGS
                for identity, run in self._index.runs(role).items()
            }
        else:
            gone = self._index.identities(run_ids)
        if not gone:
            raise RunLostError(
                f"MLflow at {self._to.tracking_uri} holds no run {', '.join(sorted(run_ids))} "
                "and the sweep's run index does not know them"
            )
        self._index.forget(gone.values())
        for run_id in gone:
            self._logged.pop(run_id, None)
            self._needs_params.discard(run_id)
        self._history = {key: v for key, v in self._history.items() if key[0] not in gone}
        self._gone.update(identity for identity in gone.values() if identity[0] == Role.TRIAL)
        if self._experiment_id is None:
            self._connect()
        for identity in gone.values():
            factors = dict(zip(CURVE_FACTORS, identity[1:], strict=False))
            if identity[0] == Role.CURVE and any(
                self._complete(cell)
                for cell in self._shape.curve_cells(
                    factors["workload"], factors["arm"], float(factors["sparsity"])
                )
            ):
                self._log_curve_figure(self._rebuild_curve_run(factors), factors)
        others = len(gone) - len(self._gone & set(gone.values()))
        if others:
            logger.warning(
                "MLflow: %d cell and curve runs were missing from %s; curve runs are created "
                "again with their points, cell runs with their next trial",
                others,
                self._to.tracking_uri,
            )

    def _experiment_gone(self) -> bool:
        """Whether the store no longer holds the sweep's experiment (it was replaced)."""
        from mlflow.entities import LifecycleStage
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_experiment(self._experiment_id)
        except MlflowException as error:
            if not does_not_exist(error):
                raise
            return True
        return found.lifecycle_stage != LifecycleStage.ACTIVE

    def _said_recreated(self) -> None:
        """Say once that the trial runs MLflow lost are created again, with how many records."""
        for identity, name in self._recreated.items():
            self._gone.discard(identity)
            logger.warning(
                "MLflow: run %s was missing from %s; re-created with its %d records",
                name,
                self._to.tracking_uri,
                sum(record.get("trial") == identity[1] for record in self._batch),
            )
        self._recreated = {}

    def _create(self, identities: list[Identity], new: list[NewRun]) -> list[str]:
        """Create runs, their intents recorded (and synced) first. The caller records them in
        the index once it has also written their params: a run created by a killed process
        is found again by `_recover`, which writes its params again."""
        self._writer.assign_ids(new)
        self._index.intend(zip(identities, [run.run_id for run in new], strict=True))
        self._writer.create(new)
        return [str(run.run_id) for run in new]

    def _recover(self, identity: Identity) -> str | None:
        """The run of an identity whose creation a killed process may have begun: found in
        MLflow by its identity tags (None if it was never created)."""
        is_open, _ = self._index.open_intent(identity)
        if not is_open:
            return None
        role, *values = identity
        conditions = [f"tags.`{Tag.ROLE}` = '{role}'"]
        conditions += [
            f"tags.`{k}` = '{v}'" for k, v in zip(IDENTITY_TAGS[role], values, strict=True)
        ]
        found = self._client.search_runs(
            [self._experiment_id], " and ".join(conditions), max_results=1
        )
        if not found:
            return None
        run_id = found[0].info.run_id
        self._index.add([(identity, run_id)])
        self._needs_params.add(run_id)
        return run_id

    def _trial_update(self, update: TrialUpdate, run_id: str) -> tuple[RunUpdate, set[int]]:
        """What the batch writes to a trial's run, and the epochs it adds."""
        written = RunUpdate(run_id, tags=dict(update.tags))
        if run_id in self._needs_params and update.config is not None:
            written.params = flatten(train_payload(update.config))
            written.texts["trial_config.json"] = json.dumps(update.config, indent=2)
        # A run read from MLflow (or created) in this process is in `_logged`; a run seen only
        # in a batch without epochs is not, and must not be taken to hold none: its steps are
        # read once a batch brings it epochs (`_deliver`).
        logged = self._logged.get(run_id, set())
        epochs = {epoch for epoch in update.epochs if epoch not in logged}
        written.metrics = [
            (key, float(entry[key]), int(entry[TIME]), epoch)
            for epoch in sorted(epochs)
            for entry in (update.epochs[epoch],)
            for key in EPOCH_METRICS
            if key in entry
        ]
        if update.state == Kind.START:
            written.tags[Tag.STATUS] = Status.RUNNING.value
            written.tags[Tag.RAY_TRIAL_ID] = str(update.ray_trial_id)
            if run_id not in self._created:  # a new run is RUNNING already
                written.status = RUNNING
        elif update.state == Kind.END:
            status = update.status
            written.tags[Tag.STATUS] = status.value
            if update.error:
                written.tags[Tag.ERROR] = update.error["summary"]
                written.texts["error.txt"] = update.error["text"]
            written.status, written.end_time = MLFLOW_RUN_STATUS[status], update.time
        elif update.state == Kind.PAUSE:
            written.tags[Tag.STATUS] = Status.PENDING.value
            written.status = SCHEDULED
        return written, epochs

    # ---------------------------------------------------------------- cell and curve runs
    def _cell_runs(self, metas: dict[str, TrialMeta]) -> dict[str, str]:
        """The cell runs of these cells, created where missing (factors as tags and params,
        the sweep's spec as an artifact)."""
        runs: dict[str, str] = {}
        missing: list[TrialMeta] = []
        recovered: list[RunUpdate] = []
        for cell, meta in metas.items():
            identity = run_identity(cell_tags(meta))
            run_id = self._index.get(identity) or self._recover(identity)
            if run_id is None:
                missing.append(meta)
                continue
            runs[cell] = run_id
            if run_id in self._needs_params:  # created by a killed process: params again
                recovered.append(self._cell_content(run_id, _factors(cell_tags(meta))))
                self._needs_params.discard(run_id)
        self._writer.update(recovered)
        if missing:
            cells = [
                (run_identity(cell_tags(meta)), cell_run_name(meta), _factors(cell_tags(meta)))
                for meta in missing
            ]
            for meta, run_id in zip(missing, self._create_cells(cells), strict=True):
                runs[meta.cell] = run_id
        return runs

    def _create_cells(self, cells: list[tuple[Identity, str, dict[str, str]]]) -> list[str]:
        """New cell runs, each (identity, run name, factors): the factors as tags and params,
        the sweep's spec as an artifact."""
        now = now_ms()
        new = [
            NewRun(self._experiment_id, name, {**self._source, Tag.ROLE: Role.CELL, **factors}, now)
            for _, name, factors in cells
        ]
        identities = [identity for identity, _, _ in cells]
        ids = self._create(identities, new)
        self._writer.update(
            [
                self._cell_content(run_id, factors)
                for run_id, (_, _, factors) in zip(ids, cells, strict=True)
            ]
        )
        self._index.add(zip(identities, ids, strict=True))
        self._index.set_statuses((identity, RUNNING) for identity in identities)
        for run_id in ids:
            self._history[(run_id, CELL_WITNESS)] = {}  # a new run holds nothing
        return ids

    def _cell_content(self, run_id: str, factors: dict[str, str]) -> RunUpdate:
        """A cell run's factors as params, and the sweep's spec as an artifact."""
        texts = {"sweep_spec.yaml": self._spec_text} if self._spec_text else {}
        return RunUpdate(run_id, params=dict(factors), texts=texts)

    def _cell_statuses(self, cells: Iterable[str], status: str) -> dict[Identity, RunUpdate]:
        """Updates that give these cells' runs `status`, where it changes."""
        updates = {}
        for cell in cells:
            identity = (Role.CELL, cell)
            run_id = self._index.get(identity)
            if run_id is not None and self._index.status(identity) != status:
                updates[identity] = RunUpdate(run_id, status=status)
        return updates

    def _aggregate(self, cells: set[str], sweep_complete: bool) -> None:
        """Tag each cell run with its progress; for each complete cell, log its aggregates,
        end its run, and log its curve points and those it completes (a baseline's pairs)."""
        shape, metric = self._shape, self._to.search_metric
        cells = {cell for cell in cells if self._index.get((Role.CELL, cell)) is not None}
        if not cells:
            return
        related = set().union(*(shape.related(cell) for cell in cells))
        tables = read_cells(
            self._to.tracking_uri, self._to.experiment_name, cells | related, metric
        )
        progress = {cell: cell_progress(tables, cell, metric, shape.seeds) for cell in cells}
        completing = {
            cell: found.end_time
            for cell, found in progress.items()
            if sweep_complete or (shape.per_cell > 0 and found.ended >= shape.per_cell)
        }
        metrics = cell_metrics(tables, completing, metric) if completing else {}
        updates = []
        for cell in sorted(cells):
            found = progress[cell]
            tags = {Tag.TRIALS_ENDED: str(found.ended), Tag.TRIALS_EXPECTED: shape.expected_text}
            if found.lr is not None:
                tags["lr"] = f"{found.lr:.6g}"
            identity = (Role.CELL, cell)
            run_id = self._index.get(identity)
            if cell not in completing:
                updates.append(RunUpdate(run_id, tags=tags))
                continue
            run_id = self._log_cell(cell, run_id, metrics[cell])
            updates.append(RunUpdate(run_id, tags=tags, status=FINISHED, end_time=found.end_time))
        self._writer.update(updates)
        self._index.set_statuses(((Role.CELL, cell), FINISHED) for cell in completing)
        for cell in completing:
            self._index.mark_aggregated(cell, shape.per_cell)
        if completing:
            self._log_points(tables, completing)

    def _complete(self, cell: str) -> bool:
        return (
            self._index.status((Role.CELL, cell)) == FINISHED
            and self._index.aggregated(cell) == self._shape.per_cell
        )

    def _log_cell(self, cell: str, run_id: str, metrics: dict[int, dict[str, float]]) -> str:
        """Log a complete cell's per-epoch aggregates once; replace the run if they changed.
        Returns the cell run's id (a new one if replaced)."""
        logged = self._logged_history(run_id, CELL_WITNESS)
        wanted = {epoch: v[CELL_WITNESS] for epoch, v in metrics.items() if CELL_WITNESS in v}
        if logged and not _same(logged, wanted):
            run_id = self._replace_cell_run(cell, run_id)
            logged = {}
        if not logged:
            now = now_ms()
            values = [(k, v, now, epoch) for epoch, row in metrics.items() for k, v in row.items()]
            self._writer.update([RunUpdate(run_id, metrics=values)])
            self._history[(run_id, CELL_WITNESS)] = wanted
        return run_id

    def _replace_cell_run(self, cell: str, old: str) -> str:
        """Delete a cell run whose aggregates changed; a new one (same factors) takes its
        trial runs as children."""
        previous = self._client.get_run(old)
        self._client.delete_run(old)
        self._history.pop((old, CELL_WITNESS), None)
        cells = [((Role.CELL, cell), previous.info.run_name, dict(previous.data.params))]
        [run_id] = self._create_cells(cells)
        children = self._client.search_runs(
            [self._experiment_id],
            filter_string=f"tags.`{Tag.ROLE}` = '{Role.TRIAL}' and tags.`cell` = '{cell}'",
            max_results=_SEARCH_PAGE,
        )
        self._writer.update(
            [RunUpdate(child.info.run_id, tags={Tag.PARENT: run_id}) for child in children]
        )
        return run_id

    def _log_points(self, tables: CellTables, completing: dict[str, int | None]) -> None:
        """The curve points of the completing cells and of the complete cells they pair with;
        a curve whose cells are all complete ends FINISHED."""
        from sweeps.spec.cells import cell_id  # (the spec's cells import the training config)

        shape = self._shape
        complete = {cell for cell in tables.trials["cell"].unique() if self._complete(cell)}
        touched = set(completing)
        for cell in completing:
            touched |= shape.related(cell) & complete
        ended_at = max((t for t in completing.values() if t is not None), default=None)
        points = curve_points(tables, complete, self._to.search_metric)
        changed: dict[str, dict[str, Any]] = {}
        for (*curve, budget), values in points.items():
            workload, _, _, _, arm, sparsity = curve
            if cell_id(workload, arm, float(sparsity), budget) not in touched:
                continue
            run_id, logged = self._log_curve_point(tuple(curve), budget, values)
            if logged:
                changed[run_id] = dict(zip(CURVE_FACTORS, curve, strict=True))
            cells = shape.curve_cells(workload, arm, float(sparsity))
            identity = run_identity(curve_tags(dict(zip(CURVE_FACTORS, curve, strict=True))))
            finished = cells and all(self._complete(cell) for cell in cells)
            if finished and self._index.status(identity) != FINISHED:
                self._writer.update([RunUpdate(run_id, status=FINISHED, end_time=ended_at)])
                self._index.set_statuses([(identity, FINISHED)])
        for run_id, factors in changed.items():
            self._log_curve_figure(run_id, factors)

    def _log_curve_figure(self, run_id: str, factors: dict[str, Any]) -> None:
        """The curve run's accuracy-vs-budget figure (`analysis.plots.ANSWER_FIGURE`), drawn
        from the points it holds; matplotlib is imported only once a figure is drawn."""
        from analysis.plots import ANSWER_FIGURE, budget_curve

        family = CURVE_FAMILIES[0]
        histories = {key: self._logged_history(run_id, key) for key in family}
        points = {
            budget: {key: histories[key][budget] for key in family if budget in histories[key]}
            for budget in histories[family[0]]
        }
        self._client.log_figure(
            run_id, budget_curve(points, curve_run_name(factors)), ANSWER_FIGURE
        )

    def _log_curve_point(
        self, curve: tuple, budget: int, values: dict[str, float]
    ) -> tuple[str, bool]:
        """Log one budget's point on its curve run, each metric family once per step; a family
        whose logged value changed replaces the run with every point it should hold. Returns
        the run and whether it took new values."""
        run_id = self._curve_run(curve)
        new: dict[str, float] = {}
        for family in CURVE_FAMILIES:
            witness = family[0]
            found = {k: v for k, v in values.items() if k in family}
            if witness not in found:
                continue
            logged = self._logged_history(run_id, witness)
            if budget in logged and _same({budget: logged[budget]}, {budget: found[witness]}):
                continue
            if budget in logged:  # the replacement logs every current point, this one included
                return self._replace_curve_run(curve, run_id), True
            new.update(found)
        if new:
            now = now_ms()
            update = RunUpdate(run_id, metrics=[(k, v, now, budget) for k, v in new.items()])
            self._writer.update([update])
            for key, value in new.items():
                self._logged_history(run_id, key)[budget] = value
        return run_id, bool(new)

    def _curve_run(self, curve: tuple) -> str:
        """The curve run of (workload, dataset, model, method, arm, sparsity), found or created."""
        factors = dict(zip(CURVE_FACTORS, curve, strict=True))
        identity = run_identity(curve_tags(factors))
        run_id = self._index.get(identity) or self._recover(identity)
        if run_id is None:
            return self._create_curve_run(factors)
        if run_id in self._needs_params:  # created by a killed process: params again
            self._writer.update([RunUpdate(run_id, params=_factors(curve_tags(factors)))])
            self._needs_params.discard(run_id)
        return run_id

    def _create_curve_run(self, factors: dict[str, Any]) -> str:
        """A new curve run, its factors as tags and params."""
        tags = {**self._source, **curve_tags(factors)}
        identity = run_identity(tags)
        new = NewRun(self._experiment_id, curve_run_name(factors), tags, now_ms())
        [run_id] = self._create([identity], [new])
        self._writer.update([RunUpdate(run_id, params=_factors(curve_tags(factors)))])
        self._index.add([(identity, run_id)])
        self._index.set_statuses([(identity, RUNNING)])
        for key in _CURVE_METRICS:
            self._history[(run_id, key)] = {}  # a new run holds nothing
        return run_id

    def _replace_curve_run(self, curve: tuple, old: str) -> str:
        """Delete a curve run whose values changed and log every current point on a new one."""
        self._client.delete_run(old)
        for key in _CURVE_METRICS:
            self._history.pop((old, key), None)
        return self._rebuild_curve_run(dict(zip(CURVE_FACTORS, curve, strict=True)))

    def _rebuild_curve_run(self, factors: dict[str, Any]) -> str:
        """A new curve run holding every current point of its complete cells."""
        run_id = self._create_curve_run(factors)
        identity = run_identity(curve_tags(factors))
        cells = self._shape.curve_cells(
            factors["workload"], factors["arm"], float(factors["sparsity"])
        )
        cells = {c for c in cells if self._complete(c)}
        related = set().union(*(self._shape.related(cell) for cell in cells)) if cells else set()
        complete = cells | {c for c in related if self._complete(c)}
        tables = read_cells(
            self._to.tracking_uri, self._to.experiment_name, complete, self._to.search_metric
        )
        points = curve_points(tables, complete, self._to.search_metric)
        steps = {
            budget: values
            for (*key, budget), values in points.items()
            if run_identity(curve_tags(dict(zip(CURVE_FACTORS, key, strict=True)))) == identity
        }
        now = now_ms()
        update = RunUpdate(
            run_id,
            metrics=[(k, v, now, b) for b, values in steps.items() for k, v in values.items()],
        )
        self._writer.update([update])
        for key in _CURVE_METRICS:
            self._history[(run_id, key)] = {
                budget: values[key] for budget, values in steps.items() if key in values
            }
        return run_id

    def _logged_history(self, run_id: str, key: str) -> dict[int, float]:
        """step -> value of an aggregate metric as MLflow holds it (read once, then followed)."""
        if (run_id, key) not in self._history:
            history = self._client.get_metric_history(run_id, key)
            self._history[(run_id, key)] = {int(m.step): float(m.value) for m in history}
        return self._history[(run_id, key)]

    def _end_sweep(self, complete: bool, at: int) -> None:
        """The sweep stopped: its cell and curve runs end FINISHED if every trial ended;
        otherwise those not complete wait (MLflow `SCHEDULED`) for the next start."""
        updates, statuses = [], []
        for role in (Role.CELL, Role.CURVE):
            for identity, run_id in self._index.runs(role).items():
                if self._index.status(identity) == FINISHED:
                    continue
                status = FINISHED if complete else SCHEDULED
                if self._index.status(identity) != status:
                    end_time = at if complete else None
                    updates.append(RunUpdate(run_id, status=status, end_time=end_time))
                    statuses.append((identity, status))
        self._writer.update(updates)
        self._index.set_statuses(statuses)


def _factors(tags: dict[str, str]) -> dict[str, str]:
    """A cell's or curve's factors (its params): its identity tags without the role."""
    return {key: value for key, value in tags.items() if key != Tag.ROLE}


def _same(logged: dict[int, float], wanted: dict[int, float]) -> bool:
    """Whether two step -> value maps hold the same steps and values (to rounding)."""
    return logged.keys() == wanted.keys() and all(
        abs(logged[step] - wanted[step]) <= _AGGREGATE_TOLERANCE * max(1.0, abs(wanted[step]))
        for step in wanted
    )
