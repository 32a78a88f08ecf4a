"""Nothing lost at any speed (issue 22), on local Ray: a sweep of fast one-epoch trials against
a throttled MLflow server (a proxy that delays every request; slowed to a crawl while the
trials report, so records pile up), its driver SIGKILLed with records still in the outbox,
then the same command again with the server killed as the sweep ends (the run exits 1 naming
`sparsesweep sync`), then the same command once more with the server back: every trial run,
tag, param and epoch is in MLflow exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import (
    aggregate_steps,
    finish,
    free_port,
    kill_group,
    logged_steps,
    planned_trials,
    ray_temp_dir,
    start_mlflow_server,
    start_sweep,
    sweep_env,
    trial_runs,
    tune_rows,
    wait_for,
    write_fault_plan,
    write_spec,
)
from throttle_proxy import throttled

from sweeps.tracking.outbox import outbox_status
from sweeps.tracking.uri import DRAIN_TIMEOUT_ENV
from trainables.faults import marker_path

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.server, pytest.mark.timeout(3600)]

BURST = {
    "name": "burst",
    "base": {
        "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 16},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9],
        "budgets": [1],
        "seeds": [0, 1, 2],
    },
    "search": {"lr": {"grid": [0.05, 0.1]}},
    "resources": {
        "executor": "actor",
        "workers_per_trial": 1,
        "cpus_per_worker": 0.5,
        "max_concurrent_trials": 2,
    },
}
TRIALS = 12
DELAY_S = 0.5
CRAWL_S = 60.0


def test_fast_trials_a_throttled_server_a_killed_driver_and_a_dead_server_lose_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    database, log = tmp_path / "server.db", tmp_path / "server.log"
    server = start_mlflow_server(database, port, log)
    try:
        with throttled(port, free_port(), DELAY_S) as proxy:
            uri = proxy.uri
            spec_path = write_spec(tmp_path, BURST, tracking_uri=uri)
            hashes = [config["meta"]["config_hash"] for config in planned_trials(spec_path)]
            assert len(hashes) == TRIALS
            experiment_dir = tmp_path / "results" / "burst"
            outbox = experiment_dir / "mlflow_outbox"
            # one trial stands still in its epoch in both runs until the test releases it
            held, gate = hashes[-1], tmp_path / "release"
            plan = write_fault_plan(
                tmp_path / "faults.json",
                {held: {"epoch": 1, "action": "pause", "release": str(gate), "times": 2}},
            )

            def pending() -> int:
                status = outbox_status(outbox)
                return 0 if status is None else status.pending

            with ray_temp_dir() as ray_tmp:
                first = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp, plan))
                try:
                    wait_for(lambda: len(tune_rows(experiment_dir)) >= 1, 1500, "a report", first)
                    proxy.delay_s = CRAWL_S  # MLflow barely answers: records pile up
                    wait_for(
                        lambda: (
                            len(tune_rows(experiment_dir)) >= 4
                            and marker_path(plan, held, 1).exists()
                            and pending() > 0
                        ),
                        1500,
                        "4 trials reported, one held, records waiting in the outbox",
                        first,
                    )
                finally:
                    kill_group(first)
            assert pending() > 0 and outbox_status(outbox).holder is None
            proxy.delay_s = DELAY_S

            with ray_temp_dir() as ray_tmp:
                env = {**sweep_env(ray_tmp, plan), DRAIN_TIMEOUT_ENV: "3"}
                second = start_sweep(spec_path, tmp_path, env)
                try:
                    wait_for(
                        lambda: (
                            marker_path(plan, held, 2).exists()
                            and len(tune_rows(experiment_dir)) >= TRIALS - 1
                        ),
                        1500,
                        "every trial but the held one reported",
                        second,
                    )
                    kill_group(server)  # MLflow dies as the sweep ends
                    gate.touch()
                    output = finish(second, 1500)
                finally:
                    kill_group(second)
            flat = " ".join(output.split())
            assert second.returncode == 1, output[-4000:]
            assert f"{TRIALS}/{TRIALS} trials ended ({TRIALS} finished)" in flat
            assert "MLflow records of sweep burst are not in MLflow" in flat, output[-4000:]
            assert f"sparsesweep sync burst --storage {tmp_path / 'results'}" in flat
            assert pending() > 0

            server = start_mlflow_server(database, port, log)
            with ray_temp_dir() as ray_tmp:
                third = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp))
                output = finish(third, 1500)
            assert third.returncode == 0, output[-4000:]
            assert "are not in MLflow" not in output
            assert pending() == 0

            runs = trial_runs(uri, "burst")  # fails on two runs for one trial
            assert set(runs) == set(hashes)
            for trial, run in runs.items():
                assert run.info.status == "FINISHED", trial
                assert run.data.tags["sparsesweep.status"] == "finished"
                assert run.data.params["optim.lr"] in ("0.05", "0.1")
                for key, steps in logged_steps(uri, run.info.run_id).items():
                    assert steps == [1], (trial, key)
            aggregates = aggregate_steps(uri, "burst")
            assert set(aggregates) == {
                "cell default/rigl/s=0.9/e=1",
                "cell default/rigl+sparseopt/s=0.9/e=1",
                "curve default rigl s=0.9",
                "curve default rigl+sparseopt s=0.9",
            }
            for name, metrics in aggregates.items():
                assert metrics and all(steps == [1] for steps in metrics.values()), name
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name("burst").experiment_id
            others = client.search_runs([experiment], "tags.`sparsesweep.role` != 'trial'")
            assert {run.info.status for run in others} == {"FINISHED"}
    finally:
        kill_group(server)
