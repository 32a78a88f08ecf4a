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

Metric columns carry the MLflow metric key (`epoch_lr`, `measured_sparsity`, ...). Runs logged
before those metrics were renamed carry `lr` and `sparsity` (`contract.names.LEGACY_METRICS`):
they land in the same `epoch_lr` and `measured_sparsity` columns, so exports of old and new
sweeps read alike (schema version unchanged). Any other metric that would collide with an
identity column (which comes from the run's tags) gets `metric_`.
"""

from __future__ import annotations

import pyarrow as pa

from contract.names import EPOCH_METRICS, LEGACY_METRICS, TRIAL_TAGS, TagKind
from contract.outcome import Status

STATUSES: tuple[str, ...] = tuple(status.value for status in Status if status is not Status.PENDING)
"""The statuses a trial run can have in MLflow (a pending trial has no run yet)."""

SCHEMA_VERSION = "1"

METRIC_KEYS: tuple[str, ...] = EPOCH_METRICS
_ARROW_TYPES: dict[TagKind, pa.DataType] = {
    "str": pa.string(),
    "bool": pa.bool_(),
    "float": pa.float64(),
    "int": pa.int64(),
}
TAG_COLUMNS: dict[str, pa.DataType] = {
    name: _ARROW_TYPES[kind] for name, kind in TRIAL_TAGS.items()
}
"""One column per trial tag (`contract.names.TRIAL_TAGS`), typed by its kind."""

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


def metric_column(key: str) -> str:
    """Column name of MLflow metric `key` in the exported tables (see module docstring)."""
    if key in LEGACY_METRICS:
        return LEGACY_METRICS[key]
    if key in RUN_COLUMNS or key in ("epoch", "timestamp"):
        return f"metric_{key}"
    return key


def ordered_metric_keys(found: set[str]) -> list[str]:
    """The conventional metric keys (always, in their documented order) then any extra keys."""
    return [*METRIC_KEYS, *sorted(found - set(METRIC_KEYS))]
