"""Read one sweep's trial runs and their full metric histories from MLflow, in bulk.

Two readers give the same records:

* `sqlite:` stores are read directly with SQL (read-only, one snapshot transaction), in
  batches of runs: the `runs`, `tags`, `params` and `metrics` tables of MLflow's schema. The
  store's schema revision is checked first: a store at a revision the reader was not written
  for (`SQL_SCHEMA_REVISIONS`, e.g. one a newer MLflow migrated) is read through the client,
  with a warning.
* any other URI goes through the MLflow client: `search_runs` pages for runs, tags and
  params, then histories in bulk — one query per metric key and batch of runs on SQL stores
  (`get_metric_history_bulk`), the tracking server's `metrics/get-history-bulk` endpoint
  (100 runs per request) on `http(s)` URIs, and per-run `get_metric_history` only where a
  store offers nothing better.

Only runs tagged `sparsesweep.role=trial` in the active lifecycle stage are read; failed,
diverged, stopped and running trials are all included.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis.errors import BadInputError, UnknownExperimentError
from contract.names import Role, Tag

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


def fetch_experiment(
    tracking_uri: str, experiment: str, reader: Reader = "auto"
) -> ExperimentRecords:
    """Read all trial runs of `experiment` and their metric histories from `tracking_uri`.

    `reader="auto"` reads `sqlite:` stores directly with SQL and uses the MLflow client
    otherwise; `"sql"` and `"client"` force one path (`"sql"` needs a `sqlite:` URI).
    """
    if reader not in READERS:
        raise BadInputError(f"reader={reader!r} is not one of {', '.join(READERS)}")
    is_sqlite = tracking_uri.startswith("sqlite:")
    if reader == "sql" and not is_sqlite:
        raise BadInputError(f"reader='sql' needs a sqlite: tracking URI, got {tracking_uri!r}")
    if reader == "sql" or (reader == "auto" and is_sqlite):
        sql = _SqliteReader(tracking_uri)
        revision = sql.schema_revision()
        if revision is None:
            raise BadInputError(
                f"{tracking_uri} is not an MLflow SQLite store (no schema revision)"
            )
        if revision in SQL_SCHEMA_REVISIONS:
            return sql.read(experiment)
        if reader == "sql":
            raise BadInputError(_schema_note(tracking_uri, revision) + "; use reader='client'")
        logger.warning(
            "%s; reading it through the MLflow client instead (slower)",
            _schema_note(tracking_uri, revision),
        )
    return _ClientReader(tracking_uri).read(experiment)


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


class _SqliteReader:
    """Reads MLflow's SQLite schema directly, in batches of runs, in one read transaction."""

    def __init__(self, tracking_uri: str) -> None:
        self._uri = tracking_uri
        self._path = sqlite_path(tracking_uri)
        if not self._path.is_file():
            raise UnknownExperimentError(
                f"tracking store {tracking_uri} does not exist (no file {self._path.resolve()}); "
                "pass --tracking-uri or set MLFLOW_TRACKING_URI"
            )

    def schema_revision(self) -> str | None:
        """The store's Alembic schema revision (`alembic_version`); None without one."""
        connection = sqlite3.connect(self._location(), uri=True, timeout=60)
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError:
            return None
        finally:
            connection.close()
        return None if row is None else str(row[0])

    def _location(self) -> str:
        return f"{self._path.resolve().as_uri()}?mode=ro"

    def read(self, experiment: str) -> ExperimentRecords:
        location = self._location()
        connection = sqlite3.connect(location, uri=True, timeout=60, isolation_level=None)
        try:
            connection.execute("BEGIN")
            return self._read(connection, experiment)
        except sqlite3.DatabaseError as error:
            raise BadInputError(
                f"{self._uri} is not a readable MLflow SQLite store ({error})"
            ) from error
        finally:
            connection.close()

    def _read(self, db: sqlite3.Connection, experiment: str) -> ExperimentRecords:
        found = db.execute(
            "SELECT experiment_id, name FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
            (experiment,),
        ).fetchall()
        if not found:
            names = [row[0] for row in db.execute("SELECT name FROM experiments")]
            raise _unknown(experiment, self._uri, names)
        experiment_id = found[0][0]
        run_rows = db.execute(
            "SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time FROM runs r "
            "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ? "
            "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' ORDER BY r.run_uuid",
            (Tag.ROLE, Role.TRIAL, experiment_id),
        ).fetchall()
        experiment_tags = dict(
            db.execute(
                "SELECT key, value FROM experiment_tags WHERE experiment_id = ?", (experiment_id,)
            ).fetchall()
        )
        run_ids = [row[0] for row in run_rows]
        tags: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        params: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        metric_rows: list[tuple[str, str, int, float, int]] = []
        for batch in _chunks(run_ids, _SQL_BATCH_RUNS):
            marks = ",".join("?" * len(batch))
            for run_id, key, value in db.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", batch
            ):
                tags[run_id][key] = value
            for run_id, key, value in db.execute(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", batch
            ):
                params[run_id][key] = value
            metric_rows.extend(
                db.execute(
                    "SELECT run_uuid, key, step, CASE WHEN is_nan THEN 'NaN' ELSE value END, "
                    f"timestamp FROM metrics WHERE run_uuid IN ({marks})",
                    batch,
                )
            )
        runs = [
            RunRecord(run_id, name, status, start, end, tags[run_id], params[run_id])
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

    def read(self, experiment: str) -> ExperimentRecords:
        found = self._client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            names = [item.name for item in self._client.search_experiments(max_results=1000)]
            raise _unknown(experiment, self._uri, names)
        runs, keys = self._search_trials(found.experiment_id)
        run_ids = [run.run_id for run in runs]
        rows = [row for key in sorted(keys) for row in self._histories(run_ids, key)]
        return ExperimentRecords(
            str(found.experiment_id), experiment, runs, metric_frame(rows), dict(found.tags)
        )

    def _search_trials(self, experiment_id: str) -> tuple[list[RunRecord], set[str]]:
        runs: list[RunRecord] = []
        keys: set[str] = set()
        token = None
        while True:
            page = self._client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{Tag.ROLE}` = '{Role.TRIAL}'",
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
