"""Convergence versus budget: per (workload, dataset, model, DST method, sparsity), each arm.

Rules (the report states them too):

* A cell is one (group, arm, budget). If it has `stage=final` runs, those are compared.
  Otherwise, if it ran several lr trials (`lr_trial`, each on all seeds), the one ranked best
  by the sweep's one lr-ranking rule (`contract.selection.rank_lr_trials`, the searcher's
  own; applied to exported runs by `analysis.lr_choice`) is compared: the best mean over
  seeds of the sweep's search metric at the final epoch, a diverged seed scoring the worst
  value, failed seeds left out, an lr trial ranked once all the cell's seeds have ended,
  the seeds expected of each lr trial being the spec's (the experiment tag
  `sparsesweep.search_seeds`; a sweep recorded without it: the seeds the cell's runs ran),
  ties to the lr nearer the log-middle of the lrs the cell ran, then the smaller lr (the
  selection table lists the tied lrs: guard `lr_tie`). A cell with a single lr is compared
  as is. The selection table lists the lrs each cell ran, where the chosen one lies among
  them (`lr_position`: only, lowest, highest, inside) and, where an lr was chosen among
  several, how many seeds its score averaged (`selection_seeds`; for final-stage cells, its
  search lr trial's). Seeds the adaptive-seeds rule added at a cell's chosen lr (stage
  `extra`) are compared with that lr's search seeds but never ranked.
* Statistics use finished runs only (latest run per seed); stopped, failed, diverged and
  running runs are counted and listed, never averaged in.
* Accuracy is `test_acc1` of each budget's own run: at its final epoch (`final`) and its
  best over epochs (`best`). Mean and std (ddof=1) over seeds, with two intervals of the
  mean, each stored with its method and n: Student's t (`ci_*`, the primary one, clipped to
  [0, 100]) and the BCa bootstrap (`bca_*`, from 8 seeds on); see `analysis.stats`.
* Contrasts, within one group and budget: every arm with `sparseopt` against its baseline
  (`contract.arms.baseline_arm`; contrast `baseline`), each other modifier of an arm
  against its nearest arm (`contract.arms.ablation_contrasts`; contrast = the modifier):
  corrected vs raw regrowth, +cap vs without, renorm on vs off within one preconditioner...,
  and any declared primary contrast that is none of these (contrast `declared`).
* Every contrast is paired by seed (arm − reference) in three views:
  - `best lr`: each arm at its own chosen runs (the cell selection above), so the two may
    have run at different lrs (`lr_arm`, `lr_reference`);
  - `best common lr` (matched lr; table `matched` has every lr both arms ran): both arms at
    the same lr. At one lr the pairs are the `stage=final` seeds if both arms ran that lr in
    the final stage, else the search seeds. The best common lr is the one the lr-ranking
    rule ranks first on both arms' search seeds at that lr together (each arm's own score is
    in `score_arm`, `score_reference`), or the one lr both ran;
  - `best lr, cross-fitted`: each seed's run at the lr the rule chooses on the cell's other
    seeds (`analysis.crossfit`), which removes the in-sample choice's optimism.
  Each comparison has the mean difference, its paired t-interval (primary) and BCa
  interval, and a two-sided Wilcoxon signed-rank p-value. Multiplicity is corrected (Holm)
  only within the primary family: the declared primary contrasts (`analysis.primary`) in
  one view, final measure; every other comparison is exploratory (`family`), its p-value
  unadjusted. `pairs` holds every comparison's per-seed values.
* Budget to target, each arm at its best lr: the smallest budget at which an arm's mean
  final accuracy reaches the target (default: its baseline's mean at the baseline's largest
  budget); speedup = baseline's budget to target / arm's. Their intervals are percentile
  bootstraps over seeds (`analysis.stats.budget_to_target_interval`).
* Modifier activity: per compared run and each of its modifiers that has an activity metric
  (`contract.names.ACTIVITY_METRICS`), the mean over its epochs of the fraction of the
  epoch's steps the modifier changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import stats
from analysis.crossfit import cross_fitted_runs, optimism
from analysis.lr_choice import (
    CellLrTrials,
    cell_lr_trials,
    expected_seeds,
    latest_per_seed,
    lr_trial_keys,
    ranked_runs,
)
from analysis.primary import PrimaryDeclaration
from analysis.schema import PARAM_PREFIX, STATUSES, metric_column
from contract.arms import ablation_contrasts, baseline_arm, is_sparseopt_arm
from contract.names import ACTIVITY_METRICS, DEFAULT_SEARCH_METRIC
from contract.selection import LrRanking, LrTrial, rank_lr_trials, trial_score
from contract.trial import Stage

GROUP: tuple[str, ...] = ("workload", "dataset", "model", "method", "sparsity")
CELL: tuple[str, ...] = (*GROUP, "arm", "budget")
MEASURES: tuple[str, ...] = ("final", "best")
ACCURACY = "test_acc1"
BASELINE = "baseline"
"""The `contrast` of a SparseOpt arm against its baseline (ablations are named by modifier)."""
DECLARED = "declared"
"""The `contrast` of a declared primary contrast that is neither a baseline nor an ablation."""
BEST_LR = "best lr"
BEST_COMMON_LR = "best common lr"
CROSS_FITTED = "best lr, cross-fitted"
VIEWS: tuple[str, ...] = (BEST_LR, BEST_COMMON_LR, CROSS_FITTED)
PRIMARY, EXPLORATORY = "primary", "exploratory"
"""Values of `family`: a comparison in the declared primary family, or any other."""
FINAL_STAGE, SINGLE_LR, NOT_RANKED = "final stage", "single lr", "no ended lr trial yet"
"""Values of the selection's `basis` (besides `best lr on <metric>`)."""
CONTRAST: tuple[str, ...] = (*GROUP, "budget", "contrast", "arm", "reference")
INTERVAL_COLUMNS: tuple[str, ...] = (
    "ci_low",
    "ci_high",
    "ci_method",
    "bca_low",
    "bca_high",
    "bca_method",
)
_PAIR_COLUMNS: tuple[str, ...] = (
    "measure",
    "n_pairs",
    "seeds",
    "mean_arm",
    "mean_reference",
    "mean_diff",
    "std_diff",
    *INTERVAL_COLUMNS,
    "p_wilcoxon",
)


@dataclass(frozen=True)
class Comparison:
    """Every table the report shows; each is a plain DataFrame (see `compare`)."""

    selection: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame
    contrasts: pd.DataFrame
    paired: pd.DataFrame
    pairs: pd.DataFrame
    matched: pd.DataFrame
    crossfit: pd.DataFrame
    optimism: pd.DataFrame
    budget_to_target: pd.DataFrame
    itop: pd.DataFrame
    activity: pd.DataFrame
    curves: pd.DataFrame
    run_curves: pd.DataFrame
    status: pd.DataFrame
    partial: bool
    primary: PrimaryDeclaration = field(default_factory=PrimaryDeclaration)
    """The primary declaration, its contrasts resolved for the arms that ran."""
    metric: str = DEFAULT_SEARCH_METRIC
    confidence: float = stats.CONFIDENCE
    notes: list[str] = field(default_factory=list)


def compare(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    target: float | None = None,
    confidence: float = stats.CONFIDENCE,
    metric: str = DEFAULT_SEARCH_METRIC,
    primary: PrimaryDeclaration | None = None,
    search_seeds: int | None = None,
) -> Comparison:
    """All comparison tables from the exported trials and epochs tables (as DataFrames);
    `metric` is the sweep's search metric, which picks each cell's lr; `primary` declares
    the contrasts whose family is corrected for multiplicity (default: `analysis.primary`),
    and its target, which `target` overrides; `search_seeds`: the seeds the spec gives every
    lr trial (the export manifest's), which the lr rule expects (None: the seeds each cell's
    runs ran, `analysis.lr_choice`)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    candidates = comparable(trials)
    declared = (primary or PrimaryDeclaration()).resolve(candidates["arm"].unique())
    if target is not None:
        declared = dataclasses.replace(declared, target=target)
    selection, chosen, runs = compared_runs(candidates, metric, search_seeds)
    summary = _summary(runs, chosen, selection, confidence)
    contrasts = _contrasts(candidates, declared)
    matched = _matched(candidates, contrasts, metric, confidence, search_seeds)
    ranked = selection[_chosen_by_rank(selection)]
    searched = set(ranked[list(CELL)].itertuples(index=False, name=None))
    crossfit = cross_fitted_runs(candidates, runs, searched, list(CELL), metric)
    paired, pairs = _paired(candidates, runs, crossfit, selection, contrasts, matched, confidence)
    return Comparison(
        selection=selection,
        runs=runs,
        summary=summary,
        contrasts=contrasts,
        paired=_with_holm(paired, declared),
        pairs=pairs,
        matched=matched,
        crossfit=crossfit,
        optimism=optimism(runs, crossfit, searched, list(CELL), f"final_{ACCURACY}"),
        budget_to_target=_budget_to_target(summary, runs, declared.target, confidence),
        itop=_itop(runs),
        activity=_activity(runs, epochs),
        curves=_curves(runs, epochs),
        run_curves=_run_curves(runs, epochs),
        status=_status(candidates),
        partial=bool((trials["status"] == "running").any()),
        primary=declared,
        metric=metric,
        confidence=confidence,
        notes=_notes(trials, candidates, selection),
    )


def _chosen_by_rank(selection: pd.DataFrame) -> pd.Series:
    """Cells whose compared lr was chosen by ranking their own seeds."""
    return ~selection["basis"].isin([FINAL_STAGE, SINGLE_LR, NOT_RANKED])


def compared_runs(
    candidates: pd.DataFrame, metric: str, search_seeds: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(selection, the chosen runs of every cell, the finished ones the statistics use) of the
    comparable trials (`comparable`), by the rules of the module docstring (`search_seeds`:
    as in `compare`)."""
    selection, chosen = _select(candidates, metric, search_seeds)
    return selection, chosen, _included(chosen)


def comparable(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with an arm, a sparsity and a budget, with the group columns filled (without
    the `param.*` columns, which no comparison reads)."""
    frame = trials[trials["arm"].notna() & trials["budget"].notna() & trials["sparsity"].notna()]
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith(PARAM_PREFIX)])
    frame["workload"] = frame["workload"].fillna("default")
    for name in ("dataset", "model", "method"):
        frame[name] = frame[name].fillna("unknown")
    frame["budget"] = frame["budget"].astype("int64")
    return frame.reset_index(drop=True)


_SELECTION_COLUMNS: list[str] = [
    *CELL,
    "basis",
    "lr_trials",
    "lr_trial",
    "lr",
    "selection_score",
    "runs",
    "selection_seeds",
    "lrs_searched",
    "lr_position",
    "tied_lrs",
]


def _select(
    candidates: pd.DataFrame, metric: str, search_seeds: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell, which runs are compared and why (see the module docstring)."""
    rows, chosen = [], []
    for key, cell in candidates.groupby(list(CELL), sort=True):
        final = cell[cell["stage"] == Stage.FINAL]
        keys = lr_trial_keys(cell)
        searched = sorted(float(value) for value in cell["lr"].dropna().unique())
        trials = cell_lr_trials(ranked_runs(cell), metric, searched, search_seeds)
        tied, score, counted = "", math.nan, None
        if not final.empty:
            pick, basis = final, FINAL_STAGE
            search_key = keys[final.index[0]]
            counted = trials.counted(search_key, metric) if search_key in trials.seeds else 0
        elif keys.nunique() == 1:
            pick, basis = cell, SINGLE_LR
        else:
            ranking = trials.rank(metric)
            if ranking.best is None:
                pick, basis = cell.iloc[:0], NOT_RANKED
            else:
                pick, basis = cell[keys == ranking.best], f"best lr on {metric}"
                score = float(ranking.scores[ranking.best])  # type: ignore[arg-type]
                counted = trials.counted(ranking.best, metric)
                tied = _tied_lrs(ranking, trials)
        lr = _single(pick["lr"])
        choice = keys.nunique() > 1 and not pick.empty
        rows.append(
            {
                **dict(zip(CELL, key, strict=True)),
                "basis": basis,
                "lr_trials": int(keys.nunique()),
                "lr_trial": _single(pick["lr_trial"]),
                "lr": lr,
                "selection_score": score,
                "runs": len(pick),
                "selection_seeds": counted if choice else None,
                "lrs_searched": ",".join(f"{value:g}" for value in searched),
                "lr_position": _lr_position(lr, searched),
                "tied_lrs": tied,
            }
        )
        chosen.append(pick)
    selection = pd.DataFrame(rows, columns=_SELECTION_COLUMNS).astype({"selection_seeds": "Int64"})
    picked = pd.concat(chosen) if chosen else candidates.iloc[:0]
    return selection, picked.reset_index(drop=True)


def _tied_lrs(ranking: LrRanking, trials: CellLrTrials) -> str:
    """The lrs that tie for best (comma-separated, the chosen one first), or ""."""
    if len(ranking.tied) < 2:
        return ""
    return ",".join(f"{trials.lrs[key]:g}" for key in ranking.tied)


LR_EDGES: tuple[str, ...] = ("only", "lowest", "highest")
"""Values of `lr_position` that put the chosen lr at the edge of the lrs its cell ran."""


def _lr_position(lr: float, searched: list[float]) -> str:
    """Where the chosen lr lies among the lrs the cell ran: only, lowest, highest or inside
    ("" when there is no single chosen lr to place)."""
    if math.isnan(lr) or lr not in searched:
        return ""
    if len(searched) == 1:
        return "only"
    if lr == searched[0]:
        return "lowest"
    return "highest" if lr == searched[-1] else "inside"


def _single(values: pd.Series) -> float:
    """The one value a column holds (NaN if none or several)."""
    unique = values.dropna().unique()
    return float(unique[0]) if len(unique) == 1 else math.nan


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
    """Per cell and measure: n, mean, std, t (clipped to [0, 100]) and BCa intervals over
    seeds, excluded runs."""
    excluded = chosen[chosen["status"] != "finished"].groupby(list(CELL)).size()
    members = dict(iter(runs.groupby(list(CELL))))
    rows = []
    for cell in selection.itertuples(index=False):
        key = tuple(getattr(cell, name) for name in CELL)
        found = members.get(key, runs.iloc[:0])
        for measure in MEASURES:
            values = found[f"{measure}_{ACCURACY}"].dropna().to_numpy(dtype=float)
            rows.append(
                {
                    **dict(zip(CELL, key, strict=True)),
                    "measure": measure,
                    "n": int(values.size),
                    "mean": _mean(values),
                    "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                    **_intervals(
                        stats.accuracy_t_interval(values, confidence),
                        stats.bca_interval(values, confidence),
                    ),
                    "excluded": int(excluded.get(key, 0)),
                    "basis": cell.basis,
                    "lr": cell.lr,
                }
            )
    columns = [*CELL, "measure", "n", "mean", "std", *INTERVAL_COLUMNS, "excluded", "basis", "lr"]
    return pd.DataFrame(rows, columns=columns)


def _mean(values: np.ndarray) -> float:
    """The mean of the values (NaN when there are none)."""
    return float(values.mean()) if values.size else math.nan


def _intervals(primary: stats.Interval, bca: stats.Interval) -> dict[str, Any]:
    """The interval columns (`INTERVAL_COLUMNS`) of the t and the BCa interval."""
    values = (primary.low, primary.high, primary.method, bca.low, bca.high, bca.method)
    return dict(zip(INTERVAL_COLUMNS, values, strict=True))


def arm_contrasts(arm: str) -> list[tuple[str, str]]:
    """(contrast, reference arm) of an arm: its baseline if it applies SparseOpt, then each
    other modifier's nearest arm (an arm outside the grammar, from an older sweep, gets its
    baseline only)."""
    pairs = [(BASELINE, baseline_arm(arm))] if is_sparseopt_arm(arm) else []
    with contextlib.suppress(ValueError):
        pairs += [pair for pair in ablation_contrasts(arm) if pair not in pairs]
    return pairs


def _contrasts(candidates: pd.DataFrame, declared: PrimaryDeclaration) -> pd.DataFrame:
    """Every contrast whose two arms both ran in the same group and budget, the declared
    primary contrasts among them."""
    rows = []
    for key, part in candidates.groupby([*GROUP, "budget"], sort=True):
        arms = set(part["arm"])
        for arm in sorted(arms):
            found = arm_contrasts(arm)
            known = {reference for _, reference in found}
            found += [
                (DECLARED, reference)
                for primary_arm, reference in declared.contrasts or ()
                if primary_arm == arm and reference not in known
            ]
            for contrast, reference in found:
                if reference in arms:
                    where = dict(zip((*GROUP, "budget"), key, strict=True))
                    rows.append({**where, "contrast": contrast, "arm": arm, "reference": reference})
    return pd.DataFrame(rows, columns=list(CONTRAST))


def _cell_key(contrast: Any, arm: str) -> tuple:
    """The CELL key of one arm of a contrast row (a namedtuple of `CONTRAST`)."""
    return (*(getattr(contrast, name) for name in GROUP), arm, contrast.budget)


def _seed_pairs(arm_runs: pd.DataFrame, reference_runs: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Per seed both arms ran: (seed, arm_value, reference_value) of a measure, by seed."""
    column = f"{measure}_{ACCURACY}"
    arm, reference = (
        {
            int(seed): float(value)
            for seed, value in zip(runs["seed"], runs[column], strict=True)
            if pd.notna(seed) and pd.notna(value)
        }
        for runs in (arm_runs, reference_runs)
    )
    seeds = sorted(set(arm) & set(reference))
    return pd.DataFrame(
        {
            "seed": pd.Series(seeds, dtype="int64"),
            "arm_value": pd.Series([arm[s] for s in seeds], dtype=float),
            "reference_value": pd.Series([reference[s] for s in seeds], dtype=float),
        }
    )


def _pair_stats(pairs: pd.DataFrame, measure: str, confidence: float) -> dict[str, Any]:
    """One paired comparison of a measure from its per-seed values: arm − reference."""
    arm = pairs["arm_value"].to_numpy(dtype=float)
    reference = pairs["reference_value"].to_numpy(dtype=float)
    diff = arm - reference
    return {
        "measure": measure,
        "n_pairs": int(diff.size),
        "seeds": ",".join(str(int(seed)) for seed in pairs["seed"]),
        "mean_arm": _mean(arm),
        "mean_reference": _mean(reference),
        "mean_diff": _mean(diff),
        "std_diff": float(diff.std(ddof=1)) if diff.size > 1 else math.nan,
        **_intervals(
            stats.paired_t_interval(arm, reference, confidence),
            stats.paired_bca_interval(arm, reference, confidence),
        ),
        "p_wilcoxon": stats.wilcoxon_p(diff),
    }


def _with_holm(paired: pd.DataFrame, declared: PrimaryDeclaration) -> pd.DataFrame:
    """`family` of every comparison; Holm-adjusted p-values within the primary family of each
    view (declared contrasts, final measure), significant below the declared alpha."""
    primary = set(declared.contrasts or ())
    in_family = [
        (arm, reference) in primary and measure == "final"
        for arm, reference, measure in zip(
            paired["arm"], paired["reference"], paired["measure"], strict=True
        )
    ]
    paired = paired.assign(
        family=np.where(in_family, PRIMARY, EXPLORATORY), p_holm=math.nan, significant=False
    )
    family = paired[paired["family"] == PRIMARY]
    for _, part in family.groupby("view"):
        paired.loc[part.index, "p_holm"] = stats.holm(part["p_wilcoxon"].to_numpy())
    paired["significant"] = (paired["family"] == PRIMARY) & (paired["p_holm"] < declared.alpha)
    return paired


_PAIRED_COLUMNS: list[str] = [
    *CONTRAST,
    "view",
    "lr_arm",
    "lr_reference",
    *_PAIR_COLUMNS,
]
_PAIRS_COLUMNS: list[str] = [
    *CONTRAST,
    "view",
    "measure",
    "seed",
    "arm_value",
    "reference_value",
]


def _paired(
    candidates: pd.DataFrame,
    runs: pd.DataFrame,
    crossfit: pd.DataFrame,
    selection: pd.DataFrame,
    contrasts: pd.DataFrame,
    matched: pd.DataFrame,
    confidence: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every view of every contrast (module docstring): the comparisons and their per-seed
    values."""
    chosen = dict(iter(runs[runs["seed"].notna()].groupby(list(CELL))))
    fitted = dict(iter(crossfit.groupby(list(CELL)))) if not crossfit.empty else {}
    cells = dict(iter(candidates[candidates["lr"].notna()].groupby(list(CELL))))
    chosen_lr = selection.set_index(list(CELL))["lr"]
    common = {
        tuple(row[name] for name in CONTRAST): row["lr"]
        for row in matched[matched["best_common"] & (matched["measure"] == "final")].to_dict(
            "records"
        )
    }
    rows, seeds = [], []
    for contrast in contrasts.itertuples(index=False):
        arm_key = _cell_key(contrast, contrast.arm)
        reference_key = _cell_key(contrast, contrast.reference)
        views: list[tuple[str, pd.DataFrame, pd.DataFrame, float, float]] = []
        if arm_key in chosen and reference_key in chosen:
            lrs = (chosen_lr[arm_key], chosen_lr[reference_key])
            views.append((BEST_LR, chosen[arm_key], chosen[reference_key], *lrs))
        lr = common.get(tuple(contrast))
        if lr is not None:
            arm_runs, reference_runs, _ = _at_lr(cells[arm_key], cells[reference_key], lr)
            views.append((BEST_COMMON_LR, arm_runs, reference_runs, lr, lr))
        if arm_key in fitted and reference_key in fitted:
            views.append((CROSS_FITTED, fitted[arm_key], fitted[reference_key], math.nan, math.nan))
        for view, arm_runs, reference_runs, lr_arm, lr_reference in views:
            where = {**contrast._asdict(), "view": view}
            for measure in MEASURES:
                pairs = _seed_pairs(arm_runs, reference_runs, measure)
                lrs = {"lr_arm": lr_arm, "lr_reference": lr_reference}
                rows.append({**where, **lrs, **_pair_stats(pairs, measure, confidence)})
                seeds.append(pairs.assign(**where, measure=measure))
    paired = pd.DataFrame(rows, columns=_PAIRED_COLUMNS)
    order = {
        "_view": paired["view"].map({view: i for i, view in enumerate(VIEWS)}),
        "_measure": paired["measure"].map({m: i for i, m in enumerate(MEASURES)}),
    }
    paired = paired.assign(**order).sort_values(
        [*GROUP, "arm", "reference", "_view", "_measure", "budget"], kind="stable"
    )
    per_seed = pd.concat(seeds)[_PAIRS_COLUMNS] if seeds else pd.DataFrame(columns=_PAIRS_COLUMNS)
    return paired.drop(columns=list(order)).reset_index(drop=True), per_seed.reset_index(drop=True)


_MATCHED_COLUMNS: list[str] = [
    *CONTRAST,
    "lr",
    "stage",
    "best_common",
    "score_arm",
    "score_reference",
    "common_score",
    "tied_lrs",
    *_PAIR_COLUMNS,
]


def _matched(
    candidates: pd.DataFrame,
    contrasts: pd.DataFrame,
    metric: str,
    confidence: float,
    search_seeds: int | None,
) -> pd.DataFrame:
    """Every contrast at every lr both arms ran, marking the best common lr (module docstring)."""
    cells = dict(iter(candidates[candidates["lr"].notna()].groupby(list(CELL))))
    rows = []
    for contrast in contrasts.itertuples(index=False):
        arm_cell = cells.get(_cell_key(contrast, contrast.arm))
        reference_cell = cells.get(_cell_key(contrast, contrast.reference))
        if arm_cell is None or reference_cell is None:
            continue
        common = sorted(set(arm_cell["lr"]) & set(reference_cell["lr"]))
        ranking, scores = _rank_common(arm_cell, reference_cell, common, metric, search_seeds)
        best = common[0] if len(common) == 1 else ranking.best
        tied = ",".join(f"{lr:g}" for lr in ranking.tied) if len(ranking.tied) > 1 else ""
        for lr in common:
            arm_runs, reference_runs, stage = _at_lr(arm_cell, reference_cell, lr)
            if arm_runs.empty or reference_runs.empty:
                continue
            fields = {
                **contrast._asdict(),
                "lr": lr,
                "stage": stage,
                "best_common": lr == best,
                "score_arm": _or_nan(scores[lr][0]),
                "score_reference": _or_nan(scores[lr][1]),
                "common_score": _or_nan(ranking.scores[lr]),
                "tied_lrs": tied,
            }
            for measure in MEASURES:
                pairs = _seed_pairs(arm_runs, reference_runs, measure)
                rows.append({**fields, **_pair_stats(pairs, measure, confidence)})
    matched = pd.DataFrame(rows, columns=_MATCHED_COLUMNS)
    return matched.astype({"best_common": bool})


def _rank_common(
    arm_cell: pd.DataFrame,
    reference_cell: pd.DataFrame,
    common: list[float],
    metric: str,
    search_seeds: int | None,
) -> tuple[LrRanking, dict[float, tuple[float | None, float | None]]]:
    """The lr-ranking rule over the lrs both arms ran, on both arms' seeds at each lr
    together, and each arm's own score there."""
    sides = [_scored_seeds(cell, metric, search_seeds) for cell in (arm_cell, reference_cell)]
    expected = sum(count for _, count in sides)
    trials = [
        LrTrial(lr, lr, [*sides[0][0].get(lr, []), *sides[1][0].get(lr, [])]) for lr in common
    ]
    scores = {
        lr: tuple(
            trial_score(LrTrial(lr, lr, seeds.get(lr, [])), metric, max(count, 1))
            for seeds, count in sides
        )
        for lr in common
    }
    grid = sorted({*arm_cell["lr"], *reference_cell["lr"]})
    return rank_lr_trials(trials, metric, max(expected, 1), grid), scores  # type: ignore[return-value]


def _scored_seeds(
    cell: pd.DataFrame, metric: str, search_seeds: int | None
) -> tuple[dict[float, list[tuple[str, float | None]]], int]:
    """An arm's seeds per lr that its selection score rests on (its search runs there, all
    its runs if it ran that lr only in the final stage), and the seeds each lr should have
    (`search_seeds` for search runs when known, else the distinct seeds of its search runs,
    else of all its runs)."""
    searched = ranked_runs(cell)
    column = f"final_{metric_column(metric)}"
    seeds = {}
    for lr, at in cell.groupby("lr"):
        runs = latest_per_seed(ranked_runs(at) if lr in set(searched["lr"]) else at)
        values = runs[column] if column in runs else pd.Series(math.nan, index=runs.index)
        seeds[float(lr)] = [
            (str(status), None if pd.isna(value) else float(value))
            for status, value in zip(runs["status"], values, strict=True)
        ]
    declared = search_seeds if not searched.empty else None
    return seeds, expected_seeds(searched if not searched.empty else cell, declared)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _at_lr(
    arm_cell: pd.DataFrame, reference_cell: pd.DataFrame, lr: float
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Both arms' runs at one lr: the final-stage seeds if both ran it there, else the
    search seeds (finished runs, the latest per seed)."""
    arm_at, reference_at = (
        arm_cell[arm_cell["lr"] == lr],
        reference_cell[reference_cell["lr"] == lr],
    )
    final = (
        not _stage_runs(arm_at, final=True).empty
        and not _stage_runs(reference_at, final=True).empty
    )
    stage = Stage.FINAL if final else Stage.SEARCH
    return _stage_runs(arm_at, final), _stage_runs(reference_at, final), stage


def _stage_runs(runs: pd.DataFrame, final: bool) -> pd.DataFrame:
    """The finished seeded runs of the final stage (or of the others), the latest per seed."""
    in_stage = (runs["stage"] == Stage.FINAL) == final
    picked = runs[in_stage & (runs["status"] == "finished") & runs["seed"].notna()]
    return picked.sort_values("start_time", kind="stable").drop_duplicates("seed", keep="last")


def _seed_values(runs: pd.DataFrame) -> dict[tuple, list[float]]:
    """Final accuracies of the compared runs per (group, arm, budget)."""
    column = f"final_{ACCURACY}"
    return {
        key: part[column].dropna().tolist()
        for key, part in runs.groupby([*GROUP, "arm", "budget"], sort=True)
    }


def _budget_to_target(
    summary: pd.DataFrame, runs: pd.DataFrame, target: float | None, confidence: float
) -> pd.DataFrame:
    """Per group and arm: budget at which the mean final accuracy reaches the target, with
    bootstrap intervals over seeds (see `stats.budget_to_target_interval`)."""
    final = summary[(summary["measure"] == "final") & (summary["n"] > 0)]
    values = _seed_values(runs)
    rows = []
    for key, group in final.groupby(list(GROUP), sort=True):
        arms = {arm: part.sort_values("budget") for arm, part in group.groupby("arm")}
        seeds = {
            arm: {int(b): values[(*key, arm, b)] for b in part["budget"]}
            for arm, part in arms.items()
        }
        for arm, part in arms.items():
            reference = baseline_arm(arm)
            base = arms.get(reference)
            if base is None:
                continue
            if target is None:
                largest = base.iloc[-1]
                goal, source = float(largest["mean"]), f"{reference} @ {int(largest['budget'])}"
            else:
                goal, source = float(target), "fixed"
            reached = stats.budget_to_target(part["budget"].tolist(), part["mean"].tolist(), goal)
            base_reached = stats.budget_to_target(
                base["budget"].tolist(), base["mean"].tolist(), goal
            )
            interval = stats.budget_to_target_interval(
                None if arm == reference else seeds[arm], seeds[reference], target, confidence
            )
            rows.append(
                {
                    **dict(zip(GROUP, key, strict=True)),
                    "arm": arm,
                    "baseline": reference,
                    "target": goal,
                    "target_from": source,
                    "budget_to_target": reached,
                    "baseline_budget_to_target": base_reached,
                    "speedup": base_reached / reached if reached and base_reached else math.nan,
                    "reached": reached is not None,
                    "best_mean": float(part["mean"].max()),
                    "budgets": ",".join(str(int(b)) for b in part["budget"]),
                    "n_seeds": ",".join(str(int(n)) for n in part["n"]),
                    "budget_ci_low": interval.budget[0],
                    "budget_ci_high": interval.budget[1],
                    "baseline_budget_ci_low": interval.baseline_budget[0],
                    "baseline_budget_ci_high": interval.baseline_budget[1],
                    "speedup_ci_low": interval.speedup[0],
                    "speedup_ci_high": interval.speedup[1],
                    "reached_frac": interval.reached_frac,
                    "ci_method": interval.method,
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
        "n_seeds",
        "budget_ci_low",
        "budget_ci_high",
        "baseline_budget_ci_low",
        "baseline_budget_ci_high",
        "speedup_ci_low",
        "speedup_ci_high",
        "reached_frac",
        "ci_method",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    for name in ("budget_to_target", "baseline_budget_to_target"):
        frame[name] = frame[name].astype("Int64")
    return frame


_ACTIVITY_COLUMNS: list[str] = [
    *CELL,
    "seed",
    "run_id",
    "modifier",
    "metric",
    "mean_active_frac",
    "epochs",
]


def _activity(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per compared run and each of its modifiers with an activity metric: the mean over the
    run's epochs of the fraction of steps it changed (NaN, 0 epochs: never logged)."""
    per_run = {}
    for metric in ACTIVITY_METRICS.values():
        column = metric_column(metric)
        if column in epochs:
            per_run[metric] = epochs.groupby("run_id")[column].agg(["mean", "count"])
    rows = []
    for run in runs[[*CELL, "seed", "run_id"]].to_dict("records"):
        for modifier in run["arm"].split("+")[1:]:
            metric = ACTIVITY_METRICS.get(modifier)
            if metric is None:
                continue
            found = per_run.get(metric)
            logged = found is not None and run["run_id"] in found.index
            mean = float(found.at[run["run_id"], "mean"]) if logged else math.nan
            count = int(found.at[run["run_id"], "count"]) if logged else 0
            rows.append(
                {
                    **run,
                    "modifier": modifier,
                    "metric": metric,
                    "mean_active_frac": mean,
                    "epochs": count,
                }
            )
    return pd.DataFrame(rows, columns=_ACTIVITY_COLUMNS)


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
    """Lines for the report's method section: uncompared trials, cells per selection basis."""
    notes = []
    skipped = len(trials) - len(candidates)
    if skipped:
        notes.append(
            f"{skipped} trial(s) without an arm or budget tag are exported but not compared."
        )
    for basis, count in selection["basis"].value_counts().sort_index().items():
        notes.append(f"{count} cell(s) compared on: {basis}.")
    return notes
