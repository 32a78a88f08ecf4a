"""What `sparsesweep run` prints when its output is piped: one progress line per finished trial,
none of Ray's, Tune's or MLflow's own chatter (unless --verbose), Ray's log files kept, and a
closing summary whose commands paste back whole; a re-run with nothing to do says so; and the
library versions it records."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from sweep_helpers import ONE_TRIAL_SPEC, finish, ray_temp_dir, sweep_env, write_spec

from sweeps.run.versions import installed_versions

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CHATTER = (
    "Token authentication",
    "Started a local Ray instance",
    "Creating initial MLflow database tables",
    "Number of trials",
    "9223372036854775807",
    "tensorboard",
    "View detailed results",
    "Wrote the latest version",
)


def run(spec: Path, cwd: Path, ray_tmp: str, *flags: str) -> tuple[str, str]:
    """`python -m sweeps run SPEC` with stdout and stderr piped; returns both."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(spec), *flags],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=sweep_env(ray_tmp),
    )
    try:
        out, err = process.communicate(timeout=600)
    finally:
        finish(process, 60)
    assert process.returncode == 0, out + err
    return out, err


def test_piped_run_is_quiet_and_its_summary_pastes_back(tmp_path: Path) -> None:
    spec = {"name": "out", **ONE_TRIAL_SPEC, "grid": {**ONE_TRIAL_SPEC["grid"], "seeds": [0, 1]}}
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a new store: its creation is quiet too
    path = write_spec(tmp_path, spec, tracking_uri)
    with ray_temp_dir() as ray_tmp:
        out, err = run(path, tmp_path, ray_tmp)
        assert list(Path(ray_tmp).glob("**/logs/raylet.out")), "Ray's own log files are kept"
        noop_out, noop_err = run(path, tmp_path, ray_tmp)
        grown = write_spec(tmp_path, {**spec, "grid": {**spec["grid"], "seeds": [0, 1, 2]}})
        again_out, again_err = run(grown, tmp_path, ray_tmp, "--verbose")
    for line in CHATTER:
        assert line not in out + err, f"{line!r} printed:\n{out}\n{err}"
    progress = err.splitlines()
    assert progress[0] == "sweep out: starting Ray…"  # at once: Ray takes seconds to start
    assert progress[1] == "sweep out: 2 trials to run"
    assert progress[2].startswith("[1/2] finished default/rigl/s=0.9/e=1 seed=")
    assert progress[3].startswith("[2/2] finished") and "ETA 0s" in progress[3]
    summary = out.splitlines()
    assert summary[0] == "sweep out: 2/2 trials ended (2 finished)"
    commands = dict(line.split(": ", 1) for line in summary[1:])
    experiment_id = MlflowClient(tracking_uri).get_experiment_by_name("out").experiment_id
    assert commands["answer"] == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        "&searchFilter=tags.%60sparsesweep.role%60%20%3D%20%27curve%27&compareRunsMode=CHART"
    )
    assert shlex.split(commands["dashboard"]) == [
        "sparsesweep",
        "ui",
        "--tracking-uri",
        tracking_uri,
    ]
    assert shlex.split(commands["report"])[:3] == ["sparsesweep", "report", "out"]
    # the same command again has nothing to do: it says so and starts nothing
    assert noop_err == "sweep out: 2/2 trials already ended\n"
    assert noop_out.splitlines()[0] == "sweep out: 2/2 trials ended (2 finished)"
    assert "sweep out: resuming: 2 ended, 0 from checkpoints (3 trials in all)" in again_err
    assert_versions_recorded(tmp_path, tracking_uri)
    assert "Started a local Ray instance" in again_err, "--verbose shows Ray's output"
    assert "Configuration for experiment" in again_out, "--verbose shows Tune's output"


def assert_versions_recorded(tmp_path: Path, tracking_uri: str) -> None:
    """The stored spec and the MLflow experiment carry the installed library versions."""
    from mlflow.tracking import MlflowClient

    installed = installed_versions()
    stored = yaml.safe_load((tmp_path / "results" / "out" / "sweep_spec.yaml").read_text())
    assert stored["versions"] == installed
    tags = MlflowClient(tracking_uri).get_experiment_by_name("out").tags
    assert {name: tags[f"sparsesweep.version.{name}"] for name in installed} == installed
