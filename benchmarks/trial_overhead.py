"""Per-trial overhead of a sweep on local Ray: where a trial's seconds go besides training.

Runs the real `sweeps.launch.run_sweep` (Tune + SweepSearcher + MLflow callback + one Ray
Train V2 `TorchTrainer` per trial) on a tiny digits spec, trials one at a time, once per
variant, each variant in a fresh process with its own local Ray; variants alternate for
`--rounds` rounds so they see the same machine load. Timestamps come from three sources, none
of them prints in library code:

- the trial function and the worker loop, wrapped by this script only (the trial runs
  `trainables.driver.build_trainer(...).fit()` and `trainables.worker.train_loop_per_worker`
  unchanged; the wrappers record when each phase starts and ends);
- Ray Train V2's own structured controller logs (`<session>/logs/train/`), which time the
  worker-group start phases (placement group, worker actors, process group, train function);
- the MLflow runs (created in Tune's `on_trial_start`, ended in `on_trial_complete`).

Per-trial overhead = wall time per trial (end to end, trials back to back) minus the time spent
in `train_and_evaluate`. Target (issue #3): <= 10 % of a 1-minute trial, i.e. <= 6 s.

    .venv/bin/python benchmarks/trial_overhead.py [--trials 4] [--epochs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    # Ray's own defaults: Train polls workers every 2 s, Tune starts a new trial actor per trial.
    "ray-defaults": {
        "env": {
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1",
        },
        "reuse_actors": False,
    },
    # what `sweeps.launch` ships (TRAIN_ENV_VARS; reuse_actors=True without early stopping)
    "sparsesweep": {"env": {}, "reuse_actors": None},
}
MARKS_DIR = ""  # set in the child before the sweep starts; pickled with the wrappers below


# ---- wrappers that run inside the trial actor and the training worker ----------------------
def timed_run_trial(config: dict[str, Any], runtime: Any) -> None:
    """`trainables.driver.run_trial` with timestamps around building and fitting the trainer."""
    import psutil  # vendored by ray

    from trainables import driver

    marks: dict[str, Any] = {"fn_enter": time.time(), "pid": os.getpid()}
    marks["proc_created"] = psutil.Process().create_time()
    marks["cpu_at_enter"] = _cpu_seconds()
    driver.train_loop_per_worker = timed_loop
    trainer = driver.build_trainer(config, runtime)
    marks["fit_start"] = time.time()
    trainer.fit()
    marks["fit_end"] = time.time()
    name = f"{config['meta']['config_hash']}-{os.getpid()}-{time.time_ns()}-driver.json"
    Path(MARKS_DIR, name).write_text(json.dumps(marks))


def timed_loop(loop_config: dict[str, Any]) -> None:
    """`trainables.worker.train_loop_per_worker` with timestamps around each phase (rank 0)."""
    loop_enter = time.time()
    import psutil
    import ray.train

    from trainables import worker  # torch is already loaded: this is sparseopt and its imports

    marks: dict[str, Any] = {"loop_enter": loop_enter, "imported": time.time(), "epochs": []}
    marks["pid"], marks["proc_created"] = os.getpid(), psutil.Process().create_time()
    marks["cpu_at_enter"] = _cpu_seconds()
    originals = {
        "build_run": worker.build_run,
        "train_and_evaluate": worker.train_and_evaluate,
        "save_checkpoint": worker.save_checkpoint,
    }
    original_report = ray.train.report

    def build_run(*args: Any, **kwargs: Any) -> Any:
        built = originals["build_run"](*args, **kwargs)
        marks["run_built"] = time.time()
        return built

    def train_and_evaluate(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        marks.setdefault("cpu_at_first_step", _cpu_seconds())
        metrics = originals["train_and_evaluate"](*args, **kwargs)
        marks["epochs"].append({"train": [start, time.time()]})
        return metrics

    def save_checkpoint(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        saved = originals["save_checkpoint"](*args, **kwargs)
        marks["epochs"][-1]["save"] = [start, time.time()]
        return saved

    def report(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        reported = original_report(*args, **kwargs)
        if marks["epochs"]:
            marks["epochs"][-1]["report"] = [start, time.time()]
        return reported

    worker.build_run, worker.train_and_evaluate = build_run, train_and_evaluate
    worker.save_checkpoint, ray.train.report = save_checkpoint, report
    try:
        worker.train_loop_per_worker(loop_config)
    finally:
        marks["loop_exit"] = time.time()
        for name, function in originals.items():
            setattr(worker, name, function)
        ray.train.report = original_report
    if ray.train.get_context().get_world_rank() == 0:
        name = f"{loop_config['meta']['config_hash']}-{os.getpid()}-worker.json"
        Path(MARKS_DIR, name).write_text(json.dumps(marks))


def _cpu_seconds() -> float:
    """User + system CPU time this process has used so far."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


# ---- child: one sweep under one variant ----------------------------------------------------
def spec_payload(out: Path, trials: int, epochs: int) -> dict[str, Any]:
    """One cell, `trials` seeds, fixed lr, one trial at a time (clean per-trial timelines)."""
    return {
        "name": "overhead",
        "storage_path": str(out / "results"),
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "base": {
            "data": {"name": "digits", "batch_size": 64, "eval_batch_size": 512},
            "model": {"name": "small_cnn"},
            "schedule": {"warmup_epochs": 0},
            "sparse": {"delta_t": 10},
        },
        "grid": {
            "arms": ["rigl"],
            "sparsities": [0.9],
            "budgets": [epochs],
            "seeds": list(range(trials)),
        },
        "search": {"lr": {"grid": [0.1]}},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1.0, "max_concurrent_trials": 1},
    }


def child(variant: str, out: Path, trials: int, epochs: int) -> None:
    """Run the sweep with the wrappers in place (the parent set the variant's env vars)."""
    global MARKS_DIR
    from ray import tune

    from sweeps import launch
    from sweeps.spec import parse_spec
    from trainables import driver

    MARKS_DIR = str(out / "marks")
    Path(MARKS_DIR).mkdir(parents=True)
    driver.run_trial = timed_run_trial
    reuse = VARIANTS[variant]["reuse_actors"]
    if reuse is not None:
        tune_config = tune.TuneConfig

        def with_reuse(*args: Any, **kwargs: Any) -> Any:
            return tune_config(*args, **{**kwargs, "reuse_actors": reuse})

        tune.TuneConfig = with_reuse
    started = time.time()
    summary = launch.run_sweep(parse_spec(spec_payload(out, trials, epochs)), progress=False)
    if not summary.complete:
        raise SystemExit(f"the sweep ended incomplete: {dict(summary.statuses)}")
    (out / "sweep.json").write_text(json.dumps({"started": started}))


# ---- parent: run variants, read the timestamps, print the table -----------------------------
def _log_time(asctime: str) -> float:
    """Ray's log `asctime` (local time, ms after a comma) as a Unix timestamp."""
    stamp, millis = asctime.split(",")
    local = time.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    return time.mktime(local) + int(millis) / 1000


def controller_phases(ray_tmp: Path) -> dict[int, dict[str, float]]:
    """Per training-worker pid: Ray Train's worker-group start phases and shutdown times."""
    phases: dict[int, dict[str, float]] = {}
    pattern = re.compile(r"\[Worker Group Initialization\] (.+?) in ([0-9.]+)s")
    for path in ray_tmp.glob("session_*/logs/train/ray-train-sys-controller-*.log"):
        found: dict[str, float] = {}
        pid = None
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            at, message = _log_time(entry["asctime"]), entry["message"]
            found.setdefault("controller_first_log", at)
            match = pattern.search(message)
            if match:
                found[match.group(1)] = float(match.group(2))
            if message.startswith("Started training worker group"):
                pid = int(re.search(r"pid=(\d+)", message).group(1))
                found["worker_group_started"] = at
            if message.startswith("Shutting down"):
                found["shutdown_start"] = at
            if message.startswith("Worker group shutdown successful"):
                found["shutdown_end"] = at
        if pid is not None:
            phases[pid] = found
    return phases


def mlflow_times(out: Path) -> dict[str, tuple[float, float]]:
    """Per config hash: the trial run's start and end (Tune's on_trial_start/complete)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("overhead")
    runs = client.search_runs([experiment.experiment_id], "tags.`sparsesweep.role` = 'trial'")
    return {
        run.data.tags["config_hash"]: (run.info.start_time / 1000, run.info.end_time / 1000)
        for run in runs
    }


def trial_rows(out: Path) -> list[dict[str, float]]:
    """One dict of phase durations (seconds) per trial, in start order."""
    marks_dir = out / "marks"
    drivers = {
        p.name.split("-")[0]: json.loads(p.read_text()) for p in marks_dir.glob("*-driver.json")
    }
    workers = {
        p.name.split("-")[0]: json.loads(p.read_text()) for p in marks_dir.glob("*-worker.json")
    }
    phases = controller_phases(out / "ray")
    tracked = mlflow_times(out)
    sweep = json.loads((out / "sweep.json").read_text())
    order = sorted(drivers, key=lambda h: drivers[h]["fn_enter"])
    rows = []
    previous_end = sweep["started"]
    pids: set[int] = set()
    for config_hash in order:
        d, w = drivers[config_hash], workers[config_hash]
        c = phases.get(w["pid"], {})
        start, end = tracked[config_hash]
        epochs = w["epochs"]
        train = sum(e["train"][1] - e["train"][0] for e in epochs)
        save = sum(e["save"][1] - e["save"][0] for e in epochs)
        report = sum(e["report"][1] - e["report"][0] for e in epochs)
        last_report_end = epochs[-1]["report"][1]
        rows.append(
            {
                "wall": end - previous_end,
                "train": train,
                "overhead": end - previous_end - train,
                "to_trial_fn": d["fn_enter"] - previous_end,
                "tune_on_trial_start": start - previous_end,
                "build_trainer": d["fit_start"] - d["fn_enter"],
                "controller_start": c.get("controller_first_log", float("nan")) - d["fit_start"],
                "placement_group": c.get("Placement group ready", float("nan")),
                "worker_actors": c.get("1 worker actors created", float("nan")),
                "process_group": c.get("Train context initialized on workers", float("nan")),
                "train_fn_launch": c.get("Train function launched on workers", float("nan")),
                "worker_imports": w["imported"] - w["loop_enter"],
                "data_and_model": w["run_built"] - w["imported"],
                "to_first_step": epochs[0]["train"][0] - d["fn_enter"],
                "first_step_from_prev_end": epochs[0]["train"][0] - previous_end,
                "checkpoint_save": save,
                "report": report,
                "report_to_fit_end": d["fit_end"] - last_report_end,
                "shutdown": c.get("shutdown_end", float("nan"))
                - c.get("shutdown_start", float("nan")),
                "fit_end_to_trial_end": end - d["fit_end"],
                "end_overhead": end - last_report_end,
                "worker_cpu_to_first_step": w["cpu_at_first_step"],
                # CPU a fresh trial actor burnt before the trial function ran (NaN if reused)
                "trial_actor_cpu_at_fn": float("nan") if d["pid"] in pids else d["cpu_at_enter"],
            }
        )
        previous_end = end
        pids.add(d["pid"])
    return rows


def run_variant(variant: str, trials: int, epochs: int) -> list[dict[str, float]]:
    out = Path(tempfile.mkdtemp(prefix=f"tovh-{variant}-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(VARIANTS[variant]["env"], RAY_TMPDIR=str(out), PYTHONPATH=str(ROOT))
    command = [sys.executable, __file__, "--child", variant, "--out", str(out)]
    command += ["--trials", str(trials), "--epochs", str(epochs)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "sweep.json").exists():
        raise SystemExit(
            f"{variant}: sweep failed (files kept in {out})\n{(done.stdout + done.stderr)[-4000:]}"
        )
    rows = trial_rows(out)
    shutil.rmtree(out, ignore_errors=True)
    return rows


def _median(values: list[float]) -> float:
    """Median of the defined values (NaN where a phase does not apply, e.g. a reused actor)."""
    defined = [value for value in values if not math.isnan(value)]
    return statistics.median(defined) if defined else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--child", choices=list(VARIANTS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.trials, args.epochs)
        return
    rows: dict[str, list[dict[str, float]]] = {variant: [] for variant in args.variants}
    for round_index in range(args.rounds):
        for variant in args.variants:
            started = time.time()
            found = run_variant(variant, args.trials, args.epochs)
            print(
                f"round {round_index + 1} {variant}: {len(found)} trials in {time.time() - started:.0f} s",
                flush=True,
            )
            rows[variant].extend(found[1:])  # the first trial also pays for Ray's own start
    keys = list(next(iter(rows.values()))[0])
    print(
        f"\nmedian seconds per trial (trials 2..{args.trials} of each run, {args.rounds} runs per variant)"
    )
    print(f"{'phase':<26}" + "".join(f"{variant:>14}" for variant in rows))
    for key in keys:
        values = [_median([r[key] for r in rows[variant]]) for variant in rows]
        print(f"{key:<26}" + "".join(f"{value:>14.2f}" for value in values))


if __name__ == "__main__":
    main()
