"""Adaptive seeds replayed on a finished fixed-seed sweep (no training): how many trials the
rule (`analysis.seed_rule`) would have run, and whether the primary verdicts stay the same.

The sweep's export (`sparsesweep export` / `report`, Parquet) holds every lr on every seed. For
each `--initial`, the replay gives every lr trial seeds 0..initial-1 only, picks each cell's lr
on them by the one lr rule (`analysis.lr_choice`, `contract.selection`), then walks every
primary cell pair as the searcher would: paired t-interval of final test_acc1 at the two chosen
lrs, `batch` more seeds while its half-width exceeds `--halfwidth` and seeds < `--max`. A cell
in several pairs (a shared baseline) runs the most seeds any of its pairs asked for. The
adaptive sweep's runs (search seeds at every lr, extra seeds at the chosen lr) then go through
the report's own `analysis.compare` + `analysis.verdict`, as do all the recorded runs (the fixed
seeds), and the verdicts are compared: per primary cell (best-lr and matched-lr views) and
pooled (every scope and view), each read as its interval's side of 0 (above, below, across).

A pair that still asks for seeds past the ones recorded is cut there (`censored`): its trial
count is a lower bound, and the table gives the upper bound (such pairs at `--max`) beside it.

    python benchmarks/adaptive_seeds_replay.py [--export results/digits_rigl/data] \
        [--spec sweeps/configs/results_digits_rigl.yaml] [--initial 3 5] [--max 20] \
        [--halfwidth 1.0] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.compare import BEST_COMMON_LR, BEST_LR, PRIMARY, compare
from analysis.export import read_tables
from analysis.lr_choice import cell_lr_trials
from analysis.seed_rule import SeedRule, seed_decision
from analysis.verdict import primary_verdict
from contract.trial import Stage
from sweeps.spec.load import load_spec
from sweeps.spec.schema import SweepSpec

ROOT = Path(__file__).resolve().parents[1]
CELL = ["workload", "arm", "sparsity", "budget"]


@dataclass(frozen=True)
class Replay:
    """One adaptive rule replayed: the runs it keeps and what it decided per pair."""

    runs: pd.DataFrame
    seeds: dict[tuple, int]
    """Cell (CELL values) -> seeds at its chosen lr."""
    decisions: list[dict[str, object]]
    lr_moved: int
    """Cells whose lr chosen on the initial seeds differs from the one chosen on all seeds."""


def side(low: float, high: float) -> str:
    """Where an interval lies against 0."""
    if pd.isna(low) or pd.isna(high):
        return "none"
    return "above 0" if low > 0 else "below 0" if high < 0 else "across 0"


def chosen_keys(trials: pd.DataFrame, metric: str, initial: int) -> dict[tuple, tuple]:
    """Cell -> the lr trial key the lr rule picks on seeds 0..initial-1."""
    early = trials[trials["seed"] < initial]
    chosen = {}
    for key, cell in early.groupby(CELL, sort=True):
        trial_set = cell_lr_trials(cell, metric)
        chosen[key] = trial_set.rank(metric).best
    return chosen


def replay(trials: pd.DataFrame, spec: SweepSpec, rule: SeedRule, recorded: int) -> Replay:
    """The runs an adaptive sweep would have, by the rule, from the recorded ones."""
    metric = spec.search.metric
    keys = cell_lr_trials(trials, metric).key_of_row  # one key function for all rows
    trials = trials.assign(_key=keys.values)
    chosen = chosen_keys(trials, metric, rule.initial)
    by_cell = {key: cell for key, cell in trials.groupby(CELL, sort=True)}
    seeds = {key: rule.initial for key in by_cell}
    decisions = []
    for arm_cell, base_cell in spec.primary_cell_pairs():
        pair = [(c.workload, c.arm, c.sparsity, c.budget) for c in (arm_cell, base_cell)]
        at_lr = [by_cell[key][by_cell[key]["_key"] == chosen[key]] for key in pair]
        values = [frame.set_index("seed")["final_test_acc1"] for frame in at_lr]
        n = rule.initial
        while True:
            common = [s for s in range(n) if s in values[0].index and s in values[1].index]
            differences = [float(values[0][s] - values[1][s]) for s in common]
            decision = seed_decision(differences, n, rule)
            if decision.add == 0 or n == recorded:
                break
            n = min(n + decision.add, recorded)
        censored = decision.add > 0
        for key in pair:
            seeds[key] = max(seeds[key], n)
        decisions.append(
            {
                "pair": f"{pair[0][0]} {arm_cell.arm} - {base_cell.arm} s={pair[0][2]:g} e={pair[0][3]}",
                "seeds": n,
                "halfwidth": decision.halfwidth,
                "stop": "censored" if censored else decision.reason,
            }
        )
    kept = []
    for key, cell in by_cell.items():
        search = cell[cell["seed"] < rule.initial]
        extra = cell[
            (cell["_key"] == chosen[key])
            & (cell["seed"] >= rule.initial)
            & (cell["seed"] < seeds[key])
        ]
        kept += [search, extra.assign(stage=Stage.EXTRA)]
    runs = pd.concat(kept).drop(columns="_key")
    on_all = chosen_keys(trials, metric, recorded)
    moved = sum(chosen[key] != on_all[key] for key in chosen)
    return Replay(runs, seeds, decisions, moved)


def verdict_sides(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> dict[tuple, str]:
    """(kind, contrast/cell, view) -> the side of 0 of every primary interval of the report."""
    comparison = compare(trials, epochs[epochs["run_id"].isin(trials["run_id"])], metric=metric)
    found = {}
    paired = comparison.paired
    cells = paired[
        (paired["family"] == PRIMARY)
        & (paired["measure"] == "final")
        & paired["view"].isin([BEST_LR, BEST_COMMON_LR])
    ]
    for row in cells.to_dict("records"):
        key = (
            "cell",
            row["workload"],
            row["arm"],
            row["reference"],
            row["sparsity"],
            row["budget"],
        )
        found[(*key, row["view"])] = side(row["ci_low"], row["ci_high"])
    for row in primary_verdict(comparison).primary.to_dict("records"):
        found[("pooled", row["contrast"], row["scope"], row["view"])] = side(
            row["ci_low"], row["ci_high"]
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", default=str(ROOT / "results/digits_rigl/data"))
    parser.add_argument("--spec", default=str(ROOT / "sweeps/configs/results_digits_rigl.yaml"))
    parser.add_argument("--initial", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--max", type=int, default=20)
    parser.add_argument("--halfwidth", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()

    tables = read_tables(args.export)
    trials = tables.trials.to_pandas()
    epochs = tables.epochs.to_pandas()
    fixed_spec = load_spec(args.spec)
    metric = fixed_spec.search.metric
    recorded = len(fixed_spec.grid.search_seeds())
    lrs = fixed_spec.search.n_trials
    fixed = verdict_sides(trials, epochs, metric)
    print(f"fixed {recorded} seeds: {len(trials)} trials, {len(fixed)} primary intervals")
    results = []
    for initial in args.initial:
        seeds = {"initial": initial, "max": args.max, "until_halfwidth": args.halfwidth}
        spec = load_spec(args.spec, [f"grid.seeds={json.dumps({**seeds, 'batch': args.batch})}"])
        rule = SeedRule(initial, args.max, args.halfwidth, args.batch)
        done = replay(trials, spec, rule, recorded)
        censored = [d for d in done.decisions if d["stop"] == "censored"]
        grown = {c.cell_id for pair in spec.primary_cell_pairs() for c in pair}
        upper = (
            len(done.runs)
            + sum(
                args.max - d["seeds"]
                for d in censored  # type: ignore[operator]
            )
            * 2
        )
        adaptive = verdict_sides(done.runs, epochs, metric)
        same = sum(adaptive.get(key) == value for key, value in fixed.items())
        changed = [
            (key, fixed[key], adaptive.get(key)) for key in fixed if adaptive.get(key) != fixed[key]
        ]
        stops = pd.Series([d["stop"] for d in done.decisions]).value_counts().to_dict()
        result = {
            "initial": initial,
            "trials": len(done.runs),
            "trials_upper": upper,
            "fixed_trials": len(trials),
            "fewest": len(done.seeds) * lrs * initial,
            "most": len(done.seeds) * lrs * initial + len(grown) * (args.max - initial),
            "pairs": len(done.decisions),
            "stops": stops,
            "seeds_per_pair": pd.Series([d["seeds"] for d in done.decisions])
            .value_counts()
            .sort_index()
            .to_dict(),
            "cells": len(done.seeds),
            "lr_moved": done.lr_moved,
            "intervals_same": same,
            "intervals": len(fixed),
            "changed": [" / ".join(map(str, key)) + f": {a} -> {b}" for key, a, b in changed],
        }
        results.append(result)
        print(
            f"initial {initial}, max {args.max}, until ±{args.halfwidth:g}, batch {args.batch}: "
            f"{result['trials']} trials (<= {upper} if censored pairs ran to max; plan "
            f"{result['fewest']}-{result['most']}) vs {len(trials)} fixed; pairs {stops}; "
            f"seeds per pair {result['seeds_per_pair']}; cells whose chosen lr differs from the "
            f"all-seed choice: {done.lr_moved}/{len(done.seeds)}; primary intervals on the same "
            f"side of 0: {same}/{len(fixed)}"
        )
        for line in result["changed"]:
            print(f"  changed: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
