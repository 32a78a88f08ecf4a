"""Fault injection on real sweeps (issue #6): the system keeps going and loses nothing.

* A training worker SIGKILLed mid-epoch (`trainables.faults`): the trial retries from its
  last checkpoint within `resources.max_failures`; past the budget it is marked failed in
  Tune and MLflow while the sweep goes on. Each epoch reaches Tune and MLflow exactly once.
* A trial whose loss becomes non-finite stops as `diverged` (MLflow, the Parquet export and
  the analysis' status counts) and the sweep goes on.
* A checkpoint truncated or corrupted on disk: the trial resumes from the previous good one,
  or from scratch when none is left, and says which files it skipped.
* The MLflow server dies mid-sweep: training goes on; what could not be logged is sent once
  the server is back, or, if it is still down when the sweep ends, kept in the sweep's outbox
  (the run exits 1 naming `sparsesweep sync`) and sent when the same command runs again;
  every epoch lands exactly once.

Every training-side case runs on both trial executors (`resources.executor`): `actor` (the
trial trains in its Tune actor; a killed actor is retried by Tune) and `train` (Ray Train's
TorchTrainer; a killed worker is retried by Train). The MLflow outage runs once, on `actor`:
what it tests, the driver's tracker, does not depend on the executor. The driver-SIGKILL case
is `tests/test_sweep_e2e.py`; storage and tracker units are in `tests/test_faults_fast.py`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mlflow_store import empty_store
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
    trial_meta,
    trial_runs,
    tune_rows,
    wait_for,
    write_fault_plan,
    write_spec,
)

from contract.trial import trial_config
from sweeps.tracking.uri import DRAIN_TIMEOUT_ENV
from trainables.faults import marker_path

# whole sweeps with retries and server restarts: give a busy machine more than the default
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1800)]

DIVERGING_LR = 10.0
FAULTY = {
    "name": "faulty",
    "base": {
        "data": {"name": "digits", "batch_size": 128, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 32},
        # peak lr = lr x 128: 0.064 trains, 1280 overflows the loss in the second epoch
        "schedule": {"warmup_epochs": 0, "reference_batch_size": 1},
        "sparse": {"delta_t": 4},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [3], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.0005, DIVERGING_LR]}},
    "resources": {
        "workers_per_trial": 1,
        "cpus_per_worker": 0.5,
        "max_concurrent_trials": 2,
        "max_failures": 1,
    },
}
KILL_EPOCH = 2
EXECUTORS = ("actor", "train")


def on_executor(spec: dict[str, Any], executor: str) -> dict[str, Any]:
    """`spec` with its trials run on `executor`."""
    return {**spec, "resources": {**spec["resources"], "executor": executor}}


def by_role(configs: list[dict[str, Any]]) -> dict[str, str]:
    """Config hashes of the faulty sweep's trials by the fault each one meets."""
    roles = {}
    for config in configs:
        meta = config["meta"]
        if meta["lr"] == DIVERGING_LR:
            roles[f"diverges-{meta['seed']}"] = meta["config_hash"]
        else:
            roles["retried" if meta["seed"] == 0 else "failed"] = meta["config_hash"]
    return roles


@pytest.fixture(scope="module", params=EXECUTORS)
def faulty_sweep(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Run the faulty sweep once per executor: one worker killed once (retried), one killed
    past the failure budget, two trials diverging. Returns what the tests inspect."""
    tmp_path = tmp_path_factory.mktemp(f"faulty-{request.param}")
    spec_path = write_spec(tmp_path, on_executor(FAULTY, request.param))
    roles = by_role(planned_trials(spec_path))
    assert len(roles) == 4
    plan = write_fault_plan(
        tmp_path / "faults.json",
        {
            roles["retried"]: {"epoch": KILL_EPOCH, "action": "kill", "times": 1},
            roles["failed"]: {"epoch": KILL_EPOCH, "action": "kill", "times": 2},
        },
    )
    with ray_temp_dir() as ray_tmp:
        process = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp, plan))
        output = finish(process, timeout_s=900)
    assert process.returncode == 0, output[-4000:]
    return {
        "executor": request.param,
        "output": output,
        "roles": roles,
        "plan": plan,
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "rows": tune_rows(tmp_path / "results" / "faulty"),
    }


def test_sweep_ends_with_every_trial_accounted_for(faulty_sweep: dict[str, Any]) -> None:
    assert "4/4 trials ended (2 diverged, 1 failed, 1 finished)" in faulty_sweep["output"]


def test_killed_worker_retries_from_its_last_checkpoint(faulty_sweep: dict[str, Any]) -> None:
    trial = faulty_sweep["roles"]["retried"]
    assert marker_path(faulty_sweep["plan"], trial, 1).exists(), "the worker was never killed"
    rows = faulty_sweep["rows"][trial]
    assert {row["resumed_from_epoch"] for row in rows} <= {0, 1}
    first_attempt = [row["epoch"] for row in rows if row["resumed_from_epoch"] == 0]
    retry = [row for row in rows if row["resumed_from_epoch"] == 1]
    # epoch 1's report can die with the killed worker before Tune gets it ...
    assert first_attempt in ([], [1])
    # ... the retry starts right after the epoch-1 checkpoint and replays epoch 1 from it
    assert [row["epoch"] for row in retry] == [2, 3]
    assert [entry["epoch"] for entry in retry[0]["history"]] == [1]
    run = trial_runs(faulty_sweep["uri"], "faulty")[trial]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sparsesweep.status"] == "finished"
    assert run.data.tags["sparsesweep.resumed_from_epoch"] == "1"
    for key, steps in logged_steps(faulty_sweep["uri"], run.info.run_id).items():
        assert steps == [1, 2, 3], key


def test_worker_killed_past_the_failure_budget_fails_the_trial_only(
    faulty_sweep: dict[str, Any],
) -> None:
    trial = faulty_sweep["roles"]["failed"]
    plan = faulty_sweep["plan"]
    # max_failures = 1: the first attempt and one retry, each killed in epoch 2
    assert marker_path(plan, trial, 1).exists() and marker_path(plan, trial, 2).exists()
    rows = faulty_sweep["rows"][trial]
    assert {row["epoch"] for row in rows} == {1}
    if faulty_sweep["executor"] == "train":
        # before failing, the driver reports what the checkpoint holds: a worker's epoch-1
        # report can die with it
        assert [entry["epoch"] for entry in rows[-1]["history"]] == [1]
    else:
        # in the actor a report is synchronous: epoch 1 reached Tune before the kill
        assert [row["epoch"] for row in rows] == [1]
    run = trial_runs(faulty_sweep["uri"], "faulty")[trial]
    assert run.info.status == "FAILED"
    assert run.data.tags["sparsesweep.status"] == "failed"
    for key, steps in logged_steps(faulty_sweep["uri"], run.info.run_id).items():
        assert steps == [1], key


def test_diverged_trials_are_recorded_exported_and_counted(
    faulty_sweep: dict[str, Any], tmp_path: Path
) -> None:
    from analysis.compare import compare
    from analysis.export import export_experiment

    uri = faulty_sweep["uri"]
    runs = trial_runs(uri, "faulty")
    for seed in (0, 1):
        trial = faulty_sweep["roles"][f"diverges-{seed}"]
        rows = faulty_sweep["rows"][trial]
        assert rows[-1]["diverged"] is True
        diverged_in = rows[-1]["epoch"]
        assert 1 <= diverged_in <= 3
        run = runs[trial]
        assert run.info.status == "FAILED"
        assert run.data.tags["sparsesweep.status"] == "diverged"
        expected = list(range(1, diverged_in))
        for key, steps in logged_steps(uri, run.info.run_id).items():
            assert steps == expected, key

    tables = export_experiment(uri, "faulty", tmp_path / "export").tables
    trials = tables.trials.to_pandas()
    assert Counter(trials["status"]) == {"diverged": 2, "failed": 1, "finished": 1}
    status = compare(trials, tables.epochs.to_pandas()).status
    assert len(status) == 1
    assert status.iloc[0][["finished", "failed", "diverged", "running"]].tolist() == [1, 1, 2, 0]


# ----------------------------------------------------------------------------- checkpoints
def fit_trial(executor: str, config: dict[str, Any], runtime: Any, tune_dir: Path) -> dict:
    """Run one trial to its end on `executor`; its last reported result."""
    if executor == "train":
        from trainables.driver import build_trainer

        return build_trainer(config, runtime).fit().metrics
    from ray import tune

    from trainables.actor import train_in_actor

    trainable = tune.with_parameters(train_in_actor, runtime=runtime)
    tuner = tune.Tuner(
        tune.with_resources(trainable, runtime.resources_per_worker()),
        param_space=config,
        run_config=tune.RunConfig(
            name=f"run-{len(list(tune_dir.glob('run-*')))}", storage_path=str(tune_dir), verbose=0
        ),
    )
    (result,) = tuner.fit()
    assert result.error is None, result.error
    return result.metrics


@pytest.mark.parametrize("executor", EXECUTORS)
def test_corrupted_checkpoints_fall_back_to_the_previous_good_one_then_to_scratch(
    executor: str, local_ray, tmp_path: Path
) -> None:
    from sparseopt.config import TrainConfig
    from trainables.runtime import TrialRuntime, train_run_name

    cfg = TrainConfig.model_validate(
        {
            "data": {"name": "digits", "batch_size": 128, "eval_batch_size": 512},
            "model": {"name": "mlp", "hidden": 16},
            "schedule": {"warmup_epochs": 0},
            "sparse": {"method": "rigl", "sparsity": 0.9, "delta_t": 4},
            "epochs": 2,
        }
    )
    meta = trial_meta(budget=cfg.epochs, config_hash=cfg.config_hash())
    config = trial_config(cfg.model_dump(mode="json"), meta)
    runtime = TrialRuntime(
        train_storage_path=str(tmp_path / "train_runs"), workers=1, cpus_per_worker=0.5
    )
    run_dir = tmp_path / "train_runs" / train_run_name(cfg.config_hash())

    def checkpoint_files() -> list[Path]:
        return sorted(run_dir.glob("checkpoint_*/ckpt-*.pt"))  # directory names sort by time

    first = fit_trial(executor, config, runtime, tmp_path / "tune")
    assert (first["epoch"], first["resumed_from_epoch"]) == (2, 0)
    files = checkpoint_files()
    assert [path.name for path in files] == ["ckpt-000001.pt", "ckpt-000002.pt"]

    truncated = files[-1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    second = fit_trial(executor, config, runtime, tmp_path / "tune")
    assert second["resumed_from_epoch"] == 1
    assert [entry["epoch"] for entry in second["history"]] == [1]
    [skipped] = second["skipped_checkpoints"]
    assert str(truncated) in skipped
    # resumed from the right state: epoch 2 comes out exactly as the first time
    assert second["epoch"] == 2
    assert (second["train_loss"], second["val_acc1"]) == (first["train_loss"], first["val_acc1"])

    corrupted = checkpoint_files()
    assert len(corrupted) == 2 and truncated in corrupted
    for path in corrupted:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    third = fit_trial(executor, config, runtime, tmp_path / "tune")
    assert (third["epoch"], third["resumed_from_epoch"]) == (2, 0)
    assert len(third["skipped_checkpoints"]) == 2
    for path in corrupted:
        assert any(str(path) in message for message in third["skipped_checkpoints"]), path


# ----------------------------------------------------------------------------- MLflow outage
OUTAGE = {
    "name": "outage",
    "base": {
        "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 16},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [3], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.1]}},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 2},
}


@pytest.mark.server
def test_mlflow_server_outage_mid_sweep_loses_nothing(tmp_path: Path) -> None:
    """Once, on the actor executor: what loses nothing here is the driver's tracker (its outbox
    and sender), which is the same whichever executor trains the trials."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    database, server_log = tmp_path / "server.db", tmp_path / "server.log"
    empty_store(database)
    spec_path = write_spec(tmp_path, on_executor(OUTAGE, "actor"), tracking_uri=uri)
    first, second = (config["meta"]["config_hash"] for config in planned_trials(spec_path))
    gate_first, gate_second = tmp_path / "release-first", tmp_path / "release-second"
    # the trials stand still (mid-epoch) until the test releases them, so each phase is certain
    plan = write_fault_plan(
        tmp_path / "faults.json",
        {
            first: {"epoch": 2, "action": "pause", "release": str(gate_first)},
            second: {"epoch": 3, "action": "pause", "release": str(gate_second)},
        },
    )
    train_runs = tmp_path / "results" / "outage" / "train_runs"

    def steps(trial: str) -> list[int] | None:
        run = trial_runs(uri, "outage").get(trial)
        return None if run is None else logged_steps(uri, run.info.run_id)["val_acc1"]

    def status(trial: str) -> str | None:
        run = trial_runs(uri, "outage").get(trial)
        return None if run is None else run.info.status

    server = start_mlflow_server(database, port, server_log)
    try:
        with ray_temp_dir() as ray_tmp:
            # MLflow stays down past the sweep's end: wait 3 s for it there, not 30
            env = {**sweep_env(ray_tmp, plan), DRAIN_TIMEOUT_ENV: "3"}
            sweep = start_sweep(spec_path, tmp_path, env)
            try:
                wait_for(
                    lambda: (
                        marker_path(plan, first, 1).exists()
                        and marker_path(plan, second, 1).exists()
                        and steps(first) == [1]
                        and steps(second) == [1, 2]
                    ),
                    600,
                    "both trials paused with their epochs so far in MLflow",
                    sweep,
                )
                kill_group(server)  # the server dies mid-sweep ...
                gate_first.touch()
                wait_for(
                    lambda: any(train_runs.glob(f"trial-{first}/checkpoint_*/ckpt-000003.pt")),
                    600,
                    "the first trial to train on to its last epoch while MLflow is down",
                    sweep,
                )
                server = start_mlflow_server(database, port, server_log)  # ... and comes back
                wait_for(
                    lambda: status(first) == "FINISHED" and steps(first) == [1, 2, 3],
                    600,
                    "the buffered epochs and end of the first trial to reach MLflow",
                    sweep,
                )
                kill_group(server)  # down again, until after the sweep has ended
                gate_second.touch()
                output = finish(sweep, timeout_s=600)
            finally:
                kill_group(sweep)
        assert sweep.returncode == 1, output[-4000:]  # ended, but MLflow lacks records
        assert "2/2 trials ended (2 finished)" in output
        flat = " ".join(output.split())
        assert "MLflow records of sweep outage are not in MLflow" in flat, output[-4000:]
        assert f"sparsesweep sync outage --storage {tmp_path / 'results'}" in flat

        server = start_mlflow_server(database, port, server_log)
        assert status(second) == "RUNNING" and steps(second) == [1, 2]
        with ray_temp_dir() as ray_tmp:  # the same command again sends what was kept
            again = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp))
            output = finish(again, timeout_s=600)
        assert again.returncode == 0, output[-4000:]
        assert "are not in MLflow" not in output

        runs = trial_runs(uri, "outage")
        assert set(runs) == {first, second}
        for trial, run in runs.items():
            assert run.info.status == "FINISHED", trial
            assert run.data.tags["sparsesweep.status"] == "finished"
            for key, logged in logged_steps(uri, run.info.run_id).items():
                assert logged == [1, 2, 3], (trial, key)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("outage")
        [cell] = client.search_runs([experiment.experiment_id], "tags.`sparsesweep.role` = 'cell'")
        assert cell.info.status == "FINISHED"
        aggregates = aggregate_steps(uri, "outage")
        assert aggregates["cell default/rigl/s=0.9/e=3"]["test_acc1_mean"] == [1, 2, 3]
        assert aggregates["curve default rigl s=0.9"]["test_acc1_mean"] == [3]
        for metrics in aggregates.values():
            assert all(steps == sorted(set(steps)) for steps in metrics.values()), metrics
    finally:
        kill_group(server)
