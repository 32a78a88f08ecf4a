"""Names and Arrow types of the exported tables, derived from docs/conventions.md.

Two tables are exported per sweep (see `analysis.export` for the on-disk layout):

* **trials** — one row per trial run: its identity (`IDENTITY_COLUMNS`), `status`
  (`running|finished|stopped|failed|diverged`), `mlflow_status`, times, `wall_time_s`,
  `epochs_completed`, `final_<metric>` (value at the last epoch that metric was logged),
  `best_<metric>` (max over epochs for accuracies, min for losses), then every MLflow param
  as a string column `param.<dotted key>` (e.g. `param.optim.lr`).
* **epochs** — one row per trial × epoch (`epoch` = MLflow step, 1-based): the identity
  columns, `epoch`, one float64 column per metric key (null where that metric was not logged
  at that epoch) and `timestamp` (when the epoch's last value was logged).

Metric columns carry the MLflow metric key, except where it would collide with an identity
column (which comes from the run's tags): the measured `sparsity` metric becomes
`measured_sparsity` (`sparsity` is the target), the `lr` metric (learning rate at the end of
the epoch) becomes `epoch_lr` (`lr` is the trial's base lr); any other collision gets `metric_`.
"""

from __future__ import annotations

import pyarrow as pa

ROLE_TAG = "sparsesweep.role"
STATUS_TAG = "sparsesweep.status"
PARENT_TAG = "mlflow.parentRunId"
SCHEMA_VERSION = "1"

METRIC_KEYS: tuple[str, ...] = (
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "test_loss",
    "test_acc1",
    "test_acc5",
    "lr",
    "sparsity",
    "itop_rate",
    "epoch_time_s",
    "samples_per_s",
)
HIGHER_IS_BETTER: tuple[str, ...] = ("train_acc1", "val_acc1", "val_acc5", "test_acc1", "test_acc5")
LOWER_IS_BETTER: tuple[str, ...] = ("train_loss", "val_loss", "test_loss")

STATUSES: tuple[str, ...] = ("running", "finished", "stopped", "failed", "diverged")
STATUS_FROM_MLFLOW: dict[str, str] = {
    "RUNNING": "running",
    "SCHEDULED": "running",
    "FINISHED": "finished",
    "KILLED": "stopped",
    "FAILED": "failed",
}

TAG_COLUMNS: dict[str, pa.DataType] = {
    "cell": pa.string(),
    "workload": pa.string(),
    "dataset": pa.string(),
    "model": pa.string(),
    "method": pa.string(),
    "arm": pa.string(),
    "preconditioner": pa.string(),
    "regrow_scores": pa.string(),
    "ham": pa.bool_(),
    "grad_renorm": pa.bool_(),
    "sparsity": pa.float64(),
    "budget": pa.int64(),
    "seed": pa.int64(),
    "lr": pa.float64(),
    "weight_decay": pa.float64(),
    "stage": pa.string(),
    "lr_trial": pa.int64(),
    "config_hash": pa.string(),
    "git_commit": pa.string(),
    "ray_trial_id": pa.string(),
}

IDENTITY_COLUMNS: tuple[str, ...] = (
    "experiment",
    "run_id",
    "workload",
    "dataset",
    "model",
    "method",
    "arm",
    "sparsity",
    "budget",
    "seed",
    "lr",
    "stage",
    "lr_trial",
    "status",
)

RUN_COLUMNS: dict[str, pa.DataType] = {
    "experiment": pa.string(),
    "run_id": pa.string(),
    "run_name": pa.string(),
    "parent_run_id": pa.string(),
    **TAG_COLUMNS,
    "status": pa.string(),
    "mlflow_status": pa.string(),
    "start_time": pa.timestamp("ms", tz="UTC"),
    "end_time": pa.timestamp("ms", tz="UTC"),
    "wall_time_s": pa.float64(),
    "epochs_completed": pa.int64(),
}

PARAM_PREFIX = "param."
_RENAMED_METRICS = {"sparsity": "measured_sparsity", "lr": "epoch_lr"}


def metric_column(key: str) -> str:
    """Column name of MLflow metric `key` in the exported tables (see module docstring)."""
    if key in _RENAMED_METRICS:
        return _RENAMED_METRICS[key]
    if key in RUN_COLUMNS or key in ("epoch", "timestamp"):
        return f"metric_{key}"
    return key


def ordered_metric_keys(found: set[str]) -> list[str]:
    """The conventional metric keys (always, in their documented order) then any extra keys."""
    return [*METRIC_KEYS, *sorted(found - set(METRIC_KEYS))]


def best_direction(key: str) -> str | None:
    """`"max"` or `"min"` for metrics that get a `best_` column, else None."""
    if key in HIGHER_IS_BETTER:
        return "max"
    if key in LOWER_IS_BETTER:
        return "min"
    return None
