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

RUN_METRICS: tuple[str, ...] = (
    "epoch_lr",
    "measured_sparsity",
    "itop_rate",
    "epoch_time_s",
    "samples_per_s",
)
"""Per-epoch state of the run: lr at the end of the epoch, measured sparsity, ITOP rate, speed.
Named apart from the trial's tags `lr` (the searched base lr) and `sparsity` (the target)."""

LEGACY_METRICS: dict[str, str] = {"lr": "epoch_lr", "sparsity": "measured_sparsity"}
"""Old name -> current name of the renamed run metrics (runs logged before the rename carry
the old names; readers map them, so old and new runs export to the same columns)."""

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
    SEARCH_SEEDS = "sparsesweep.search_seeds"
    """On the experiment: how many seeds every lr trial of the search runs (the spec's
    `grid.seeds` list, or its `initial` count), which the report's lr rule expects of each lr
    trial (`contract.selection`)."""
    SEEDS = "sparsesweep.seeds"
    """On the experiment, for adaptive seeds only: the spec's `grid.seeds` mapping as a JSON
    object {"initial": int, "max": int, "until_halfwidth": float, "batch": int}
    (`analysis.seed_rule`)."""
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
    RAY_TRIAL_ID = "ray_trial_id"
    GIT_DIRTY = "sparsesweep.git_dirty"
    """On every run whose code had uncommitted changes in tracked files: `true` (the commit
    itself is MLflow's `mlflow.source.git.commit`)."""
    ERROR = "sparsesweep.error"
    """On a failed trial's run: the exception line (its artifact `error.txt` has the last lines)."""
    TRIALS_ENDED = "sparsesweep.trials_ended"
    """On cell runs: how many of the cell's trials have ended."""
    TRIALS_EXPECTED = "sparsesweep.trials_expected"
    """On cell runs: how many trials the spec runs in the cell."""
    OUTBOX = "sparsesweep.outbox"
    """On the experiment: the folder of the sweep's MLflow outbox (records not yet in MLflow)."""
    SPEC_FILE = "sparsesweep.spec_file"
    """On the experiment: where the sweep's stored spec is (`<storage_path>/<name>/
    sweep_spec.yaml`), so a command given the tracking store finds the sweep's storage."""


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
    Tag.RAY_TRIAL_ID: "str",
}
"""Every factor tag of a trial run and how to read its string value."""


CURVE_FACTORS: tuple[str, ...] = ("workload", "dataset", "model", "method", "arm", "sparsity")
"""The factors of a curve run (one arm at one sparsity, all budgets): its tags and identity."""

CELL_METRICS: tuple[str, ...] = ("test_acc1", "val_acc1", "test_loss")
"""Per-epoch metrics whose seed mean a cell run carries (as `seed_mean(metric)`)."""


def seed_mean(metric: str) -> str:
    """The name of the seed mean of `metric` on a cell or curve run, e.g. `test_acc1_mean`."""
    return f"{metric}_mean"


class Aggregate:
    """Metric names of the cell and curve runs' aggregates (docs/conventions.md).

    A curve run's names sort the answer first in MLflow's chart view (charts are ordered by
    name): the mean accuracy, its interval and n, then the paired difference to the baseline.
    """

    TEST_ACC1_MEAN = seed_mean("test_acc1")
    TEST_ACC1_STD = "test_acc1_std"
    TEST_ACC1_CI_LOW = "test_acc1_mean_ci_low"
    TEST_ACC1_CI_HIGH = "test_acc1_mean_ci_high"
    TEST_ACC1_N = "test_acc1_mean_n"
    N_SEEDS = "n_seeds"
    DIFF_MEAN = "vs_baseline_diff"
    DIFF_CI_LOW = "vs_baseline_diff_ci_low"
    DIFF_CI_HIGH = "vs_baseline_diff_ci_high"
    N_PAIRS = "vs_baseline_diff_n"


CELL_AGGREGATES: tuple[str, ...] = (
    *(seed_mean(metric) for metric in CELL_METRICS),
    Aggregate.TEST_ACC1_STD,
    Aggregate.N_SEEDS,
)
"""What a complete cell's run logs per epoch; the first is logged with all the others, so its
history says which epochs were logged."""

CURVE_FAMILIES: tuple[tuple[str, ...], ...] = (
    (
        Aggregate.TEST_ACC1_MEAN,
        Aggregate.TEST_ACC1_CI_LOW,
        Aggregate.TEST_ACC1_CI_HIGH,
        Aggregate.TEST_ACC1_N,
    ),
    (Aggregate.DIFF_MEAN, Aggregate.DIFF_CI_LOW, Aggregate.DIFF_CI_HIGH, Aggregate.N_PAIRS),
)
"""The metric families a curve run logs at `step = budget`, each all at once; the first of a
family says which budgets it was logged at."""
