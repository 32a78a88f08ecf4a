"""A real backend, as a team runs it: MLflow's tracking server on a PostgreSQL database
(Debian's `postgresql`, installed by `make postgres`; the test starts its own throw-away
cluster, tests/postgres_server.py). A small sweep, its driver SIGKILLed mid-way, the same
command again, then `report`: one run per trial with each epoch once, and the export's direct
SQL reader, pointed at the database, reads what the client reads through the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from postgres_server import postgres
from sweep_helpers import (
    finish,
    free_port,
    kill_group,
    logged_steps,
    planned_trials,
    ray_temp_dir,
    start_sweep,
    sweep_env,
    trial_runs,
    wait_for,
    write_fault_plan,
    write_spec,
)

from analysis.export import build_tables
from analysis.fetch import fetch_experiment
from trainables.faults import marker_path

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.server, pytest.mark.timeout(3600)]

SMALL = {
    "name": "pg",
    "base": {
        "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 16},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9],
        "budgets": [2],
        "seeds": [0, 1],
    },
    "search": {"lr": {"grid": [0.1]}},
    "resources": {
        "executor": "actor",
        "workers_per_trial": 1,
        "cpus_per_worker": 0.5,
        "max_concurrent_trials": 2,
    },
}


def start_server(backend: str, port: int, folder: Path) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` over `backend`, in its own session."""
    artifacts = ["--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    command = ["server", "--backend-store-uri", backend, "--host", "127.0.0.1", *artifacts]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *command, "--port", str(port)],
        cwd=folder,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=(folder / "server.log").open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 900, f"the MLflow server on port {port}", server)
    except BaseException:
        kill_group(server)
        raise
    return server


def test_a_sweep_killed_and_resumed_on_a_postgresql_backed_server_then_reported(
    tmp_path: Path,
) -> None:
    with postgres(free_port()) as database:  # fails naming `make postgres` if it is missing
        port = free_port()
        server = start_server(database, port, tmp_path)
        try:
            uri = f"http://127.0.0.1:{port}"
            spec_path = write_spec(tmp_path, SMALL, tracking_uri=uri)
            hashes = [config["meta"]["config_hash"] for config in planned_trials(spec_path)]
            paused = hashes[-1]
            plan = write_fault_plan(
                tmp_path / "faults.json", {paused: {"epoch": 2, "action": "pause"}}
            )

            def finished() -> int:
                return sum(r.info.status == "FINISHED" for r in trial_runs(uri, "pg").values())

            with ray_temp_dir() as ray_tmp:
                first = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp, plan))
                try:
                    wait_for(
                        lambda: marker_path(plan, paused, 1).exists() and finished() >= 1,
                        1500,
                        "one trial finished in MLflow and the last one paused in epoch 2",
                        first,
                    )
                finally:
                    kill_group(first)
            with ray_temp_dir() as ray_tmp:
                again = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp))
                output = finish(again, 1500)
            assert again.returncode == 0, output[-4000:]
            assert "4/4 trials ended (4 finished)" in output

            runs = trial_runs(uri, "pg")
            assert set(runs) == set(hashes)
            for trial, run in runs.items():
                assert run.info.status == "FINISHED", trial
                for key, steps in logged_steps(uri, run.info.run_id).items():
                    assert steps == [1, 2], (trial, key)

            command = ["report", "pg", "--tracking-uri", uri, "--out", str(tmp_path / "report")]
            report = subprocess.run(
                [sys.executable, "-m", "sweeps", *command],
                cwd=tmp_path,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert report.returncode == 0, report.stdout + report.stderr
            assert (tmp_path / "report" / "report.md").is_file()
            assert "note:" not in report.stdout

            direct = build_tables(fetch_experiment(database, "pg", reader="sql"))
            served = build_tables(fetch_experiment(uri, "pg", reader="client"))
            for name in ("trials", "epochs"):
                assert getattr(direct, name).equals(getattr(served, name)), name
            assert direct.trials.num_rows == 4 and direct.epochs.num_rows == 8
        finally:
            kill_group(server)
