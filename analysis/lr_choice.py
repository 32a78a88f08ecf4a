"""The one lr-ranking rule (`contract.selection.rank_lr_trials`) applied to exported runs.

A cell's runs are grouped into lr trials (`lr_trial` tag, else the `lr` tag); each lr trial's
seeds are its latest run per seed, with the run's status and the final value of the search
metric. A cell expects of each lr trial the seeds the spec gives it (`declared`: the
experiment tag `sparsesweep.search_seeds`, as `sparsesweep status` takes them from the spec),
or, for a sweep recorded without the tag, the distinct seeds its runs of that stage ran; an lr
trial that has not ended them all is not ranked yet. Its lr grid, which breaks ties, is the lrs
the cell ran.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import pandas as pd

from analysis.schema import metric_column
from contract.selection import LrRanking, LrTrial, rank_lr_trials, seed_score
from contract.trial import Stage

NOT_RANKED_STAGES: tuple[str, ...] = (Stage.FINAL, Stage.EXTRA)
"""Stages whose runs the lr rule does not rank on: second-stage seeds and the seeds the
adaptive-seeds rule added at a chosen lr."""


@dataclass(frozen=True)
class SeedRun:
    """One seed of an lr trial: its latest run (row label in the frame it came from)."""

    seed: Hashable
    status: str
    value: float | None
    row: Hashable


@dataclass(frozen=True)
class CellLrTrials:
    """A cell's lr trials as the ranking rule sees them."""

    key_of_row: pd.Series
    """The lr trial key of every run of the cell (see `lr_trial_keys`)."""
    lrs: dict[Hashable, float]
    seeds: dict[Hashable, list[SeedRun]]
    expected: int
    grid: tuple[float, ...]

    def rank(self, metric: str, without_seed: Hashable | None = None) -> LrRanking:
        """The ranking of the lr trials (leaving out one seed: chosen on the others)."""
        expected = self.expected - (without_seed is not None)
        trials = [
            LrTrial(
                key,
                self.lrs[key],
                [(s.status, s.value) for s in seeds if s.seed != without_seed or s.seed is None],
            )
            for key, seeds in self.seeds.items()
            if key in self.lrs
        ]
        return rank_lr_trials(trials, metric, max(expected, 1), self.grid or None)

    def counted(self, key: Hashable, metric: str) -> int:
        """How many seeds of an lr trial its score averaged (`contract.selection.seed_score`)."""
        return sum(seed_score(s.status, s.value, metric) is not None for s in self.seeds[key])


def ranked_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the lr rule ranks on (the search seeds; a run without a stage counts)."""
    return runs[~runs["stage"].isin(NOT_RANKED_STAGES)]


def lr_trial_keys(frame: pd.DataFrame) -> pd.Series:
    """The lr trial each run belongs to: (0, lr_trial), else (1, lr), else (2, 0)."""
    keys = []
    for lr_trial, lr in zip(frame["lr_trial"], frame["lr"], strict=True):
        if pd.notna(lr_trial):
            keys.append((0, float(lr_trial)))
        elif pd.notna(lr):
            keys.append((1, float(lr)))
        else:
            keys.append((2, 0.0))
    return pd.Series(keys, index=frame.index, dtype=object)


def latest_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """The latest started run of every seed (runs without a seed kept as they are)."""
    ordered = runs.sort_values("start_time", kind="stable")
    seeded = ordered[ordered["seed"].notna()].drop_duplicates("seed", keep="last")
    return pd.concat([seeded, ordered[ordered["seed"].isna()]])


def expected_seeds(runs: pd.DataFrame, declared: int | None = None) -> int:
    """Seeds each lr trial of these runs should have: `declared` (the spec's, module
    docstring) when known, else the distinct seeds they ran (without seed tags: the most runs
    any lr trial has)."""
    if declared is not None:
        return declared
    seeds = runs["seed"].dropna().nunique()
    if seeds:
        return int(seeds)
    counts = lr_trial_keys(runs).value_counts()
    return int(counts.max()) if not counts.empty else 0


def cell_lr_trials(
    runs: pd.DataFrame, metric: str, grid: Iterable[float] = (), declared: int | None = None
) -> CellLrTrials:
    """The lr trials of one cell's runs of one stage (module docstring); `grid`: the lrs the
    whole cell ran (default: these runs' lrs); `declared`: the seeds the spec gives each lr
    trial (None: unknown)."""
    column = f"final_{metric_column(metric)}"
    runs = runs[
        [c for c in ("seed", "status", "lr", "lr_trial", "start_time", column) if c in runs]
    ]
    keys = lr_trial_keys(runs)
    lrs, seeds = {}, {}
    for key in sorted(set(keys)):
        part = runs[keys == key]
        lr = part["lr"].dropna().unique()
        if len(lr) == 1 and lr[0] > 0:
            lrs[key] = float(lr[0])
        seeds[key] = [
            SeedRun(
                seed=None if pd.isna(row["seed"]) else int(row["seed"]),
                status=str(row["status"]),
                value=_value(row.get(column)),
                row=label,
            )
            for label, row in latest_per_seed(part).iterrows()
        ]
    grid = tuple(sorted(set(grid) or {float(lr) for lr in runs["lr"].dropna()}))
    return CellLrTrials(keys, lrs, seeds, expected_seeds(runs, declared), grid)


def _value(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)  # type: ignore[arg-type]
