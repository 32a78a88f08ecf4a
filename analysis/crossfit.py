"""Cross-fitted lr choice: each seed's run at the lr chosen on the cell's other seeds.

The in-sample best-lr view picks a cell's lr on the mean of the very seeds whose test
accuracy it then reports. A seed's validation and test accuracy move together, so the lr
chosen is partly the one that got lucky on those seeds (the winner's curse) and its test
mean is optimistic. Cross-fitting removes that: for each seed s, the lr-ranking rule
(`contract.selection`) ranks the cell's lr trials on the other seeds, and seed s's run at
the lr ranked first is its value. The difference of the in-sample and the cross-fitted mean
over the same seeds is the optimism of the in-sample choice.

Only cells whose lr was chosen by ranking their own seeds are cross-fitted; a final-stage or
single-lr cell keeps its compared runs (its lr was not chosen on those seeds).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import pandas as pd

from analysis.lr_choice import cell_lr_trials, ranked_runs

OPTIMISM_COLUMNS: tuple[str, ...] = (
    "n",
    "in_sample_mean",
    "cross_fitted_mean",
    "optimism",
    "cross_fitted_lrs",
)


def cross_fitted_runs(
    candidates: pd.DataFrame,
    runs: pd.DataFrame,
    searched: set[tuple],
    cell: Sequence[str],
    metric: str,
) -> pd.DataFrame:
    """Per cell and seed, the finished run the cross-fitted choice compares (module
    docstring): for the `searched` cells (keys of the `cell` columns) chosen on the other
    seeds, for every other cell its compared run (`runs`)."""
    kept = pd.Series([key not in searched for key in _keys(runs, cell)], index=runs.index)
    picked = [runs[kept.astype(bool)]]
    for key, part in candidates.groupby(list(cell), sort=True):
        if key not in searched:
            continue
        search = ranked_runs(part)
        trials = cell_lr_trials(search, metric)
        seeds = sorted(
            {s.seed for found in trials.seeds.values() for s in found if s.seed is not None}
        )
        rows = []
        for seed in seeds:
            best = trials.rank(metric, without_seed=seed).best
            run = next((s for s in trials.seeds.get(best, []) if s.seed == seed), None)
            if run is not None and run.status == "finished":
                rows.append(run.row)
        picked.append(search.loc[rows])
    fitted = pd.concat(picked)
    return fitted.sort_values([*cell, "seed"], kind="stable").reset_index(drop=True)


def optimism(
    runs: pd.DataFrame,
    fitted: pd.DataFrame,
    searched: set[tuple],
    cell: Sequence[str],
    column: str,
) -> pd.DataFrame:
    """Per searched cell: over the seeds both have, the in-sample mean of `column`, the
    cross-fitted mean, their difference (the optimism) and the lrs the seeds were chosen at."""
    in_sample = dict(iter(runs.groupby(list(cell))))
    rows = []
    for key, part in fitted.groupby(list(cell), sort=True):
        if key not in searched or key not in in_sample:
            continue
        both = in_sample[key][["seed", column]].merge(
            part[["seed", column, "lr"]], on="seed", suffixes=("_in", "_cf")
        )
        both = both.dropna(subset=[f"{column}_in", f"{column}_cf"])
        inside = _mean(both[f"{column}_in"])
        fitted_mean = _mean(both[f"{column}_cf"])
        rows.append(
            {
                **dict(zip(cell, key, strict=True)),
                "n": len(both),
                "in_sample_mean": inside,
                "cross_fitted_mean": fitted_mean,
                "optimism": inside - fitted_mean,
                "cross_fitted_lrs": ",".join(f"{lr:g}" for lr in sorted(both["lr"].unique())),
            }
        )
    return pd.DataFrame(rows, columns=[*cell, *OPTIMISM_COLUMNS])


def _keys(frame: pd.DataFrame, cell: Sequence[str]) -> list[Hashable]:
    return list(frame[list(cell)].itertuples(index=False, name=None))


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan
