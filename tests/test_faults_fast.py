"""Fault handling that needs no Ray: the test-only fault plan, the MLflow drain setting, and
storage that cannot be written (issue #6). MLflow outages seen by the sweep's tracker:
tests/test_tracker.py."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from sweep_helpers import ONE_TRIAL_SPEC, sweep_cli_app
from typer.testing import CliRunner

from sweeps.tracking.uri import (
    DRAIN_TIMEOUT_ENV,
    DRAIN_TIMEOUT_S,
    bound_http_retries,
    drain_timeout_s,
    tracker_http_settings,
)
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


def test_the_trackers_mlflow_client_fails_fast_unless_the_user_set_its_retries() -> None:
    """The sender retries from its outbox, so MLflow's own retries (minutes per request against a
    dead server, which held the end-of-sweep drain) are bounded; a user's setting wins."""
    import mlflow.environment_variables as mlflow_env

    names = {value.name for value in vars(mlflow_env).values() if hasattr(value, "name")}
    assert set(tracker_http_settings()) <= names  # MLflow's own variable names
    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    bound_http_retries(environ)
    assert environ == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "300",
    }


def test_run_refuses_a_bad_mlflow_drain_setting_before_ray_starts(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path = write_spec(tmp_path, tmp_path / "results")
    monkeypatch.setenv(DRAIN_TIMEOUT_ENV, "soon")
    result = CliRunner().invoke(app, ["run", str(spec_path)])
    assert result.exit_code == 2, result.output
    assert f"{DRAIN_TIMEOUT_ENV}='soon'" in result.output
    assert not (tmp_path / "results").exists()
