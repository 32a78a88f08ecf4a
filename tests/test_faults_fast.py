"""Fault handling that needs no Ray: the test-only fault plan, MLflow outages seen by the sweep's
tracker, and storage that cannot be written (issue #6)."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
import yaml
from mlflow.tracking import MlflowClient
from sweep_helpers import ONE_TRIAL_SPEC, sweep_cli_app, trial_meta
from typer.testing import CliRunner

from sparseopt.config import TrainConfig
from sweeps.tracking.callback import EPOCH_METRICS, MlflowSweepCallback
from sweeps.tracking.uri import DRAIN_TIMEOUT_ENV, DRAIN_TIMEOUT_S, drain_timeout_s
from trainables.faults import FAULT_PLAN_ENV, fault_hook, marker_path

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fault plan
def test_fault_hook_is_inert_without_a_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULT_PLAN_ENV, raising=False)
    assert fault_hook("abc", epoch=1, rank=0) is None


def test_fault_fires_at_its_epoch_on_rank_zero_the_planned_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "plan.json"
    release = tmp_path / "go"
    release.touch()
    fault = {"epoch": 2, "action": "pause", "times": 2, "release": str(release)}
    plan.write_text(json.dumps({"abc": fault}))
    monkeypatch.setenv(FAULT_PLAN_ENV, str(plan))
    assert fault_hook("other", epoch=1, rank=0) is None
    assert fault_hook("abc", epoch=0, rank=0) is None
    assert fault_hook("abc", epoch=1, rank=1) is None
    hook = fault_hook("abc", epoch=1, rank=0)
    assert hook is not None
    hook(2)  # only the first step of the epoch fires
    assert not marker_path(plan, "abc", 1).exists()
    hook(1)
    hook(1)
    assert marker_path(plan, "abc", 1).exists() and marker_path(plan, "abc", 2).exists()
    hook(1)  # spent: a third attempt trains on
    assert not marker_path(plan, "abc", 3).exists()


def test_kill_fault_sigkills_the_worker_process(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"abc": {"epoch": 1, "action": "kill"}}))
    code = "from trainables.faults import fault_hook; fault_hook('abc', 0, 0)(1); print('alive')"
    env = {**os.environ, FAULT_PLAN_ENV: str(plan), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert b"alive" not in done.stdout
    assert marker_path(plan, "abc", 1).exists()
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert again.returncode == 0 and b"alive" in again.stdout


# ----------------------------------------------------------------------------- MLflow outage
UP_S = 600.0
"""How long a tracker waits for MLflow where the store is up (a hang guard, never reached): its
30 s default end-of-sweep wait can run out on a busy machine."""


class FlakyClient:
    """An `MlflowClient` that fails every call while `down` is set; records the calling thread."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self.down = False
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.current_thread().name)
            if self.down:
                raise ConnectionError("tracking server unreachable")
            return method(*args, **kwargs)

        return call


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Callbacks built without an artifact location write ./mlruns: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


def fake_trial(last_epoch: int = 0) -> SimpleNamespace:
    train = TrainConfig.model_validate(
        {"model": {"name": "mlp"}, "sparse": {"method": "rigl", "sparsity": 0.9}, "epochs": 3}
    )
    meta = trial_meta(cell="default/rigl/s=0.9/e=3", budget=3, config_hash=train.config_hash())
    return SimpleNamespace(
        trial_id="t0",
        config={"meta": meta.to_dict(), "train": train.model_dump(mode="json")},
        last_result={"epoch": last_epoch},
    )


def epoch_result(epoch: int, **extra: Any) -> dict[str, Any]:
    return {"epoch": epoch, **{key: float(epoch) for key in EPOCH_METRICS}, **extra}


def test_tracker_buffers_through_an_outage_and_a_resume_without_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mlflow_uri: str
) -> None:
    uri = mlflow_uri
    artifacts = (tmp_path / "artifacts").as_uri()
    launch_copy = pickle.dumps(MlflowSweepCallback(uri, "outage", artifacts, drain_timeout_s=UP_S))
    callback = MlflowSweepCallback(uri, "outage", artifacts, drain_timeout_s=0.5)  # stays down
    flaky = FlakyClient(MlflowClient(uri))
    callback._client = flaky
    trial = fake_trial()
    callback.setup()
    flaky.threads.clear()
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, epoch_result(1))
    assert callback.drain(UP_S)

    flaky.down = True
    callback.on_trial_result(0, [], trial, epoch_result(2))
    trial.last_result = epoch_result(3)
    callback.on_trial_result(0, [], trial, trial.last_result)
    callback.on_trial_complete(0, [], trial)
    saved = pickle.loads(pickle.dumps(callback.get_state()))  # Tune's experiment snapshot
    with caplog.at_level(logging.WARNING, logger="sweeps.tracking.callback"):
        callback.on_experiment_end([trial])
    # run updates: the trial's end, its cell's aggregates and the end of the cell run
    assert "did not take 2 epoch records and 3 run updates of 1 trials" in caplog.text
    assert "sparsesweep resume outage" in caplog.text
    assert flaky.threads == {"mlflow-sweep-sender"}  # Tune's thread never waits on MLflow

    client = MlflowClient(uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("outage").experiment_id],
        "tags.`sparsesweep.role` = 'trial'",
    )
    assert run.info.status == "RUNNING"
    assert [p.step for p in client.get_metric_history(run.info.run_id, "val_acc1")] == [1]

    # the same command again: the callback Tune unpickles, its saved state, MLflow back up
    resumed = pickle.loads(launch_copy)
    resumed.set_state(saved)
    resumed.setup()
    resumed.on_experiment_end([trial])
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sparsesweep.status"] == "finished"
    for key in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(p.step for p in history) == [1, 2, 3], key
        assert [p.value for p in sorted(history, key=lambda p: p.step)] == [1.0, 2.0, 3.0]
    [cell] = client.search_runs([run.info.experiment_id], "tags.`sparsesweep.role` = 'cell'")
    assert cell.info.status == "FINISHED"


def test_tracker_recovers_mid_sweep_and_ignores_replayed_epochs(
    tmp_path: Path, mlflow_uri: str
) -> None:
    uri = mlflow_uri
    callback = MlflowSweepCallback(
        uri, "recover", (tmp_path / "artifacts").as_uri(), drain_timeout_s=UP_S
    )
    flaky = FlakyClient(MlflowClient(uri))
    callback._client = flaky
    trial = fake_trial()
    callback.setup()
    callback.on_trial_start(0, [], trial)
    flaky.down = True
    callback.on_trial_result(0, [], trial, epoch_result(1))
    callback.on_trial_result(0, [], trial, epoch_result(2))
    assert not callback.drain(0.5)
    flaky.down = False
    assert callback.drain(UP_S)
    # a restarted attempt replays its checkpoint's history with its first report
    skipped = "/runs/trial-x/checkpoint_2/ckpt-000002.pt: sha256 mismatch"
    restart = epoch_result(
        3,
        history=[epoch_result(1), epoch_result(2)],
        resumed_from_epoch=2,
        skipped_checkpoints=[skipped],
    )
    trial.last_result = restart
    callback.on_trial_result(0, [], trial, restart)
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([trial])

    client = MlflowClient(uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("recover").experiment_id],
        "tags.`sparsesweep.role` = 'trial'",
    )
    for key in EPOCH_METRICS:
        assert sorted(p.step for p in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sparsesweep.resumed_from_epoch"] == "2"
    assert run.data.tags["sparsesweep.skipped_checkpoints"] == skipped


def test_diverged_epoch_placeholder_is_not_logged(tmp_path: Path, mlflow_uri: str) -> None:
    uri = mlflow_uri
    callback = MlflowSweepCallback(
        uri, "diverge", (tmp_path / "artifacts").as_uri(), drain_timeout_s=UP_S
    )
    trial = fake_trial()
    callback.setup()
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, epoch_result(1))
    nan = {key: float("nan") for key in EPOCH_METRICS}
    trial.last_result = {"epoch": 2, **nan, "diverged": True, "history": []}
    callback.on_trial_result(0, [], trial, trial.last_result)
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([trial])

    client = MlflowClient(uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("diverge").experiment_id],
        "tags.`sparsesweep.role` = 'trial'",
    )
    assert run.info.status == "FAILED"
    assert run.data.tags["sparsesweep.status"] == "diverged"
    assert [p.step for p in client.get_metric_history(run.info.run_id, "train_loss")] == [1]


def test_tracker_pickled_by_an_older_version_restores_with_todays_attributes(
    tmp_path: Path,
    mlflow_uri: str,
) -> None:
    """Tune restores a resumed sweep's callbacks as pickled at its first start: attributes added
    since (here `_records`, `_curve_runs`) come back with their defaults, the pickled ones
    kept, and the transient ones (`_fresh_runs`) are never pickled."""
    uri = mlflow_uri
    callback = MlflowSweepCallback(
        uri, "older", (tmp_path / "artifacts").as_uri(), drain_timeout_s=UP_S
    )
    callback._trial_runs["t0"] = "run0"
    state = callback.__getstate__()
    assert "_fresh_runs" not in state
    for added_since in ("_records", "_curve_runs", "_search_metric"):
        del state[added_since]
    restored = MlflowSweepCallback.__new__(MlflowSweepCallback)
    restored.__setstate__(state)
    assert restored._fresh_runs == set() and restored._records.records == {}
    assert restored._trial_runs == {"t0": "run0"}
    assert restored._experiment_name == "older" and restored._tracking_uri == uri
    assert restored._lock is not callback._lock and restored._client is None


# ----------------------------------------------------------------------------- storage
GOOD = {"name": "stored", **ONE_TRIAL_SPEC}


@pytest.fixture
def app() -> typer.Typer:
    return sweep_cli_app()


def write_spec(tmp_path: Path, storage: Path) -> Path:
    path = tmp_path / "spec.yaml"
    spec = dict(GOOD, storage_path=str(storage), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    path.write_text(yaml.safe_dump(spec))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def test_storage_path_under_a_regular_file_is_a_clear_error(app, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("keep me")
    path = write_spec(tmp_path, blocker / "results")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "storage_path" in result.output and str(blocker) in result.output.replace("\n", "")
    assert blocker.read_text() == "keep me"
    assert not (tmp_path / "m.db").exists()


def test_disk_full_while_storing_the_spec_changes_nothing(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from sweeps.spec.load import load_spec
    from sweeps.spec.storage import locate, write_text_atomic

    storage = tmp_path / "results"
    path = write_spec(tmp_path, storage)
    spec = load_spec(path)
    location = locate(spec)
    write_text_atomic(location.spec_file, spec.to_yaml() + "# written by the first run\n")
    checkpoint = Path(location.train_runs_dir) / "trial-x" / "checkpoint_1" / "ckpt-000001.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x00checkpoint bytes")
    (Path(location.experiment_dir) / "experiment_state-1.json").write_text('{"trials": []}')
    before = snapshot(storage)

    def no_space(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    ray_starts: list[dict[str, Any]] = []  # counted: the session's own Ray may be up

    def no_ray(**kwargs: Any) -> None:
        ray_starts.append(kwargs)
        raise AssertionError("ray.init was called although the spec could not be stored")

    monkeypatch.setattr(ray, "init", no_ray)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    output = result.output.replace("\n", "")
    assert "No space left on device" in output and "sweep_spec.yaml" in output
    assert snapshot(storage) == before
    assert ray_starts == []


def test_no_cluster_at_the_address_leaves_no_sweep_folder(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ray.init` failing (`--address auto` with no cluster): exit 2, a new sweep leaves nothing."""
    import ray

    def no_cluster(**kwargs: Any) -> None:
        assert kwargs["address"] == "auto"
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    storage = tmp_path / "results" / "nested"
    path = write_spec(tmp_path, storage)
    result = CliRunner().invoke(app, ["run", str(path), "--address", "auto"])
    assert result.exit_code == 2, result.output
    assert "--address auto: Could not find any running Ray" in result.output.replace("\n", "")
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "nan", "inf"])
def test_a_bad_mlflow_drain_setting_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=f"{DRAIN_TIMEOUT_ENV}='{raw}': allowed values are"):
        drain_timeout_s({DRAIN_TIMEOUT_ENV: raw})
    assert drain_timeout_s({DRAIN_TIMEOUT_ENV: "2.5"}) == 2.5
    assert drain_timeout_s({}) == DRAIN_TIMEOUT_S


def test_run_refuses_a_bad_mlflow_drain_setting_before_ray_starts(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path = write_spec(tmp_path, tmp_path / "results")
    monkeypatch.setenv(DRAIN_TIMEOUT_ENV, "soon")
    result = CliRunner().invoke(app, ["run", str(spec_path)])
    assert result.exit_code == 2, result.output
    assert f"{DRAIN_TIMEOUT_ENV}='soon'" in result.output
    assert not (tmp_path / "results").exists()
