"""The driver's cost per trial as a sweep grows, side by side with plain Ray Tune.

The cheapest trials a spec allows (mlp on 64 synthetic 8×8 images, budget 1; dense +
static/SET/RigL/RigL+SparseOpt × S sparsities × 4 lrs × 5 seeds = (1 + 4 S) × 20 trials; 4
trials at a time × 0.5 CPU; SQLite store), run by variants, each in a fresh process with its
own local Ray, one after the other:

- **sparsesweep**: `sweeps.run.launch.run_sweep`, as `sparsesweep run` runs it (shards above
  `--shard-trials`);
- **no-mlflow**: the same with the MLflow tracker replaced by a callback that does nothing
  (what the tracker costs is the difference);
- **plain**: a plain Tune function trainable on the same slots (`num_samples` = N, a
  one-key config `{"lr"}`, Tune's default searcher and loggers, actors reused between trials
  as sparsesweep's actor executor does) training the same model for one epoch and reporting
  once.

Every variant's driver records, at each trial's end, its process CPU time (all threads),
RSS and the wall clock (a Tune callback: O(1) per trial, in both). Reported per quarter of the
trials (CPU from the first trial's start): driver CPU per trial, trials per minute, RSS; then
peak RSS (`ru_maxrss`, the end of the run included), Tune's experiment state per trial (newest
snapshot of each shard; the tracker's and the searcher's pickles beside it), MLflow trial runs
at exit, `sparsesweep status` (wall of the command, and of `sweeps.run.status.sweep_status` in
the warm driver) and, per shard, the driver CPU per trial.

`--noop-rerun` runs each sparsesweep variant's command again once it finished and times it
(a no-op when every shard settled; otherwise it restores them, and the tracker sends what it had
not sent). `--kill-at 0.5`
instead SIGKILLs the sweep's driver (its whole process group) once half the trials ended, runs
the same command again and checks the resume: configs Tune ran under more than one trial id
(from the trial folders' `params.json`), seconds from the second start to its first trial
start, MLflow trial runs per config hash and duplicate (run, metric, step) rows.

    .venv/bin/python benchmarks/many_trials.py --sparsities 20            # 1,620 trials
    .venv/bin/python benchmarks/many_trials.py --sparsities 160 --noop-rerun   # 12,820
    .venv/bin/python benchmarks/many_trials.py --sparsities 80 --kill-at 0.5 --variants sparsesweep
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sparseopt.config import TrainConfig
from sparseopt.recipe import build_run, train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("sparsesweep", "no-mlflow", "plain")
BASE: dict[str, Any] = {
    "data": {
        "name": "synthetic",
        "synthetic_train_size": 64,
        "synthetic_test_size": 16,
        "synthetic_image_size": 8,
        "batch_size": 32,
        "eval_batch_size": 64,
    },
    "model": {"name": "mlp", "hidden": 16},
    "schedule": {"warmup_epochs": 0},
}
LRS = (0.01, 0.03, 0.1, 0.3)
SEEDS = (0, 1, 2, 3, 4)
CONCURRENT = 4
CPUS_PER_TRIAL = 0.5


def trials_for(sparsities: int) -> int:
    return (1 + 4 * sparsities) * len(LRS) * len(SEEDS)


def spec_payload(out: Path, sparsities: int, shard_trials: int) -> dict[str, Any]:
    return {
        "name": f"many{trials_for(sparsities)}",
        "storage_path": str(out / "results"),
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "base": BASE,
        "grid": {
            "arms": ["dense", "static", "set", "rigl", "rigl+sparseopt"],
            "sparsities": [round(0.5 + 0.45 * i / sparsities, 6) for i in range(sparsities)],
            "budgets": [1],
            "seeds": list(SEEDS),
        },
        "search": {"lr": {"grid": list(LRS)}},
        "resources": {
            "cpus_per_worker": CPUS_PER_TRIAL,
            "max_concurrent_trials": CONCURRENT,
            "shard_trials": shard_trials,
        },
    }


# ---- in the driver: one sample per trial end ----------------------------------------------
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class DriverMeter(Callback):
    """Appends (event, wall, process CPU, RSS, trials ended) to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._ended = 0
        self._buffer: list[str] = []
        self._started = False

    def __getstate__(self) -> dict[str, Any]:
        return {"_path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_path"])

    def _sample(self, event: str) -> None:
        rss = rss_bytes()
        stamp = [event, time.time(), time.process_time(), rss, self._ended]
        self._buffer.append(json.dumps(stamp) + "\n")
        if len(self._buffer) >= 200 or event != "end":
            with open(self._path, "a") as handle:
                handle.writelines(self._buffer)
            self._buffer.clear()

    def setup(self, **info: Any) -> None:
        self._started = False
        self._sample("setup")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self._started:
            self._started = True
            self._sample("first_start")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended += 1
        self._sample("end")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_complete(iteration, trials, trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._sample("experiment_end")


def plain_trainable(config: dict[str, Any]) -> None:
    """Plain Tune: train the benchmark's model one epoch at `config["lr"]` and report once."""
    from ray import tune

    cfg = TrainConfig.model_validate({**BASE, "epochs": 1, "optim": {"lr": config["lr"]}})
    run = build_run(cfg, device="cpu")
    tune.report(train_and_evaluate(run, 0))


class NoTracker(Callback):
    """Stands in for the MLflow tracker (the no-mlflow variant)."""


def child(variant: str, out: Path, sparsities: int, shard_trials: int, meter: str) -> None:
    """One run of a variant in this process (the parent started it with its own Ray)."""
    payload = spec_payload(out, sparsities, shard_trials)
    results: dict[str, Any] = {"variant": variant, "trials": trials_for(sparsities)}
    started = time.time()
    if variant == "plain":
        import ray
        from ray import tune

        ray.init(log_to_driver=False, logging_level="ERROR")
        tuner = tune.Tuner(
            tune.with_resources(plain_trainable, {"cpu": CPUS_PER_TRIAL}),
            param_space={"lr": tune.loguniform(1e-3, 1.0)},
            tune_config=tune.TuneConfig(
                num_samples=trials_for(sparsities),
                max_concurrent_trials=CONCURRENT,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=payload["name"],
                storage_path=payload["storage_path"],
                callbacks=[DriverMeter(meter)],
                verbose=0,
            ),
        )
        tuner.fit()
        ray.shutdown()
        results["experiment_dirs"] = [f"{payload['storage_path']}/{payload['name']}"]
    else:
        from sweeps.run import launch
        from sweeps.run.status import experiment_dirs, sweep_status
        from sweeps.spec.load import parse_spec

        build_tuner = launch.build_tuner
        measured = DriverMeter(meter)

        def with_meter(spec: Any, location: Any, shard: int, callbacks: list, restore: bool):
            return build_tuner(spec, location, shard, [*callbacks, measured], restore)

        launch.build_tuner = with_meter
        if variant == "no-mlflow":
            launch._tracker = lambda spec, location: NoTracker()
            launch._tag_versions = lambda spec, location, versions: None
        spec = parse_spec(payload)
        summary = launch.run_sweep(spec, progress=False)
        results["summary"] = dict(summary.statuses)
        clock = time.perf_counter()
        sweep_status(spec)
        results["status_read_s"] = time.perf_counter() - clock
        results["experiment_dirs"] = experiment_dirs(spec)
        if variant == "sparsesweep":
            results["mlflow_trial_runs"] = mlflow_trial_runs(out / "mlflow.db")
    results["wall_s"] = time.time() - started
    results["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "child.json").write_text(json.dumps(results))


def mlflow_trial_runs(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM tags WHERE key = 'sparsesweep.role' AND value = 'trial'"
        ).fetchone()
    return int(count)


# ---- in the parent: run, read the samples, print -------------------------------------------
def run_child(
    variant: str, out: Path, args: argparse.Namespace, kill_after: int | None = None
) -> subprocess.CompletedProcess | None:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(out / "ray"), PYTHONPATH=str(ROOT))
    (out / "ray").mkdir(exist_ok=True)
    command = [sys.executable, __file__, "--child", variant, "--out", str(out)]
    command += ["--sparsities", str(args.sparsities), "--shard-trials", str(args.shard_trials)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    if kill_after is None:
        output, _ = process.communicate()
        kill_group(process)
        if process.returncode != 0 or not (out / "child.json").exists():
            raise SystemExit(f"{variant}: failed (files kept in {out})\n{output[-4000:]}")
        return None
    while process.poll() is None and ended(out / "meter.jsonl") < kill_after:
        time.sleep(0.5)
    kill_group(process)
    return None


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=120)


def ended(meter: Path) -> int:
    if not meter.exists():
        return 0
    count = 0
    with open(meter) as handle:
        for line in handle:
            if line.startswith('["end"'):
                count += 1
    return count


def samples(meter: Path) -> list[list[Any]]:
    return [json.loads(line) for line in meter.read_text().splitlines() if line.strip()]


def quarters(rows: list[list[Any]], trials: int) -> list[dict[str, float]]:
    """Per quarter of the trials: driver CPU per trial (ms), trials/min, max RSS (MB)."""
    first = next(row for row in rows if row[0] == "first_start")
    ends = [row for row in rows if row[0] == "end"]
    bounds = [first, *[ends[min(len(ends), trials * q // 4) - 1] for q in (1, 2, 3, 4)]]
    found = []
    for q in range(4):
        start, stop = bounds[q], bounds[q + 1]
        count = stop[4] - (start[4] if start[0] == "end" else 0)
        inside = [row for row in rows if start[1] <= row[1] <= stop[1]]
        found.append(
            {
                "cpu_ms_per_trial": 1000 * (stop[2] - start[2]) / max(count, 1),
                "trials_per_min": 60 * count / max(stop[1] - start[1], 1e-9),
                "rss_mb": max(row[3] for row in inside) / 2**20,
            }
        )
    return found


def per_shard(rows: list[list[Any]]) -> list[float]:
    """Driver CPU per trial (ms) within each Tune experiment, first trial start to last end."""
    shards: list[list[list[Any]]] = []
    for row in rows:
        if row[0] == "setup":
            shards.append([])
        elif shards:
            shards[-1].append(row)
    found = []
    for shard in shards:
        starts = [row for row in shard if row[0] == "first_start"]
        ends = [row for row in shard if row[0] == "end"]
        if starts and ends:
            trials = ends[-1][4] - starts[0][4]
            found.append(1000 * (ends[-1][2] - starts[0][2]) / max(trials, 1))
    return found


def state_bytes(directories: list[str]) -> dict[str, int]:
    """Bytes of the newest snapshot files of each kind, summed over the experiments."""
    kinds = {
        "experiment_state": "experiment_state-*.json",
        "searcher": "searcher-state-*.pkl",
        "callbacks": "callback-states-*.pkl",
    }
    found = dict.fromkeys(kinds, 0)
    for directory in directories:
        for kind, pattern in kinds.items():
            files = sorted(Path(directory).glob(pattern))
            if files:
                found[kind] += files[-1].stat().st_size
    found["state_copies"] = sum(
        len(list(Path(d).glob("experiment_state-*.json"))) for d in directories
    )
    return found


def status_command_s(out: Path, name: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    clock = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sweeps", "status", name, "--storage", str(out / "results")],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - clock


def rerun_s(variant: str, out: Path, args: argparse.Namespace) -> float:
    """Seconds of the same `run` command again (a fresh process with its own Ray)."""
    (out / "child.json").unlink()
    clock = time.perf_counter()
    run_child(variant, out, args)
    return time.perf_counter() - clock


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"many-{variant}-", dir=args.tmp))
    run_child(variant, out, args)
    child = json.loads((out / "child.json").read_text())
    rows = samples(out / "meter.jsonl")
    trials = child["trials"]
    last_end = [row for row in rows if row[0] == "end"][-1]
    result: dict[str, Any] = {
        "variant": variant,
        "trials": trials,
        "ended": last_end[4],
        "wall_s": child["wall_s"],
        "quarters": quarters(rows, trials),
        "per_shard_cpu_ms": per_shard(rows),
        "after_last_trial_cpu_s": rows[-1][2] - last_end[2],
        "peak_rss_mb": child["ru_maxrss_mb"],
        "state": state_bytes(child["experiment_dirs"]),
        "shards": len(child["experiment_dirs"]),
    }
    if variant != "plain":
        result["summary"] = child["summary"]
        result["status_read_s"] = child["status_read_s"]
        result["status_command_s"] = status_command_s(out, f"many{trials}")
    if "mlflow_trial_runs" in child:
        result["mlflow_trial_runs"] = child["mlflow_trial_runs"]
    if args.noop_rerun and variant != "plain":
        result["rerun_s"] = rerun_s(variant, out, args)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    else:
        result["out"] = str(out)
    return result


def resume_check(args: argparse.Namespace) -> dict[str, Any]:
    """Kill the driver half-way, run the same command again, check what the resume did."""
    out = Path(tempfile.mkdtemp(prefix="many-kill-", dir=args.tmp))
    trials = trials_for(args.sparsities)
    kill_after = int(trials * args.kill_at)
    run_child("sparsesweep", out, args, kill_after=kill_after)
    killed_at = time.time()
    ended_before = ended(out / "meter.jsonl")
    restarted = time.time()
    run_child("sparsesweep", out, args)
    rows = samples(out / "meter.jsonl")
    first_new = min(row[1] for row in rows if row[0] == "first_start" and row[1] > killed_at)
    child = json.loads((out / "child.json").read_text())
    ids: dict[str, set[str]] = defaultdict(set)
    for directory in child["experiment_dirs"]:
        for params in Path(directory).glob("*/params.json"):
            config_hash = json.loads(params.read_text())["meta"]["config_hash"]
            ids[config_hash].add(params.parent.name.split("_")[3])
    with sqlite3.connect(out / "mlflow.db") as connection:
        runs = connection.execute(
            "SELECT t.value, COUNT(*) FROM tags t JOIN tags r ON r.run_uuid = t.run_uuid "
            "WHERE t.key = 'config_hash' AND r.key = 'sparsesweep.role' AND r.value = 'trial' "
            "GROUP BY t.value"
        ).fetchall()
        duplicate_steps = connection.execute(
            "SELECT COUNT(*) FROM (SELECT run_uuid, key, step FROM metrics "
            "GROUP BY run_uuid, key, step HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    result = {
        "trials": trials,
        "ended_before_kill": ended_before,
        "configs_run": len(ids),
        "configs_under_several_trial_ids": sum(len(found) > 1 for found in ids.values()),
        "first_new_trial_s": first_new - restarted,
        "summary": child["summary"],
        "mlflow_trial_runs": sum(count for _, count in runs),
        "configs_with_several_runs": sum(count > 1 for _, count in runs),
        "duplicate_metric_steps": duplicate_steps,
    }
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def print_measured(results: list[dict[str, Any]]) -> None:
    plain = next((r for r in results if r["variant"] == "plain"), None)
    for result in results:
        print(
            f"\n{result['variant']}: {result['ended']}/{result['trials']} trials in "
            f"{result['wall_s']:.0f} s, {result['shards']} Tune experiment(s)"
        )
        print(
            f"  {'quarter':<8}{'CPU ms/trial':>14}{'vs plain':>10}{'trials/min':>12}{'RSS MB':>9}"
        )
        for index, quarter in enumerate(result["quarters"]):
            ratio = (
                f"{quarter['cpu_ms_per_trial'] / plain['quarters'][index]['cpu_ms_per_trial']:.2f}x"
                if plain and result is not plain
                else "-"
            )
            print(
                f"  Q{index + 1:<7}{quarter['cpu_ms_per_trial']:>14.1f}{ratio:>10}"
                f"{quarter['trials_per_min']:>12.0f}{quarter['rss_mb']:>9.0f}"
            )
        peak = f"peak RSS {result['peak_rss_mb']:.0f} MB"
        if plain and result is not plain:
            peak += f" ({result['peak_rss_mb'] / plain['peak_rss_mb']:.2f}x plain)"
        print(f"  {peak}; after the last trial {result['after_last_trial_cpu_s']:.1f} s CPU")
        state = result["state"]
        per_trial = {k: v / result["trials"] for k, v in state.items() if k != "state_copies"}
        print(
            f"  state per trial: experiment state {per_trial['experiment_state'] / 1024:.1f} KB, "
            f"searcher {per_trial['searcher'] / 1024:.2f} KB, callbacks "
            f"{per_trial['callbacks'] / 1024:.2f} KB; experiment-state copies {state['state_copies']}"
        )
        if result["per_shard_cpu_ms"]:
            shards = ", ".join(f"{value:.1f}" for value in result["per_shard_cpu_ms"])
            print(f"  driver CPU ms/trial per shard: {shards}")
        for key in (
            "summary",
            "mlflow_trial_runs",
            "status_read_s",
            "status_command_s",
            "rerun_s",
        ):
            if key in result:
                value = result[key]
                print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=int, default=20, help="S: (1 + 4 S) x 20 trials")
    parser.add_argument("--shard-trials", type=int, default=10_000)
    parser.add_argument("--variants", nargs="+", default=["sparsesweep", "plain"], choices=VARIANTS)
    parser.add_argument("--noop-rerun", action="store_true")
    parser.add_argument("--kill-at", type=float, help="kill the driver once this fraction ended")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tmp", default="/tmp", help="where the runs' folders go")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders")
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(
            args.child, args.out, args.sparsities, args.shard_trials, str(args.out / "meter.jsonl")
        )
        return
    print(f"{trials_for(args.sparsities)} trials, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    if args.kill_at is not None:
        result = resume_check(args)
        print(json.dumps(result, indent=1))
        results: list[dict[str, Any]] = [result]
    else:
        results = [measure(variant, args) for variant in args.variants]
        print_measured(results)
    print(f"load at the end {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
