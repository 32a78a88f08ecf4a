"""analysis.export / analysis.fetch against real MLflow stores built in tmp_path."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from analysis_fixtures import (
    Trial,
    assert_tables_identical,
    build_store,
    planted_trials,
    records_for,
)
from mlflow.tracking import MlflowClient
from sweep_helpers import free_port, kill_group, start_mlflow_server

from analysis.errors import BadInputError, EmptyExperimentError, UnknownExperimentError
from analysis.export import build_tables, export_experiment, read_tables
from analysis.fetch import fetch_experiment, metric_frame

EXPERIMENT = "planted"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Trial], list[str], Path]:
    root = tmp_path_factory.mktemp("store")
    trials = planted_trials()
    uri, run_ids = build_store(root, EXPERIMENT, trials)
    return uri, trials, run_ids, root


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory: pytest.TempPathFactory):
    uri = store[0]
    return export_experiment(uri, EXPERIMENT, tmp_path_factory.mktemp("export") / "out")


def test_trials_table_row_for_row(store, exported) -> None:
    _, trials, run_ids, _ = store
    table = exported.tables.trials.to_pandas().set_index("run_id")
    assert len(table) == len(trials)  # cell (parent) runs are not trials
    for trial, run_id in zip(trials, run_ids, strict=True):
        row = table.loc[run_id]
        assert (row["arm"], row["method"], row["dataset"], row["model"]) == (
            trial.arm,
            trial.method,
            "digits",
            "small_cnn",
        )
        assert (row["sparsity"], row["budget"], row["seed"]) == (
            trial.sparsity,
            trial.budget,
            trial.seed,
        )
        assert (row["lr"], row["lr_trial"], row["stage"]) == (trial.lr, 0, "search")
        assert row["status"] == trial.status
        assert row["epochs_completed"] == trial.logged_epochs
        assert row["final_test_acc1"] == pytest.approx(trial.test_acc1(trial.logged_epochs))
        assert row["best_test_acc1"] == pytest.approx(
            max(trial.test_acc1(e) for e in range(1, trial.logged_epochs + 1))
        )
        assert row["final_itop_rate"] == pytest.approx(trial.itop)
        assert row["final_measured_sparsity"] == pytest.approx(trial.sparsity)
        assert row["param.optim.lr"] == str(trial.lr)
        assert isinstance(row["parent_run_id"], str) and row["parent_run_id"] != run_id
        assert row["wall_time_s"] >= 0.0
        assert (row["ham"], row["grad_renorm"]) == (False, False)
    statuses = table["mlflow_status"].to_dict()
    by_status = {
        trial.status: statuses[run_id] for trial, run_id in zip(trials, run_ids, strict=True)
    }
    assert by_status == {
        "finished": "FINISHED",
        "failed": "FAILED",
        "running": "RUNNING",
        "diverged": "FAILED",
    }


def test_logged_nan_stays_nan_and_unlogged_metrics_are_null(store, exported) -> None:
    _, trials, run_ids, _ = store
    diverged = run_ids[[t.status for t in trials].index("diverged")]
    table = exported.tables.trials
    index = table.column("run_id").to_pylist().index(diverged)
    assert math.isnan(table.column("final_train_loss")[index].as_py())
    assert table.column("best_train_loss")[index].as_py() == pytest.approx(2.0 / 1)
    assert table.column("final_val_loss").null_count == table.num_rows
    epochs = exported.tables.epochs
    assert epochs.column("val_loss").null_count == epochs.num_rows
    assert epochs.column("train_loss").null_count == 0


def test_epochs_table_row_for_row(store, exported) -> None:
    _, trials, run_ids, _ = store
    epochs = exported.tables.epochs.to_pandas()
    assert len(epochs) == sum(t.logged_epochs for t in trials)
    by_run = dict(zip(run_ids, trials, strict=True))
    for row in epochs.itertuples(index=False):
        trial = by_run[row.run_id]
        assert row.test_acc1 == pytest.approx(trial.test_acc1(row.epoch))
        assert row.itop_rate == pytest.approx(trial.itop_rate(row.epoch))
        assert (row.arm, row.seed, row.budget, row.status) == (
            trial.arm,
            trial.seed,
            trial.budget,
            trial.status,
        )
    # rows follow the trials table's order, epochs ascending within each trial
    assert (
        list(dict.fromkeys(epochs["run_id"])) == exported.tables.trials.column("run_id").to_pylist()
    )
    assert (epochs.groupby("run_id", sort=False)["epoch"].diff().dropna() == 1).all()


def test_sql_and_client_readers_give_identical_tables(store, exported) -> None:
    uri = store[0]
    through_client = build_tables(fetch_experiment(uri, EXPERIMENT, reader="client"))
    assert_tables_identical(through_client.trials, exported.tables.trials)
    assert_tables_identical(through_client.epochs, exported.tables.epochs)


def test_pyarrow_alone_reads_the_parquet_back_identically(exported) -> None:
    out = exported.out_dir
    assert_tables_identical(pq.read_table(out / "trials"), exported.tables.trials)
    assert_tables_identical(pq.read_table(out / "epochs"), exported.tables.epochs)
    back = read_tables(out)
    assert_tables_identical(back.trials, exported.tables.trials)
    folders = sorted(
        p.parent.relative_to(out / "epochs").as_posix() for p in out.glob("epochs/*/*/*.parquet")
    )
    assert folders == ["method_rigl/sparsity_0.9", "method_rigl/sparsity_0.95"]
    frame = pd.read_parquet(out / "trials")
    assert frame["sparsity"].dtype == "float64" and frame["budget"].dtype == "int64"
    assert exported.manifest["partial"] is True
    assert exported.manifest["status_counts"] == {
        "diverged": 1,
        "failed": 1,
        "finished": 39,
        "running": 1,
    }


def test_reexport_replaces_the_previous_files(store, tmp_path: Path) -> None:
    uri = store[0]
    out = tmp_path / "out"
    (out / "trials" / "method_stale" / "sparsity_0.5").mkdir(parents=True)
    export_experiment(uri, EXPERIMENT, out)
    assert not (out / "trials" / "method_stale").exists()


def test_latest_value_wins_when_a_step_is_logged_twice() -> None:
    records = records_for([Trial("rigl", 0.9, 2, 0, 50.0)])
    again = metric_frame([("run000", "test_acc1", 2, 99.0, 2**41)])
    metrics = pd.concat([records.metrics, again], ignore_index=True)
    tables = build_tables(dataclasses.replace(records, metrics=metrics))
    assert tables.trials.column("final_test_acc1").to_pylist() == [99.0]
    assert tables.epochs.column("test_acc1").to_pylist() == [49.0, 99.0]


def test_unknown_experiment_lists_what_exists(store) -> None:
    with pytest.raises(UnknownExperimentError, match=r"'nope' not found.*planted"):
        export_experiment(store[0], "nope", store[3] / "unused")


def test_missing_store_is_reported_and_not_created(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(UnknownExperimentError, match="does not exist"):
        fetch_experiment(uri, "x")
    assert not (tmp_path / "absent.db").exists()


def test_empty_experiment_and_bad_reader(store) -> None:
    uri = store[0]
    MlflowClient(tracking_uri=uri).create_experiment("empty")
    with pytest.raises(EmptyExperimentError, match="no trial runs"):
        export_experiment(uri, "empty", store[3] / "unused")
    with pytest.raises(BadInputError, match="reader"):
        fetch_experiment(uri, EXPERIMENT, reader="fast")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="sqlite"):
        fetch_experiment("http://127.0.0.1:1", EXPERIMENT, reader="sql")


def test_analysis_imports_neither_torch_nor_ray() -> None:
    code = (
        "import sys, analysis.compare, analysis.report, analysis.export, analysis.plots;"
        "bad = [m for m in ('torch', 'ray', 'sparseopt', 'trainables', 'sweeps') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.slow
@pytest.mark.server
def test_server_export_matches_the_sqlite_export(store, exported, tmp_path: Path) -> None:
    """The http path (search_runs + the server's bulk history endpoint) gives the same tables."""
    port = free_port()
    database = Path(store[0].removeprefix("sqlite:///"))
    server = start_mlflow_server(database, port, tmp_path / "server.log")
    try:
        remote = build_tables(fetch_experiment(f"http://127.0.0.1:{port}", EXPERIMENT))
    finally:
        kill_group(server)
    assert_tables_identical(remote.trials, exported.tables.trials)
    assert_tables_identical(remote.epochs, exported.tables.epochs)


def test_status_comes_from_the_tag_else_from_the_mlflow_status() -> None:
    records = records_for([Trial("rigl", 0.9, 2, seed, 50.0) for seed in range(6)])
    cases = [  # (status tag or None, MLflow status) -> expected
        (None, "FINISHED", "finished"),
        (None, "KILLED", "stopped"),
        (None, "FAILED", "failed"),
        (None, "RUNNING", "running"),
        ("running", "FAILED", "failed"),  # a stale tag on a run MLflow has ended
        ("diverged", "FAILED", "diverged"),
    ]
    runs = []
    for run, (tag, mlflow_status, _) in zip(records.runs, cases, strict=True):
        tags = {k: v for k, v in run.tags.items() if k != "sparsesweep.status"}
        if tag is not None:
            tags["sparsesweep.status"] = tag
        runs.append(dataclasses.replace(run, status=mlflow_status, tags=tags))
    table = build_tables(dataclasses.replace(records, runs=runs)).trials
    by_seed = dict(
        zip(table.column("seed").to_pylist(), table.column("status").to_pylist(), strict=True)
    )
    assert [by_seed[seed] for seed in range(6)] == [expected for *_, expected in cases]
