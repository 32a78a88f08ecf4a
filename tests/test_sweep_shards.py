"""A sweep run as several Tune experiments (shards), end to end on local Ray.

`resources.shard_trials: 2` splits a 4-trial sweep of two cell groups into two shards. Checks:
each shard is a Tune experiment of its own (shard 0 in the sweep folder, shard 1 in
`shard-001/`), holding only its cells; one MLflow experiment holds one run per trial; the
summary and `sparsesweep status` count the whole sweep, and `status` read from the shards'
trial indexes equals `status` read from Tune's saved state; the same command again skips both
settled shards without starting Ray; one more seed grows both shards and runs just the new
trials (the old runs untouched).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import ray_temp_dir, trial_runs, write_spec

from contract.outcome import Status
from sweeps.run.shards import read_plan, shard_dir
from sweeps.run.status import cell_statuses, experiment_dirs, sweep_status
from sweeps.run.tune_state import tune_trials
from sweeps.spec.load import load_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "sharded",
    "base": {
        "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 16},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl", "set"], "sparsities": [0.9], "budgets": [1], "seeds": [0, 1]},
    "search": {"lr": {"grid": [0.1]}},
    "resources": {"cpus_per_worker": 0.5, "max_concurrent_trials": 2, "shard_trials": 2},
}


def run(spec_path: Path, cwd: Path, ray_tmp: str) -> str:
    """`sparsesweep run SPEC` in a fresh process with the test's Ray temp dir."""
    process = subprocess.run(
        [sys.executable, "-m", "sweeps", "run", str(spec_path), "--no-progress"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp},
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-3000:]
    return output


def ray_sessions(ray_tmp: str) -> list[str]:
    """The Ray sessions started with the test's Ray temp dir."""
    return sorted(path.name for path in Path(ray_tmp).rglob("session_2*"))


def state_files(experiment_dir: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in experiment_dir.glob("experiment_state-*"))


@pytest.mark.timeout(3600)
def test_a_sharded_sweep_runs_resumes_and_grows_as_one(tmp_path: Path) -> None:
    with ray_temp_dir() as ray_tmp:
        check_sharded_sweep(tmp_path, ray_tmp)


def check_sharded_sweep(tmp_path: Path, ray_tmp: str) -> None:
    spec_path = write_spec(tmp_path, SPEC)
    spec = load_spec(spec_path)
    sweep_dir = tmp_path / "results" / "sharded"
    output = run(spec_path, tmp_path, ray_tmp)
    assert "sweep sharded: 4/4 trials ended (4 finished)" in output

    plan = read_plan(str(sweep_dir))
    assert plan is not None
    assert [shard.cells for shard in plan.shards] == [
        ["default/rigl/s=0.9/e=1"],
        ["default/set/s=0.9/e=1"],
    ]
    assert [shard.settled for shard in plan.shards] == [2, 2]
    dirs = [Path(directory) for directory in experiment_dirs(spec)]
    assert dirs == [sweep_dir, sweep_dir / "shard-001"]
    for directory, cells in zip(dirs, (plan.shards[0].cells, plan.shards[1].cells), strict=True):
        trials = tune_trials(str(directory))
        assert sorted(t.config["meta"]["cell"] for t in trials) == cells * 2
        assert len(state_files(directory)) == 1
    tune_view = cell_statuses(spec, [t for d in dirs for t in tune_trials(str(d))])
    assert sweep_status(spec) == tune_view  # the trial indexes say what Tune saved
    assert [row.count(Status.FINISHED) for row in tune_view] == [2, 2]
    runs = trial_runs(spec.tracking_uri, "sharded")
    assert len(runs) == 4
    assert sorted(run.data.tags["cell"] for run in runs.values()) == sorted(
        [*plan.shards[0].cells, *plan.shards[1].cells] * 2
    )

    before = [state_files(directory) for directory in dirs]
    sessions = ray_sessions(ray_tmp)
    again = run(spec_path, tmp_path, ray_tmp)
    assert "sweep sharded: 4/4 trials ended (4 finished)" in again
    assert [state_files(directory) for directory in dirs] == before  # neither shard restored
    assert ray_sessions(ray_tmp) == sessions  # nor Ray started

    grown = write_spec(tmp_path, {**SPEC, "grid": {**SPEC["grid"], "seeds": [0, 1, 2]}})
    output = run(grown, tmp_path, ray_tmp)
    assert "sweep sharded: 6/6 trials ended (6 finished)" in output
    grown_spec = load_spec(grown)
    rows = sweep_status(grown_spec)
    assert [row.count(Status.FINISHED) for row in rows] == [3, 3]
    after = trial_runs(spec.tracking_uri, "sharded")
    assert len(after) == 6
    for config_hash, run_before in runs.items():  # the old trials kept their runs
        assert after[config_hash].info.run_id == run_before.info.run_id
    for directory in dirs:  # and were not run again: one Tune trial folder per trial
        assert len(list(directory.glob("train_in_actor_*/params.json"))) == 3
    plan = read_plan(str(sweep_dir))
    assert plan is not None and [shard.settled for shard in plan.shards] == [3, 3]
    assert shard_dir(str(sweep_dir), 1) == str(sweep_dir / "shard-001")
