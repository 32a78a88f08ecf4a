"""RESULTS.md lr guards: for each `lr_at_edge` cell of a report, the seed means per lr of the
selection score (final val_acc1) and of final test_acc1, and the chosen lr's lead over its
neighbour in the grid.

    python results/lr_edges.py results/digits_rigl
"""

from __future__ import annotations

import argparse
import csv

import pyarrow.dataset as ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", help="a `sparsesweep report -o` folder")
    root = parser.parse_args().report_dir
    trials = ds.dataset(f"{root}/data/trials", format="parquet").to_table().to_pandas()
    trials = trials[trials.status == "finished"]
    means = (
        trials.groupby(["workload", "arm", "sparsity", "budget", "lr"])
        .agg(val=("final_val_acc1", "mean"), test=("final_test_acc1", "mean"))
        .reset_index()
    )
    with open(f"{root}/tables/guards.csv") as handle:
        guards = [row for row in csv.DictReader(handle) if row["guard"] == "lr_at_edge"]
    for guard in guards:
        scope = guard["scope"].split(" · ")
        arm, sparsity, budget = scope[-1].split(" ")
        cell = means[
            (means.workload == scope[0])
            & (means.arm == arm)
            & (means.sparsity == float(sparsity[2:]))
            & (means.budget == int(budget[2:]))
        ].sort_values("lr")
        vals, lrs = cell.val.tolist(), cell.lr.tolist()
        best = max(range(len(vals)), key=vals.__getitem__)
        neighbour = best - 1 if best == len(vals) - 1 else best + 1
        per_lr = " ".join(
            f"{lr:g}:{val:.2f}/{test:.2f}"
            for lr, val, test in zip(lrs, vals, cell.test, strict=True)
        )
        print(
            f"{scope[0]} {arm} {sparsity} {budget}  lr:val/test {per_lr}  "
            f"lead over lr {lrs[neighbour]:g}: {vals[best] - vals[neighbour]:.2f}"
        )


if __name__ == "__main__":
    main()
