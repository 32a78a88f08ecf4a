"""End to end on local Ray: a tiny sweep, its driver SIGKILLed mid-way, the same command again.

Checks what a researcher relies on: every trial of the spec runs exactly once (the trial set
equals the uninterrupted searcher's, each config under one Tune trial id), `sparsesweep
status` (read from the trial index) says what Tune's saved state says, MLflow holds one child run per trial under its cell's
parent with every epoch's metrics exactly once, finished trials are kept and not re-run, every
unfinished trial continues from its newest checkpoint (its next reported epoch is the one after
it, and it replays the epochs before), and runs end FINISHED.

Run on both trial executors (`resources.executor`: the trial inside Tune's actor, and Ray
Train's TorchTrainer, whose trials start five actors each: there the grid has one arm, four
trials, as the resume path does not depend on the arms). One budget-2 trial stands still in its
second epoch (`trainables.faults`, so at least one trial is certainly mid-epoch with a
checkpoint) and the driver is killed once some trials have finished; which trial and how many
come from a fixed seed (`SPARSESWEEP_FAULT_SEED=<seed>` draws another kill point; the seed is
printed).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import (
    aggregate_steps,
    finish,
    kill_group,
    logged_steps,
    planned_trials,
    ray_temp_dir,
    start_sweep,
    sweep_env,
    trial_runs,
    tune_rows,
    wait_for,
    write_fault_plan,
    write_spec,
)

from sparseopt.checkpoint import CheckpointError, load_latest_checkpoint
from sweeps.run.status import cell_statuses, sweep_status
from sweeps.run.tune_state import tune_trials
from sweeps.spec.load import load_spec
from trainables.faults import marker_path

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = {
    "name": "e2e",
    "base": {
        "data": {"name": "digits", "batch_size": 128, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 32},
        "schedule": {"warmup_epochs": 0},
        "sparse": {"delta_t": 4},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9],
        "budgets": [1, 2],
        "seeds": [0, 1],
    },
    "search": {"lr": {"low": 0.01, "high": 0.3, "log": True}, "trials_per_cell": 1},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 2},
}
ARMS = {"actor": ["rigl", "rigl+sparseopt"], "train": ["rigl"]}
DEFAULT_FAULT_SEED = 0


def val_acc1_history(tracking_uri: str, run_id: str) -> list[tuple[int, float, int]]:
    """Every logged val_acc1 point of a run as (step, value, timestamp), sorted."""
    from mlflow.tracking import MlflowClient

    points = MlflowClient(tracking_uri).get_metric_history(run_id, "val_acc1")
    return sorted((point.step, point.value, point.timestamp) for point in points)


def newest_loadable_epoch(run_dir: Path) -> int:
    """The epoch of the newest checkpoint in a trial's Ray Train run directory that loads."""
    for directory in sorted(run_dir.glob("checkpoint_*"), reverse=True):
        try:
            payload = load_latest_checkpoint(directory)
        except CheckpointError:
            continue
        if payload is not None:
            return int(payload["epoch"])
    return 0


@pytest.mark.timeout(3600)  # two runs of an 8-trial sweep: slow on a busy machine
@pytest.mark.parametrize("executor", ["actor", "train"])
def test_sweep_survives_driver_sigkill_and_resumes_exactly_once(
    executor: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SPARSESWEEP_FAULT_SEED") or DEFAULT_FAULT_SEED)
    print(f"kill-point seed {seed} (replay with SPARSESWEEP_FAULT_SEED={seed})")
    rng = random.Random(seed)
    arms = ARMS[executor]
    spec_path = write_spec(
        tmp_path,
        {
            **SPEC,
            "grid": {**SPEC["grid"], "arms": arms},
            "resources": {**SPEC["resources"], "executor": executor},
        },
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    configs = {config["meta"]["config_hash"]: config for config in planned_trials(spec_path)}
    expected_trials = 4 * len(arms)  # 2 budgets x 2 seeds per arm
    assert len(configs) == expected_trials
    paused = rng.choice(sorted(h for h, c in configs.items() if c["meta"]["budget"] == 2))
    finished_before_kill = rng.randint(2, max(2, expected_trials - 3))
    plan = write_fault_plan(tmp_path / "faults.json", {paused: {"epoch": 2, "action": "pause"}})
    train_runs = tmp_path / "results" / "e2e" / "train_runs"

    def finished_runs() -> dict[str, Any]:
        runs = trial_runs(uri, "e2e")
        return {h: run for h, run in runs.items() if run.info.status == "FINISHED"}

    with ray_temp_dir() as ray_tmp:
        first = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp, plan))
        try:
            wait_for(
                lambda: (
                    marker_path(plan, paused, 1).exists()
                    and len(finished_runs()) >= finished_before_kill
                ),
                1500,
                f"{finished_before_kill} finished trials and trial {paused} paused in epoch 2",
                first,
            )
        finally:
            kill_group(first)
    rows_at_kill = {
        trial: {json.dumps(row, sort_keys=True) for row in rows}
        for trial, rows in tune_rows(tmp_path / "results" / "e2e").items()
    }
    done_before = {h: run.info.run_id for h, run in finished_runs().items()}
    histories_at_kill = {h: val_acc1_history(uri, run_id) for h, run_id in done_before.items()}
    checkpoints_at_kill = {h: newest_loadable_epoch(train_runs / f"trial-{h}") for h in configs}
    dirs_at_kill = {
        h: sorted(p.name for p in train_runs.glob(f"trial-{h}/checkpoint_*")) for h in configs
    }
    assert checkpoints_at_kill[paused] == 1

    with ray_temp_dir() as ray_tmp:
        second = start_sweep(spec_path, tmp_path, sweep_env(ray_tmp, plan))
        output = finish(second, timeout_s=1500)
    assert second.returncode == 0, output[-3000:]
    assert f"{expected_trials}/{expected_trials} trials ended" in output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("sparsesweep.role") == "trial"]
    cells = {r.info.run_id: r for r in runs if r.data.tags.get("sparsesweep.role") == "cell"}
    hashes = [r.data.tags["config_hash"] for r in trials]
    assert len(hashes) == len(set(hashes)) == expected_trials
    assert set(hashes) == set(configs)
    assert len(cells) == 2 * len(arms)

    rows = tune_rows(tmp_path / "results" / "e2e")
    # every config ran as one Tune trial: one handed out after Tune's last snapshot before the
    # kill kept its trial id when it was handed out again
    assert {
        h: len({row["trial_id"] for row in found}) for h, found in rows.items()
    } == dict.fromkeys(configs, 1)
    spec = load_spec(spec_path)
    experiment_dir = str(tmp_path / "results" / "e2e")
    assert sweep_status(spec) == cell_statuses(spec, tune_trials(experiment_dir))
    for run in trials:
        tags = run.data.tags
        trial = tags["config_hash"]
        assert run.info.status == "FINISHED", tags
        assert tags["sparsesweep.status"] == "finished"
        parent = cells[tags["mlflow.parentRunId"]]
        assert parent.data.tags["cell"] == tags["cell"]
        budget = int(tags["budget"])
        for key, steps in logged_steps(uri, run.info.run_id).items():
            assert steps == list(range(1, budget + 1)), (trial, key, steps)

        # what Tune received after the kill: the rows that were not in the file at the kill
        before = rows_at_kill.get(trial, set())
        after_kill = [row for row in rows[trial] if json.dumps(row, sort_keys=True) not in before]
        if trial in done_before:  # kept, not re-run
            assert run.info.run_id == done_before[trial]
            # Tune snapshots its experiment state periodically: a trial that finished just before
            # the kill may be launched again, but it must only replay its final checkpoint.
            assert all(
                row["resumed_from_epoch"] == budget and row["epoch"] == budget for row in after_kill
            ), f"finished trial {trial} trained again: {after_kill}"
            assert (
                sorted(p.name for p in train_runs.glob(f"trial-{trial}/checkpoint_*"))
                == (dirs_at_kill[trial])
            )
            assert val_acc1_history(uri, run.info.run_id) == histories_at_kill[trial]
            continue
        resumed_from = checkpoints_at_kill[trial]
        if not after_kill:  # trained to its budget before the kill, only its end was unrecorded
            assert resumed_from == budget, trial
            continue
        resumed = after_kill[0]
        assert resumed["resumed_from_epoch"] == resumed_from, (trial, resumed_from)
        assert resumed["epoch"] == min(resumed_from + 1, budget), trial
        assert [entry["epoch"] for entry in resumed["history"]] == list(range(1, resumed_from + 1))
    assert paused not in done_before

    aggregates = aggregate_steps(uri, "e2e")
    cells_logged = {key: value for key, value in aggregates.items() if key.startswith("cell ")}
    assert len(cells_logged) == 2 * len(arms)
    for key, metrics in cells_logged.items():
        budget = int(key.rsplit("e=", 1)[1])
        assert metrics["test_acc1_mean"] == list(range(1, budget + 1)), key
        assert all(steps == metrics["test_acc1_mean"] for steps in metrics.values()), key
    curves = {key: value for key, value in aggregates.items() if key.startswith("curve ")}
    assert len(curves) == len(arms)  # 1 sparsity
    for key, metrics in curves.items():
        assert metrics["test_acc1_mean"] == [1, 2], key
        if "sparseopt" in key:
            assert metrics["vs_baseline_diff"] == [1, 2], key
