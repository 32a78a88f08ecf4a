"""Helpers for the integration tests that run whole sweeps in subprocesses and inject faults.

Each sweep runs as `python -m sweeps run SPEC` in its own session with its own Ray temp dir
(`RAY_TMPDIR`), so it never joins another Ray cluster on the machine and the test can kill it,
and everything it started, by process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
import yaml
from mlflow_store import empty_store

from contract.names import EPOCH_METRICS, RUN_METRICS, SPLIT_METRICS
from contract.trial import TrialMeta
from sweeps.cli import run as cli_run
from sweeps.cli import status as cli_status
from sweeps.cli import ui as cli_ui
from sweeps.run.search import SweepSearcher
from sweeps.spec.load import load_spec
from sweeps.tracking.uri import DRAIN_TIMEOUT_ENV
from trainables.faults import FAULT_PLAN_ENV

ROOT = Path(__file__).resolve().parents[1]
ALWAYS_LOGGED = frozenset((*SPLIT_METRICS, *RUN_METRICS))


def trial_meta(**changes: Any) -> TrialMeta:
    """A valid `TrialMeta` (rigl, s=0.9, 2 epochs, seed 0, lr 0.1) with `changes` applied."""
    fields: dict[str, Any] = {
        "sweep": "s",
        "cell": "default/rigl/s=0.9/e=2",
        "workload": "default",
        "arm": "rigl",
        "method": "rigl",
        "sparsity": 0.9,
        "budget": 2,
        "seed": 0,
        "lr": 0.1,
        "weight_decay": 5e-4,
        "stage": "search",
        "lr_trial": 0,
        "config_hash": "abc",
    }
    return TrialMeta(**{**fields, **changes})


def write_spec(tmp_path: Path, spec: dict[str, Any], tracking_uri: str | None = None) -> Path:
    """Write `spec` with storage under `tmp_path` and `tracking_uri`, or else the SQLite store
    `tmp_path/mlflow.db`, made an empty migrated one (`mlflow_store.empty_store`) only if it
    does not exist yet: a spec written again for the same sweep (an extension) keeps its runs."""
    database = tmp_path / "mlflow.db"
    default_uri = f"sqlite:///{database}" if database.exists() else empty_store(database)
    full = dict(
        spec,
        storage_path=str(tmp_path / "results"),
        tracking_uri=tracking_uri or default_uri,
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(full))
    return path


def planned_trials(spec_path: Path) -> list[dict[str, Any]]:
    """The trial configs an uninterrupted searcher hands out for the spec, in order."""
    searcher = SweepSearcher(load_spec(spec_path))
    configs = []
    while True:
        trial_id = f"t{len(configs)}"
        config = searcher.suggest(trial_id)
        if config == SweepSearcher.FINISHED:
            return configs
        assert config is not None
        configs.append(config)
        searcher.on_trial_complete(trial_id, {"val_acc1": 50.0, "epoch": config["meta"]["budget"]})


def write_fault_plan(path: Path, faults: dict[str, dict[str, Any]]) -> Path:
    """A fault plan for `trainables.faults` (config hash -> fault)."""
    path.write_text(json.dumps(faults))
    return path


@contextlib.contextmanager
def ray_temp_dir() -> Iterator[str]:
    """A private, short Ray temp dir (Unix socket paths must stay under 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


MLFLOW_DRAIN_S = "600"
"""A sweep's end-of-sweep wait for MLflow in tests (`DRAIN_TIMEOUT_ENV`): a local store is never
down there, so the wait ends when everything is sent; the default 30 s can run out on a busy
machine and leave records for the next run, which a test would read as lost."""


def sweep_env(ray_tmp: str, fault_plan: Path | None = None) -> dict[str, str]:
    """Environment of a sweep subprocess: the repo importable, private Ray, MLflow waited for
    (`MLFLOW_DRAIN_S`), optional faults."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_TMPDIR": ray_tmp,
        DRAIN_TIMEOUT_ENV: MLFLOW_DRAIN_S,
    }
    env.pop("RAY_ADDRESS", None)
    env.pop(FAULT_PLAN_ENV, None)
    if fault_plan is not None:
        env[FAULT_PLAN_ENV] = str(fault_plan)
    return env


def start_sweep(spec_path: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """`python -m sweeps run SPEC --no-progress` in a new session (output: text on stdout)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(spec_path), "--no-progress"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )


def finish(process: subprocess.Popen, timeout_s: float) -> str:
    """Wait for a sweep subprocess and return its output; kill its session in any case."""
    try:
        output, _ = process.communicate(timeout=timeout_s)
    finally:
        kill_group(process)
    return output


ONE_TRIAL_SPEC: dict[str, Any] = {
    "base": {
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [1], "seeds": [0]},
    "search": {"lr": {"grid": [0.1]}},
}
"""A one-cell, one-trial spec without a name (CLI tests add name, storage and tracking)."""


def sweep_cli_app() -> typer.Typer:
    """The sweep commands (`run`, `resume`, `status`, `ui`) on a fresh Typer app."""
    application = typer.Typer()
    for module in (cli_run, cli_status, cli_ui):
        module.register(application)
    return application


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process and every process of its session (Ray's daemons and workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, process=None) -> None:
    """Poll `condition` until true; fail naming `what` (with the sweep's output if it died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            output = process.stdout.read()[-4000:] if process.stdout else "(see its log)"
            raise AssertionError(f"the process exited before {what}:\n{output}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


LOWEST_PORT = 20000  # above Ray's fixed ports and its default worker ports (10002-19999)
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a server a test starts, free now and likely to stay free until
    the server binds it, even when the test restarts the server on it: drawn at random (so test
    processes running side by side rarely draw the same one) from below the kernel's ephemeral
    range, which every `connect()` and every bind to port 0 on the machine draws from (a port
    found with bind(0) can be handed to anyone's next connection before the server binds it);
    never the same one twice in a process."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    draw = random.SystemRandom()
    for _ in range(1000):
        port = draw.randrange(LOWEST_PORT, ephemeral_low)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in [{LOWEST_PORT}, {ephemeral_low})")


def start_mlflow_server(database: Path, port: int, log: Path) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port over an SQLite store, in its own session; waits for /health."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{database}",
            "--artifacts-destination",
            str(database.parent / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=database.parent,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as `sparsesweep ui`
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 600, f"the MLflow server on port {port}", server)
    except BaseException:
        kill_group(server)
        raise
    return server


def trial_runs(tracking_uri: str, experiment: str) -> dict[str, Any]:
    """The sweep's trial runs by config hash; fails on a duplicate run for one trial."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = client.search_runs(
        [found.experiment_id], "tags.`sparsesweep.role` = 'trial'", max_results=1000
    )
    by_hash = {run.data.tags["config_hash"]: run for run in runs}
    assert len(by_hash) == len(runs), "duplicate MLflow runs for one trial"
    return by_hash


def logged_steps(tracking_uri: str, run_id: str) -> dict[str, list[int]]:
    """Every logged step of every epoch metric the run has, sorted (a duplicate shows twice);
    the split and run metrics are always there, activity metrics only for the modifiers used."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    present = set(client.get_run(run_id).data.metrics)
    keys = [key for key in EPOCH_METRICS if key in present or key in ALWAYS_LOGGED]
    return {
        key: sorted(point.step for point in client.get_metric_history(run_id, key)) for key in keys
    }


def tune_rows(experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Tune's result rows of every trial, by config hash, in the order they were reported."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for result_file in experiment_dir.glob("*/result.json"):
        for line in result_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["config"]["meta"]["config_hash"], []).append(row)
    return rows


def trial_numbers(experiment_dir: Path) -> dict[str, int]:
    """Tune's creation number (1, 2, ...) of every trial, by config hash: the counter Tune puts
    after the trial id in the trial's folder name (`<trainable>_<trial id>_<number>_...`). With
    `max_concurrent_trials: 1` Tune creates a trial only once the one before it has ended, so
    this is the order the trials ran in, exactly (Tune's `timestamp` is whole seconds)."""
    numbers: dict[str, int] = {}
    for result_file in experiment_dir.glob("*/result.json"):
        first = json.loads(result_file.read_text().splitlines()[0])
        tag = result_file.parent.name.split(f"_{first['trial_id']}_", 1)[1]
        numbers[first["config"]["meta"]["config_hash"]] = int(tag.split("_", 1)[0])
    return numbers


def aggregate_steps(tracking_uri: str, experiment: str) -> dict[str, dict[str, list[int]]]:
    """Every logged step of every metric of the sweep's cell and curve runs (a duplicate shows
    twice), keyed `cell <cell id>` / `curve <arm> s=<sparsity>`; asserts one run per key."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    steps: dict[str, dict[str, list[int]]] = {}
    for role in ("cell", "curve"):
        runs = client.search_runs(
            [found.experiment_id], f"tags.`sparsesweep.role` = '{role}'", max_results=1000
        )
        for run in runs:
            tags = run.data.tags
            key = (
                f"cell {tags['cell']}"
                if role == "cell"
                else f"curve {tags['workload']} {tags['arm']} s={tags['sparsity']}"
            )
            assert key not in steps, f"two {role} runs for {key}"
            steps[key] = {
                name: sorted(m.step for m in client.get_metric_history(run.info.run_id, name))
                for name in run.data.metrics
            }
    return steps
