"""Per-trial overhead of a sweep on local Ray, per trial executor, and the actor's memory.

Runs the real `sweeps.run.launch.run_sweep` (Tune + SweepSearcher + MLflow callback) on a tiny
digits spec, trials one at a time, once per variant, each variant in a fresh process with its
own local Ray; variants alternate for `--rounds` rounds so they see the same machine load:

- **actor**: `resources.executor: actor`, the trial trains inside Tune's reused trial actor;
- **train**: `resources.executor: train`, one Ray Train V2 `TorchTrainer` per trial, with the
  Train settings `sweeps.run.launch` ships (`TRAIN_ENV_VARS`);
- **train-ray-defaults**: the same with Ray's own Train defaults (health check every 2 s,
  preemption watcher on).

Timestamps: the driver's Tune callback hooks (trial start and end, as the tracker sees them),
and, inside the process that trains, wrappers around `sparseopt.loop`'s `build_run`,
`train_and_evaluate` and the session's `report` (installed by this script only; no library
code prints or times anything for it). Per trial, with trials back to back:

- overhead = previous trial's end -> this trial's first training step, plus last report ->
  this trial's end (the issue's definition; per-epoch checkpoints and reports inside the
  trial are not counted);
- wall - train = previous trial's end -> this trial's end, minus the time in
  `train_and_evaluate` (everything but training, per-epoch checkpoints included).

`--trials 50` on the actor variant also prints the trial actor's RSS after trial 5 and after
the last trial (the reused actor must not grow).

    .venv/bin/python benchmarks/trial_overhead.py [--trials 6] [--epochs 2] [--rounds 2]
        [--variants actor train train-ray-defaults]
"""

from __future__ import annotations

import argparse
import json
import os
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
    "actor": {"executor": "actor", "env": {}},
    "train": {"executor": "train", "env": {}},
    "train-ray-defaults": {
        "executor": "train",
        "env": {
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1",
        },
    },
}
MARKS_DIR = ""  # set in the child before the sweep starts; pickled with the wrappers below


# ---- wrappers that run where the trial trains (the Tune actor, or Ray Train's rank 0) --------
def instrumented(session_class: Any, run: Any) -> Any:
    """Run `run()` with `sparseopt.loop` and `session_class.report` timed; write the marks."""
    import psutil

    from sparseopt import loop

    marks: dict[str, Any] = {"enter": time.time(), "pid": os.getpid(), "epochs": []}
    originals = (loop.build_run, loop.train_and_evaluate, session_class.report)

    def build_run(*args: Any, **kwargs: Any) -> Any:
        built = originals[0](*args, **kwargs)
        marks["run_built"] = time.time()
        return built

    def train_and_evaluate(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        metrics = originals[1](*args, **kwargs)
        marks["epochs"].append({"train": [start, time.time()]})
        return metrics

    def report(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        reported = originals[2](self, *args, **kwargs)
        if marks["epochs"] and self.rank == 0:
            marks["epochs"][-1]["report"] = [start, time.time()]
        return reported

    loop.build_run, loop.train_and_evaluate, session_class.report = (
        build_run,
        train_and_evaluate,
        report,
    )
    config_hash = None
    try:
        config_hash = run()
    finally:
        loop.build_run, loop.train_and_evaluate, session_class.report = originals
        marks["exit"] = time.time()
        marks["rss"] = psutil.Process().memory_info().rss
        if config_hash is not None:
            name = f"{config_hash}-{time.time_ns()}.json"
            Path(MARKS_DIR, name).write_text(json.dumps(marks))


def timed_train_in_actor(config: dict[str, Any], runtime: Any) -> None:
    """`trainables.actor.train_in_actor`, instrumented."""
    from trainables import actor

    def run() -> str:
        actor_train(config, runtime)
        return config["meta"]["config_hash"]

    actor_train = ORIGINAL_TRAIN_IN_ACTOR
    instrumented(actor.ActorSession, run)


def timed_train_loop(loop_config: dict[str, Any]) -> None:
    """`trainables.worker.train_loop_per_worker`, instrumented (rank 0 writes the marks)."""
    import ray.train

    from trainables import worker

    def run() -> str | None:
        worker.train_loop_per_worker(loop_config)
        rank = ray.train.get_context().get_world_rank()
        return loop_config["meta"]["config_hash"] if rank == 0 else None

    instrumented(worker.RayTrainSession, run)


def timed_run_trial(config: dict[str, Any], runtime: Any) -> None:
    """`trainables.driver.run_trial` whose TorchTrainer runs `timed_train_loop` (set here, in
    the trial's driver process, where Train pickles the loop from)."""
    from trainables import driver

    driver.train_loop_per_worker = timed_train_loop
    ORIGINAL_RUN_TRIAL(config, runtime)


ORIGINAL_TRAIN_IN_ACTOR: Any = None
ORIGINAL_RUN_TRIAL: Any = None


class TrialClock:
    """A Tune callback recording when the driver saw each trial start and end."""

    def __init__(self, path: Path) -> None:
        from ray.tune import Callback

        class _Clock(Callback):
            def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any):
                _write(path, trial, "start")

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
                _write(path, trial, "end")

        self.callback = _Clock()


def _write(path: Path, trial: Any, event: str) -> None:
    with open(path, "a") as handle:
        stamp = {"hash": trial.config["meta"]["config_hash"], "event": event, "at": time.time()}
        handle.write(json.dumps(stamp) + "\n")


# ---- child: one sweep under one variant ----------------------------------------------------
def spec_payload(out: Path, executor: str, trials: int, epochs: int) -> dict[str, Any]:
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
        "resources": {"cpus_per_worker": 1.0, "max_concurrent_trials": 1, "executor": executor},
    }


def child(variant: str, out: Path, trials: int, epochs: int) -> None:
    """Run the sweep with the wrappers in place (the parent set the variant's env vars)."""
    global MARKS_DIR, ORIGINAL_TRAIN_IN_ACTOR, ORIGINAL_RUN_TRIAL
    from sweeps.run import launch
    from sweeps.spec.load import parse_spec
    from trainables import actor, driver

    MARKS_DIR = str(out / "marks")
    Path(MARKS_DIR).mkdir(parents=True)
    ORIGINAL_TRAIN_IN_ACTOR = actor.train_in_actor
    actor.train_in_actor = timed_train_in_actor
    ORIGINAL_RUN_TRIAL = driver.run_trial
    driver.run_trial = timed_run_trial
    clock = TrialClock(out / "clock.jsonl")
    build_tuner = launch.build_tuner

    def with_clock(spec: Any, location: Any, callbacks: list[Any], restore: bool) -> Any:
        return build_tuner(spec, location, [*callbacks, clock.callback], restore)

    launch.build_tuner = with_clock
    started = time.time()
    spec = parse_spec(spec_payload(out, VARIANTS[variant]["executor"], trials, epochs))
    summary = launch.run_sweep(spec, progress=False)
    if not summary.complete:
        raise SystemExit(f"the sweep ended incomplete: {dict(summary.statuses)}")
    (out / "sweep.json").write_text(json.dumps({"started": started}))


# ---- parent: run variants, read the timestamps, print the table -----------------------------
def trial_rows(out: Path) -> list[dict[str, float]]:
    """One dict of phase durations (seconds) per trial, in start order."""
    marks = {p.name.split("-")[0]: json.loads(p.read_text()) for p in (out / "marks").iterdir()}
    clock: dict[str, dict[str, float]] = {}
    for line in (out / "clock.jsonl").read_text().splitlines():
        stamp = json.loads(line)
        clock.setdefault(stamp["hash"], {})[stamp["event"]] = stamp["at"]
    previous_end = json.loads((out / "sweep.json").read_text())["started"]
    rows = []
    for config_hash in sorted(clock, key=lambda h: clock[h]["start"]):
        mark, end = marks[config_hash], clock[config_hash]["end"]
        epochs = mark["epochs"]
        train = sum(e["train"][1] - e["train"][0] for e in epochs)
        first_step = epochs[0]["train"][0]
        last_report = epochs[-1]["report"][1]
        rows.append(
            {
                "wall": end - previous_end,
                "train": train,
                "overhead": (first_step - previous_end) + (end - last_report),
                "wall_minus_train": end - previous_end - train,
                "to_first_step": first_step - previous_end,
                "to_trial_fn": mark["enter"] - previous_end,
                "data_and_model": mark["run_built"] - mark["enter"],
                "last_report_to_end": end - last_report,
                "rss_mb": mark["rss"] / 2**20,
                "pid": mark["pid"],
            }
        )
        previous_end = end
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
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
                f"round {round_index + 1} {variant}: {len(found)} trials in "
                f"{time.time() - started:.0f} s, trial processes {sorted({r['pid'] for r in found})}",
                flush=True,
            )
            if len(found) >= 5:
                print(
                    f"  RSS of the process that trained: after trial 5 {found[4]['rss_mb']:.0f} MB, "
                    f"after trial {len(found)} {found[-1]['rss_mb']:.0f} MB "
                    f"(ratio {found[-1]['rss_mb'] / found[4]['rss_mb']:.3f})",
                    flush=True,
                )
            rows[variant].extend(found[1:])  # the first trial also pays for Ray's own start
    keys = [key for key in next(iter(rows.values()))[0] if key not in ("pid", "rss_mb")]
    print(
        f"\nmedian seconds per trial (trials 2..{args.trials} of each run, "
        f"{args.rounds} runs per variant)"
    )
    print(f"{'phase':<20}" + "".join(f"{variant:>20}" for variant in rows))
    for key in keys:
        values = [statistics.median(r[key] for r in rows[variant]) for variant in rows]
        print(f"{key:<20}" + "".join(f"{value:>20.2f}" for value in values))


if __name__ == "__main__":
    main()
