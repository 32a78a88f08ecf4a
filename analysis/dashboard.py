"""The aggregates the sweep's tracker writes to MLflow, by the report's own rules.

Cell runs carry, per epoch, the seed means of the compared runs of their cell (the runs the
report compares: `analysis.compare.compared_runs`, i.e. the final stage or the lr chosen by
`contract.selection`); curve runs carry, per epoch budget, the final test accuracy of each
arm with the report's primary interval (Student's t, within [0, 100]) and, for a SparseOpt
arm, its paired difference to its baseline at the same sparsity and budget (the report's
`best lr` view). The numbers equal the report's for the same runs
(tests/test_dashboard_aggregates.py).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from analysis.compare import ACCURACY, CELL, GROUP, comparable, compared_runs
from contract.arms import baseline_arm, is_sparseopt_arm
from contract.names import CELL_AGGREGATES, CELL_METRICS, Aggregate, seed_mean


def cell_curves(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per cell and epoch: the seed means of `CELL_METRICS` over the cell's compared runs, the
    std of test_acc1, the number of seeds (`CELL_AGGREGATES`) and the cell's lr."""
    selection, _, runs = compared_runs(comparable(trials), metric)
    columns = [*CELL, "epoch", *CELL_AGGREGATES]
    present = [name for name in CELL_METRICS if name in epochs]
    points = epochs[["run_id", "epoch", *present]].merge(runs[["run_id", *CELL]], on="run_id")
    if points.empty:
        return pd.DataFrame(columns=[*columns, "lr"])
    grouped = points.groupby([*CELL, "epoch"])
    frame = grouped[present].mean().rename(columns=seed_mean)
    frame[Aggregate.TEST_ACC1_STD] = grouped[ACCURACY].std() if ACCURACY in present else math.nan
    frame[Aggregate.N_SEEDS] = grouped.size()
    frame = frame.reset_index().reindex(columns=columns)
    return frame.merge(selection[[*CELL, "lr"]], on=list(CELL), how="left")


def budget_points(
    trials: pd.DataFrame, metric: str, confidence: float = stats.CONFIDENCE
) -> pd.DataFrame:
    """Per (curve, budget): mean final test_acc1 over seeds with its t-interval and, for a
    SparseOpt arm whose baseline ran the same budget, the paired difference to it."""
    _, _, runs = compared_runs(comparable(trials), metric)
    column = f"final_{ACCURACY}"
    cells = {key: part for key, part in runs.groupby(list(CELL))}
    rows = []
    for key, part in cells.items():
        cell = dict(zip(CELL, key, strict=True))
        values = part[column].dropna().to_numpy(dtype=float)
        interval = stats.accuracy_t_interval(values, confidence)
        row = {
            **cell,
            Aggregate.TEST_ACC1_N: int(values.size),
            Aggregate.TEST_ACC1_MEAN: float(values.mean()) if values.size else math.nan,
            Aggregate.TEST_ACC1_CI_LOW: interval.low,
            Aggregate.TEST_ACC1_CI_HIGH: interval.high,
        }
        reference = cells.get(
            (*(cell[name] for name in GROUP), baseline_arm(cell["arm"]), cell["budget"])
        )
        if is_sparseopt_arm(cell["arm"]) and reference is not None:
            pairs = (
                part[["seed", column]]
                .merge(reference[["seed", column]], on="seed", suffixes=("_arm", "_ref"))
                .dropna()
            )
            arm, base = pairs[f"{column}_arm"].to_numpy(), pairs[f"{column}_ref"].to_numpy()
            paired = stats.paired_t_interval(arm, base, confidence)
            row |= {
                Aggregate.DIFF_MEAN: float((arm - base).mean()) if arm.size else math.nan,
                Aggregate.DIFF_CI_LOW: paired.low,
                Aggregate.DIFF_CI_HIGH: paired.high,
                Aggregate.N_PAIRS: int(arm.size),
            }
        rows.append(row)
    return pd.DataFrame(rows)
