"""Extending a sweep that had already FINISHED: `sparsesweep run SPEC` again with one more seed.

Tune restores a finished experiment with its search generator marked finished, so without
care the second run is a no-op. Checks: the new seed's trial runs and lands in MLflow under
the existing cell run, the old trials are not re-run (same MLflow runs, metrics untouched),
and `sparsesweep status` counts against the grown spec.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow_store import empty_store
from sweep_helpers import finish, ray_temp_dir, start_sweep, sweep_cli_app, sweep_env
from typer.testing import CliRunner

from contract.outcome import Status
from sweeps.run.status import sweep_status
from sweeps.spec.load import load_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = {
    "name": "extend",
    "base": {
        "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 16},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.1]}},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 2},
}
METRICS = ("train_loss", "val_acc1", "test_acc1")


def run_sweep(spec_path: Path, cwd: Path) -> str:
    """`sparsesweep run SPEC` in a fresh process (its own local Ray); returns its output."""
    with ray_temp_dir() as ray_tmp:
        process = start_sweep(spec_path, cwd, sweep_env(ray_tmp))
        output = finish(process, timeout_s=600)
    assert process.returncode == 0, output[-3000:]
    return output


def trial_runs(tracking_uri: str) -> dict[str, object]:
    """The sweep's trial runs by config hash (fails on a duplicate run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("extend")
    runs = client.search_runs([experiment.experiment_id], "tags.`sparsesweep.role` = 'trial'")
    by_hash = {run.data.tags["config_hash"]: run for run in runs}
    assert len(by_hash) == len(runs), "duplicate MLflow runs for one trial"
    return by_hash


def histories(tracking_uri: str, run_id: str) -> dict[str, list[tuple[int, float, int]]]:
    """Every logged point (step, value, timestamp) of the checked metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return {
        key: sorted((p.step, p.value, p.timestamp) for p in client.get_metric_history(run_id, key))
        for key in METRICS
    }


def test_finished_sweep_grows_by_a_seed(tmp_path: Path) -> None:
    uri = empty_store(tmp_path / "mlflow.db")
    spec = dict(SPEC, storage_path=str(tmp_path / "results"), tracking_uri=uri)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    assert "2/2 trials ended (2 finished)" in run_sweep(spec_path, tmp_path)
    first = trial_runs(uri)
    assert sorted(run.data.tags["seed"] for run in first.values()) == ["0", "1"]
    before = {h: histories(uri, run.info.run_id) for h, run in first.items()}

    spec["grid"] = dict(spec["grid"], seeds=[0, 1, 2])
    spec_path.write_text(yaml.safe_dump(spec))
    assert "3/3 trials ended (3 finished)" in run_sweep(spec_path, tmp_path)

    second = trial_runs(uri)
    assert set(first) < set(second)
    (new_hash,) = set(second) - set(first)
    new = second[new_hash]
    assert new.data.tags["seed"] == "2"
    assert new.info.status == "FINISHED"
    assert new.data.tags["sparsesweep.status"] == "finished"
    # the third seed changed the cell's seed means: a new cell run holds them, and it is the
    # parent of every trial, the old ones re-parented (MLflow cannot overwrite a logged value)
    parents = {run.data.tags["mlflow.parentRunId"] for run in second.values()}
    (old_parent,) = {run.data.tags["mlflow.parentRunId"] for run in first.values()}
    (parent,) = parents
    assert parent != old_parent
    cell = MlflowClient(uri).get_run(parent)
    assert cell.data.tags["sparsesweep.trials_ended"] == "3"
    assert MlflowClient(uri).get_run(old_parent).info.lifecycle_stage == "deleted"
    assert new.data.tags["lr_trial"] == "0"
    for key, points in histories(uri, new.info.run_id).items():
        assert [step for step, _, _ in points] == [1, 2], key
    for config_hash, run in first.items():
        assert second[config_hash].info.run_id == run.info.run_id
        assert second[config_hash].info.status == "FINISHED"
        assert histories(uri, run.info.run_id) == before[config_hash], "an old trial re-ran"

    result = CliRunner().invoke(
        sweep_cli_app(), ["status", "extend", "--storage", str(tmp_path / "results")]
    )
    assert result.exit_code == 0, result.output
    assert "3/3 trials ended" in result.output
    (row,) = sweep_status(load_spec(spec_path))
    counts = [row.count(status) for status in Status]
    assert (row.cell_id, row.expected, counts) == ("default/rigl/s=0.9/e=2", 3, [0, 0, 3, 0, 0, 0])
