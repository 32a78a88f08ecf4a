"""Cost of the sweep's MLflow tracking per epoch and per finished trial: SQLite vs a server.

Drives the real `sweeps.tracking.callback.MlflowSweepCallback` with the hooks and results Tune feeds
it (configs handed out by the sweep's own `SweepSearcher`; every result carries the 13 epoch
metrics of docs/conventions.md). The callback's Tune hooks only queue the records; its sender
thread makes the MLflow calls (one `log_batch` per epoch at `step = epoch`). Timed: the hook on
Tune's thread, and each MLflow send (wrapped `_send`, waiting for the outbox to drain after
every event, as when epochs arrive seconds apart). Both stores are driven side by side, trial
by trial, in one run. The per-epoch cost is set against a real epoch of the quickstart workload
(digits, small_cnn), trained here in-process, and the whole per-trial cost against a 1-minute
trial. Per finished trial it also counts the MLflow calls (by client method) and times the
live aggregation (`sweeps.tracking.aggregates`: the cell run's progress tags and, once the cell's
trials have all ended, its per-epoch seed means and the curve points), which runs on the
sender thread, and the end hook on Tune's thread (it only records the end and queues it).
Each trial is its own cell's seed here (`--seeds` seeds per cell, lr fixed), so every
`--seeds`-th trial completes a cell.

    .venv/bin/python benchmarks/mlflow_overhead.py [--trials 10] [--epochs 20] [--seeds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sweeps.run.search import SweepSearcher
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import write_text_atomic
from sweeps.tracking.callback import EPOCH_METRICS, MlflowSweepCallback


class CountingClient:
    """An MlflowClient that counts the calls made through it, by method."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return call


def build_spec(trials: int, epochs: int, seeds: int, tracking_uri: str, name: str) -> SweepSpec:
    return parse_spec(
        {
            "name": name,
            "tracking_uri": tracking_uri,
            "base": {
                "data": {"name": "digits"},
                "model": {"name": "small_cnn"},
                "schedule": {"warmup_epochs": 0},
            },
            "grid": {
                "arms": ["rigl"],
                "sparsities": [round(0.5 + 0.001 * cell, 3) for cell in range(trials // seeds)],
                "budgets": [epochs],
                "seeds": list(range(seeds)),
            },
            "search": {"lr": {"grid": [0.1]}},
        }
    )


def epoch_result(epoch: int) -> dict[str, Any]:
    """What a trial reports per epoch (plus Tune's own keys, which the callback ignores)."""
    values = {key: 50.0 + epoch + index / 7 for index, key in enumerate(EPOCH_METRICS)}
    return {"epoch": epoch, **values, "diverged": False, "training_iteration": epoch}


class TimedCallback(MlflowSweepCallback):
    """The sweep's callback, timing each MLflow send of its sender thread by kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_times: dict[str, list[float]] = {"start": [], "epochs": [], "end": []}
        self.aggregate_times: list[float] = []

    def _aggregate(self, cell: str) -> None:
        start = time.perf_counter()
        super()._aggregate(cell)
        self.aggregate_times.append(time.perf_counter() - start)

    def _send(self, trial_id: str, config: dict[str, Any], kind: str, payloads: list[Any]) -> None:
        start = time.perf_counter()
        super()._send(trial_id, config, kind, payloads)
        self.send_times.setdefault(kind, []).append(time.perf_counter() - start)


class Store:
    """One tracking store driven through its own callback and searcher."""

    def __init__(
        self, label: str, tracking_uri: str, trials: int, epochs: int, seeds: int, root: Path
    ):
        spec = build_spec(trials, epochs, seeds, tracking_uri, f"bench-{label}")
        spec_file = str(root / f"spec-{label}.yaml")
        write_text_atomic(spec_file, spec.to_yaml())
        self.label = label
        self.searcher = SweepSearcher(spec)
        artifacts = (root / f"artifacts-{label}").as_uri() if label == "sqlite" else None
        self.callback = TimedCallback(
            tracking_uri, spec.name, artifact_location=artifacts, spec_file=spec_file
        )
        self.callback.setup()
        self.counting = CountingClient(self.callback.client)
        self.callback._client = self.counting
        self.trials: list[SimpleNamespace] = []
        self.hook_times: list[float] = []
        self.end_hook_times: list[float] = []
        self.end_calls: list[int] = []
        self.end_breakdown: list[dict[str, int]] = []

    def run_trial(self, epochs: int) -> None:
        trial_id = f"trial_{len(self.trials):05d}"
        config = self.searcher.suggest(trial_id)
        trial = SimpleNamespace(trial_id=trial_id, config=config, last_result={})
        self.trials.append(trial)
        self.callback.on_trial_start(0, self.trials, trial)
        self._drain()
        for epoch in range(1, epochs + 1):
            trial.last_result = epoch_result(epoch)
            start = time.perf_counter()
            self.callback.on_trial_result(0, self.trials, trial, trial.last_result)
            self.hook_times.append(time.perf_counter() - start)
            self._drain()
        self.counting.calls.clear()
        start = time.perf_counter()
        self.callback.on_trial_complete(0, self.trials, trial)
        self.end_hook_times.append(time.perf_counter() - start)
        self._drain()
        self.end_calls.append(sum(self.counting.calls.values()))
        self.end_breakdown.append(dict(self.counting.calls))
        self.searcher.on_trial_complete(trial_id, trial.last_result)

    def _drain(self) -> None:
        if not self.callback.drain(timeout_s=120):
            raise SystemExit(f"{self.label}: MLflow did not take the records in 120 s")

    def check(self, epochs: int) -> None:
        """Every epoch of every trial must have reached MLflow (the hooks swallow errors)."""
        client = self.callback.client
        for trial in self.trials:
            run_id = self.callback._trial_runs[trial.trial_id]
            steps = [point.step for point in client.get_metric_history(run_id, "val_acc1")]
            if sorted(steps) != list(range(1, epochs + 1)):
                raise SystemExit(f"{self.label}: {trial.trial_id} logged steps {steps}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """A local `mlflow server` (SQLite backend, proxied artifacts), as on a cluster head."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        f"--backend-store-uri=sqlite:///{root / 'server.db'}",
        f"--artifacts-destination={root / 'server-artifacts'}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",  # uvicorn's multi-worker supervisor kills children slow to start
    ]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as `sparsesweep ui`
    server = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                return server, uri
        except OSError:
            time.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    raise SystemExit("mlflow server did not come up:\n" + (root / "server.log").read_text()[-3000:])


def digits_epoch_seconds() -> float:
    """Median wall time of one quickstart epoch (digits, small_cnn, train + eval), in-process."""
    import torch

    from sparseopt.config import TrainConfig
    from sparseopt.recipe import build_run, train_and_evaluate

    torch.set_num_threads(1)
    cfg = TrainConfig.model_validate(
        {
            "data": {"name": "digits", "batch_size": 64, "eval_batch_size": 512},
            "model": {"name": "small_cnn"},
            "sparse": {"method": "rigl", "sparsity": 0.9, "delta_t": 10},
            "schedule": {"warmup_epochs": 0},
            "epochs": 4,
        }
    )
    run = build_run(cfg, rank=0, world_size=1, device=torch.device("cpu"))
    times = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        train_and_evaluate(run, epoch)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5, help="trials per cell")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    server, server_uri = start_server(root)
    sizes = (args.trials, args.epochs, args.seeds)
    try:
        stores = [
            Store("sqlite", f"sqlite:///{root / 'local.db'}", *sizes, root),
            Store("server", server_uri, *sizes, root),
        ]
        for _ in range(args.trials):
            for store in stores:
                store.run_trial(args.epochs)
        for store in stores:
            store.callback.on_experiment_end(store.trials)
            store.check(args.epochs)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    epoch_s = digits_epoch_seconds()
    print(
        f"{args.trials} trials x {args.epochs} epochs per store, {len(EPOCH_METRICS)} metrics per epoch"
    )
    print(f"one digits small_cnn epoch (train + eval, 1 thread): {epoch_s * 1000:.0f} ms")
    print(
        f"{'store':<8}{'hook us':>9}{'epoch ms median':>17}{'p90':>7}{'% of digits epoch':>19}"
        f"{'start ms':>10}{'end ms':>8}{'per trial s':>13}{'% of 1-min trial':>18}"
    )
    for store in stores:
        sends = store.callback.send_times
        epoch = sorted(sends["epochs"])
        median, p90 = statistics.median(epoch), epoch[int(0.9 * (len(epoch) - 1))]
        start_s, end_s = statistics.median(sends["start"]), statistics.median(sends["end"])
        per_trial = start_s + median * args.epochs + end_s
        hook_us = statistics.median(store.hook_times) * 1e6
        print(
            f"{store.label:<8}{hook_us:>9.0f}{median * 1000:>17.1f}{p90 * 1000:>7.1f}"
            f"{100 * median / epoch_s:>18.1f}%{start_s * 1000:>10.0f}{end_s * 1000:>8.0f}"
            f"{per_trial:>13.2f}{100 * per_trial / 60:>17.2f}%"
        )
    print(
        f"\nper finished trial ({args.seeds} trials per cell: every {args.seeds}th completes its cell)"
    )
    print(
        f"{'store':<8}{'end hook us':>12}{'MLflow calls, cell open':>25}{'cell complete':>15}"
        f"{'aggregate ms, open':>20}{'complete':>10}"
    )
    for store in stores:
        calls = store.end_calls
        complete = calls[args.seeds - 1 :: args.seeds]
        open_calls = [c for i, c in enumerate(calls) if (i + 1) % args.seeds]
        times = store.callback.aggregate_times[: len(calls)]
        done = times[args.seeds - 1 :: args.seeds]
        pending = [t for i, t in enumerate(times) if (i + 1) % args.seeds]
        print(
            f"{store.label:<8}{statistics.median(store.end_hook_times) * 1e6:>12.0f}"
            f"{statistics.median(open_calls):>25.0f}{statistics.median(complete):>15.0f}"
            f"{statistics.median(pending) * 1000:>20.1f}{statistics.median(done) * 1000:>10.1f}"
        )
    for store in stores:
        first, *_ = store.end_breakdown
        last_complete = store.end_breakdown[args.seeds - 1 :: args.seeds][-1]
        print(
            f"{store.label}: calls of a trial, cell open {first}; completing a cell {last_complete}"
        )


if __name__ == "__main__":
    main()
