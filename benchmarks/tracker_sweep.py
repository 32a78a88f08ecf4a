"""A whole sweep of the cheapest trials a spec allows, through `sparsesweep run`: how long its
end waits for MLflow, and what MLflow holds when the command exits (issue 22's measurement).

mlp on 64 synthetic 8×8 images, budget 1; dense + static/SET/RigL/RigL+SparseOpt × S
sparsities × 4 lrs × 5 seeds (S = 20: 1,620 trials); 4 trials at a time × 0.5 CPU on Tune's
actor executor; a SQLite store (or `--tracking-uri`). The sweep runs as a user runs it, in a
subprocess with a private Ray temp dir; its process group is killed afterwards.

    .venv/bin/python benchmarks/tracker_sweep.py [--sparsities 20] [--tracking-uri URI]

Reports the trials, the wall time, the end's wait for MLflow (the "MLflow: N records written
in X s" line the run prints when records were still waiting as its trials ended), the exit
code, and what MLflow holds at exit: trial runs FINISHED with their final test accuracy, cell
and curve runs FINISHED, and the records left in the outbox.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DRAIN_LINE = re.compile(r"MLflow: ([\d,]+) records written in ([\d.]+) s")


def spec(sparsities: int, storage: Path, tracking_uri: str) -> dict:
    return {
        "name": "tiny",
        "storage_path": str(storage),
        "tracking_uri": tracking_uri,
        "base": {
            "data": {
                "name": "synthetic",
                "synthetic_train_size": 64,
                "synthetic_test_size": 64,
                "synthetic_image_size": 8,
                "batch_size": 64,
                "val_fraction": 0.25,
            },
            "model": {"name": "mlp", "hidden": 16},
            "schedule": {"warmup_epochs": 0},
        },
        "grid": {
            "arms": ["dense", "static", "set", "rigl", "rigl+sparseopt"],
            "sparsities": [round(0.5 + 0.02 * index, 2) for index in range(sparsities)],
            "budgets": [1],
            "seeds": [0, 1, 2, 3, 4],
        },
        "search": {"lr": {"grid": [0.01, 0.03, 0.1, 0.3]}},
        "resources": {
            "executor": "actor",
            "workers_per_trial": 1,
            "cpus_per_worker": 0.5,
            "max_concurrent_trials": 4,
        },
    }


def held_by_mlflow(tracking_uri: str, name: str) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    counts = {}
    for role in ("trial", "cell", "curve"):
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`sparsesweep.role` = '{role}'",
            max_results=50_000,
        )
        counts[role] = len(runs)
        counts[f"{role}_finished"] = sum(
            run.info.status == "FINISHED" and (role != "trial" or "test_acc1" in run.data.metrics)
            for run in runs
        )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsities", type=int, default=20)
    parser.add_argument("--tracking-uri")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracker-sweep-"))
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(args.sparsities, work / "results", uri)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    started = time.monotonic()
    sweep = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(path), "--no-progress"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = sweep.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
    wall = time.monotonic() - started
    try:
        found = DRAIN_LINE.search(output)
        drain = float(found.group(2)) if found else 0.0
        drained = int(found.group(1).replace(",", "")) if found else 0
        from sweeps.spec.load import load_spec
        from sweeps.spec.storage import locate
        from sweeps.tracking.outbox import outbox_status

        status = outbox_status(locate(load_spec(path)).outbox_dir)
        counts = held_by_mlflow(uri, "tiny")
        print(output[-3000:])
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        print()
        print(
            "| trials | wall (s) | exit | wait for MLflow at the end | trial runs FINISHED "
            "at exit | cell / curve runs FINISHED | records left in the outbox |"
        )
        print("|---:|---:|---:|---|---:|---|---:|")
        print(
            f"| {counts['trial']} | {wall:.0f} | {sweep.returncode} | {drain:.1f} s "
            f"({drained:,} records) | {counts['trial_finished']:,} / {counts['trial']:,} "
            f"| {counts['cell_finished']} / {counts['cell']}, "
            f"{counts['curve_finished']} / {counts['curve']} "
            f"| {0 if status is None else status.pending} |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
