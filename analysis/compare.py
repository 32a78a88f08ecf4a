"""Convergence versus budget: per (workload, dataset, model, DST method, sparsity), each arm.

Rules (the report states them too):

* A cell is one (group, arm, budget). If it has `stage=final` runs, those are compared.
  Otherwise, if it ran several lr trials (`lr_trial`, each on all seeds), the one chosen by
  the sweep's lr-selection rule (`contract.selection`, the searcher's own) is compared: the
  best mean over seeds of the sweep's search metric at the final epoch, a diverged seed
  scoring the worst value, failed seeds left out, lr trials with running seeds not ranked,
  ties to the lower `lr_trial`. A cell with a single lr is compared as is.
* Statistics use the finished runs of the chosen set only (latest run per seed); stopped,
  failed, diverged and running runs are counted and listed, never averaged in.
* Accuracy is `test_acc1` of each budget's own run: at its final epoch (`final`) and its
  best over epochs (`best`). Mean, std (ddof=1) and a 95 % bootstrap CI over seeds.
* Paired differences: every arm with `sparseopt` against its baseline (the arm name without
  `sparseopt`/`corrected`), matched by seed, with a paired bootstrap CI, a two-sided
  Wilcoxon signed-rank p-value and Holm's correction over all comparisons of one measure.
* Budget to target: the smallest budget at which an arm's mean final accuracy reaches the
  target (default: its baseline's mean at the baseline's largest budget); speedup =
  baseline's budget to target / arm's budget to target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis import stats
from analysis.schema import STATUSES, metric_column
from contract.arms import baseline_arm, is_sparseopt_arm
from contract.names import DEFAULT_SEARCH_METRIC
from contract.outcome import Status
from contract.selection import best_key, group_score, seed_score

GROUP: tuple[str, ...] = ("workload", "dataset", "model", "method", "sparsity")
CELL: tuple[str, ...] = (*GROUP, "arm", "budget")
MEASURES: tuple[str, ...] = ("final", "best")
ACCURACY = "test_acc1"
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """Every table the report shows; each is a plain DataFrame (see `compare`)."""

    selection: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    budget_to_target: pd.DataFrame
    itop: pd.DataFrame
    curves: pd.DataFrame
    run_curves: pd.DataFrame
    status: pd.DataFrame
    partial: bool
    metric: str = DEFAULT_SEARCH_METRIC
    notes: list[str] = field(default_factory=list)


def compare(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    target: float | None = None,
    confidence: float = stats.CONFIDENCE,
    metric: str = DEFAULT_SEARCH_METRIC,
) -> Comparison:
    """All comparison tables from the exported trials and epochs tables (as DataFrames);
    `metric` is the sweep's search metric, which picks each cell's lr."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    candidates = _comparable(trials)
    selection, chosen = _select(candidates, metric)
    runs = _included(chosen)
    summary = _summary(runs, chosen, selection, confidence)
    paired = _paired(runs, confidence)
    return Comparison(
        selection=selection,
        runs=runs,
        summary=summary,
        paired=paired,
        budget_to_target=_budget_to_target(summary, target),
        itop=_itop(runs),
        curves=_curves(runs, epochs),
        run_curves=_run_curves(runs, epochs),
        status=_status(candidates),
        partial=bool((trials["status"] == "running").any()),
        metric=metric,
        notes=_notes(trials, candidates, selection),
    )


def _comparable(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with an arm, a sparsity and a budget, with the group columns filled."""
    frame = trials[trials["arm"].notna() & trials["budget"].notna() & trials["sparsity"].notna()]
    frame = frame.copy()
    frame["workload"] = frame["workload"].fillna("default")
    for name in ("dataset", "model", "method"):
        frame[name] = frame[name].fillna("unknown")
    frame["budget"] = frame["budget"].astype("int64")
    return frame.reset_index(drop=True)


def _lr_key(frame: pd.DataFrame) -> pd.Series:
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


def _select(candidates: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell, which runs are compared and why (see the module docstring)."""
    rows, chosen = [], []
    for key, cell in candidates.groupby(list(CELL), sort=True):
        final = cell[cell["stage"] == "final"]
        lr_keys = _lr_key(cell)
        if not final.empty:
            pick, basis, score = final, "final stage", math.nan
        elif lr_keys.nunique() == 1:
            pick, basis, score = cell, "single lr", math.nan
        else:
            pick, basis, score = _best_lr(cell, lr_keys, metric)
        rows.append(
            {
                **dict(zip(CELL, key, strict=True)),
                "basis": basis,
                "lr_trials": int(lr_keys.nunique()),
                "lr_trial": _single(pick["lr_trial"]),
                "lr": _single(pick["lr"]),
                "selection_score": score,
                "runs": len(pick),
            }
        )
        chosen.append(pick)
    selection = pd.DataFrame(
        rows, columns=[*CELL, "basis", "lr_trials", "lr_trial", "lr", "selection_score", "runs"]
    )
    picked = pd.concat(chosen) if chosen else candidates.iloc[:0]
    return selection, picked.reset_index(drop=True)


def _single(values: pd.Series) -> float:
    """The one value a column holds (NaN if none or several)."""
    unique = values.dropna().unique()
    return float(unique[0]) if len(unique) == 1 else math.nan


def _best_lr(
    cell: pd.DataFrame, lr_keys: pd.Series, metric: str
) -> tuple[pd.DataFrame, str, float]:
    """The cell's lr trial under the lr-selection rule (`contract.selection`)."""
    column = f"final_{metric_column(metric)}"
    values = cell[column] if column in cell else pd.Series(math.nan, index=cell.index)
    scores = {}
    for lr_key in sorted(set(lr_keys)):
        members = lr_keys == lr_key
        statuses = cell.loc[members, "status"]
        if (statuses == Status.RUNNING.value).any():
            continue  # not ranked until every seed has ended, as in the searcher
        scores[lr_key] = group_score(
            seed_score(status, None if pd.isna(value) else float(value), metric)
            for status, value in zip(statuses, values[members], strict=True)
        )
    chosen = best_key(scores, metric)
    if chosen is None:
        return cell.iloc[:0], "no ended lr trial yet", math.nan
    return cell[lr_keys == chosen], f"best lr on {metric}", float(scores[chosen])


def _included(chosen: pd.DataFrame) -> pd.DataFrame:
    """Finished chosen runs, one per seed (the latest started) where seeds repeat."""
    finished = chosen[chosen["status"] == "finished"]
    ordered = finished.sort_values("start_time", kind="stable")
    seeded = ordered[ordered["seed"].notna()].drop_duplicates([*CELL, "seed"], keep="last")
    unseeded = ordered[ordered["seed"].isna()]
    runs = pd.concat([seeded, unseeded]).sort_values([*CELL, "seed"], kind="stable")
    return runs.reset_index(drop=True)


def _summary(
    runs: pd.DataFrame, chosen: pd.DataFrame, selection: pd.DataFrame, confidence: float
) -> pd.DataFrame:
    """Per cell and measure: n, mean, std, bootstrap CI over seeds, excluded-run count."""
    excluded = chosen[chosen["status"] != "finished"].groupby(list(CELL)).size()
    members = dict(iter(runs.groupby(list(CELL))))
    rows = []
    for cell in selection.itertuples(index=False):
        key = tuple(getattr(cell, name) for name in CELL)
        found = members.get(key, runs.iloc[:0])
        for measure in MEASURES:
            values = found[f"{measure}_{ACCURACY}"].dropna().to_numpy(dtype=float)
            low, high = stats.bootstrap_mean_ci(values, confidence=confidence)
            rows.append(
                {
                    **dict(zip(CELL, key, strict=True)),
                    "measure": measure,
                    "n": int(values.size),
                    "mean": float(values.mean()) if values.size else math.nan,
                    "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "excluded": int(excluded.get(key, 0)),
                    "basis": cell.basis,
                    "lr": cell.lr,
                }
            )
    columns = [*CELL, "measure", "n", "mean", "std", "ci_low", "ci_high", "excluded", "basis", "lr"]
    return pd.DataFrame(rows, columns=columns)


_PAIRED_COLUMNS = [
    *GROUP,
    "budget",
    "arm",
    "baseline",
    "measure",
    "n_pairs",
    "seeds",
    "mean_arm",
    "mean_baseline",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "p_wilcoxon",
    "p_holm",
    "significant",
]


def _paired(runs: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Arm − baseline per seed for every SparseOpt arm whose baseline ran in the same group."""
    rows = []
    seeded = runs[runs["seed"].notna()]
    by_cell = dict(iter(seeded.groupby([*GROUP, "budget", "arm"])))
    for key, cell in by_cell.items():
        *where, arm = key
        if not is_sparseopt_arm(arm):
            continue
        base = by_cell.get((*where, baseline_arm(arm)))
        if base is None:
            continue
        for measure in MEASURES:
            column = f"{measure}_{ACCURACY}"
            pairs = (
                cell[["seed", column]]
                .merge(base[["seed", column]], on="seed", suffixes=("_arm", "_base"))
                .dropna()
            )
            arm_values = pairs[f"{column}_arm"].to_numpy(dtype=float)
            base_values = pairs[f"{column}_base"].to_numpy(dtype=float)
            diff = arm_values - base_values
            low, high = stats.paired_bootstrap_ci(arm_values, base_values, confidence=confidence)
            rows.append(
                {
                    **dict(zip((*GROUP, "budget"), where, strict=True)),
                    "arm": arm,
                    "baseline": baseline_arm(arm),
                    "measure": measure,
                    "n_pairs": int(diff.size),
                    "seeds": ",".join(str(int(seed)) for seed in pairs["seed"]),
                    "mean_arm": float(arm_values.mean()) if diff.size else math.nan,
                    "mean_baseline": float(base_values.mean()) if diff.size else math.nan,
                    "mean_diff": float(diff.mean()) if diff.size else math.nan,
                    "std_diff": float(diff.std(ddof=1)) if diff.size > 1 else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "p_wilcoxon": stats.wilcoxon_p(diff),
                }
            )
    paired = pd.DataFrame(rows, columns=_PAIRED_COLUMNS[:-2])
    paired["p_holm"] = math.nan
    for measure in MEASURES:
        mask = paired["measure"] == measure
        paired.loc[mask, "p_holm"] = stats.holm(paired.loc[mask, "p_wilcoxon"].to_numpy())
    paired["significant"] = paired["p_holm"] < ALPHA
    order = paired["measure"].map({measure: i for i, measure in enumerate(MEASURES)})
    paired = paired.assign(_order=order).sort_values([*GROUP, "arm", "_order", "budget"])
    return paired.drop(columns="_order").reset_index(drop=True)


def _budget_to_target(summary: pd.DataFrame, target: float | None) -> pd.DataFrame:
    """Per group and arm: budget at which the mean final accuracy reaches the target."""
    final = summary[(summary["measure"] == "final") & (summary["n"] > 0)]
    rows = []
    for key, group in final.groupby(list(GROUP), sort=True):
        arms = {arm: part.sort_values("budget") for arm, part in group.groupby("arm")}
        for arm, part in arms.items():
            base = arms.get(baseline_arm(arm))
            if base is None:
                continue
            if target is None:
                largest = base.iloc[-1]
                goal, source = (
                    float(largest["mean"]),
                    f"{baseline_arm(arm)} @ {int(largest['budget'])}",
                )
            else:
                goal, source = float(target), "fixed"
            reached = stats.budget_to_target(part["budget"].tolist(), part["mean"].tolist(), goal)
            base_reached = stats.budget_to_target(
                base["budget"].tolist(), base["mean"].tolist(), goal
            )
            speedup = base_reached / reached if reached and base_reached else math.nan
            rows.append(
                {
                    **dict(zip(GROUP, key, strict=True)),
                    "arm": arm,
                    "baseline": baseline_arm(arm),
                    "target": goal,
                    "target_from": source,
                    "budget_to_target": reached,
                    "baseline_budget_to_target": base_reached,
                    "speedup": speedup,
                    "reached": reached is not None,
                    "best_mean": float(part["mean"].max()),
                    "budgets": ",".join(str(int(b)) for b in part["budget"]),
                }
            )
    columns = [
        *GROUP,
        "arm",
        "baseline",
        "target",
        "target_from",
        "budget_to_target",
        "baseline_budget_to_target",
        "speedup",
        "reached",
        "best_mean",
        "budgets",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    for name in ("budget_to_target", "baseline_budget_to_target"):
        frame[name] = frame[name].astype("Int64")
    return frame


def _itop(runs: pd.DataFrame) -> pd.DataFrame:
    """ITOP rate and measured sparsity at the final epoch of every compared run."""
    columns = [*CELL, "seed", "run_id", "final_itop_rate", "final_measured_sparsity"]
    return runs[columns].reset_index(drop=True)


def _run_curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """test_acc1 per epoch of every compared run, with its cell and seed."""
    keyed = runs[["run_id", *CELL, "seed"]]
    points = epochs[["run_id", "epoch", ACCURACY]].merge(keyed, on="run_id")
    return points[[*CELL, "seed", "run_id", "epoch", ACCURACY]].reset_index(drop=True)


def _curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and epoch: mean, std and count over the compared runs of test_acc1."""
    points = _run_curves(runs, epochs)
    grouped = points.groupby([*CELL, "epoch"])[ACCURACY]
    curves = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return curves[[*CELL, "epoch", "mean", "std", "n"]]


def _status(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per cell: how many runs are in each status (all lr trials and stages)."""
    counts = candidates.groupby([*CELL, "status"]).size().unstack("status", fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0).astype("int64")
    counts.columns.name = None
    return counts.reset_index()


def _notes(trials: pd.DataFrame, candidates: pd.DataFrame, selection: pd.DataFrame) -> list[str]:
    notes = []
    skipped = len(trials) - len(candidates)
    if skipped:
        notes.append(
            f"{skipped} trial(s) without an arm or budget tag are exported but not compared."
        )
    for basis, count in selection["basis"].value_counts().sort_index().items():
        notes.append(f"{count} cell(s) compared on: {basis}.")
    return notes
