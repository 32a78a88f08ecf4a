"""RESULTS.md mechanism: row weight magnitudes and BatchNorm scale against fan-in, over training.

Joins `sparsesweep fanin --runs <sweep>/train_runs` (one JSON line per trial: each layer's
fan-in spread and, per stored checkpoint, the mean |w| and row L2 norm of its low- and
high-fan-in thirds of rows, and the |gamma| / running std of the BatchNorm that follows) with
the sweep's Parquet export (`sparsesweep report`'s data/trials) on the config hash, and
prints, per update interval (workload) x lr x arm, the seed means of the chosen layer at the
chosen epochs (a third of rows with no weight left has no mean |w|: NaN, left out of the mean): high / low fan-in mean |w|, high / low BN scale (|gamma| / std), the share of
rows with no weight left, and the final test accuracy.

    python results/mechanism.py FANIN_JSONL TRIALS_PARQUET_DIR [--layer 6] [--epochs 1,4,8,16]
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd
import pyarrow.dataset as ds


def history_frame(path: str, layer: str) -> pd.DataFrame:
    """One row per trial x checkpoint epoch of `layer`'s row-weight and BN-scale history."""
    rows = []
    with open(path) as lines:
        for line in lines:
            record = json.loads(line)
            (found,) = [item for item in record["layers"] if item["layer"] == layer]
            dead = 100.0 * found["empty_rows"] / found["rows"]
            for point in found["history"]:
                point = {key: math.nan if value is None else value for key, value in point.items()}
                rows.append(
                    {
                        "config_hash": record["config_hash"],
                        "epoch": point["epoch"],
                        "w_ratio": point["w_abs_high"] / point["w_abs_low"],
                        "w_abs_high": point["w_abs_high"],
                        "w_abs_low": point["w_abs_low"],
                        "bn_ratio": point["bn_scale_high"] / point["bn_scale_low"],
                        "dead_rows_pct": dead,
                    }
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fanin_jsonl")
    parser.add_argument("trials_dir")
    parser.add_argument("--layer", default="6", help="layer name (small_cnn's last hidden conv)")
    parser.add_argument("--epochs", default="1,4,8,16", help="checkpoint epochs to show")
    args = parser.parse_args()
    epochs = [int(epoch) for epoch in args.epochs.split(",")]
    trials = ds.dataset(args.trials_dir, format="parquet").to_table().to_pandas()
    keys = ["workload", "lr", "arm"]
    joined = history_frame(args.fanin_jsonl, args.layer).merge(
        trials[["config_hash", *keys, "final_test_acc1"]], on="config_hash"
    )
    shown = joined[joined["epoch"].isin(epochs)]
    means = shown.groupby([*keys, "epoch"]).mean(numeric_only=True).reset_index()
    seeds = shown.groupby([*keys, "epoch"])["config_hash"].nunique().rename("seeds").reset_index()
    means = means.merge(seeds, on=[*keys, "epoch"])
    print(
        f"Layer {args.layer}: mean |w| of its highest- over its lowest-fan-in third of rows "
        "(w high/low), the same ratio of the following BatchNorm's |gamma|/std (BN high/low), "
        "and the mean |w| of each third; seed means."
    )
    print()
    print(
        "| ΔT workload | lr | arm | epoch | seeds | w high/low | mean abs w high | "
        "mean abs w low | BN high/low | empty rows % | final test acc % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in means.sort_values([*keys, "epoch"]).itertuples(index=False):
        print(
            f"| {row.workload} | {row.lr:g} | {row.arm} | {row.epoch} | {row.seeds} "
            f"| {row.w_ratio:.2f} | {row.w_abs_high:.3f} | {row.w_abs_low:.3f} "
            f"| {row.bn_ratio:.2f} | {row.dead_rows_pct:.1f} | {row.final_test_acc1:.2f} |"
        )


if __name__ == "__main__":
    main()
