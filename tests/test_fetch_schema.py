"""The SQL export reader reads only MLflow schemas it was written for; others go through the
MLflow client, with a warning."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from analysis_fixtures import build_store, planted_trials

import analysis.fetch
from analysis.errors import BadInputError
from analysis.fetch import SQL_SCHEMA_REVISIONS, fetch_experiment, sqlite_path

EXPERIMENT = "planted"


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_store(tmp_path_factory.mktemp("schema"), EXPERIMENT, planted_trials())[0]


def revision(uri: str) -> str:
    with sqlite3.connect(sqlite_path(uri)) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_the_installed_mlflow_writes_a_schema_the_reader_knows(uri: str) -> None:
    assert revision(uri) in SQL_SCHEMA_REVISIONS


def test_an_unknown_schema_is_read_through_the_client(
    uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    direct = fetch_experiment(uri, EXPERIMENT)
    monkeypatch.setattr(analysis.fetch, "SQL_SCHEMA_REVISIONS", frozenset({"0123456789ab"}))

    def no_sql(*args: object) -> None:
        raise AssertionError("the SQL reader read a schema it was not written for")

    monkeypatch.setattr(analysis.fetch._SqlReader, "read", no_sql)
    with caplog.at_level(logging.WARNING, logger="analysis.fetch"):
        through_client = fetch_experiment(uri, EXPERIMENT)
    assert f"schema revision {revision(uri)}" in caplog.text
    assert "reading it through the MLflow client" in caplog.text
    assert [run.run_id for run in through_client.runs] == [run.run_id for run in direct.runs]
    assert len(through_client.metrics) == len(direct.metrics)
    with pytest.raises(BadInputError, match="reader='client'"):
        fetch_experiment(uri, EXPERIMENT, reader="sql")


def test_a_file_without_a_schema_is_not_an_mlflow_store(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(BadInputError, match="not an MLflow SQLite store"):
        fetch_experiment(f"sqlite:///{other}", EXPERIMENT)
