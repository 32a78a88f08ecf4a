"""How the sender's run updates reach MLflow, many runs at a time.

Two writers take the same updates:

* `ClientWriter`, for any store: per run one `create_run` with its tags, `log_batch` calls
  with whole epochs each (params, tags and metrics together), and one status update (with the
  end time); on a tracking server several runs' requests are in flight at once.
* `SqlWriter`, for a SQLite or PostgreSQL store at a schema revision the project reads
  directly (`analysis.fetch.SQL_SCHEMA_REVISIONS`): a batch's runs in one transaction,
  through MLflow's own table models, writing the rows `create_run`, `log_batch` and
  `set_terminated` would write (`tests/test_tracking_writers.py` compares them). Per-call
  overhead of MLflow's store (a session, a run lookup and a commit per params, metrics and
  tags) is what limits a store to a few dozen runs a second.

Both are idempotent: a run created again with the id it already has, a param or metric
written again with the same value, a tag or status set again change nothing.

Both tell a run that is gone (deleted, or never in this store: the store was replaced or
wiped) from an MLflow that fails: an update naming a run the store holds no active run for
raises `MissingRunsError`, which no retry can cure, instead of failing a foreign key (or, in
SQL, writing into a deleted run) on every try.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mlflow.entities import LifecycleStage, Metric, Param, RunStatus, RunTag
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from analysis.fetch import SQL_SCHEMA_REVISIONS, sql_scheme
from sweeps.tracking.uri import is_server

T = TypeVar("T")
MetricValue = tuple[str, float, int, int]
"""(key, value, timestamp in ms, step)."""
SERVER_REQUESTS_IN_FLIGHT = 8
"""Runs a `ClientWriter` sends at once to a tracking server (one at a time to a local store)."""


@dataclass
class NewRun:
    """A run to create; `run_id` is set by the writer (chosen before creating, or by MLflow)."""

    experiment_id: str
    run_name: str
    tags: dict[str, str]
    start_time: int
    run_id: str | None = None


@dataclass
class RunUpdate:
    """What to write to one run: params, tags, metrics, its status and artifacts (text files)."""

    run_id: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricValue] = field(default_factory=list)
    status: str | None = None
    """MLflow's run status to set (None: leave it)."""
    end_time: int | None = None
    """With a terminal status: the run's end time (ms); None leaves the end time as it is."""
    texts: dict[str, str] = field(default_factory=dict)
    """Artifact path -> text."""


class MissingRunsError(RuntimeError):
    """Runs an update names are not active in the store (deleted, or never in it): writing
    them again cannot succeed."""

    def __init__(self, run_ids: Iterable[str]) -> None:
        self.run_ids = frozenset(run_ids)
        super().__init__(f"no active MLflow run {', '.join(sorted(self.run_ids))}")


def does_not_exist(error: Exception) -> bool:
    """Whether an MLflow error says the thing asked for does not exist (not that MLflow fails)."""
    return getattr(error, "error_code", None) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


class RunWriter(Protocol):
    """What the sender needs of a writer."""

    chooses_ids: bool
    """Whether `assign_ids` picks run ids before `create` (so an intent can name the id)."""
    batch_records: int
    """Most outbox records the sender hands it at once (a batch is acknowledged as a whole)."""

    def assign_ids(self, runs: Sequence[NewRun]) -> None: ...
    def create(self, runs: Sequence[NewRun]) -> None: ...
    def update(self, updates: Sequence[RunUpdate]) -> None: ...
    def logged_steps(self, run_ids: Sequence[str], key: str) -> dict[str, set[int]]: ...
    def missing(self, run_ids: Iterable[str]) -> set[str]: ...
    def close(self) -> None: ...


def make_writer(tracking_uri: str, client: Any) -> RunWriter:
    """The bulk SQL writer where the store allows it, else the client writer."""
    store = client._tracking_client.store  # the client has no public store accessor
    if sql_scheme(tracking_uri) is not None and hasattr(store, "engine"):
        with store.engine.connect() as connection:
            revision = connection.exec_driver_sql(
                "SELECT version_num FROM alembic_version"
            ).scalar()
        if revision in SQL_SCHEMA_REVISIONS:
            return SqlWriter(client, store)
    workers = SERVER_REQUESTS_IN_FLIGHT if is_server(tracking_uri) else 1
    return ClientWriter(client, workers)


def clipped(values: dict[str, str], limit: int) -> dict[str, str]:
    """Values cut to MLflow's length limit (tags: 8000, params: 6000 characters)."""
    return {key: str(value)[:limit] for key, value in values.items()}


class ClientWriter:
    """Writes through `MlflowClient` (any store, a tracking server included)."""

    chooses_ids = False
    batch_records = 400  # ≈ 100 trials: a few hundred requests, seconds even on a slow server

    def __init__(self, client: Any, workers: int = 1) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(workers, "mlflow-writer") if workers > 1 else None
        self._artifact_uris: dict[str, str] = {}

    def _map(self, action: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        if self._pool is None or len(items) < 2:
            return [action(item) for item in items]
        return list(self._pool.map(action, items))

    def assign_ids(self, runs: Sequence[NewRun]) -> None:
        """MLflow chooses the ids (`create` sets them)."""

    def create(self, runs: Sequence[NewRun]) -> None:
        def one(run: NewRun) -> None:
            created = self._client.create_run(
                run.experiment_id,
                start_time=run.start_time,
                tags=clipped(run.tags, MAX_TAG_VAL_LENGTH),
                run_name=run.run_name,
            )
            run.run_id = created.info.run_id
            self._artifact_uris[run.run_id] = created.info.artifact_uri

        self._map(one, [run for run in runs if run.run_id is None])

    def update(self, updates: Sequence[RunUpdate]) -> None:
        self._map(self._update_or_missing, updates)

    def _update_or_missing(self, update: RunUpdate) -> None:
        """`_update`; a failure on a run the store no longer holds raises `MissingRunsError`."""
        try:
            self._update(update)
        except Exception:
            if self.missing([update.run_id]):
                raise MissingRunsError([update.run_id]) from None
            raise

    def missing(self, run_ids: Iterable[str]) -> set[str]:
        """The runs the store holds no active run for (a failing MLflow raises)."""
        from mlflow.exceptions import MlflowException

        gone = set()
        for run_id in run_ids:
            try:
                run = self._client.get_run(run_id)
            except MlflowException as error:
                if not does_not_exist(error):
                    raise
                gone.add(run_id)
                continue
            if run.info.lifecycle_stage != LifecycleStage.ACTIVE:
                gone.add(run_id)
        return gone

    def _update(self, update: RunUpdate) -> None:
        params = [Param(k, v) for k, v in clipped(update.params, MAX_PARAM_VAL_LENGTH).items()]
        tags = [RunTag(k, v) for k, v in clipped(update.tags, MAX_TAG_VAL_LENGTH).items()]
        metrics = [Metric(key, value, stamp, step) for key, value, stamp, step in update.metrics]
        for chunk in log_batches(params, tags, metrics):
            self._client.log_batch(update.run_id, **chunk)
        for path, text in update.texts.items():
            write_text(
                self._client, self._artifact_uris.get(update.run_id), update.run_id, path, text
            )
        if update.status is not None:
            # the store's call: the client's set_terminated and update_run also read the run
            # back (to print its URL, to keep its end time), one more request per run
            store = self._client._tracking_client.store
            status = RunStatus.from_string(update.status)
            store.update_run_info(update.run_id, status, update.end_time, None)

    def logged_steps(self, run_ids: Sequence[str], key: str) -> dict[str, set[int]]:
        """The steps at which each run has `key`."""

        def one(run_id: str) -> set[int]:
            return {int(point.step) for point in self._client.get_metric_history(run_id, key)}

        return dict(zip(run_ids, self._map(one, list(run_ids)), strict=True))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def log_batches(
    params: list[Param], tags: list[RunTag], metrics: list[Metric]
) -> Iterator[dict[str, list]]:
    """`log_batch` keyword arguments within MLflow's limits, whole steps of metrics per call
    (a step is either all there or not there after a call that failed)."""
    by_step: dict[int, list[Metric]] = {}
    for metric in metrics:
        by_step.setdefault(metric.step, []).append(metric)
    steps = list(by_step.values())
    while params or tags or steps:
        chunk = {
            "params": params[:MAX_PARAMS_TAGS_PER_BATCH],
            "tags": tags[:MAX_PARAMS_TAGS_PER_BATCH],
            "metrics": [],
        }
        params, tags = params[MAX_PARAMS_TAGS_PER_BATCH:], tags[MAX_PARAMS_TAGS_PER_BATCH:]
        room = min(
            MAX_METRICS_PER_BATCH,
            MAX_ENTITIES_PER_BATCH - len(chunk["params"]) - len(chunk["tags"]),
        )
        while steps and len(chunk["metrics"]) + len(steps[0]) <= room:
            chunk["metrics"] += steps.pop(0)
        if steps and not chunk["metrics"] and not chunk["params"] and not chunk["tags"]:
            chunk["metrics"] = steps.pop(0)  # one step wider than a batch: its metrics alone
        yield chunk


class SqlWriter:
    """Writes a batch of runs in one transaction of MLflow's SQL store (SQLite, PostgreSQL)."""

    chooses_ids = True
    batch_records = 5000

    def __init__(self, client: Any, store: Any) -> None:
        from mlflow.store.tracking.dbmodels import models

        self._client = client
        self._store = store
        self._engine = store.engine
        if self._engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        self._insert = insert
        self._runs = models.SqlRun.__table__
        self._tags = models.SqlTag.__table__
        self._params = models.SqlParam.__table__
        self._metrics = models.SqlMetric.__table__
        self._latest = models.SqlLatestMetric.__table__
        self._artifact_roots: dict[str, str] = {}
        self._artifact_uris: dict[str, str] = {}

    def assign_ids(self, runs: Sequence[NewRun]) -> None:
        for run in runs:
            if run.run_id is None:
                run.run_id = uuid.uuid4().hex

    def create(self, runs: Sequence[NewRun]) -> None:
        """Insert the runs and their tags (runs that exist already are left as they are)."""
        from mlflow.utils.uri import append_to_uri_path

        run_rows, tag_rows = [], []
        for run in runs:
            root = self._artifact_roots.get(run.experiment_id)
            if root is None:
                root = self._client.get_experiment(run.experiment_id).artifact_location
                self._artifact_roots[run.experiment_id] = root
            artifact_uri = append_to_uri_path(root, run.run_id, "artifacts")
            self._artifact_uris[run.run_id] = artifact_uri
            tags = {**clipped(run.tags, MAX_TAG_VAL_LENGTH), MLFLOW_RUN_NAME: run.run_name}
            run_rows.append(
                {
                    "run_uuid": run.run_id,
                    "name": run.run_name,
                    "source_type": "UNKNOWN",
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": tags.get(MLFLOW_USER, "unknown"),
                    "status": "RUNNING",
                    "start_time": run.start_time,
                    "end_time": None,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": LifecycleStage.ACTIVE,
                    "artifact_uri": artifact_uri,
                    "experiment_id": int(run.experiment_id),
                }
            )
            tag_rows += [{"key": k, "value": v, "run_uuid": run.run_id} for k, v in tags.items()]
        with self._engine.begin() as connection:
            self._execute(connection, self._insert(self._runs).on_conflict_do_nothing(), run_rows)
            self._execute(connection, self._insert(self._tags).on_conflict_do_nothing(), tag_rows)

    def update(self, updates: Sequence[RunUpdate]) -> None:
        """Params (kept if present), tags (replaced), metrics (each (key, timestamp, step,
        value) once), latest metrics, statuses; then the artifacts."""
        from sqlalchemy import bindparam, tuple_

        params, tags, metrics = [], [], []
        for update in updates:
            rid = update.run_id
            params += [
                {"key": k, "value": v, "run_uuid": rid}
                for k, v in clipped(update.params, MAX_PARAM_VAL_LENGTH).items()
            ]
            tags += [
                {"key": k, "value": v, "run_uuid": rid}
                for k, v in clipped(update.tags, MAX_TAG_VAL_LENGTH).items()
            ]
            for key, value, stamp, step in update.metrics:
                is_nan, stored = self._store.sanitize_metric_value(float(value))
                metrics.append(
                    {
                        "key": key,
                        "value": stored,
                        "timestamp": stamp,
                        "step": step,
                        "is_nan": is_nan,
                        "run_uuid": rid,
                    }
                )
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for row in metrics:
            slot = (row["run_uuid"], row["key"])
            order = (row["step"], row["timestamp"], row["value"])
            if slot not in latest or order > _order(latest[slot]):
                latest[slot] = row
        tag_upsert = self._insert(self._tags)
        tag_upsert = tag_upsert.on_conflict_do_update(
            index_elements=["key", "run_uuid"], set_={"value": tag_upsert.excluded.value}
        )
        latest_upsert = self._insert(self._latest)
        newer = tuple_(
            latest_upsert.excluded.step,
            latest_upsert.excluded.timestamp,
            latest_upsert.excluded.value,
        ) > tuple_(self._latest.c.step, self._latest.c.timestamp, self._latest.c.value)
        latest_upsert = latest_upsert.on_conflict_do_update(
            index_elements=["key", "run_uuid"],
            set_={
                name: getattr(latest_upsert.excluded, name)
                for name in ("value", "timestamp", "step", "is_nan")
            },
            where=newer,
        )
        run_id = self._runs.c.run_uuid
        with self._engine.begin() as connection:
            gone = self._missing(connection, {update.run_id for update in updates})
            if gone:
                raise MissingRunsError(gone)
            self._execute(connection, self._insert(self._params).on_conflict_do_nothing(), params)
            self._execute(connection, tag_upsert, tags)
            self._execute(connection, self._insert(self._metrics).on_conflict_do_nothing(), metrics)
            self._execute(connection, latest_upsert, list(latest.values()))
            ended = [
                {"rid": u.run_id, "new_status": u.status, "new_end": u.end_time}
                for u in updates
                if u.status is not None and u.end_time is not None
            ]
            moved = [
                {"rid": u.run_id, "new_status": u.status}
                for u in updates
                if u.status is not None and u.end_time is None
            ]
            self._execute(
                connection,
                self._runs.update()
                .where(run_id == bindparam("rid"))
                .values(status=bindparam("new_status"), end_time=bindparam("new_end")),
                ended,
            )
            self._execute(
                connection,
                self._runs.update()
                .where(run_id == bindparam("rid"))
                .values(status=bindparam("new_status")),
                moved,
            )
        for update in updates:
            for path, text in update.texts.items():
                artifact_uri = self._artifact_uris.get(update.run_id)
                write_text(self._client, artifact_uri, update.run_id, path, text)

    def logged_steps(self, run_ids: Sequence[str], key: str) -> dict[str, set[int]]:
        from sqlalchemy import select

        found: dict[str, set[int]] = {run_id: set() for run_id in run_ids}
        table = self._metrics
        with self._engine.connect() as connection:
            for chunk in _chunks(list(run_ids), 500):
                rows = connection.execute(
                    select(table.c.run_uuid, table.c.step).where(
                        table.c.key == key, table.c.run_uuid.in_(chunk)
                    )
                )
                for run_id, step in rows:
                    found[run_id].add(int(step))
        return found

    def missing(self, run_ids: Iterable[str]) -> set[str]:
        """The runs the store holds no active run for."""
        with self._engine.connect() as connection:
            return self._missing(connection, set(run_ids))

    def _missing(self, connection: Any, run_ids: set[str]) -> set[str]:
        from sqlalchemy import select

        table = self._runs
        active = set()
        for chunk in _chunks(sorted(run_ids), 500):
            rows = connection.execute(
                select(table.c.run_uuid).where(
                    table.c.run_uuid.in_(chunk), table.c.lifecycle_stage == LifecycleStage.ACTIVE
                )
            )
            active.update(run_id for (run_id,) in rows)
        return run_ids - active

    def close(self) -> None:
        """Nothing to release (the engine belongs to MLflow's store)."""

    def _execute(self, connection: Any, statement: Any, rows: list[dict[str, Any]]) -> None:
        if rows:
            connection.execute(statement, rows)


def write_text(client: Any, artifact_uri: str | None, run_id: str, path: str, text: str) -> None:
    """A text artifact of a run. For a run the writer created, its artifact location is known
    and the file goes straight there (a local file, or one upload to the server); any other
    run's through the client, which first looks the run up."""
    if artifact_uri is None:
        client.log_text(run_id, text, path)
        return
    if artifact_uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        local = Path(local_file_uri_to_path(artifact_uri), path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(artifact_uri, client.tracking_uri)
    target = Path(path)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder, target.name)
        local.write_text(text)
        parent = None if str(target.parent) == "." else str(target.parent)
        repository.log_artifact(str(local), parent)


def _order(row: dict[str, Any]) -> tuple[int, int, float]:
    return (row["step"], row["timestamp"], row["value"])


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
