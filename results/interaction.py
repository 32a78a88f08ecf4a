"""RESULTS.md v3, the causal reading of the rownorm intervention: does SparseOpt's effect on
RigL change when the drop ranking is row-normalized?

Reads a report's per-seed pairs (`tables/paired_seeds.csv`, final test_acc1) and, per view
(matched lr = the report's `best common lr`, best lr, best lr cross-fitted) and scope (all
cells, each workload, each budget), prints:

  effect       ARM − REF per seed (default rigl+sparseopt+rownorm − rigl+rownorm: SparseOpt's
               effect under the row-normalized ranking)
  reference    ARM − REF of the reference effect (default rigl+sparseopt − rigl: SparseOpt's
               effect under the magnitude ranking)
  interaction  effect − reference per seed,

each seed's value averaged over the scope's cells (only seeds paired in every cell of both
effects count), then the 95 % Student t-interval over those seeds (`analysis.stats`), as the
report's pooled estimate does. The spec (sweeps/configs/results_digits_rownorm.yaml) declared
the reading before the run: the failure disappears with rownorm if the interaction's interval
is above 0 and the effect's contains 0; it is attenuated if the interaction's is above 0 and
the effect's below 0; the magnitude ranking is not its cause if the interaction's contains 0.

    python results/interaction.py results/digits_rownorm [--effect A:B] [--reference C:D]
"""

from __future__ import annotations

import argparse

import pandas as pd

from analysis import stats

VIEWS = ("best common lr", "best lr", "best lr, cross-fitted")
CELL = ["workload", "sparsity", "budget"]


def per_seed(pairs: pd.DataFrame, contrast: str, view: str) -> pd.DataFrame:
    """(cell..., seed) -> arm − reference of one `ARM:REF` contrast in one view."""
    arm, reference = contrast.split(":")
    part = pairs[
        (pairs["arm"] == arm)
        & (pairs["reference"] == reference)
        & (pairs["view"] == view)
        & (pairs["measure"] == "final")
    ]
    diff = part["arm_value"] - part["reference_value"]
    return part[[*CELL, "seed"]].assign(diff=diff.to_numpy()).set_index([*CELL, "seed"])["diff"]


def pooled(values: pd.Series) -> str:
    """Per-seed mean over cells (seeds complete in every cell), then the t-interval over seeds."""
    cells = values.index.droplevel("seed").unique()
    counts = values.groupby(level="seed").count()
    complete = counts[counts == len(cells)].index
    seeds = (
        values[values.index.get_level_values("seed").isin(complete)].groupby(level="seed").mean()
    )
    interval = stats.t_interval(seeds.to_numpy())
    return (
        f"{seeds.mean():+.2f} [{interval.low:+.2f}, {interval.high:+.2f}] "
        f"(n = {interval.n}, {len(cells)} cells)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir")
    parser.add_argument("--effect", default="rigl+sparseopt+rownorm:rigl+rownorm")
    parser.add_argument("--reference", default="rigl+sparseopt:rigl")
    args = parser.parse_args()
    pairs = pd.read_csv(f"{args.report_dir}/tables/paired_seeds.csv")
    print(
        f"effect = {args.effect.replace(':', ' − ')}; reference = "
        f"{args.reference.replace(':', ' − ')}; interaction = effect − reference. Points of "
        "final test accuracy, per-seed means over the scope's cells, 95% t-interval over seeds."
    )
    print()
    print("| view | scope | effect | reference | interaction |")
    print("|---|---|---|---|---|")
    for view in VIEWS:
        effect = per_seed(pairs, args.effect, view)
        reference = per_seed(pairs, args.reference, view)
        both = pd.concat({"effect": effect, "reference": reference}, axis=1).dropna()
        both["interaction"] = both["effect"] - both["reference"]
        scopes = [("all", both)]
        for factor in ("workload", "budget"):
            for value, part in both.groupby(level=factor):
                scopes.append((f"{factor}={value}", part))
        for scope, part in scopes:
            cells = [pooled(part[column]) for column in ("effect", "reference", "interaction")]
            print(f"| {view} | {scope} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
