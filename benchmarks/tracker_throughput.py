"""How fast the sweep's MLflow tracker writes finished trial runs: today's tracker against an
earlier revision's (default: the one before the durable outbox), side by side in one run, to a
local SQLite store and to a local `mlflow server` (SQLite backend, one worker, job runner off,
as `sparsesweep ui` runs it).

The workload is the cheapest trials a spec allows, as in issue 22's measurements: mlp on
digits, budget 1, dense + static/SET/RigL/RigL+SparseOpt × `--sparsities` sparsities × 4 lrs
× 5 seeds (420 trials at 5 sparsities). Each tracker gets a fresh store and is fed, by the
sweep's own searcher, every trial's start, one epoch's result (the 13 metrics of
docs/conventions.md) and its end as fast as the hooks take them, then the sweep's end; the
clock runs from the first hook until the tracker's end-of-sweep wait returns with the outbox
empty. A third row per store is the store's own ceiling: finished runs per second through the
plain MLflow client, with the fewest calls a finished run takes (create with tags, one batch,
terminate) and no tracker. Reported: finished trial runs per second, the hooks' time per trial on Tune's thread
(its CPU, and its wall time, which includes waiting for the GIL while the tracker's sender
thread works), and what MLflow holds afterwards (trial runs FINISHED with their metric, cell
and curve runs).

Each (revision, store) runs in its own process with that revision's code on PYTHONPATH:

    .venv/bin/python benchmarks/tracker_throughput.py [--sparsities 5] [--baseline 6738b39]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARMS = ["dense", "static", "set", "rigl", "rigl+sparseopt"]
LRS = [0.01, 0.03, 0.1, 0.3]
SEEDS = [0, 1, 2, 3, 4]


def spec_payload(name: str, tracking_uri: str, storage: Path, sparsities: int) -> dict[str, Any]:
    return {
        "name": name,
        "tracking_uri": tracking_uri,
        "storage_path": str(storage),
        "base": {
            "data": {
                "name": "synthetic",
                "synthetic_train_size": 64,
                "synthetic_test_size": 64,
                "synthetic_image_size": 8,
                "batch_size": 64,
            },
            "model": {"name": "mlp", "hidden": 16},
            "schedule": {"warmup_epochs": 0},
        },
        "grid": {
            "arms": ARMS,
            "sparsities": [round(0.5 + 0.05 * index, 2) for index in range(sparsities)],
            "budgets": [1],
            "seeds": SEEDS,
        },
        "search": {"lr": {"grid": LRS}},
    }


def epoch_result(number: int) -> dict[str, Any]:
    from contract.names import EPOCH_METRICS

    values = {key: 50.0 + number + index / 7 for index, key in enumerate(EPOCH_METRICS)}
    return {"epoch": number, **values, "diverged": False, "training_iteration": number}


def drive(store_uri: str, root: Path, sparsities: int) -> dict[str, Any]:
    """In the child process: feed one tracker the whole sweep, return what it measured."""
    from mlflow.tracking import MlflowClient

    from sweeps.run.search import SweepSearcher
    from sweeps.spec.load import parse_spec
    from sweeps.spec.storage import locate, write_text_atomic
    from sweeps.tracking.callback import MlflowSweepCallback

    spec = parse_spec(spec_payload("bench", store_uri, root / "results", sparsities))
    location = locate(spec)
    write_text_atomic(location.spec_file, spec.to_yaml())
    searcher, trials = SweepSearcher(spec), []
    while (config := searcher.suggest(f"t{len(trials):05d}")) != SweepSearcher.FINISHED:
        trial = SimpleNamespace(trial_id=f"t{len(trials):05d}", config=config, status="PENDING")
        trial.last_result = epoch_result(1)
        trials.append(trial)
        searcher.on_trial_complete(trial.trial_id, trial.last_result)
    settings = {
        "tracking_uri": store_uri,
        "experiment_name": spec.name,
        "artifact_location": location.artifact_location,
        "spec_file": location.spec_file,
        "search_metric": spec.search.metric,
        "drain_timeout_s": 3600.0,  # the earlier tracker's end-of-sweep wait
        "outbox_dir": getattr(location, "outbox_dir", None),
    }
    accepted = inspect.signature(MlflowSweepCallback).parameters
    callback = MlflowSweepCallback(**{k: v for k, v in settings.items() if k in accepted})
    hooks = hooks_cpu = 0.0
    started = time.perf_counter()
    callback.setup()
    for trial in trials:
        before, before_cpu = time.perf_counter(), time.thread_time()
        trial.status = "RUNNING"
        callback.on_trial_start(0, trials, trial)
        callback.on_trial_result(0, trials, trial, trial.last_result)
        trial.status = "TERMINATED"
        callback.on_trial_complete(0, trials, trial)
        hooks += time.perf_counter() - before
        hooks_cpu += time.thread_time() - before_cpu
    fed = time.perf_counter() - started
    callback.on_experiment_end(trials)
    elapsed = time.perf_counter() - started
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name(spec.name).experiment_id
    found = {
        role: client.search_runs(
            [experiment], f"tags.`sparsesweep.role` = '{role}'", max_results=10_000
        )
        for role in ("trial", "cell", "curve")
    }
    finished = [
        run
        for run in found["trial"]
        if run.info.status == "FINISHED" and "test_acc1" in run.data.metrics
    ]
    return {
        "trials": len(trials),
        "seconds": elapsed,
        "fed_seconds": fed,
        "runs_per_s": len(finished) / elapsed,
        "hooks_us_per_trial": 1e6 * hooks / len(trials),
        "hooks_cpu_us_per_trial": 1e6 * hooks_cpu / len(trials),
        "trial_runs_finished": len(finished),
        "cell_runs": len(found["cell"]),
        "curve_runs": len(found["curve"]),
    }


def ceiling(store_uri: str, root: Path, runs: int) -> dict[str, Any]:
    """In the child process: the store's own pace for a finished run through the plain
    MLflow client (one `create_run` with 25 tags, one `log_batch` of 46 params and 13
    metrics, one `set_terminated`; 8 runs in flight to a server), no tracker at all."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    experiment = client.create_experiment("ceiling", artifact_location=root.as_uri())
    tags = {f"tag{index}": f"value{index}" for index in range(25)}
    params = [Param(f"param{index}", str(index)) for index in range(46)]

    def one(number: int) -> None:
        run_id = client.create_run(experiment, tags=tags, run_name=f"r{number}").info.run_id
        metrics = [Metric(f"metric{index}", 1.0, 1000, 1) for index in range(13)]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id, "FINISHED")

    workers = 8 if store_uri.startswith("http") else 1
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(runs)))
    elapsed = time.perf_counter() - started
    return {
        "trials": runs,
        "seconds": elapsed,
        "runs_per_s": runs / elapsed,
        "trial_runs_finished": runs,
        "hooks_us_per_trial": float("nan"),
        "hooks_cpu_us_per_trial": float("nan"),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path):
    """A local `mlflow server` (SQLite backend, proxied artifacts), as on a cluster head."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        f"--backend-store-uri=sqlite:///{root / 'server.db'}",
        f"--artifacts-destination={root / 'server-artifacts'}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("mlflow server did not come up") from None
                time.sleep(1.0)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def checkout(revision: str, into: Path) -> Path:
    """The code of `revision` (a git revision of this repository), unpacked."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(code: Path, store: str, root: Path, sparsities: int, mode: str) -> dict[str, Any]:
    """One tracker (the code at `code`; `mode` "ceiling": no tracker, the plain client) against
    a fresh store of kind `store`."""
    root.mkdir(parents=True)

    def child(uri: str) -> dict[str, Any]:
        env = {
            **os.environ,
            "PYTHONPATH": str(code),
            "SPARSESWEEP_MLFLOW_DRAIN_S": "3600",
        }
        command = [sys.executable, __file__, "--child", uri, "--root", str(root), "--mode", mode]
        done = subprocess.run(
            [*command, "--sparsities", str(sparsities)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"child failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    if store == "sqlite":
        return child(f"sqlite:///{root / 'mlflow.db'}")
    with mlflow_server(root) as uri:
        return child(uri)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsities", type=int, default=5)
    parser.add_argument("--baseline", default="6738b39", help="git revision to compare with")
    parser.add_argument("--stores", default="sqlite,server")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="tracker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.mode == "ceiling":
            found = ceiling(args.child, Path(args.root), 200)
        else:
            found = drive(args.child, Path(args.root), args.sparsities)
        print(json.dumps(found))
        return
    work = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    try:
        codes = {"today": ROOT, args.baseline: checkout(args.baseline, work / "baseline")}
        print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for store in args.stores.split(","):
            runs = [(label, code, "tracker") for label, code in codes.items()]
            for label, code, mode in [*runs, ("plain client", ROOT, "ceiling")]:
                root = work / f"{store}-{label.replace(' ', '-')}"
                found = measure(code, store, root, args.sparsities, mode)
                rows.append((store, label, found))
                print(f"{store:6s} {label:12s} {json.dumps(found)}", flush=True)
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        print()
        print(
            "| store | tracker | trials | finished trial runs in MLflow | wall (s) "
            "| trial runs/s | hooks per trial on Tune's thread: CPU / wall |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for store, label, found in rows:
            print(
                f"| {store} | {label} | {found['trials']} | {found['trial_runs_finished']} "
                f"| {found['seconds']:.1f} | {found['runs_per_s']:.1f} "
                f"| {found['hooks_cpu_us_per_trial']:.0f} / {found['hooks_us_per_trial']:.0f} µs |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
