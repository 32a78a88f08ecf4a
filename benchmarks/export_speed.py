"""Export speed: `sparsesweep export` against the naive per-run `get_metric_history` loop.

Builds a local SQLite tracking store of RUNS trial runs x EPOCHS epochs x 4 metrics (one
`log_batch` per run), then times, side by side:

* naive:  `search_runs` pages + one `get_metric_history` call per run per metric;
* export (client reader): the generic bulk path used for non-SQLite URIs;
* export (SQL reader): the default for `sqlite:` URIs, as `sparsesweep export` runs it.

Both exports include building the Arrow tables and writing the Parquet files.
Targets: the default export >= 10x faster than the naive loop and <= 10 s.

    python benchmarks/export_speed.py [--runs 1000] [--epochs 100] [--store DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis.export import build_tables, export_experiment
from analysis.fetch import fetch_experiment

EXPERIMENT = "export-speed"
METRICS = ("train_loss", "val_acc1", "test_acc1", "itop_rate")
TARGET_SPEEDUP = 10.0
TARGET_SECONDS = 10.0


def build_store(root: Path, runs: int, epochs: int) -> str:
    """A store with `runs` trial runs of `epochs` epochs x 4 metrics, one log_batch per run."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(
        EXPERIMENT, artifact_location=(root / "artifacts").as_uri()
    )
    for index in range(runs):
        method = ("rigl", "set")[index % 2]
        sparsity = (0.9, 0.95, 0.97)[(index // 2) % 3]
        arm = method + ("+sparseopt" if (index // 6) % 2 else "")
        tags = {
            "sparsesweep.role": "trial",
            "sparsesweep.status": "finished",
            "method": method,
            "arm": arm,
            "sparsity": f"{sparsity:g}",
            "budget": str(epochs),
            "seed": str(index // 12),
            "dataset": "cifar100",
            "model": "resnet20",
        }
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(key, 50.0 + epoch * 0.1 + k, stamp + epoch, epoch)
            for epoch in range(1, epochs + 1)
            for k, key in enumerate(METRICS)
        ]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
    return uri


def naive_loop(uri: str) -> int:
    """What a script without bulk reads does; returns the number of metric values read."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    values, token = 0, None
    while True:
        page = client.search_runs(
            [experiment_id], "tags.`sparsesweep.role` = 'trial'", page_token=token
        )
        for run in page:
            for key in METRICS:
                values += len(client.get_metric_history(run.info.run_id, key))
        token = page.token
        if not token:
            return values


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument(
        "--store", type=Path, default=None, help="keep (and reuse) the store in this directory"
    )
    args = parser.parse_args()

    root = args.store or Path(tempfile.mkdtemp(prefix="export-speed-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        if not (root / "mlflow.db").exists():
            seconds, uri = timed(lambda: build_store(root, args.runs, args.epochs))
            print(
                f"built {args.runs} runs x {args.epochs} epochs x {len(METRICS)} metrics in {seconds:.1f} s"
            )
        expected = args.runs * args.epochs * len(METRICS)

        naive_s, naive_values = timed(lambda: naive_loop(uri))
        client_s, client_tables = timed(
            lambda: build_tables(fetch_experiment(uri, EXPERIMENT, reader="client"))
        )
        export_s, exported = timed(lambda: export_experiment(uri, EXPERIMENT, root / "export"))
        rows = exported.tables.epochs.num_rows
        assert naive_values == expected, (naive_values, expected)
        assert rows == args.runs * args.epochs == client_tables.epochs.num_rows

        width = 56
        print(f"\n{'method':<{width}}{'seconds':>9}{'speedup':>9}")
        print(
            f"{'naive: search_runs + get_metric_history per run/metric':<{width}}{naive_s:>9.2f}{1.0:>8.1f}x"
        )
        print(
            f"{'bulk, client reader (tables only)':<{width}}{client_s:>9.2f}{naive_s / client_s:>8.1f}x"
        )
        print(
            f"{'sparsesweep export, SQL reader (+ Parquet)':<{width}}{export_s:>9.2f}{naive_s / export_s:>8.1f}x"
        )
        speedup = naive_s / export_s
        verdict = "PASS" if speedup >= TARGET_SPEEDUP and export_s <= TARGET_SECONDS else "FAIL"
        print(
            f"\n{expected:,} metric values, {rows:,} epoch rows. Target >= {TARGET_SPEEDUP:.0f}x "
            f"and <= {TARGET_SECONDS:.0f} s: {verdict} ({speedup:.1f}x, {export_s:.2f} s)"
        )
    finally:
        if args.store is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
