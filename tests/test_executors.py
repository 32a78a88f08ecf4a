"""The two trial executors train the same trial to the same numbers.

A one-worker trial runs inside Tune's reused trial actor (`executor: actor`); forcing Ray
Train (`executor: train`) runs it as a one-worker TorchTrainer. A trial's result must not
depend on which trials ran before it in the same actor, nor on the executor: on CPU its
metrics are bit-identical in all three runs below (timings aside).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import (
    finish,
    ray_temp_dir,
    start_sweep,
    sweep_env,
    trial_numbers,
    tune_rows,
    write_spec,
)

from sparseopt.checkpoint import load_latest_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TIMINGS = {"epoch_time_s", "samples_per_s"}
SPEC: dict[str, Any] = {
    "name": "executors",
    "base": {
        "data": {"name": "digits", "batch_size": 128, "eval_batch_size": 512},
        "model": {"name": "small_cnn"},
        "schedule": {"warmup_epochs": 0},
        "sparse": {"delta_t": 4},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0]},
    "search": {"lr": {"grid": [0.1]}},
    "resources": {"cpus_per_worker": 1.0, "max_concurrent_trials": 1},
}
TARGET_ARM = "rigl"


def run_sweep(tmp_path: Path, arms: list[str], executor: str) -> dict[str, list[dict[str, Any]]]:
    """Run the spec with `arms` on `executor` (one trial at a time); every trial's Tune rows by
    arm, in the order the trials ran."""
    spec = {
        **SPEC,
        "grid": {**SPEC["grid"], "arms": arms},
        "resources": {**SPEC["resources"], "executor": executor},
    }
    tmp_path.mkdir(parents=True)
    path = write_spec(tmp_path, spec)
    with ray_temp_dir() as ray_tmp:
        process = start_sweep(path, tmp_path, sweep_env(ray_tmp))
        output = finish(process, timeout_s=900)
    assert process.returncode == 0, output[-3000:]
    experiment = tmp_path / "results" / "executors"
    rows, order = tune_rows(experiment), trial_numbers(experiment)
    return {
        rows[trial][0]["config"]["meta"]["arm"]: rows[trial]
        for trial in sorted(rows, key=order.get)
    }


def checkpoints(tmp_path: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """The trial's checkpoint directories, oldest first (their names hold the time of writing
    to the microsecond, `checkpoint_%Y-%m-%d_%H-%M-%S.%f`)."""
    config_hash = rows[0]["config"]["meta"]["config_hash"]
    run_dir = tmp_path / "results" / "executors" / "train_runs" / f"trial-{config_hash}"
    return sorted(path for path in run_dir.glob("checkpoint_*") if path.is_dir())


def history(tmp_path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trial's per-epoch metrics from its final checkpoint, timings removed."""
    payload = load_latest_checkpoint(checkpoints(tmp_path, rows)[-1])
    assert payload is not None
    return [{k: v for k, v in entry.items() if k not in TIMINGS} for entry in payload["history"]]


def test_a_trial_is_bit_identical_after_others_alone_and_on_ray_train(tmp_path: Path) -> None:
    shared = run_sweep(tmp_path / "shared", ["dense", "set+sparseopt", TARGET_ARM], "actor")
    pids = {rows[-1]["pid"] for rows in shared.values()}
    assert len(pids) == 1, f"the trials did not share one reused actor: {pids}"
    assert list(shared)[-1] == TARGET_ARM, f"{TARGET_ARM} did not run last: {list(shared)}"

    alone = run_sweep(tmp_path / "alone", [TARGET_ARM], "actor")
    on_train = run_sweep(tmp_path / "train", [TARGET_ARM], "train")

    after_others = history(tmp_path / "shared", shared[TARGET_ARM])
    assert len(after_others) == 2
    assert after_others == history(tmp_path / "alone", alone[TARGET_ARM])
    assert after_others == history(tmp_path / "train", on_train[TARGET_ARM])
