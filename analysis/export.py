"""Turn a sweep's MLflow records into two Arrow tables and write them as partitioned Parquet.

Layout under the output directory (column meanings: `analysis.schema`)::

    manifest.json                                   what was exported, from where, when
    trials/method_<m>/sparsity_<s>/part-0.parquet   one row per trial
    epochs/method_<m>/sparsity_<s>/part-0.parquet   one row per trial x epoch

Every file holds all columns, `method` and `sparsity` included, with their real types; the
directory names are deliberately not Hive-style (`key=value`), so that readers do not add a
second, string-typed copy of those columns. Any Parquet reader takes a whole table:
`pandas.read_parquet("out/trials")`, `pyarrow.parquet.read_table("out/epochs")`,
`polars.read_parquet("out/trials/**/*.parquet")`, or in DuckDB
`SELECT * FROM 'out/epochs/**/*.parquet'`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import BadInputError, EmptyExperimentError
from analysis.fetch import ExperimentRecords, Reader, RunRecord, fetch_experiment
from analysis.schema import (
    IDENTITY_COLUMNS,
    PARAM_PREFIX,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    TAG_COLUMNS,
    metric_column,
    ordered_metric_keys,
)
from analysis.seed_rule import rule_from_json
from contract.names import DEFAULT_SEARCH_METRIC, LEGACY_METRICS, Tag, best_direction
from contract.outcome import STATUS_OF_MLFLOW_RUN, Status

TABLES: tuple[str, ...] = ("trials", "epochs")
_SORT_COLUMNS = (
    "method",
    "sparsity",
    "workload",
    "dataset",
    "model",
    "arm",
    "budget",
    "stage",
    "lr_trial",
    "seed",
    "run_id",
)


@dataclass(frozen=True)
class SweepTables:
    """The exported tables of one sweep."""

    trials: pa.Table
    epochs: pa.Table


@dataclass(frozen=True)
class ExportResult:
    """What `export_experiment` wrote."""

    tables: SweepTables
    out_dir: Path
    manifest: dict[str, Any]


def export_experiment(
    tracking_uri: str, experiment: str, out_dir: Path | str, reader: Reader = "auto"
) -> ExportResult:
    """Read every trial of `experiment` in bulk and write the trials and epochs tables."""
    records = fetch_experiment(tracking_uri, experiment, reader=reader)
    if not records.runs:
        raise EmptyExperimentError(
            f"experiment {experiment!r} in {tracking_uri} has no trial runs "
            "(no run tagged sparsesweep.role=trial)"
        )
    tables = build_tables(records)
    manifest = _manifest(records, tables, tracking_uri)
    out = write_tables(tables, out_dir, manifest)
    return ExportResult(tables, out, manifest)


def build_tables(records: ExperimentRecords) -> SweepTables:
    """The trials table and the long epochs table (schemas in `analysis.schema`)."""
    metrics = _latest_per_step(_current_names(records.metrics))
    keys = ordered_metric_keys(set(metrics["key"].unique()))
    runs = _run_frame(records)
    order = _trial_order(runs)
    runs = runs.loc[order].reset_index(drop=True)
    trials = _trials_table(runs, metrics, keys, records.runs)
    epochs = _epochs_table(runs, metrics, keys)
    return SweepTables(trials, epochs)


def _current_names(metrics: pd.DataFrame) -> pd.DataFrame:
    """Metrics with their legacy keys (`contract.names.LEGACY_METRICS`) renamed."""
    if not metrics["key"].isin(list(LEGACY_METRICS)).any():
        return metrics
    return metrics.assign(key=metrics["key"].replace(LEGACY_METRICS))


def write_tables(tables: SweepTables, out_dir: Path | str, manifest: dict[str, Any]) -> Path:
    """Write both tables partitioned by method and sparsity, replacing any earlier export."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("trials", tables.trials), ("epochs", tables.epochs)):
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        for folder, indices in _partitions(table).items():
            path = target / folder
            path.mkdir(parents=True)
            pq.write_table(table.take(indices), path / "part-0.parquet")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def read_tables(out_dir: Path | str) -> SweepTables:
    """Read back both tables of an export (row order as written)."""
    out = Path(out_dir)
    missing = [name for name in TABLES if not (out / name).is_dir()]
    if missing:
        raise BadInputError(f"{out}: not an export directory (missing {', '.join(missing)}/)")
    return SweepTables(_read_one(out / "trials"), _read_one(out / "epochs"))


def _read_one(folder: Path) -> pa.Table:
    files = sorted(folder.glob("*/*/part-0.parquet"))
    return pa.concat_tables([pq.read_table(path) for path in files])


def _latest_per_step(metrics: pd.DataFrame) -> pd.DataFrame:
    """One value per (run, key, step), sorted by them: the last logged (MLflow's history order)."""
    ordered = metrics.sort_values(["run_id", "key", "step", "timestamp", "value"], kind="stable")
    return ordered.drop_duplicates(["run_id", "key", "step"], keep="last").reset_index(drop=True)


def _parse(value: str | None, kind: pa.DataType) -> Any:
    if value is None:
        return None
    text = value.strip()
    try:
        if pa.types.is_boolean(kind):
            return {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
        if pa.types.is_integer(kind):
            number = float(text)
            return int(number) if number.is_integer() else None
        if pa.types.is_floating(kind):
            return float(text)
    except ValueError:
        return None
    return text


def _status(run: RunRecord) -> str:
    """The sweep status tag, unless it still says running on a run MLflow has terminated."""
    from_mlflow = STATUS_OF_MLFLOW_RUN.get(run.status, Status.FAILED).value
    tagged = run.tags.get(Tag.STATUS)
    if tagged in STATUSES and not (tagged == Status.RUNNING and from_mlflow != Status.RUNNING):
        return tagged
    return from_mlflow


def _run_frame(records: ExperimentRecords) -> pd.DataFrame:
    rows = []
    for run in records.runs:
        row: dict[str, Any] = {
            "experiment": records.name,
            "run_id": run.run_id,
            "run_name": run.run_name,
            "parent_run_id": run.tags.get(Tag.PARENT),
            "status": _status(run),
            "mlflow_status": run.status,
            "start_time": run.start_time,
            "end_time": run.end_time,
        }
        row.update({name: _parse(run.tags.get(name), kind) for name, kind in TAG_COLUMNS.items()})
        rows.append(row)
    names = [name for name in RUN_COLUMNS if name not in ("wall_time_s", "epochs_completed")]
    return pd.DataFrame(rows, columns=names, dtype=object)


def _trial_order(runs: pd.DataFrame) -> pd.Index:
    """Rows sorted by method, sparsity, then the other factors (nulls last)."""
    return runs.sort_values(list(_SORT_COLUMNS), na_position="last", kind="stable").index


def _arrow_column(values: Any, kind: pa.DataType, present: Any = None) -> pa.Array:
    if present is None:
        return pa.array(values, type=kind, from_pandas=True)
    return pa.array(np.asarray(values, dtype="float64"), type=kind, mask=~np.asarray(present))


def _trials_table(
    runs: pd.DataFrame, metrics: pd.DataFrame, keys: list[str], records: list[RunRecord]
) -> pa.Table:
    final = _wide(metrics.drop_duplicates(["run_id", "key"], keep="last"))  # sorted by step
    finite = metrics[metrics["value"].notna()].groupby(["run_id", "key"])["value"]
    best = {"max": _wide_series(finite.max()), "min": _wide_series(finite.min())}
    last_step = metrics.groupby("run_id")["step"].max()
    last_time = metrics.groupby("run_id")["timestamp"].max()

    run_ids = runs["run_id"]
    columns: dict[str, pa.Array] = {}
    for name, kind in RUN_COLUMNS.items():
        if name == "wall_time_s":
            columns[name] = pa.array(_wall_times(runs, last_time), type=kind)
        elif name == "epochs_completed":
            steps = last_step.reindex(run_ids).fillna(0).astype("int64")
            columns[name] = pa.array(steps.to_numpy(), type=kind)
        else:
            columns[name] = _arrow_column(runs[name].tolist(), kind)
    for key in keys:
        columns[f"final_{metric_column(key)}"] = _metric_array(final, run_ids, key)
    for key in keys:
        direction = best_direction(key)
        if direction is not None:
            columns[f"best_{metric_column(key)}"] = _metric_array(best[direction], run_ids, key)
    params = {run.run_id: run.params for run in records}
    for key in sorted({key for run in records for key in run.params}):
        columns[f"{PARAM_PREFIX}{key}"] = pa.array(
            [params[run_id].get(key) for run_id in run_ids], type=pa.string()
        )
    return _with_metadata(pa.table(columns), "trials")


def _wide(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(run x key) values and a same-shaped mask of which were logged (NaN values included)."""
    frame = rows.assign(logged=True)
    return (
        frame.pivot(index="run_id", columns="key", values="value"),
        frame.pivot(index="run_id", columns="key", values="logged").notna(),
    )


def _wide_series(series: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = series.unstack()
    return table, table.notna()


def _metric_array(
    wide: tuple[pd.DataFrame, pd.DataFrame], run_ids: pd.Series, key: str
) -> pa.Array:
    """Column `key` of a wide table for `run_ids`; null where nothing was logged."""
    values, logged = wide
    if key not in values.columns:
        return pa.nulls(len(run_ids), type=pa.float64())
    present = logged[key].reindex(run_ids, fill_value=False).to_numpy(dtype=bool)
    return _arrow_column(values[key].reindex(run_ids).to_numpy(), pa.float64(), present)


def _wall_times(runs: pd.DataFrame, last_time: pd.Series) -> list[float | None]:
    """End minus start for ended runs; for running ones, up to their last logged metric."""
    result: list[float | None] = []
    for run_id, status, start, end in zip(
        runs["run_id"], runs["status"], runs["start_time"], runs["end_time"], strict=True
    ):
        stop = end if status != "running" and pd.notna(end) else last_time.get(run_id)
        if pd.isna(start) or stop is None or pd.isna(stop):
            result.append(None)
        else:
            result.append((float(stop) - float(start)) / 1000.0)
    return result


def _epochs_table(runs: pd.DataFrame, metrics: pd.DataFrame, keys: list[str]) -> pa.Table:
    position = pd.Series(np.arange(len(runs)), index=runs["run_id"])
    frame = metrics.assign(order=metrics["run_id"].map(position).astype("int64"))
    values = frame.pivot(index=["order", "step"], columns="key", values="value")
    logged = frame.assign(one=True).pivot(index=["order", "step"], columns="key", values="one")
    stamps = frame.groupby(["order", "step"])["timestamp"].max()
    values, logged, stamps = values.sort_index(), logged.sort_index(), stamps.sort_index()
    order = values.index.get_level_values("order").to_numpy()
    identity = runs.iloc[order].reset_index(drop=True)

    columns: dict[str, pa.Array] = {}
    for name in IDENTITY_COLUMNS:
        columns[name] = _arrow_column(identity[name].tolist(), RUN_COLUMNS[name])
    columns["epoch"] = pa.array(values.index.get_level_values("step").to_numpy(), type=pa.int64())
    for key in keys:
        if key in values.columns:
            present = logged[key].notna().to_numpy()
            columns[metric_column(key)] = _arrow_column(
                values[key].to_numpy(), pa.float64(), present
            )
        else:
            columns[metric_column(key)] = pa.nulls(len(values), type=pa.float64())
    columns["timestamp"] = pa.array(stamps.to_numpy(), type=pa.timestamp("ms", tz="UTC"))
    return _with_metadata(pa.table(columns), "epochs")


def _with_metadata(table: pa.Table, name: str) -> pa.Table:
    return table.replace_schema_metadata(
        {"sparsesweep.table": name, "sparsesweep.schema_version": SCHEMA_VERSION}
    )


def _partition_folder(method: Any, sparsity: Any) -> str:
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(method)) if method else "unknown"
    level = "none" if sparsity is None or math.isnan(sparsity) else f"{sparsity:g}"
    return f"method_{label}/sparsity_{level}"


def _partitions(table: pa.Table) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    methods = table.column("method").to_pylist()
    sparsities = table.column("sparsity").to_pylist()
    for index, (method, sparsity) in enumerate(zip(methods, sparsities, strict=True)):
        groups.setdefault(_partition_folder(method, sparsity), []).append(index)
    return groups


def redact_uri(uri: str) -> str:
    """`uri` with its user info masked (`http://***@host`): the manifest and report are logged."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def search_seeds(tags: Mapping[str, str]) -> int | None:
    """The seeds every lr trial of the sweep runs, from its experiment tags: the tracker's
    `sparsesweep.search_seeds`, else an adaptive rule's `initial` (None: a sweep recorded
    before either, whose report expects the seeds each cell's runs ran)."""
    if Tag.SEARCH_SEEDS in tags:
        return int(tags[Tag.SEARCH_SEEDS])
    rule = rule_from_json(tags.get(Tag.SEEDS))
    return None if rule is None else rule.initial


def _manifest(records: ExperimentRecords, tables: SweepTables, tracking_uri: str) -> dict[str, Any]:
    statuses = Counter(tables.trials.column("status").to_pylist())
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": records.name,
        "experiment_id": records.experiment_id,
        "tracking_uri": redact_uri(tracking_uri),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "trials": tables.trials.num_rows,
        "epoch_rows": tables.epochs.num_rows,
        "status_counts": dict(sorted(statuses.items())),
        "partial": statuses.get("running", 0) > 0,
        "search_metric": records.tags.get(Tag.SEARCH_METRIC, DEFAULT_SEARCH_METRIC),
        "primary": records.tags.get(Tag.PRIMARY),
        "seeds": records.tags.get(Tag.SEEDS),
        "search_seeds": search_seeds(records.tags),
        "partitioning": "method_<method>/sparsity_<sparsity>/part-0.parquet",
    }
