"""Read one sweep's trial runs and their full metric histories from MLflow, in bulk.

Two readers give the same records:

* `sqlite:` and `postgresql:` stores are read directly with SQL (read-only, one snapshot
  transaction), in batches of runs: the `runs`, `tags`, `params` and `metrics` tables of
  MLflow's schema. The store's schema revision is checked first: a store at a revision the
  reader was not written for (`SQL_SCHEMA_REVISIONS`, e.g. one a newer MLflow migrated) is
  read through the client, with a warning. (MySQL and SQL Server stores, which the project
  does not test, and stores behind a tracking server, whose database the client cannot see,
  go through the client.)
* any other URI goes through the MLflow client: `search_runs` pages for runs, tags and
  params, then histories in bulk — one query per metric key and batch of runs on SQL stores
  (`get_metric_history_bulk`), the tracking server's `metrics/get-history-bulk` endpoint
  (100 runs per request) on `http(s)` URIs, and per-run `get_metric_history` only where a
  store offers nothing better.

Only runs tagged `sparsesweep.role=trial` in the active lifecycle stage are read; failed,
diverged, stopped and running trials are all included. A read can be narrowed to some cells
(the `cell` tag) and some metric keys, as the tracker's aggregates read them.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis.errors import BadInputError, UnknownExperimentError
from contract.names import Role, Tag

SQL_SCHEMES: tuple[str, ...] = ("sqlite", "postgresql")
"""Tracking URI schemes the SQL reader reads directly."""
Reader = Literal["auto", "sql", "client"]
READERS: tuple[str, ...] = ("auto", "sql", "client")
METRIC_FRAME_COLUMNS: tuple[str, ...] = ("run_id", "key", "step", "value", "timestamp")

SQL_SCHEMA_REVISIONS: frozenset[str] = frozenset({"dc11669786a5"})
"""Alembic revisions of MLflow's SQL schema the SQL reader was written and tested for (the
head of MLflow 3.17). A store at any other revision is read through the MLflow client."""

logger = logging.getLogger(__name__)
_SQL_BATCH_RUNS = 500
_REST_BULK_PATH = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
_REST_MAX_RUNS = 100
_REST_MAX_VALUES = 25_000
_SEARCH_PAGE = 50_000


@dataclass(frozen=True)
class RunRecord:
    """One trial run as stored: MLflow run info, tags and params (all strings)."""

    run_id: str
    run_name: str | None
    status: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentRecords:
    """Everything read from one experiment: its trial runs and every logged metric value."""

    experiment_id: str
    name: str
    runs: list[RunRecord]
    metrics: pd.DataFrame  # METRIC_FRAME_COLUMNS; one row per logged value; NaN kept
    tags: dict[str, str] = field(default_factory=dict)  # the experiment's own tags


@dataclass(frozen=True)
class Narrowing:
    """What a read is limited to: the trials of some cells, some metric keys (None: all)."""

    cells: tuple[str, ...] | None = None
    keys: tuple[str, ...] | None = None


def fetch_experiment(
    tracking_uri: str,
    experiment: str,
    reader: Reader = "auto",
    cells: Collection[str] | None = None,
    keys: Collection[str] | None = None,
) -> ExperimentRecords:
    """Read the trial runs of `experiment` and their metric histories from `tracking_uri`:
    all of them, or those of `cells` with the metric keys `keys`.

    `reader="auto"` reads `sqlite:` and `postgresql:` stores directly with SQL and uses the
    MLflow client otherwise; `"sql"` and `"client"` force one path (`"sql"` needs one of
    those URIs).
    """
    if reader not in READERS:
        raise BadInputError(f"reader={reader!r} is not one of {', '.join(READERS)}")
    narrowing = Narrowing(
        None if cells is None else tuple(sorted(cells)),
        None if keys is None else tuple(sorted(keys)),
    )
    direct = sql_scheme(tracking_uri) is not None
    if reader == "sql" and not direct:
        raise BadInputError(
            f"reader='sql' needs a {' or '.join(f'{s}:' for s in SQL_SCHEMES)} tracking URI, "
            f"got {tracking_uri!r}"
        )
    if reader == "sql" or (reader == "auto" and direct):
        sql = _SqlReader(tracking_uri)
        revision = sql.schema_revision()
        if revision is None:
            kind = "SQLite" if sql_scheme(tracking_uri) == "sqlite" else "PostgreSQL"
            raise BadInputError(
                f"{tracking_uri} is not an MLflow {kind} store (no schema revision)"
            )
        if revision in SQL_SCHEMA_REVISIONS:
            return sql.read(experiment, narrowing)
        if reader == "sql":
            raise BadInputError(_schema_note(tracking_uri, revision) + "; use reader='client'")
        logger.warning(
            "%s; reading it through the MLflow client instead (slower)",
            _schema_note(tracking_uri, revision),
        )
    return _ClientReader(tracking_uri).read(experiment, narrowing)


def sql_scheme(tracking_uri: str) -> str | None:
    """`sqlite` or `postgresql` when the SQL reader reads the store directly, else None."""
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower()
    return scheme if scheme in SQL_SCHEMES and "://" in tracking_uri else None


def _schema_note(tracking_uri: str, revision: str) -> str:
    """Why the SQL reader does not read a store: its schema revision is not one it knows."""
    return (
        f"the MLflow store {tracking_uri} has schema revision {revision}, not one "
        f"the SQL reader was written for ({', '.join(sorted(SQL_SCHEMA_REVISIONS))})"
    )


def metric_frame(rows: Iterable[tuple[str, str, int, float, int]]) -> pd.DataFrame:
    """A metrics frame (`METRIC_FRAME_COLUMNS`) with fixed dtypes from (run, key, step, value, ts)."""
    columns = list(zip(*rows, strict=True)) or [()] * len(METRIC_FRAME_COLUMNS)
    run_ids, keys, steps, values, stamps = columns
    return pd.DataFrame(
        {
            "run_id": pd.Series(run_ids, dtype="category"),
            "key": pd.Series(keys, dtype="category"),
            "step": np.asarray(steps, dtype="int64"),
            "value": np.asarray(values, dtype="float64"),
            "timestamp": np.asarray(stamps, dtype="int64"),
        }
    )


def sqlite_path(tracking_uri: str) -> Path:
    """The database file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URI."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or len(tracking_uri) == len(prefix):
        raise BadInputError(
            f"tracking URI {tracking_uri!r}: expected sqlite:///path/to/mlflow.db "
            "(in-memory SQLite stores cannot be read)"
        )
    return Path(tracking_uri[len(prefix) :].split("?", 1)[0])


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unknown(experiment: str, tracking_uri: str, names: list[str]) -> UnknownExperimentError:
    shown = ", ".join(sorted(names)[:20]) or "none"
    return UnknownExperimentError(
        f"experiment {experiment!r} not found in {tracking_uri} (experiments there: {shown})"
    )


class _SqlReader:
    """Reads MLflow's SQL schema directly (SQLite or PostgreSQL), in batches of runs, in one
    read-only snapshot transaction."""

    def __init__(self, tracking_uri: str) -> None:
        self._uri = tracking_uri
        self._dialect = sql_scheme(tracking_uri)
        self._mark = "?" if self._dialect == "sqlite" else "%s"
        if self._dialect == "sqlite":
            self._path = sqlite_path(tracking_uri)
            if not self._path.is_file():
                raise UnknownExperimentError(
                    f"tracking store {tracking_uri} does not exist (no file "
                    f"{self._path.resolve()}); pass --tracking-uri or set MLFLOW_TRACKING_URI"
                )

    def _connect(self) -> Any:
        """A DB-API connection: SQLite opened read-only, PostgreSQL through SQLAlchemy."""
        if self._dialect == "sqlite":
            location = f"{self._path.resolve().as_uri()}?mode=ro"
            return sqlite3.connect(location, uri=True, timeout=60, isolation_level=None)
        import sqlalchemy

        engine = sqlalchemy.create_engine(self._uri, poolclass=sqlalchemy.pool.NullPool)
        return engine.raw_connection()

    def schema_revision(self) -> str | None:
        """The store's Alembic schema revision (`alembic_version`); None without one."""
        try:
            connection = self._connect()
        except Exception as error:  # a driver's own error type: the store cannot be opened
            raise BadInputError(f"cannot open the MLflow store {self._uri} ({error})") from None
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT version_num FROM alembic_version")
            row = cursor.fetchone()
        except Exception:  # no such table (any driver): not an MLflow store
            return None
        finally:
            connection.close()
        return None if row is None else str(row[0])

    def read(self, experiment: str, narrowing: Narrowing) -> ExperimentRecords:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            if self._dialect == "sqlite":
                cursor.execute("BEGIN")
            else:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self._read(cursor, experiment, narrowing)
        except (sqlite3.DatabaseError, ValueError) as error:
            raise BadInputError(f"{self._uri} is not a readable MLflow store ({error})") from error
        finally:
            connection.close()

    def _marks(self, count: int) -> str:
        return ",".join([self._mark] * count)

    def _rows(self, cursor: Any, sql: str, params: Iterable[Any]) -> list[tuple]:
        cursor.execute(sql.replace("?", self._mark), tuple(params))
        return cursor.fetchall()

    def _read(self, cursor: Any, experiment: str, narrowing: Narrowing) -> ExperimentRecords:
        found = self._rows(
            cursor,
            "SELECT experiment_id, name FROM experiments WHERE name = ? "
            "AND lifecycle_stage = 'active'",
            (experiment,),
        )
        if not found:
            names = [row[0] for row in self._rows(cursor, "SELECT name FROM experiments", ())]
            raise _unknown(experiment, self._uri, names)
        experiment_id = found[0][0]
        sql = (
            "SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time FROM runs r "
            "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ? "
            "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'"
        )
        params: list[Any] = [Tag.ROLE, Role.TRIAL, experiment_id]
        if narrowing.cells is not None:
            sql += (
                " AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'cell' "
                f"AND value IN ({self._marks(len(narrowing.cells))}))"
            )
            params += narrowing.cells
        run_rows = self._rows(cursor, sql + " ORDER BY r.run_uuid", params)
        experiment_tags = dict(
            self._rows(
                cursor,
                "SELECT key, value FROM experiment_tags WHERE experiment_id = ?",
                (experiment_id,),
            )
        )
        run_ids = [row[0] for row in run_rows]
        tags: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        params_by_run: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        metric_rows: list[tuple[str, str, int, float, int]] = []
        nan = "'NaN'" if self._dialect == "sqlite" else "'NaN'::float8"
        key_filter = ""
        if narrowing.keys is not None:
            key_filter = f" AND key IN ({self._marks(len(narrowing.keys))})"
        for batch in _chunks(run_ids, _SQL_BATCH_RUNS):
            marks = self._marks(len(batch))
            for run_id, key, value in self._rows(
                cursor, f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", batch
            ):
                tags[run_id][key] = value
            for run_id, key, value in self._rows(
                cursor,
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})",
                batch,
            ):
                params_by_run[run_id][key] = value
            metric_rows.extend(
                self._rows(
                    cursor,
                    f"SELECT run_uuid, key, step, CASE WHEN is_nan THEN {nan} ELSE value END, "
                    f"timestamp FROM metrics WHERE run_uuid IN ({marks}){key_filter}",
                    [*batch, *(narrowing.keys or ())],
                )
            )
        runs = [
            RunRecord(run_id, name, status, start, end, tags[run_id], params_by_run[run_id])
            for run_id, name, status, start, end in run_rows
        ]
        metrics = metric_frame(metric_rows)
        return ExperimentRecords(str(experiment_id), experiment, runs, metrics, experiment_tags)


class _ClientReader:
    """Reads through `MlflowClient` (any tracking URI), fetching histories in bulk."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self._uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)

    def read(self, experiment: str, narrowing: Narrowing) -> ExperimentRecords:
        found = self._client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            names = [item.name for item in self._client.search_experiments(max_results=1000)]
            raise _unknown(experiment, self._uri, names)
        trials = f"tags.`{Tag.ROLE}` = '{Role.TRIAL}'"
        if narrowing.cells is None:
            runs, keys = self._search_trials(found.experiment_id, trials)
        else:
            runs, keys = [], set()
            for cell in narrowing.cells:
                quoted = cell.replace("'", "\\'")
                found_runs, found_keys = self._search_trials(
                    found.experiment_id, f"{trials} and tags.cell = '{quoted}'"
                )
                runs += found_runs
                keys |= found_keys
            runs.sort(key=lambda record: record.run_id)
        if narrowing.keys is not None:
            keys &= set(narrowing.keys)
        run_ids = [run.run_id for run in runs]
        rows = [row for key in sorted(keys) for row in self._histories(run_ids, key)]
        return ExperimentRecords(
            str(found.experiment_id), experiment, runs, metric_frame(rows), dict(found.tags)
        )

    def _search_trials(
        self, experiment_id: str, filter_string: str
    ) -> tuple[list[RunRecord], set[str]]:
        runs: list[RunRecord] = []
        keys: set[str] = set()
        token = None
        while True:
            page = self._client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                max_results=_SEARCH_PAGE,
                page_token=token,
            )
            for run in page:
                info = run.info
                runs.append(
                    RunRecord(
                        info.run_id,
                        info.run_name,
                        info.status,
                        info.start_time,
                        info.end_time,
                        dict(run.data.tags),
                        dict(run.data.params),
                    )
                )
                keys.update(run.data.metrics)
            token = page.token
            if not token:
                break
        runs.sort(key=lambda record: record.run_id)
        return runs, keys

    def _histories(
        self, run_ids: list[str], key: str
    ) -> Iterator[tuple[str, str, int, float, int]]:
        store = self._client._tracking_client.store  # the client has no public bulk-history API
        if hasattr(store, "get_metric_history_bulk"):
            for batch in _chunks(run_ids, _SQL_BATCH_RUNS):
                for item in store.get_metric_history_bulk(batch, key, max_results=2**62):
                    yield item.run_id, key, item.step, item.value, item.timestamp
        elif hasattr(store, "get_host_creds"):
            for batch in _chunks(run_ids, _REST_MAX_RUNS):
                yield from self._rest_bulk(store, batch, key)
        else:
            yield from self._per_run(run_ids, key)

    def _rest_bulk(
        self, store: Any, run_ids: list[str], key: str
    ) -> Iterator[tuple[str, str, int, float, int]]:
        """The server's bulk endpoint; a batch that hits its value cap is split and re-read."""
        from mlflow.utils.rest_utils import http_request_safe

        response = http_request_safe(
            store.get_host_creds(),
            _REST_BULK_PATH,
            "GET",
            params={"run_id": run_ids, "metric_key": key, "max_results": _REST_MAX_VALUES},
        )
        values = response.json().get("metrics", [])
        if len(values) >= _REST_MAX_VALUES:
            if len(run_ids) == 1:
                yield from self._per_run(run_ids, key)
                return
            middle = len(run_ids) // 2
            yield from self._rest_bulk(store, run_ids[:middle], key)
            yield from self._rest_bulk(store, run_ids[middle:], key)
            return
        for item in values:
            value = item.get("value", math.nan)
            yield (
                item["run_id"],
                key,
                int(item.get("step", 0)),
                math.nan if isinstance(value, str) else float(value),
                int(item["timestamp"]),
            )

    def _per_run(self, run_ids: list[str], key: str) -> Iterator[tuple[str, str, int, float, int]]:
        def one(run_id: str) -> list[tuple[str, str, int, float, int]]:
            history = self._client.get_metric_history(run_id, key)
            return [(run_id, key, m.step, m.value, m.timestamp) for m in history]

        with ThreadPoolExecutor(max_workers=8) as pool:
            for rows in pool.map(one, run_ids):
                yield from rows
