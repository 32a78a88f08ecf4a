"""An adaptive-seeds sweep end to end through `sparsesweep run` (Ray Tune, MLflow): it adds
seeds to the primary pair until `max`, a re-run with a larger `max` continues it, and MLflow,
`status` and the stored decisions agree on every seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow_store import empty_store
from test_sweep_extend import run_sweep

from sweeps.run.seed_decisions import decisions_path, read_decisions
from sweeps.run.status import seed_lines
from sweeps.spec.load import load_spec
from sweeps.spec.storage import locate

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ARM, BASE = "default/rigl+sparseopt/s=0.9/e=2", "default/rigl/s=0.9/e=2"
SPEC = {
    "name": "adaptive",
    "base": {
        "data": {"name": "digits", "batch_size": 64, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 32},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {
        "arms": ["rigl", "rigl+sparseopt"],
        "sparsities": [0.9],
        "budgets": [2],
        "seeds": {"initial": 2, "max": 4, "until_halfwidth": 0.001, "batch": 2},
    },
    "search": {"lr": {"grid": [0.3]}},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 2},
}


def seeds_in_mlflow(uri: str) -> dict[tuple[str, str], list[int]]:
    """(cell, stage) -> the seeds of its trial runs (fails on a duplicate run)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("adaptive")
    runs = client.search_runs([experiment.experiment_id], "tags.`sparsesweep.role` = 'trial'")
    hashes = Counter(run.data.tags["config_hash"] for run in runs)
    assert max(hashes.values()) == 1, "duplicate MLflow runs for one trial"
    found: dict[tuple[str, str], list[int]] = {}
    for run in runs:
        key = (run.data.tags["cell"], run.data.tags["stage"])
        found.setdefault(key, []).append(int(run.data.tags["seed"]))
    return {key: sorted(seeds) for key, seeds in found.items()}


def cell_runs(uri: str) -> dict[str, tuple[str, str, str, float]]:
    """Cell id -> (status, trials ended, trials expected, n_seeds at its last epoch)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("adaptive")
    runs = client.search_runs([experiment.experiment_id], "tags.`sparsesweep.role` = 'cell'")
    found = {}
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "n_seeds")
        found[run.data.tags["cell"]] = (
            run.info.status,
            run.data.tags["sparsesweep.trials_ended"],
            run.data.tags["sparsesweep.trials_expected"],
            max(history, key=lambda point: point.step).value if history else None,
        )
    return found


def test_an_adaptive_sweep_runs_to_max_and_continues_when_max_is_raised(tmp_path: Path) -> None:
    uri = empty_store(tmp_path / "mlflow.db")
    spec = dict(SPEC, storage_path=str(tmp_path / "results"), tracking_uri=uri)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    run_sweep(spec_path, tmp_path)
    expected = {(cell, "search"): [0, 1] for cell in (ARM, BASE)}
    assert seeds_in_mlflow(uri) == {**expected, (ARM, "extra"): [2, 3], (BASE, "extra"): [2, 3]}
    loaded = load_spec(spec_path)
    decisions = read_decisions(decisions_path(locate(loaded).spec_file))
    assert [(d.seeds, d.reason) for d in decisions.values()] == [(4, "max")]
    assert "4 seeds" in seed_lines(loaded)[1] and "max 4 seeds reached" in seed_lines(loaded)[1]
    assert cell_runs(uri) == {cell: ("FINISHED", "4", "2-4", 4.0) for cell in (ARM, BASE)}

    spec["grid"] = dict(spec["grid"], seeds={**spec["grid"]["seeds"], "max": 6})
    spec_path.write_text(yaml.safe_dump(spec))
    run_sweep(spec_path, tmp_path)
    assert seeds_in_mlflow(uri) == {
        **expected,
        (ARM, "extra"): [2, 3, 4, 5],
        (BASE, "extra"): [2, 3, 4, 5],
    }
    decisions = read_decisions(decisions_path(locate(load_spec(spec_path)).spec_file))
    assert [(d.seeds, d.reason) for d in decisions.values()] == [(6, "max")]
    assert cell_runs(uri) == {cell: ("FINISHED", "6", "2-6", 6.0) for cell in (ARM, BASE)}
