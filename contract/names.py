"""Metric and MLflow tag names shared by the writers (trainables, tracker) and the readers.

Every per-epoch key a trial reports is in `EPOCH_METRICS`; MLflow logs them with
`step = epoch` (1-based). Tag names are the keys the tracker sets and `analysis` reads.
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["maximize", "minimize"]

SPLIT_METRICS: tuple[str, ...] = (
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "test_loss",
    "test_acc1",
    "test_acc5",
)
"""Loss and accuracy per split (val/test keys only when the run has that split)."""

RUN_METRICS: tuple[str, ...] = ("lr", "sparsity", "itop_rate", "epoch_time_s", "samples_per_s")
"""Per-epoch state of the run: lr at the end of the epoch, measured sparsity, ITOP rate, speed."""

ACTIVITY_METRICS: dict[str, str] = {
    "renorm": "renorm_active_frac",
    "clip": "clip_active_frac",
    "cap": "cap_active_frac",
    "wdscale": "wdscale_active_frac",
    "ham": "ham_active_frac",
}
"""Per arm modifier: the metric holding the fraction of the epoch's optimizer steps it changed.

A modifier that changed (almost) no step is an ablation that did not run; the report's
`inactive_ablation` guard reads these."""

EPOCH_METRICS: tuple[str, ...] = (*SPLIT_METRICS, *RUN_METRICS, *ACTIVITY_METRICS.values())
"""Every metric a trial reports per epoch (activity metrics only for the modifiers it uses)."""

SEARCH_METRICS: tuple[str, ...] = (
    "val_acc1",
    "val_acc5",
    "val_loss",
    "test_acc1",
    "test_acc5",
    "test_loss",
    "train_acc1",
    "train_loss",
)
"""Metrics a sweep may search on (`search.metric`), the default first."""

DEFAULT_SEARCH_METRIC = SEARCH_METRICS[0]


def metric_direction(metric: str) -> Direction:
    """Losses are minimised, everything else (accuracies) maximised."""
    return "minimize" if metric.endswith("_loss") else "maximize"


def best_direction(metric: str) -> Literal["max", "min"] | None:
    """`"max"`/`"min"` for a split metric (which gets a `best_` column), None otherwise."""
    if metric not in SPLIT_METRICS:
        return None
    return "max" if metric_direction(metric) == "maximize" else "min"


class Role:
    """Values of the `sparsesweep.role` tag: what an MLflow run stands for."""

    TRIAL = "trial"
    CELL = "cell"
    CURVE = "curve"
    REPORT = "report"


class Tag:
    """MLflow tag names written by the tracker and read by analysis."""

    ROLE = "sparsesweep.role"
    STATUS = "sparsesweep.status"
    RESUMED_FROM_EPOCH = "sparsesweep.resumed_from_epoch"
    SKIPPED_CHECKPOINTS = "sparsesweep.skipped_checkpoints"
    SWEEP = "sparsesweep.sweep"
    SEARCH_METRIC = "sparsesweep.search_metric"
    PRIMARY = "sparsesweep.primary"
    """On the experiment: the sweep's primary declaration (spec section `analysis:`) as a JSON
    object {"primary": ["ARM:BASELINE", ...] | null, "alpha": float, "target": float | null,
    "halfwidth": float} (`analysis.primary`); on report runs: the declaration the report used,
    its contrasts resolved."""
    VERDICT = "sparsesweep.verdict"
    """On report runs: the primary verdict, one sentence per primary contrast (one per line)."""
    PARTIAL = "sparsesweep.partial"
    GUARDS = "sparsesweep.guards"
    """On report runs: the verdict guards that fired (comma-separated), or `none`."""
    GUARD_PREFIX = "sparsesweep.guard."
    """On report runs: `sparsesweep.guard.<guard>` = how often that guard fired."""
    LATEST_REPORT = "sparsesweep.latest_report"
    """On cell and curve runs: the run id of the newest report of the sweep."""
    PARENT = "mlflow.parentRunId"
    CHECKPOINT_PATH = "checkpoint_path"
    RAY_TRIAL_ID = "ray_trial_id"
    GIT_COMMIT = "git_commit"


TagKind = Literal["str", "bool", "float", "int"]

TRIAL_TAGS: dict[str, TagKind] = {
    "cell": "str",
    "workload": "str",
    "dataset": "str",
    "model": "str",
    "method": "str",
    "arm": "str",
    "preconditioner": "str",
    "regrow_scores": "str",
    "ham": "bool",
    "grad_renorm": "bool",
    "sparsity": "float",
    "budget": "int",
    "seed": "int",
    "lr": "float",
    "weight_decay": "float",
    "delta_t": "int",
    "steps_per_epoch": "int",
    "stage": "str",
    "lr_trial": "int",
    "config_hash": "str",
    Tag.GIT_COMMIT: "str",
    Tag.RAY_TRIAL_ID: "str",
}
"""Every factor tag of a trial run and how to read its string value."""
