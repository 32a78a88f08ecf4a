"""RESULTS.md v3: every number of issue 26's corrections, re-derived from the committed exports.

Reads the Parquet exports under results/digits_{rigl,ablations,trace}/data, the trace's
`fanin.jsonl`, and (optionally) a report folder of results_digits_rownorm for the seed
distribution on fresh seeds, and prints one Markdown section per correction. Paired
differences are arm − RigL per seed at ONE lr both ran (a fixed-lr comparison, not the report's
chosen-lr views), with the paired Student t-interval of `analysis.stats` (95 %) and how many
seeds fall below 0.

    python results/corrections.py [--results results] [--rownorm results/digits_rownorm]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from analysis import stats

S = 0.97
LAYER = "6"
"""small_cnn's last hidden conv (64 rows), the layer RESULTS.md's mechanism section reads."""
SO, CAP, RIGL = "rigl+sparseopt", "rigl+sparseopt+cap", "rigl"


def trials(results: Path, sweep: str) -> pd.DataFrame:
    """The finished and diverged trials of one committed export."""
    frame = ds.dataset(results / sweep / "data" / "trials", format="parquet").to_table().to_pandas()
    return frame


def paired(frame: pd.DataFrame, arm: str, cell: dict, reference: str = RIGL) -> str:
    """`mean [low, high] (below/n seeds < 0)` of arm − reference per seed in one cell at one lr."""
    part = frame[frame["status"] == "finished"]
    for key, value in cell.items():
        part = (
            part[np.isclose(part[key], value)]
            if isinstance(value, float)
            else part[part[key] == value]
        )
    values = part.pivot_table(index="seed", columns="arm", values="final_test_acc1")
    both = values[[arm, reference]].dropna()
    diff = both[arm] - both[reference]
    interval = stats.paired_t_interval(both[arm].to_numpy(), both[reference].to_numpy())
    return (
        f"{diff.mean():+.2f} [{interval.low:+.2f}, {interval.high:+.2f}] "
        f"({int((diff < 0).sum())}/{interval.n} seeds below 0)"
    )


def lr_table(frame: pd.DataFrame, arm: str, workload: str, budgets: list[int]) -> list[str]:
    """Markdown rows: arm − RigL at s = 0.97 per budget x lr (fixed lr)."""
    lines = ["| budget | lr | " + f"{arm} − rigl, same lr, 95% paired t |", "|---|---|---|"]
    for budget in budgets:
        for lr in sorted(frame["lr"].unique()):
            cell = {"workload": workload, "sparsity": S, "budget": budget, "lr": float(lr)}
            lines.append(f"| {budget} | {lr:g} | {paired(frame, arm, cell)} |")
    return lines


def below_count(frame: pd.DataFrame, arm: str, workload: str, sparsity: float | None) -> str:
    """How many (sparsity, budget, lr) pairs have a seed-mean difference arm − RigL below 0."""
    part = frame[(frame["status"] == "finished") & (frame["workload"] == workload)]
    if sparsity is not None:
        part = part[np.isclose(part["sparsity"], sparsity)]
    keys = ["sparsity", "budget", "lr", "seed"]
    diff = (
        part[part["arm"] == arm].set_index(keys)["final_test_acc1"]
        - part[part["arm"] == RIGL].set_index(keys)["final_test_acc1"]
    )
    means = diff.dropna().groupby(["sparsity", "budget", "lr"]).mean()
    return f"{int((means < 0).sum())} of {len(means)}"


def pooled(frame: pd.DataFrame, arm: str, workload: str) -> str:
    """arm − RigL per seed averaged over every (sparsity, budget, lr) of a workload; t over seeds."""
    part = frame[(frame["status"] == "finished") & (frame["workload"] == workload)]
    keys = ["sparsity", "budget", "lr", "seed"]
    diff = (
        part[part["arm"] == arm].set_index(keys)["final_test_acc1"]
        - part[part["arm"] == RIGL].set_index(keys)["final_test_acc1"]
    )
    diff = diff.dropna()
    cells = diff.groupby(["sparsity", "budget", "lr"]).ngroups
    per_seed = diff.groupby("seed").mean()
    interval = stats.t_interval(per_seed.to_numpy())
    return (
        f"{per_seed.mean():+.2f} [{interval.low:+.2f}, {interval.high:+.2f}] "
        f"(t over n = {interval.n} seeds, each seed's mean over {cells} (s, budget, lr) cells)"
    )


def update_count(budget: int, delta_t: int, steps_per_epoch: int, t_end: float = 0.75) -> int:
    """Mask updates of a run (sparseopt.topology.is_update_step's rule)."""
    from sparseopt.topology import is_update_step

    total = budget * steps_per_epoch
    return sum(is_update_step(step, delta_t, t_end, total) for step in range(1, total + 1))


def trace_layer(results: Path) -> pd.DataFrame:
    """Per trace trial: its factors, the layer's empty rows at the end, and its history."""
    runs = trials(results, "digits_trace").set_index("config_hash")
    rows = []
    with open(results / "digits_trace" / "fanin.jsonl") as lines:
        for line in lines:
            record = json.loads(line)
            (layer,) = [item for item in record["layers"] if item["layer"] == LAYER]
            trial = runs.loc[record["config_hash"]]
            for point in layer["history"]:
                rows.append(
                    {
                        "workload": trial["workload"],
                        "arm": trial["arm"],
                        "lr": trial["lr"],
                        "seed": trial["seed"],
                        "empty_rows": layer["empty_rows"],
                        "rows": layer["rows"],
                        **{k: (np.nan if v is None else v) for k, v in point.items() if k != "bn"},
                    }
                )
    return pd.DataFrame(rows)


def span_net(results: Path, sweeps: list[str], gap_min: float) -> tuple[float, float, float]:
    """(minutes from the first trial start to the last trial end over `sweeps`, minutes of
    interruptions: gaps between consecutive trial ends longer than `gap_min`, net minutes)."""
    starts, ends = [], []
    for sweep in sweeps:
        frame = trials(results, sweep)
        starts.append(pd.to_datetime(frame["start_time"]).min())
        ends += list(pd.to_datetime(frame["end_time"]))
    ends = pd.Series(sorted(ends))
    gaps = ends.diff().dropna()
    interrupted = gaps[gaps > pd.Timedelta(minutes=gap_min)].sum()
    span = ends.iloc[-1] - min(starts)
    minutes = span.total_seconds() / 60.0
    lost = interrupted.total_seconds() / 60.0
    return minutes, lost, minutes - lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", type=Path)
    parser.add_argument("--rownorm", type=Path, help="results_digits_rownorm's report folder")
    args = parser.parse_args()
    rigl = trials(args.results, "digits_rigl")
    out: list[str] = []

    out += ["## 1. The cap attenuates, it does not make SparseOpt harmless", ""]
    out += ["ΔT = 10, s = 0.97 (results/digits_rigl/data):", ""]
    out += lr_table(rigl, CAP, "dt10", [8, 16])
    trace = trace_layer(args.results)
    capped = trace[(trace["arm"] == CAP) & (trace["workload"] == "dt10") & (trace["epoch"] == 16)]
    for lr, part in capped.groupby("lr"):
        empty = ", ".join(f"seed {int(r.seed)}: {int(r.empty_rows)}" for r in part.itertuples())
        out.append("")
        out.append(
            f"Capped trace runs (results/digits_trace, ΔT = 10, lr {lr:g}), empty rows of layer "
            f"{LAYER} (of 64) at the end: {empty}."
        )

    out += ["", "## 2. At ΔT = 20 the failure moves to higher lr and longer budgets", ""]
    out += lr_table(rigl, SO, "dt20", [2, 4, 8, 16])
    out += [
        "",
        f"(budget, lr) pairs at ΔT = 20, s = 0.97 where the seed mean of rigl+sparseopt − rigl "
        f"is below 0: {below_count(rigl, SO, 'dt20', S)}.",
        f"Pooled over ΔT = 20 (all s, budgets and lrs): {pooled(rigl, SO, 'dt20')}.",
    ]

    out += ["", "## 3. Update counts (20 steps per epoch, t_end 0.75)", ""]
    out += ["| budget | ΔT = 10 | ΔT = 20 |", "|---|---|---|"]
    for budget in (2, 4, 8, 16):
        out.append(
            f"| {budget} | {update_count(budget, 10, 20)} | {update_count(budget, 20, 20)} |"
        )
    out += ["", "ΔT = 10, s = 0.97, 4 epochs (no failure at any lr?):", ""]
    out += lr_table(rigl, SO, "dt10", [4])
    growth = trace[(trace["epoch"] == 16) & np.isclose(trace["lr"], 0.1) & (trace["arm"] == SO)]
    for workload, part in growth.groupby("workload"):
        out.append("")
        out.append(
            f"Mean |w| of layer {LAYER}'s high-fan-in third at epoch 16, rigl+sparseopt, lr 0.1, "
            f"{workload}: {part['w_abs_high'].mean():.2f} (seed mean of {len(part)})."
        )

    out += ["", "## 4. Understated at 16 epochs", ""]
    out += [
        "rigl+sparseopt − rigl at ΔT = 10, s = 0.97, 16 epochs, lr 0.1 (RigL's chosen lr): "
        + paired(rigl, SO, {"workload": "dt10", "sparsity": S, "budget": 16, "lr": 0.1})
        + ".",
        f"(budget, lr) pairs at ΔT = 10, s = 0.97 with rigl+sparseopt below RigL: "
        f"{below_count(rigl, SO, 'dt10', S)}.",
    ]

    out += ["", "## 5. Mechanism readings (results/digits_trace, layer 6)", ""]
    end = trace[trace["epoch"] == 16]
    for (workload, lr, arm), part in end.groupby(["workload", "lr", "arm"]):
        out.append(
            f"- {workload}, lr {lr:g}, {arm}: BN |γ|/σ high-k third {part['bn_scale_high'].mean():.2f}, "
            f"low-k third {part['bn_scale_low'].mean():.2f}; std high {part['std_high'].mean():.3g}, "
            f"low {part['std_low'].mean():.3g}; empty rows {100 * part['empty_rows'].mean() / 64:.1f}%"
        )
    plain = trace[
        (trace["arm"] == RIGL) & (trace["workload"] == "dt10") & np.isclose(trace["lr"], 0.3)
    ]
    at8 = plain[plain["epoch"] == 8]
    out.append(
        f"- plain RigL, dt10, lr 0.3: mean |w| of the high-k third at epoch 8 "
        f"{at8['w_abs_high'].mean():.1f}, empty rows at the end "
        f"{100 * at8['empty_rows'].mean() / 64:.1f}%"
    )

    out += ["", "## 6. HAM at lr ≥ 0.3 (results/digits_ablations)", ""]
    ablations = trials(args.results, "digits_ablations")
    ham = ablations[ablations["arm"].str.contains("ham") & (ablations["lr"] >= 0.3)]
    out.append(
        f"{int((ham['status'] == 'diverged').sum())} of {len(ham)} HAM runs at lr ≥ 0.3 diverged "
        f"(statuses: {ham['status'].value_counts().to_dict()})."
    )

    out += ["", "## 7. What `make results` cost (trial timestamps in the exports)", ""]
    minutes, lost, net = span_net(args.results, ["digits_rigl"], gap_min=10.0)
    out.append(
        f"RigL sweep: {minutes:.1f} min from its first trial's start to its last trial's end, "
        f"{lost:.1f} min of it an interruption (no trial ended for more than 10 min): net "
        f"{net:.1f} min."
    )
    sweeps = ["digits_rigl", "digits_set", "digits_ablations", "digits_trace"]
    minutes, lost, net = span_net(args.results, sweeps, gap_min=10.0)
    out.append(
        f"All four sweeps with the reports between them: {minutes:.1f} min, less the "
        f"{lost:.1f}-min interruption: {net:.1f} min = {int(net // 60)} h {net % 60:.0f} min, "
        "before the last report, `fanin` and `mechanism.py` (not timestamped)."
    )

    out += ["", "## 8. Seeds: the paired differences are heavy-tailed", ""]
    cell = rigl[
        (rigl["workload"] == "dt10")
        & np.isclose(rigl["sparsity"], S)
        & (rigl["budget"] == 2)
        & np.isclose(rigl["lr"], 0.3)
    ].pivot_table(index="seed", columns="arm", values="final_test_acc1")
    diff = cell[SO] - cell[RIGL]
    out.append(
        f"ΔT = 10, s = 0.97, 2 epochs, lr 0.3, seeds 0-9: SD of rigl+sparseopt − rigl "
        f"{diff.std(ddof=1):.2f}, min {diff.min():+.2f}, max {diff.max():+.2f}."
    )
    if args.rownorm is not None:
        out += ["", seed_tails(args.rownorm)]
    print("\n".join(out))


def seed_tails(report: Path) -> str:
    """The per-seed paired differences rigl+sparseopt − rigl of a rownorm report, per cell and
    lr, on its fresh seeds: SD, min, max and excess kurtosis (0 for a normal sample)."""
    from scipy.stats import kurtosis

    frame = trials(report.parent, report.name)
    frame = frame[frame["status"] == "finished"]
    lines = [
        f"Fresh seeds of {report} (rigl+sparseopt − rigl per seed, same lr):",
        "",
        "| workload | budget | lr | n | mean | SD | min | max | excess kurtosis |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (workload, budget, lr), part in frame.groupby(["workload", "budget", "lr"]):
        values = part.pivot_table(index="seed", columns="arm", values="final_test_acc1")
        diff = (values[SO] - values[RIGL]).dropna()
        lines.append(
            f"| {workload} | {budget} | {lr:g} | {len(diff)} | {diff.mean():+.2f} | "
            f"{diff.std(ddof=1):.2f} | {diff.min():+.2f} | {diff.max():+.2f} | "
            f"{kurtosis(diff):+.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
