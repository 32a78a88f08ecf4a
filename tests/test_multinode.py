"""The multi-node path for real, on one machine: `ray start --head` + a second `ray start
--address`, a sweep submitted with `ray job submit`, its runs in an MLflow server.

Each node has 1 CPU and each trial runs 2 DDP workers of 0.9 CPU, so every trial's worker
group has to span both nodes (checked through Ray's State API). Isolation from other Ray
users of the machine: every port is picked free; each node has its own `--temp-dir`, which is
where `ray start` writes `ray_current_cluster`, so a plain `ray.init()` elsewhere (it reads
the default `/tmp/ray/ray_current_cluster`) never joins this cluster; the cluster has its own
auth token, and this test talks to it only through the `ray` CLI in subprocesses, so its own
process never touches Ray's client state. Teardown kills the process groups it started
(never `ray stop`, which would kill every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import MLFLOW_DRAIN_S, free_port, kill_group

from sweeps.tracking.uri import DRAIN_TIMEOUT_ENV

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ("sparseopt", "trainables", "sweeps", "analysis")
LOOPBACK = "127.0.0.1"
DEFAULT_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")
SPEC = {
    "name": "multinode",
    "base": {
        "data": {"name": "digits", "batch_size": 256, "eval_batch_size": 512},
        "model": {"name": "mlp", "hidden": 16},
        "schedule": {"warmup_epochs": 0},
    },
    "grid": {"arms": ["rigl"], "sparsities": [0.9], "budgets": [2], "seeds": [0]},
    "search": {"lr": {"grid": [0.1]}},
    "resources": {"workers_per_trial": 2, "cpus_per_worker": 0.9, "max_concurrent_trials": 1},
}
EXPECTED_TRIALS = 1  # one trial shows the worker group spanning both nodes
GRACE_S = 5  # then SIGKILL: Ray's daemons take longer than 20 s to exit on SIGTERM
NODE_START_ATTEMPTS = 3


@dataclass
class LocalCluster:
    """A head and a worker node (`ray start --block`) and an MLflow server, all ours."""

    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    dashboard: str = field(default_factory=lambda: f"http://{LOOPBACK}:{free_port()}")
    tracking_uri: str = field(default_factory=lambda: f"http://{LOOPBACK}:{free_port()}")
    gcs_address: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Our environment without any RAY_* setting, plus this cluster's token; venv first."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # as `sparsesweep ui`: no job runner
        env[DRAIN_TIMEOUT_ENV] = MLFLOW_DRAIN_S  # the job's sweep inherits it from the nodes
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as if the venv were active
        return env

    def spawn(self, command: list[str], log: str) -> None:
        """Start a long-running command in its own session, so teardown can kill its group."""
        with open(self.root / log, "wb") as output:
            self.processes[log] = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ray(self, command: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """One `ray COMMAND --address=<dashboard> ARGS` call against this cluster."""
        return subprocess.run(
            [str(BIN / "ray"), *command.split(), f"--address={self.dashboard}", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def state(self, kind: str, *filters: str) -> list[dict[str, Any]]:
        """`ray list KIND --detail` as JSON (State API)."""
        options = [f"--filter={condition}" for condition in filters]
        listed = self.ray(f"list {kind}", "--detail", "--format=json", "--limit=1000", *options)
        assert listed.returncode == 0, listed.stderr[-2000:]
        return json.loads(listed.stdout)

    def alive_nodes(self) -> set[str]:
        return {node["node_id"] for node in self.state("nodes", "state=ALIVE")}

    def wait_for(
        self, what: str, check: Callable[[], bool], timeout_s: float, retry: str | None = None
    ) -> bool:
        """Poll `check()` until it is true; fail if one of our processes dies, except that the
        death of `retry` returns False (its caller starts it again)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for log, process in self.processes.items():
                if process.poll() is None:
                    continue
                if log == retry:
                    return False
                tail = (self.root / log).read_text(errors="replace")[-3000:]
                pytest.fail(f"{log}: exited with {process.returncode} waiting for {what}\n{tail}")
            with contextlib.suppress(Exception):
                if check():
                    return True
            time.sleep(2.0)
        pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def start_node(self, name: str, command: list[str], nodes: int) -> None:
        """`ray start --block`, until the cluster has `nodes` alive nodes. Retried: on an
        overloaded machine a raylet can miss Ray's fixed 30 s registration window."""
        for attempt in range(1, NODE_START_ATTEMPTS + 1):
            log = f"{name}-{attempt}.log"
            self.spawn(command, log)
            if self.wait_for(
                f"{nodes} alive nodes", lambda: len(self.alive_nodes()) == nodes, 240, retry=log
            ):
                return
            kill_group(self.processes.pop(log))
        tail = (self.root / log).read_text(errors="replace")[-3000:]
        pytest.fail(f"`ray start` of the {name} node failed {NODE_START_ATTEMPTS} times:\n{tail}")

    def start(self) -> None:
        mlflow_port = self.tracking_uri.rsplit(":", 1)[1]
        self.spawn(
            [
                str(BIN / "mlflow"),
                "server",
                f"--backend-store-uri=sqlite:///{self.root / 'mlflow.db'}",
                f"--artifacts-destination={self.root / 'mlartifacts'}",
                f"--host={LOOPBACK}",
                f"--port={mlflow_port}",
                "--workers=1",
            ],
            "mlflow.log",
        )
        common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
        head_dir = self.root / "head"
        self.start_node(
            "head",
            [
                str(BIN / "ray"),
                "start",
                "--head",
                *common,
                f"--port={free_port()}",
                f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={head_dir}",
            ],
            nodes=1,
        )
        self.gcs_address = (head_dir / "ray_current_cluster").read_text().strip()
        self.start_node(
            "worker",
            [
                str(BIN / "ray"),
                "start",
                f"--address={self.gcs_address}",
                *common,
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={self.root / 'worker'}",
            ],
            nodes=2,
        )
        self.wait_for("the MLflow server", self.mlflow_healthy, 120)

    def mlflow_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=5) as response:
            return response.status == 200

    def stop(self) -> None:
        """Kill the process groups we started (Ray's daemons and workers are in them)."""
        processes = list(self.processes.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for process in processes:
            kill_group(process)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    # A short root: Ray's Unix socket paths under --temp-dir must stay below ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ssmn-", dir="/tmp"))
    local = LocalCluster(root=root)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        leftovers = processes_mentioning(root)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"processes of this cluster outlived its process groups: {leftovers}"


def processes_mentioning(root: Path) -> list[int]:
    """Pids whose command line names this test's directory (so they were started by it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(root).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def working_dir(root: Path, spec: dict) -> Path:
    """What the job ships to the cluster: the packages and the spec (no venv, no data)."""
    directory = root / "job"
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (directory / "spec.yaml").write_text(yaml.safe_dump(spec))
    return directory


def test_sweep_submitted_as_a_job_spans_two_nodes(cluster: LocalCluster) -> None:
    from mlflow.tracking import MlflowClient

    default_address = DEFAULT_ADDRESS_FILE.read_text() if DEFAULT_ADDRESS_FILE.exists() else ""
    assert cluster.gcs_address not in default_address

    spec = dict(SPEC, storage_path=str(cluster.root / "results"), tracking_uri=cluster.tracking_uri)
    job_dir = working_dir(cluster.root, spec)
    submit = cluster.ray(
        "job submit",
        f"--working-dir={job_dir}",
        "--",
        "sparsesweep",
        "run",
        "spec.yaml",
        "--no-progress",
        timeout_s=900,
    )
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-4000:]
    assert "succeeded" in output
    assert (
        f"{EXPECTED_TRIALS}/{EXPECTED_TRIALS} trials ended ({EXPECTED_TRIALS} finished)" in output
    )

    nodes = cluster.alive_nodes()
    groups: dict[str, set[str]] = {}
    workers = cluster.state("actors", "class_name=RayTrainWorker")
    for actor in workers:
        groups.setdefault(actor["placement_group_id"], set()).add(actor["node_id"])
    assert len(workers) == 2 * EXPECTED_TRIALS
    assert list(groups.values()) == [nodes] * EXPECTED_TRIALS

    client = MlflowClient(cluster.tracking_uri)
    experiment = client.get_experiment_by_name("multinode")
    runs = client.search_runs([experiment.experiment_id])
    cells = {r.info.run_id: r for r in runs if r.data.tags["sparsesweep.role"] == "cell"}
    trials = [r for r in runs if r.data.tags["sparsesweep.role"] == "trial"]
    assert len(cells) == len(trials) == EXPECTED_TRIALS
    for run in trials:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags
        assert cells[tags["mlflow.parentRunId"]].data.tags["cell"] == tags["cell"]
        budget = int(tags["budget"])
        for key in ("train_loss", "val_acc1", "test_acc1"):
            steps = [point.step for point in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, budget + 1)), (key, steps)
