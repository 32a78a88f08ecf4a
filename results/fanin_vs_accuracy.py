"""RESULTS.md §2b: dead channels and fan-in spread of each trial's final masks, by cell.

Joins `sparsesweep fanin --runs <sweep>/train_runs` (JSON lines, one per trial) with the
sweep's Parquet export (`sparsesweep report`'s data/trials) on the config hash, keeps the
final-stage runs and prints, per sparsity x budget x arm, the share of hidden-conv channels
left with no incoming weight, the mean coefficient of variation of their fan-in, and the
mean final test accuracy.

    python results/fanin_vs_accuracy.py FANIN_JSONL TRIALS_PARQUET_DIR [--layers 3,6]
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pyarrow.dataset as ds


def fanin_frame(path: str, layers: set[str]) -> pd.DataFrame:
    """Per trial: % of the chosen layers' output channels with k_i = 0, and their mean cv of k."""
    rows = []
    with open(path) as lines:
        for line in lines:
            record = json.loads(line)
            chosen = [layer for layer in record["layers"] if layer["layer"] in layers]
            rows.append(
                {
                    "config_hash": record["config_hash"],
                    "dead_channels_pct": 100.0
                    * sum(layer["empty_rows"] for layer in chosen)
                    / sum(layer["rows"] for layer in chosen),
                    "cv_k": sum(layer["cv_k"] for layer in chosen) / len(chosen),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fanin_jsonl")
    parser.add_argument("trials_dir")
    parser.add_argument("--layers", default="3,6", help="layer names (small_cnn hidden convs)")
    args = parser.parse_args()
    trials = ds.dataset(args.trials_dir, format="parquet").to_table().to_pandas()
    joined = fanin_frame(args.fanin_jsonl, set(args.layers.split(","))).merge(
        trials[["config_hash", "arm", "sparsity", "budget", "stage", "final_test_acc1"]],
        on="config_hash",
    )
    final = joined[joined["stage"] == "final"]
    table = final.groupby(["sparsity", "budget", "arm"]).agg(
        runs=("config_hash", "count"),
        dead_channels_pct=("dead_channels_pct", "mean"),
        cv_k=("cv_k", "mean"),
        test_acc1=("final_test_acc1", "mean"),
    )
    print("| sparsity | budget | arm | runs | dead channels % | cv of k | test acc % |")
    print("|---|---|---|---|---|---|---|")
    for (sparsity, budget, arm), row in table.iterrows():
        print(
            f"| {sparsity:g} | {budget} | {arm} | {int(row['runs'])} | {row['dead_channels_pct']:.1f} "
            f"| {row['cv_k']:.2f} | {row['test_acc1']:.2f} |"
        )


if __name__ == "__main__":
    main()
