"""RESULTS.md v3: the per-update row picture, rows fixed at initialisation.

Reads `sparsesweep fanin --runs <sweep>/train_runs` (one JSON line per trial; each layer's
"row_trace": at every mask update, each row's weight L2 norm and active count right before the
drop and right after the grow, rows by index; plain or gzipped) and the sweep's Parquet export (`data/trials`),
joined on the config hash. Rows are grouped ONCE, by their active fan-in at initialisation (the
count before the first update: the mask is unchanged until then), into thirds of the layer
(ties by row index), and followed under that identity through every update: never re-ranked.

Per trial, layer and third of rows, over the updates u = 1..U (at step t_u = u * delta_t):
  k0            mean initial fan-in
  norm first / last   mean row norm right before the first / last update's drop
  cut           mean over updates of norm_after / norm_before (what each update's drop removed
                from the row's norm; rows with a zero norm before are left out)
  growth/step   exp(mean over updates and rows of log(norm_before[u+1] / norm_after[u]) /
                delta_t): the row norm's growth per optimizer step between two rankings
  interval growth  the same per interval (growth/step ** delta_t)
  net k         mean over rows of active_after[U] - active_before[1]: fan-in gained or lost
  empty %       rows with no active weight after the last update
Printed as seed means per workload x lr x arm, with the final test accuracy; `--plot` also draws
each third's mean row norm before and after every update against the epoch (the saw-tooth of
growth between updates and cuts at updates), one panel per arm x workload, for one lr.

    python results/row_trace.py FANIN_JSONL TRIALS_DIR [--layer 6 ... | --all-layers]
        [--plot out.png --lr 0.1] [--series out.csv.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

THIRDS = ("low", "mid", "high")
KEYS = ["workload", "lr", "arm"]


def initial_thirds(active_before_first: list[int]) -> dict[str, np.ndarray]:
    """Row indices of the low / mid / high third of rows by initial fan-in (ties by index)."""
    order = np.lexsort((np.arange(len(active_before_first)), np.asarray(active_before_first)))
    return dict(zip(THIRDS, np.array_split(order, 3), strict=True))


def third_summary(trace: list[dict[str, Any]], rows: np.ndarray, delta_t: int) -> dict[str, float]:
    """The module docstring's per-third numbers of one layer's row trace."""
    before = np.array([entry["norm_before"] for entry in trace])[:, rows]
    after = np.array([entry["norm_after"] for entry in trace])[:, rows]
    active_before = np.array([entry["active_before"] for entry in trace])[:, rows]
    active_after = np.array([entry["active_after"] for entry in trace])[:, rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = np.where(before > 0, after / before, np.nan)
        log_growth = np.where(
            (after[:-1] > 0) & (before[1:] > 0), np.log(before[1:] / after[:-1]), np.nan
        )
    per_step = (
        float(np.nanmean(log_growth)) / delta_t if np.isfinite(log_growth).any() else math.nan
    )
    return {
        "k0": float(active_before[0].mean()),
        "norm_first": float(before[0].mean()),
        "norm_last": float(before[-1].mean()),
        "cut": float(np.nanmean(cut)) if np.isfinite(cut).any() else math.nan,
        "growth_per_step": math.exp(per_step) if math.isfinite(per_step) else math.nan,
        "interval_growth": math.exp(per_step * delta_t) if math.isfinite(per_step) else math.nan,
        "net_k": float((active_after[-1] - active_before[0]).mean()),
        "empty_pct": 100.0 * float((active_after[-1] == 0).mean()),
    }


def third_series(trace: list[dict[str, Any]], rows: np.ndarray) -> pd.DataFrame:
    """Per update of one layer: the third's mean row norm before and after, mean active count."""
    return pd.DataFrame(
        {
            "step": [entry["step"] for entry in trace],
            "norm_before": [
                float(np.mean(np.array(entry["norm_before"])[rows])) for entry in trace
            ],
            "norm_after": [float(np.mean(np.array(entry["norm_after"])[rows])) for entry in trace],
            "active_after": [
                float(np.mean(np.array(entry["active_after"])[rows])) for entry in trace
            ],
        }
    )


def traced_layers(
    path: str, layers: list[str] | None
) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(config hash, layer, row trace) of every trial line in `path` and every chosen layer
    (None: every layer with a trace)."""
    with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as lines:
        for line in lines:
            record = json.loads(line)
            for item in record["layers"]:
                if (layers is None or item["layer"] in layers) and item.get("row_trace"):
                    yield record["config_hash"], item["layer"], item["row_trace"]


def summaries(path: str, layers: list[str] | None, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial x layer x third (module docstring), with the trial's factors."""
    by_hash = trials.set_index("config_hash")
    rows, unfinished = [], set()
    for config_hash, layer, trace in traced_layers(path, layers):
        if config_hash not in by_hash.index:
            unfinished.add(config_hash)
            continue
        trial = by_hash.loc[config_hash]
        delta_t = int(trial["delta_t"])
        for third, members in initial_thirds(trace[0]["active_before"]).items():
            rows.append(
                {
                    "config_hash": config_hash,
                    "layer": layer,
                    "third": third,
                    "updates": len(trace),
                    **{key: trial[key] for key in [*KEYS, "seed", "delta_t"]},
                    "final_test_acc1": trial["final_test_acc1"],
                    **third_summary(trace, members, delta_t),
                }
            )
    if unfinished:
        print(f"left out {len(unfinished)} trials not finished in the export", file=sys.stderr)
    return pd.DataFrame(rows)


def series(path: str, layers: list[str] | None, trials: pd.DataFrame) -> pd.DataFrame:
    """Per trial x layer x third x update: the third's mean row norm before and after the
    update and its mean active count after it, with the trial's factors (a compact copy of the
    trace, e.g. to keep beside a report instead of the checkpoints)."""
    by_hash = trials.set_index("config_hash")
    parts = []
    for config_hash, layer, trace in traced_layers(path, layers):
        if config_hash not in by_hash.index:
            continue
        trial = by_hash.loc[config_hash]
        for third, members in initial_thirds(trace[0]["active_before"]).items():
            part = third_series(trace, members)
            factors = {key: trial[key] for key in [*KEYS, "seed", "delta_t", "steps_per_epoch"]}
            parts.append(part.assign(config_hash=config_hash, layer=layer, third=third, **factors))
    return pd.concat(parts, ignore_index=True)


def print_table(frame: pd.DataFrame) -> None:
    """Seed means per layer x workload x lr x arm x third, as a Markdown table."""
    groups = ["layer", *KEYS, "third"]
    numbers = [
        "updates",
        "k0",
        "norm_first",
        "norm_last",
        "cut",
        "interval_growth",
        "growth_per_step",
        "net_k",
        "empty_pct",
        "final_test_acc1",
    ]
    means = frame.groupby(groups, sort=False)[numbers].mean()
    seeds = frame.groupby(groups, sort=False)["seed"].nunique()
    print(
        "| layer | ΔT workload | lr | arm | third (initial k) | seeds | updates | k0 | norm first "
        "| norm last | cut per update | growth per interval | growth per step | net k | "
        "empty % | test acc % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = {third: index for index, third in enumerate(THIRDS)}
    keys = sorted(means.index, key=lambda key: (*key[:-1], order[key[-1]]))
    for key in keys:
        row = means.loc[key]
        layer, workload, lr, arm, third = key
        print(
            f"| {layer} | {workload} | {lr:g} | {arm} | {third} | {seeds.loc[key]} "
            f"| {row.updates:.0f} | {row.k0:.2f} | {row.norm_first:.3g} | {row.norm_last:.3g} "
            f"| {row.cut:.3f} | {row.interval_growth:.3f} | {row.growth_per_step:.4f} "
            f"| {row.net_k:+.2f} | {row.empty_pct:.1f} | {row.final_test_acc1:.2f} |"
        )


def plot(path: str, layer: str, trials: pd.DataFrame, lr: float, out: str) -> None:
    """Each third's seed-mean row norm before/after every update vs epoch, arm x workload panels."""
    from matplotlib.figure import Figure

    chosen = trials[np.isclose(trials["lr"], lr)].set_index("config_hash")
    series = []
    for config_hash, _, trace in traced_layers(path, [layer]):
        if config_hash not in chosen.index:
            continue
        trial = chosen.loc[config_hash]
        for third, members in initial_thirds(trace[0]["active_before"]).items():
            part = third_series(trace, members)
            part["epoch"] = part["step"] / float(trial["steps_per_epoch"])
            series.append(part.assign(third=third, arm=trial["arm"], workload=trial["workload"]))
    frame = pd.concat(series)
    arms = sorted(frame["arm"].unique(), key=len)
    workloads = sorted(frame["workload"].unique())
    figure = Figure(figsize=(4.2 * len(workloads), 2.8 * len(arms)), layout="constrained")
    axes = figure.subplots(len(arms), len(workloads), sharex=True, sharey=True, squeeze=False)
    colours = dict(zip(THIRDS, ("tab:blue", "tab:grey", "tab:red"), strict=True))
    for i, arm in enumerate(arms):
        for j, workload in enumerate(workloads):
            axis = axes[i][j]
            part = frame[(frame["arm"] == arm) & (frame["workload"] == workload)]
            for third in THIRDS:
                mean = (
                    part[part["third"] == third]
                    .groupby("epoch")[["norm_before", "norm_after"]]
                    .mean()
                )
                x = np.repeat(mean.index.to_numpy(), 2)
                y = np.column_stack([mean["norm_before"], mean["norm_after"]]).reshape(-1)
                axis.plot(x, y, color=colours[third], lw=1.0, label=f"{third} initial k")
            axis.set_yscale("log")
            axis.set_title(f"{arm}, {workload}", fontsize=9)
            axis.grid(alpha=0.3)
            if i == len(arms) - 1:
                axis.set_xlabel("epoch")
            if j == 0:
                axis.set_ylabel(f"layer {layer} mean row ‖w‖")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(
        f"row ‖w‖ before/after each update by initial fan-in third, lr {lr:g}",
        fontsize=10,
    )
    figure.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fanin_jsonl")
    parser.add_argument("trials_dir")
    parser.add_argument(
        "--layer",
        action="append",
        help="layer name, repeatable (default: 6, small_cnn's last hidden conv)",
    )
    parser.add_argument(
        "--all-layers",
        action="store_true",
        help="every traced layer, each split into its own thirds, the numbers averaged over layers",
    )
    parser.add_argument("--series", help="CSV (.csv.gz) to write the per-update third means into")
    parser.add_argument("--plot", help="PNG to draw the per-update picture into (needs --lr)")
    parser.add_argument("--lr", type=float, help="the lr whose trials the plot shows")
    args = parser.parse_args()
    layers = None if args.all_layers else (args.layer or ["6"])
    trials = ds.dataset(args.trials_dir, format="parquet").to_table().to_pandas()
    trials = trials[trials["status"] == "finished"]
    if args.series:
        series(args.fanin_jsonl, layers, trials).to_csv(args.series, index=False)
        return
    if args.plot:
        if args.lr is None:
            parser.error("--plot needs --lr")
        plot(args.fanin_jsonl, (layers or ["6"])[0], trials, args.lr, args.plot)
        return
    frame = summaries(args.fanin_jsonl, layers, trials)
    if args.all_layers:
        count = frame["layer"].nunique()
        frame["layer"] = f"mean of {count} layers"
    print(
        "Rows grouped by their fan-in at initialisation into thirds of the layer and followed "
        "through every update (never re-ranked); seed means (results/row_trace.py)."
    )
    print()
    print_table(frame)


if __name__ == "__main__":
    main()
