"""End to end on local Ray: a tiny sweep, its driver SIGKILLed mid-way, the same command again.

Checks what a researcher relies on: every trial of the spec runs exactly once (the trial set
equals the uninterrupted searcher's), MLflow holds one child run per trial under its cell's
parent with every epoch's metrics exactly once, finished trials are not re-run, and runs end
FINISHED.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.search import SweepSearcher
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

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
        "sparsities": [0.9, 0.95],
        "budgets": [1, 2],
        "seeds": [0, 1],
    },
    "search": {"lr": {"low": 0.01, "high": 0.3, "log": True}, "trials_per_cell": 1},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 2},
}
EXPECTED_TRIALS = 16


def expected_hashes(spec_path: Path) -> set[str]:
    """The config hashes an uninterrupted searcher hands out for the spec."""
    searcher = SweepSearcher(load_spec(spec_path))
    hashes = set()
    counter = 0
    while True:
        counter += 1
        config = searcher.suggest(f"t{counter}")
        if config == SweepSearcher.FINISHED:
            return hashes
        assert config is not None
        hashes.add(config["meta"]["config_hash"])
        searcher.on_trial_complete(
            f"t{counter}", {"val_acc1": 50.0, "epoch": config["meta"]["budget"]}
        )


def trial_runs(tracking_uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("e2e")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=1000)


def run_command(spec_path: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(spec_path), "--no-progress"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (Ray's daemons and workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_sweep_survives_driver_sigkill_and_resumes_exactly_once(tmp_path: Path) -> None:
    spec = dict(
        SPEC,
        storage_path=str(tmp_path / "results"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    uri = spec["tracking_uri"]
    expected = expected_hashes(spec_path)
    assert len(expected) == EXPECTED_TRIALS

    first = run_command(spec_path, tmp_path)
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            finished = [
                r
                for r in trial_runs(uri)
                if r.data.tags.get("sparsesweep.role") == "trial" and r.info.status == "FINISHED"
            ]
            if len(finished) >= 4:
                break
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            time.sleep(1.0)
        else:
            pytest.fail("the sweep finished fewer than 4 trials in 400 s")
    finally:
        kill_group(first)
    killed_at_ms = int(time.time() * 1000)
    done_before = {r.data.tags["config_hash"]: r.info.run_id for r in finished}

    second = run_command(spec_path, tmp_path)
    try:
        output, _ = second.communicate(timeout=900)
    finally:
        kill_group(second)
    text = output.decode()
    assert second.returncode == 0, text[-3000:]
    assert f"{EXPECTED_TRIALS}/{EXPECTED_TRIALS} trials ended" in text

    runs = trial_runs(uri)
    trials = [r for r in runs if r.data.tags.get("sparsesweep.role") == "trial"]
    cells = {r.info.run_id: r for r in runs if r.data.tags.get("sparsesweep.role") == "cell"}
    hashes = [r.data.tags["config_hash"] for r in trials]
    assert len(hashes) == len(set(hashes)) == EXPECTED_TRIALS
    assert set(hashes) == expected
    assert len(cells) == 8

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for run in trials:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags
        assert tags["sparsesweep.status"] == "finished"
        parent = cells[tags["mlflow.parentRunId"]]
        assert parent.data.tags["cell"] == tags["cell"]
        budget = int(tags["budget"])
        for key in ("val_acc1", "test_acc1", "train_loss", "itop_rate"):
            steps = [point.step for point in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, budget + 1)), (key, steps)
        if tags["config_hash"] in done_before:
            assert run.info.run_id == done_before[tags["config_hash"]]
            history = client.get_metric_history(run.info.run_id, "val_acc1")
            assert all(point.timestamp <= killed_at_ms for point in history), (
                "a finished trial re-ran"
            )
