"""The sweep's MLflow tracker without Ray: its Tune hooks fed as Tune feeds them, MLflow made to
fail, the driver restarted or killed. Nothing is lost, nothing is written twice, and a sweep's
runs say where it stands (`sweeps.tracking`)."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from recorded_sweep import record_sweep

from analysis.report import resolve_declaration
from contract.names import EPOCH_METRICS, Tag
from sweeps.run.search import SweepSearcher
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import locate, write_text_atomic
from sweeps.tracking import sender as sender_module
from sweeps.tracking.callback import MlflowSweepCallback
from sweeps.tracking.outbox import Outbox, outbox_status
from sweeps.tracking.records import epochs_record, trial_hash
from sweeps.tracking.uri import DRAIN_TIMEOUT_ENV
from sweeps.tracking.writers import ClientWriter, NewRun, RunUpdate, SqlWriter, make_writer

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec(tmp_path: Path, seeds: tuple[int, ...] = (0, 1), **changes: Any) -> SweepSpec:
    payload = {
        "name": "trk",
        "storage_path": str(tmp_path / "results"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "base": {
            "data": {"name": "digits"},
            "model": {"name": "mlp"},
            "schedule": {"warmup_epochs": 0},
        },
        "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": list(seeds)},
        "search": {"lr": {"grid": [0.1]}},
        **changes,
    }
    spec = parse_spec(payload)
    write_text_atomic(locate(spec).spec_file, spec.to_yaml())
    return spec


def tracker(spec: SweepSpec) -> MlflowSweepCallback:
    """The callback as `sparsesweep run` builds it."""
    location = locate(spec)
    return MlflowSweepCallback(
        tracking_uri=spec.tracking_uri,
        experiment_name=spec.name,
        artifact_location=location.artifact_location,
        spec_file=location.spec_file,
        search_metric=spec.search.metric,
        outbox_dir=location.outbox_dir,
    )


def trials_of(spec: SweepSpec) -> list[SimpleNamespace]:
    """The sweep's trials as Tune holds them (ids, configs from the sweep's own searcher)."""
    searcher, trials = SweepSearcher(spec), []
    while (config := searcher.suggest(f"t{len(trials)}")) != SweepSearcher.FINISHED:
        trials.append(SimpleNamespace(trial_id=f"t{len(trials)}", config=config, status="PENDING"))
        searcher.on_trial_complete(trials[-1].trial_id, {"val_acc1": 50.0, "epoch": 2})
    return trials


def epoch(number: int, **extra: Any) -> dict[str, Any]:
    return {"epoch": number, **{key: float(number) for key in EPOCH_METRICS}, **extra}


def run_trial(callback: MlflowSweepCallback, trial: SimpleNamespace, epochs: list[int]) -> None:
    trial.status = "RUNNING"
    callback.on_trial_start(0, [], trial)
    for number in epochs:
        trial.last_result = epoch(number)
        callback.on_trial_result(0, [], trial, trial.last_result)


def complete(callback: MlflowSweepCallback, trial: SimpleNamespace) -> None:
    trial.status = "TERMINATED"
    callback.on_trial_complete(0, [], trial)


def client_of(spec: SweepSpec) -> tuple[MlflowClient, str]:
    client = MlflowClient(spec.tracking_uri)
    return client, client.get_experiment_by_name(spec.name).experiment_id


def runs(spec: SweepSpec, role: str) -> list[Any]:
    client, experiment_id = client_of(spec)
    return client.search_runs([experiment_id], f"tags.`sparsesweep.role` = '{role}'")


def steps(spec: SweepSpec, run_id: str) -> dict[str, list[int]]:
    """Every logged step of every epoch metric (a duplicate shows twice)."""
    client, _ = client_of(spec)
    return {
        key: sorted(point.step for point in client.get_metric_history(run_id, key))
        for key in EPOCH_METRICS
    }


class Outage:
    """MLflow fails every batch while `down` (the sender keeps the records and retries)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        send = sender_module.Sender._send_batch

        def flaky(sender: Any) -> bool:
            if self.down and sender._outbox.pending:
                raise ConnectionError("MLflow unreachable")
            return send(sender)

        monkeypatch.setattr(sender_module.Sender, "_send_batch", flaky)
        monkeypatch.setattr(sender_module, "RETRY_INTERVAL_S", 0.05)


@pytest.fixture(autouse=True)
def _quick_drain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DRAIN_TIMEOUT_ENV, "1")
    monkeypatch.chdir(tmp_path)


def test_hooks_only_append_and_every_mlflow_call_runs_on_the_sender_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    callers: set[str] = set()
    for name in ("create_run", "log_batch", "search_runs", "get_experiment_by_name"):
        method = getattr(MlflowClient, name)

        def spy(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            callers.add(threading.current_thread().name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, spy)
    spec = tiny_spec(tmp_path)
    callback = tracker(spec)
    [trial, *_] = trials_of(spec)
    callback.setup()
    run_trial(callback, trial, [1, 2])
    complete(callback, trial)
    callback.on_experiment_end([trial])
    assert callers == {"mlflow-sweep-sender"}
    [run] = runs(spec, "trial")
    assert run.info.status == "FINISHED"
    assert outbox_status(locate(spec).outbox_dir).pending == 0


def test_an_outage_keeps_every_record_for_the_next_start_which_writes_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec(tmp_path)
    launched = pickle.dumps(tracker(spec))  # Tune keeps the callback pickled with the Tuner
    outage = Outage(monkeypatch)
    callback = pickle.loads(launched)
    trial, waiting = trials_of(spec)
    callback.setup()
    run_trial(callback, trial, [1])
    assert callback._sender.drain(30, print) == 0
    outage.down = True
    trial.last_result = epoch(2)
    callback.on_trial_result(0, [], trial, trial.last_result)
    complete(callback, trial)
    callback.on_experiment_end([trial, waiting])  # stopped before the second trial started
    # epoch 2, the end, the second trial's pause, the end of the sweep: they wait
    assert outbox_status(locate(spec).outbox_dir).pending == 4
    [run] = runs(spec, "trial")
    assert run.info.status == "RUNNING" and steps(spec, run.info.run_id)["val_acc1"] == [1]

    outage.down = False
    restored = pickle.loads(launched)  # the same command again, stopped at once
    restored.setup()
    restored.on_experiment_end([trial, waiting])
    run = MlflowClient(spec.tracking_uri).get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["sparsesweep.status"] == "finished"
    assert all(logged == [1, 2] for logged in steps(spec, run.info.run_id).values())
    [cell] = runs(spec, "cell")
    assert cell.info.status == "SCHEDULED"  # one of its two trials ended
    assert cell.data.tags["sparsesweep.trials_ended"] == "1"


@pytest.mark.parametrize("writer", ["sql", "client"])
def test_a_batch_written_again_after_a_failure_writes_nothing_twice(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if writer == "client":
        monkeypatch.setattr(sender_module, "make_writer", lambda uri, c: ClientWriter(c))
    acks = Outbox.ack
    failures = iter([True])

    def ack_fails_once(box: Outbox, position: Any, count: int) -> None:
        if next(failures, False):  # MLflow holds the batch, the acknowledgement is lost
            raise OSError("disk hiccup")
        acks(box, position, count)

    monkeypatch.setattr(Outbox, "ack", ack_fails_once)
    monkeypatch.setattr(sender_module, "RETRY_INTERVAL_S", 0.05)
    spec = tiny_spec(tmp_path)
    sweep = record_sweep(spec, results=lambda n, meta: [epoch(1), epoch(2)])
    assert next(failures, "spent") == "spent"
    client, experiment_id = client_of(spec)
    for role, count in (("trial", 2), ("cell", 1), ("curve", 1)):
        assert len(runs(spec, role)) == count, role
    for run in runs(spec, "trial"):
        assert all(logged == [1, 2] for logged in steps(spec, run.info.run_id).values())
        assert run.info.status == "FINISHED"
    [cell] = runs(spec, "cell")
    history = client.get_metric_history(cell.info.run_id, "test_acc1_mean")
    assert sorted(point.step for point in history) == [1, 2]
    assert sweep.experiment_id == experiment_id


def test_the_nan_placeholder_of_a_diverged_epoch_is_not_logged(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    [trial, *_] = trials_of(spec)
    callback = tracker(spec)
    callback.setup()
    run_trial(callback, trial, [1])
    nan = {key: math.nan for key in EPOCH_METRICS}
    trial.last_result = {"epoch": 2, **nan, "diverged": True, "history": []}
    callback.on_trial_result(0, [], trial, trial.last_result)
    complete(callback, trial)
    callback.on_experiment_end([trial])
    [run] = runs(spec, "trial")
    assert run.info.status == "FAILED"
    assert run.data.tags["sparsesweep.status"] == "diverged"
    assert steps(spec, run.info.run_id)["train_loss"] == [1]


def test_a_trial_replaying_its_history_after_a_restart_adds_only_new_epochs(
    tmp_path: Path,
) -> None:
    spec = tiny_spec(tmp_path)
    [trial, *_] = trials_of(spec)
    first = tracker(spec)
    first.setup()
    run_trial(first, trial, [1])
    first.on_experiment_end([trial])
    second = tracker(spec)
    second.setup()
    trial.status = "RUNNING"
    second.on_trial_start(0, [], trial)
    skipped = "/runs/trial-x/checkpoint_2/ckpt-000002.pt: sha256 mismatch"
    replay = epoch(2, history=[epoch(1)], resumed_from_epoch=1, skipped_checkpoints=[skipped])
    trial.last_result = replay
    second.on_trial_result(0, [], trial, replay)
    complete(second, trial)
    second.on_experiment_end([trial])
    [run] = runs(spec, "trial")
    assert all(logged == [1, 2] for logged in steps(spec, run.info.run_id).values())
    assert run.data.tags["sparsesweep.resumed_from_epoch"] == "1"
    assert run.data.tags["sparsesweep.skipped_checkpoints"] == skipped


def test_an_epoch_repeated_after_a_batch_without_epochs_is_not_logged_twice(
    tmp_path: Path,
) -> None:
    """A restarted trial's start reaches MLflow in a batch of its own; the epoch it trains again
    later must be checked against what MLflow already holds, not against an empty record."""
    spec = tiny_spec(tmp_path)
    [trial, *_] = trials_of(spec)
    first = tracker(spec)
    first.setup()
    run_trial(first, trial, [1])
    first.on_experiment_end([trial])
    second = tracker(spec)
    second.setup()
    trial.status = "RUNNING"
    second.on_trial_start(0, [], trial)
    assert second._sender.drain(60, print) == 0  # the start alone, in a batch of its own
    for number in (1, 2):  # no checkpoint survived: epoch 1 is trained and reported again
        result = epoch(number, resumed_from_epoch=0)
        trial.last_result = result
        second.on_trial_result(0, [], trial, result)
    complete(second, trial)
    second.on_experiment_end([trial])
    [run] = runs(spec, "trial")
    assert all(logged == [1, 2] for logged in steps(spec, run.info.run_id).values())


def snapshot(spec: SweepSpec) -> dict[str, Any]:
    """Everything MLflow holds of a sweep: every run's info, tags, params and metric
    histories, and the experiment's tags."""
    client, experiment_id = client_of(spec)
    found = client.search_runs([experiment_id], run_view_type=3, max_results=1000)
    return {
        "experiment": client.get_experiment(experiment_id).tags,
        "runs": {
            run.info.run_id: (
                run.info.status,
                run.info.start_time,
                run.info.end_time,
                run.info.lifecycle_stage,
                run.data.tags,
                run.data.params,
                {
                    key: [
                        (m.step, m.timestamp, m.value)
                        for m in client.get_metric_history(run.info.run_id, key)
                    ]
                    for key in run.data.metrics
                },
            )
            for run in found
        },
    }


def test_the_declared_primary_family_reaches_the_report_through_the_experiment_tag(
    tmp_path: Path,
) -> None:
    grid = {"arms": ["rigl", "rigl+sparseopt"], "sparsities": [0.9], "budgets": [2], "seeds": [0]}
    analysis = {"primary": ["rigl+sparseopt:rigl"], "alpha": 0.01, "halfwidth": 1.5}
    spec = tiny_spec(tmp_path, grid=grid, analysis=analysis)
    record_sweep(spec)
    client = MlflowClient(spec.tracking_uri)
    tag = client.get_experiment_by_name(spec.name).tags[Tag.PRIMARY]
    chosen, source = resolve_declaration(tag, None, None)
    assert chosen.contrasts == (("rigl+sparseopt", "rigl"),)
    assert (chosen.alpha, chosen.halfwidth) == (0.01, 1.5)
    assert source == f"experiment tag {Tag.PRIMARY}"


def test_a_no_op_rerun_of_a_finished_sweep_changes_nothing_in_mlflow(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    sweep = record_sweep(spec, results=lambda n, meta: [epoch(1), epoch(2)])
    before = snapshot(spec)
    restored = pickle.loads(pickle.dumps(sweep.callback))
    restored.setup()
    restored.on_experiment_end(sweep.trials)  # Tune restores a finished sweep: nothing runs
    assert snapshot(spec) == before


def test_a_stopped_sweep_leaves_no_run_running_and_no_cell_finished_early(
    tmp_path: Path,
) -> None:
    spec = tiny_spec(tmp_path)
    done, running = trials_of(spec)
    callback = tracker(spec)
    callback.setup()
    run_trial(callback, done, [1, 2])
    complete(callback, done)
    run_trial(callback, running, [1])
    running.status = "TERMINATED"  # Ctrl-C: Tune's cleanup stops it without an end hook
    callback.on_experiment_end([done, running])
    by_seed = {run.data.tags["seed"]: run for run in runs(spec, "trial")}
    assert by_seed["0"].info.status == "FINISHED"
    assert by_seed["1"].info.status == "SCHEDULED"
    assert by_seed["1"].data.tags["sparsesweep.status"] == "pending"
    [cell] = runs(spec, "cell")
    assert cell.info.status == "SCHEDULED"
    assert cell.data.tags["sparsesweep.trials_ended"] == "1"
    assert "test_acc1_mean" not in cell.data.metrics

    resumed = tracker(spec)
    resumed.setup()
    run_trial(resumed, running, [2])
    complete(resumed, running)
    resumed.on_experiment_end([done, running])
    assert {run.info.status for run in runs(spec, "trial")} == {"FINISHED"}
    [cell] = runs(spec, "cell")
    [curve] = runs(spec, "curve")
    assert cell.info.status == curve.info.status == "FINISHED"
    assert cell.data.tags["sparsesweep.trials_ended"] == "2"


def test_cell_and_curve_runs_end_finished_with_the_sweep(tmp_path: Path) -> None:
    spec = tiny_spec(
        tmp_path,
        grid={
            "arms": ["rigl", "rigl+sparseopt"],
            "sparsities": [0.9],
            "budgets": [1, 2],
            "seeds": [0],
        },
    )
    record_sweep(spec, results=lambda n, meta: [epoch(e) for e in range(1, meta.budget + 1)])
    assert len(runs(spec, "cell")) == 4 and len(runs(spec, "curve")) == 2
    for role in ("trial", "cell", "curve"):
        assert {run.info.status for run in runs(spec, role)} == {"FINISHED"}, role
    for curve in runs(spec, "curve"):
        assert curve.info.end_time is not None


def test_the_drain_limit_comes_from_todays_settings_not_the_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec(tmp_path)
    monkeypatch.setenv(DRAIN_TIMEOUT_ENV, "30")
    launched = pickle.dumps(tracker(spec))
    monkeypatch.setenv(DRAIN_TIMEOUT_ENV, "0.5")
    restored = pickle.loads(launched)
    restored.setup()
    assert restored._drain_s == 0.5
    restored.finish()


def test_the_pickled_tracker_is_its_settings_only(tmp_path: Path) -> None:
    """Tune keeps the callback in the Tuner's pickle (read back on every restore): settings
    only, and one pickled by an older version, with its records and caches, restores so."""
    spec = tiny_spec(tmp_path)
    callback = tracker(spec)
    assert set(callback.__getstate__()) == {
        "_tracking_uri",
        "_experiment_name",
        "_artifact_location",
        "_spec_file",
        "_search_metric",
        "_outbox_dir",
    }
    older = {key: value for key, value in callback.__getstate__().items() if key != "_outbox_dir"}
    older |= {"_drain_timeout_s": 30.0, "_git_commit": "abc", "_records": object()}
    restored = MlflowSweepCallback.__new__(MlflowSweepCallback)
    restored.__setstate__(older)
    assert restored.outbox_dir == Path(locate(spec).outbox_dir)
    assert restored.__getstate__() == callback.__getstate__() | {"_outbox_dir": None}


def test_an_older_trackers_pickled_outbox_is_written(tmp_path: Path) -> None:
    """A sweep started before the durable outbox kept unsent records in the callback's Tune
    state; Tune hands that state to `set_state` on restore, before `setup`."""
    spec = tiny_spec(tmp_path)
    [trial, *_] = trials_of(spec)
    old = {
        "trial_runs": {},
        "configs": {trial.trial_id: trial.config},
        "outbox": {
            trial.trial_id: [
                ("start", trial.trial_id),
                ("epochs", [{**epoch(1), "timestamp": 1000}, {**epoch(2), "timestamp": 2000}]),
                ("end", ("finished", None, None)),
            ]
        },
    }
    callback = tracker(spec)
    callback.set_state(old)
    callback.setup()
    callback.on_experiment_end([])
    [run] = runs(spec, "trial")
    assert run.info.status == "FINISHED"
    history = MlflowClient(spec.tracking_uri).get_metric_history(run.info.run_id, "val_acc1")
    assert sorted((m.step, m.timestamp) for m in history) == [(1, 1000), (2, 2000)]


KILLED_DRIVER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_tracker import complete, run_trial, tiny_spec, tracker, trials_of
from sweeps.tracking import sender
from pathlib import Path
deliver = sender.Sender._deliver
def slow(self, batch):
    time.sleep(0.3)  # a throttled MLflow
    deliver(self, batch)
sender.Sender._deliver = slow
from sweeps.tracking import writers
writers.ClientWriter.batch_records = writers.SqlWriter.batch_records = 3
spec = tiny_spec(Path({tmp!r}), seeds=(0, 1, 2, 3))
callback = tracker(spec)
callback.setup()
for trial in trials_of(spec):
    run_trial(callback, trial, [1, 2])
    complete(callback, trial)
print("appended", flush=True)
time.sleep(600)
"""


def test_a_killed_drivers_outbox_is_written_exactly_once_by_the_next_start(
    tmp_path: Path,
) -> None:
    script = KILLED_DRIVER.format(tests=str(ROOT / "tests"), tmp=str(tmp_path))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SPARSESWEEP_MLFLOW_DRAIN_S": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert driver.stdout.readline().strip() == "appended"
        spec = tiny_spec(tmp_path, seeds=(0, 1, 2, 3))
        box = locate(spec).outbox_dir
        deadline = time.monotonic() + 600
        while outbox_status(box).pending >= 16:  # let MLflow take part of it
            assert time.monotonic() < deadline, "the killed driver's sender wrote nothing"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(60)
    left = outbox_status(box).pending
    assert 0 < left < 16 and outbox_status(box).holder is None
    trials = trials_of(spec)
    again = tracker(spec)  # the next start: Tune restores every trial as ended
    again.setup()
    for trial in trials:
        trial.status = "TERMINATED"
    again.on_experiment_end(trials)
    assert outbox_status(box).pending == 0
    found = runs(spec, "trial")
    assert len(found) == len({run.data.tags["config_hash"] for run in found}) == 4
    for run in found:
        assert run.info.status == "FINISHED"
        assert all(logged == [1, 2] for logged in steps(spec, run.info.run_id).values())
    [cell] = runs(spec, "cell")
    client, _ = client_of(spec)
    assert [m.step for m in client.get_metric_history(cell.info.run_id, "n_seeds")] == [1, 2]
    assert not math.isnan(cell.data.metrics["test_acc1_mean"])


def table_rows(uri: str, run_id: str) -> dict[str, list[tuple]]:
    """A run's rows in MLflow's SQL tables, without its id."""
    import sqlite3

    from analysis.fetch import sqlite_path

    columns = {
        "runs": "name, source_type, source_name, entry_point_name, user_id, status, "
        "start_time, end_time, deleted_time, source_version, lifecycle_stage",
        "tags": "key, value",
        "params": "key, value",
        "metrics": "key, value, timestamp, step, is_nan",
        "latest_metrics": "key, value, timestamp, step, is_nan",
    }
    with contextlib.closing(sqlite3.connect(sqlite_path(uri))) as db:
        return {
            table: sorted(db.execute(f"SELECT {names} FROM {table} WHERE run_uuid = ?", (run_id,)))
            for table, names in columns.items()
        }


def test_the_bulk_sql_writer_writes_the_rows_the_client_writes(tmp_path: Path) -> None:
    found = {}
    for kind in ("client", "sql"):
        uri = f"sqlite:///{tmp_path / kind}.db"
        client = MlflowClient(uri)
        experiment = client.create_experiment("w", artifact_location=(tmp_path / kind).as_uri())
        writer = ClientWriter(client) if kind == "client" else make_writer(uri, client)
        assert type(writer) is (ClientWriter if kind == "client" else SqlWriter)
        run = NewRun(
            experiment, "one trial", {"mlflow.user": "me", "a": "1", "long": "x" * 9000}, 7
        )
        writer.assign_ids([run])
        writer.create([run])
        update = RunUpdate(
            str(run.run_id),
            params={"p": "1", "q": "y" * 7000},
            tags={"a": "2", "b": "3"},
            metrics=[
                ("m", 1.0, 10, 1),
                ("m", math.nan, 11, 2),
                ("m", math.inf, 12, 3),
                ("k", 2.0, 10, 1),
                ("k", 1.5, 9, 1),
            ],
            status="FINISHED",
            end_time=5000,
            texts={"notes/x.txt": "hello"},
        )
        writer.update([update])
        writer.update([update])  # written again: nothing changes
        writer.update([RunUpdate(str(run.run_id), status="SCHEDULED")])
        found[kind] = table_rows(uri, str(run.run_id))
        artifact = client.download_artifacts(str(run.run_id), "notes/x.txt", str(tmp_path))
        assert Path(artifact).read_text() == "hello"
        assert writer.logged_steps([str(run.run_id)], "m") == {str(run.run_id): {1, 2, 3}}
        writer.close()
    assert found["sql"] == found["client"]
    assert found["sql"]["runs"][0][5:8] == ("SCHEDULED", 7, 5000)


def test_export_says_records_wait_and_sync_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sweeps.cli import app

    spec = tiny_spec(tmp_path)
    outage = Outage(monkeypatch)
    first, second = trials_of(spec)
    callback = tracker(spec)
    callback.setup()
    run_trial(callback, first, [1, 2])
    complete(callback, first)
    assert callback._sender.drain(60, print) == 0
    outage.down = True
    run_trial(callback, second, [1, 2])
    complete(callback, second)
    callback.on_experiment_end([first, second])
    storage = str(tmp_path / "results")
    runner = CliRunner()
    export = ["export", "trk", "--tracking-uri", spec.tracking_uri, "-o", str(tmp_path / "out")]
    exported = runner.invoke(app, export)
    assert exported.exit_code == 0, exported.output
    text = " ".join(exported.output.split())
    assert "exported 1 trials" in text
    assert (
        "note: this export lacks records: 5 MLflow records of sweep trk are not in MLflow at "
        f"{spec.tracking_uri} yet; they wait in the sweep's outbox: "
        f"`sparsesweep sync trk --storage {storage}` writes them"
    ) in text
    assert "still running" not in text

    held = Outbox(locate(spec).outbox_dir)
    busy = runner.invoke(app, ["sync", "trk", "--storage", storage])
    assert busy.exit_code == 2 and f"held by process {os.getpid()}" in busy.output
    held.close()
    outage.down = False
    synced = runner.invoke(app, ["sync", "trk", "--storage", storage])
    assert synced.exit_code == 0, synced.output
    assert "every record of sweep trk is written" in synced.output
    assert outbox_status(locate(spec).outbox_dir).pending == 0
    again = runner.invoke(app, export)
    assert "exported 2 trials" in again.output and "note:" not in again.output
    assert {run.info.status for run in runs(spec, "trial")} == {"FINISHED"}
    assert "nothing waits" in runner.invoke(app, ["sync", "trk", "--storage", storage]).output


def test_a_sweep_whose_outbox_is_held_is_not_started(tmp_path: Path) -> None:
    import yaml
    from sweep_helpers import ONE_TRIAL_SPEC, sweep_cli_app
    from typer.testing import CliRunner

    payload = {
        "name": "held",
        **ONE_TRIAL_SPEC,
        "storage_path": str(tmp_path / "results"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(payload))
    held = Outbox(tmp_path / "results" / "held" / "mlflow_outbox")
    try:
        result = CliRunner().invoke(sweep_cli_app(), ["run", str(path)])
    finally:
        held.close()
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert f"process {os.getpid()} (a run of it, or `sparsesweep sync`) holds its MLflow" in flat


def hard_delete(uri: str, run_id: str) -> None:
    """Delete a run and collect it (`mlflow gc`): the store no longer holds it at all."""
    from click.testing import CliRunner
    from mlflow.cli import gc

    MlflowClient(uri).delete_run(run_id)
    collected = CliRunner().invoke(
        gc, ["--backend-store-uri", uri, "--tracking-uri", uri, "--run-ids", run_id]
    )
    assert collected.exit_code == 0, collected.output


def a_recorded_trial(
    tmp_path: Path,
) -> tuple[SweepSpec, SimpleNamespace, MlflowSweepCallback, Any]:
    """A trial whose first epoch is in MLflow: its spec, the trial, its set-up tracker, its run."""
    spec = tiny_spec(tmp_path)
    [trial, *_] = trials_of(spec)
    callback = tracker(spec)
    callback.setup()
    run_trial(callback, trial, [1])
    assert callback._sender.drain(60, print) == 0
    [run] = runs(spec, "trial")
    return spec, trial, callback, run


@pytest.mark.parametrize("writer", ["sql", "client"])
@pytest.mark.parametrize("removal", ["deleted", "collected"])
def test_a_trial_run_gone_from_mlflow_is_created_again_not_retried_forever(
    writer: str,
    removal: str,
    tmp_path: Path,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    """The run index holds a trial's run that the store no longer does (a user deleted it, or
    it was collected): each write to it fails (or, in SQL, lands in the trash) however often
    it is tried. The sender creates the run again with the records that wait, once."""
    if writer == "client":
        monkeypatch.setattr(sender_module, "make_writer", lambda uri, c: ClientWriter(c))
    monkeypatch.setattr(sender_module, "RETRY_INTERVAL_S", 0.05)
    spec, trial, callback, lost = a_recorded_trial(tmp_path)
    if removal == "deleted":
        MlflowClient(spec.tracking_uri).delete_run(lost.info.run_id)
    else:
        hard_delete(spec.tracking_uri, lost.info.run_id)
    for number in (2, 3):
        trial.last_result = epoch(number)
        callback.on_trial_result(0, [], trial, trial.last_result)
    complete(callback, trial)
    with caplog.at_level("WARNING", logger=sender_module.__name__):
        assert callback.finish() == 0
    [run] = runs(spec, "trial")
    assert run.info.run_id != lost.info.run_id
    assert run.info.status == "FINISHED" and run.data.tags["config_hash"] == trial_hash(
        trial.config
    )
    assert all(logged == [2, 3] for logged in steps(spec, run.info.run_id).values())
    assert run.data.params  # created again with its params
    said = [r.getMessage() for r in caplog.records if "was missing from" in r.getMessage()]
    assert said == [
        f"MLflow: run {run.info.run_name} was missing from {spec.tracking_uri}; re-created "
        "with its 3 records"
    ]
    again = steps(spec, run.info.run_id)
    restored = tracker(spec)  # the same command again: nothing waits, nothing changes
    restored.setup()
    restored.finish()
    assert steps(spec, run.info.run_id) == again and len(runs(spec, "trial")) == 1


def test_a_trial_run_gone_without_a_config_to_create_it_stops_the_sender_saying_which(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next start of a sweep sends the epochs a killed driver left; the trial's start
    (its config) was written by that driver and its run is gone: no retry can help."""
    monkeypatch.setattr(sender_module, "RETRY_INTERVAL_S", 0.05)
    spec, trial, first, lost = a_recorded_trial(tmp_path)
    first._sender.stop()  # killed: its last epoch waits in the outbox
    first._outbox.append(epochs_record(trial_hash(trial.config), [{**epoch(2), "time": 5}]))
    first._outbox.close()
    hard_delete(spec.tracking_uri, lost.info.run_id)
    shown: list[str] = []
    again = tracker(spec)
    again.setup()
    assert again._sender.drain(60, shown.append) == 1
    assert again._sender.error == (
        f"the run of trial {trial_hash(trial.config)} is missing from MLflow at "
        f"{spec.tracking_uri} (deleted, or the store was replaced) and cannot be created "
        f"again: no config of it waits in {locate(spec).outbox_dir}; restore the run "
        "(MLflow's trash) or use the store that holds it"
    )
    assert shown[-1] == f"MLflow: {again._sender.error}"
    again.finish()
