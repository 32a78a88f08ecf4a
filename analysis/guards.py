"""Verdict guards: the confounds under which a comparison's numbers must not be read as is.

Each guard that fires is one row (`guard`, `scope`, `detail`) of the report's
`tables/guards.csv`, a line of the warning box at the top of the report, and a count in the
report run's tags (`guard_tags`). Scope names the cell or comparison, detail the numbers.

* `lr_at_edge`: a cell's chosen lr is the lowest or highest it ran (a one-value grid is always
  at its edge), so a better lr may lie outside the grid.
* `lr_tie`: several lrs tie for best (a cell's chosen lr, or a contrast's best common lr):
  the rule's tie-break (nearest the log-middle of the grid, then the smaller) chose.
* `few_selection_seeds`: a cell's lr was chosen among several on the mean of fewer than
  `MIN_SELECTION_SEEDS` seeds, so the choice itself is noisy.
* `lr_mismatch`: a best-lr comparison whose two arms ran at different lrs: the difference
  mixes the arms with the lrs (the matched-lr view compares them at one lr).
* `few_seeds`: a comparison whose paired differences spread so much that its 95 % t-interval
  is wider than ± the declared half-width (`analysis.primary`, default 1 point) in some view,
  or that has fewer than 2 paired seeds; the detail says how many seeds the observed spread
  needs for that half-width.
* `powerless_family`: a primary family (one view) so large for its seeds that Holm cannot
  reject anything: the smallest p-value the exact Wilcoxon test can give at its largest n,
  times the family size, exceeds alpha.
* `short_update_interval`: a sparse dynamic method (`DYNAMIC_METHODS`) whose topology update
  interval ΔT (tag `delta_t`) is shorter than one epoch of optimizer steps (tag
  `steps_per_epoch`).
* `inactive_ablation`: a modifier that changed fewer than `MIN_ACTIVE_FRAC` of the steps: its
  activity metric (`contract.names.ACTIVITY_METRICS`) averaged over each run's epochs, then
  over the cell's compared runs.
* `guard_not_evaluated`: a guard the data cannot decide (no `steps_per_epoch` tag because the
  trials never reported it, an activity metric never logged, a comparison without an lr, no
  primary contrast that ran).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd

from analysis import stats
from analysis.compare import (
    BASELINE,
    BEST_COMMON_LR,
    BEST_LR,
    CELL,
    CONTRAST,
    LR_EDGES,
    PRIMARY,
    VIEWS,
    Comparison,
)
from contract.arms import DYNAMIC_METHODS
from contract.names import Tag

GUARDS: tuple[str, ...] = (
    "lr_at_edge",
    "lr_tie",
    "few_selection_seeds",
    "lr_mismatch",
    "few_seeds",
    "powerless_family",
    "short_update_interval",
    "inactive_ablation",
    "guard_not_evaluated",
)
COLUMNS: tuple[str, ...] = ("guard", "scope", "detail")
MIN_SELECTION_SEEDS = 3
MIN_ACTIVE_FRAC = 0.01

GUARD_HELP: dict[str, str] = {
    "lr_at_edge": "the chosen lr is the lowest or highest its cell ran (or the only one): "
    "a better lr may lie outside the grid",
    "lr_tie": "several lrs tie for best: the tie-break (the lr nearest the log-middle of the "
    "grid, then the smaller) chose, not the data",
    "few_selection_seeds": f"an lr chosen on the mean of fewer than {MIN_SELECTION_SEEDS} "
    "seeds: the choice itself is noise-prone",
    "lr_mismatch": "a best-lr comparison whose arms ran at different lrs: the difference mixes "
    "the arms with the lrs; read the matched-lr view beside it",
    "few_seeds": "the paired differences spread too much for the declared half-width at "
    "these seeds: the detail says how many seeds the spread needs",
    "powerless_family": "the primary family is too large for its seeds: Holm cannot reject "
    "anything whatever the data; read the pooled estimate",
    "short_update_interval": "ΔT is shorter than one epoch of optimizer steps",
    "inactive_ablation": f"a modifier changed fewer than {MIN_ACTIVE_FRAC:.0%} of the steps: "
    "that ablation barely ran",
    "guard_not_evaluated": "a guard the data could not decide",
}


def design_expectation(name: str, comparison: Comparison) -> str:
    """Whether guard `name` fires by construction of the sweep's design (its lr grid, seeds,
    family size, ΔT) rather than because of what the runs measured, and why."""
    selection = comparison.selection
    if name == "lr_at_edge":
        lrs = selection["lrs_searched"].fillna("").map(lambda text: len(text.split(",")))
        widest = int(lrs.max()) if len(lrs) else 0
        if widest <= 2:
            return (
                f"expected for this design: with {widest} lr{'s' if widest > 1 else ''} per "
                "cell the chosen lr is always at an edge; a grid of 3 or more lrs can say "
                "whether it is"
            )
        return "not by construction: some cells ran 3 or more lrs and chose an edge"
    if name == "few_selection_seeds":
        seeds = selection["selection_seeds"].dropna()
        if len(seeds) and seeds.max() < MIN_SELECTION_SEEDS:
            return (
                f"expected for this design: it runs {int(seeds.max())} seed(s) per lr trial "
                f"(fewer than {MIN_SELECTION_SEEDS})"
            )
        return "not by construction: some lrs were chosen on fewer seeds than others"
    if name == "powerless_family":
        return "expected for this design: it follows from the family size and the seeds alone"
    if name == "short_update_interval":
        return "expected for this design: it follows from the spec's ΔT (delta_t)"
    if name == "guard_not_evaluated":
        return "not a finding: the runs lack what a guard needs (the detail says what)"
    return "not by construction: the measured runs made it fire"


def find_guards(comparison: Comparison) -> pd.DataFrame:
    """Every guard that fires on a comparison, one row each (`COLUMNS`), in `GUARDS` order."""
    rows = [
        *_lr_at_edge(comparison.selection),
        *_lr_tie(comparison),
        *_few_selection_seeds(comparison.selection),
        *_lr_mismatch(comparison.paired),
        *_few_seeds(comparison),
        *_powerless_family(comparison),
        *_short_update_interval(comparison.runs),
        *_inactive_ablation(comparison.activity),
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    order = frame["guard"].map({name: i for i, name in enumerate(GUARDS)})
    return frame.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")


def guard_counts(guards: pd.DataFrame) -> dict[str, int]:
    """How many rows of each guard fired (every guard listed, 0 included)."""
    return {name: int((guards["guard"] == name).sum()) for name in GUARDS}


def guard_tags(guards: pd.DataFrame) -> dict[str, str]:
    """The report run's guard tags: the list of guards that fired and a count per guard."""
    counts = guard_counts(guards)
    fired = [name for name in GUARDS if counts[name]]
    return {
        Tag.GUARDS: ",".join(fired) or "none",
        **{f"{Tag.GUARD_PREFIX}{name}": str(count) for name, count in counts.items()},
    }


def _row(guard: str, scope: str, detail: str) -> dict[str, str]:
    return {"guard": guard, "scope": scope, "detail": detail}


def group_label(row: Mapping[str, Any]) -> str:
    """`dataset/model/method`, prefixed by the workload unless it is `default`."""
    prefix = "" if row["workload"] == "default" else f"{row['workload']} · "
    return f"{prefix}{row['dataset']}/{row['model']}/{row['method']}"


def cell_scope(row: Mapping[str, Any]) -> str:
    """A readable cell: `digits/small_cnn/rigl · rigl+sparseopt s=0.95 e=100`."""
    return f"{group_label(row)} · {row['arm']} s={row['sparsity']:g} e={row['budget']}"


def comparison_scope(row: Mapping[str, Any]) -> str:
    """A readable comparison: `digits/small_cnn/rigl s=0.95 e=100 · A vs B (baseline)`."""
    kind = BASELINE if row["contrast"] == BASELINE else f"ablation: {row['contrast']}"
    return (
        f"{group_label(row)} s={row['sparsity']:g} e={row['budget']} · "
        f"{row['arm']} vs {row['reference']} ({kind})"
    )


def _lr_at_edge(selection: pd.DataFrame) -> Iterator[dict[str, str]]:
    """Cells whose chosen lr is at the edge of the lrs they ran."""
    for row in selection.to_dict("records"):
        position, searched = row["lr_position"], row["lrs_searched"]
        if position in LR_EDGES:
            detail = (
                f"chosen lr {row['lr']:g} is the only lr run"
                if position == "only"
                else f"chosen lr {row['lr']:g} is the {position} of the "
                f"{len(searched.split(','))} lrs run ({searched.replace(',', ', ')})"
            )
            yield _row("lr_at_edge", cell_scope(row), detail)
        elif not position and row["runs"]:
            yield _row(
                "guard_not_evaluated",
                cell_scope(row),
                f"lr_at_edge: the compared runs carry no single lr (lrs run: {searched or 'none'})",
            )


def _few_selection_seeds(selection: pd.DataFrame) -> Iterator[dict[str, str]]:
    """Cells whose lr was chosen among several on fewer than MIN_SELECTION_SEEDS seeds."""
    for row in selection.to_dict("records"):
        seeds = row["selection_seeds"]
        if pd.isna(seeds) or seeds >= MIN_SELECTION_SEEDS:
            continue
        yield _row(
            "few_selection_seeds",
            cell_scope(row),
            f"lr {row['lr']:g} chosen among {row['lr_trials']} lr trials on the mean of "
            f"{seeds} seed(s) (< {MIN_SELECTION_SEEDS})",
        )


def _lr_mismatch(paired: pd.DataFrame) -> Iterator[dict[str, str]]:
    """Best-lr comparisons whose arms ran at different lrs (final measure)."""
    final = paired[paired["measure"] == "final"]
    common = {
        tuple(row[name] for name in CONTRAST): row
        for row in final[final["view"] == BEST_COMMON_LR].to_dict("records")
    }
    for row in final[final["view"] == BEST_LR].to_dict("records"):
        lr_arm, lr_reference = row["lr_arm"], row["lr_reference"]
        if pd.isna(lr_arm) or pd.isna(lr_reference):
            yield _row(
                "guard_not_evaluated",
                comparison_scope(row),
                "lr_mismatch: an arm's compared runs carry no single lr",
            )
            continue
        if lr_arm == lr_reference:
            continue
        matched = common.get(tuple(row[name] for name in CONTRAST))
        at_common = (
            f"at the best common lr {matched['lr_arm']:g}: {_difference(matched)}"
            if matched is not None
            else "no lr was run by both arms"
        )
        yield _row(
            "lr_mismatch",
            comparison_scope(row),
            f"best lr: {row['arm']} at lr {lr_arm:g}, {row['reference']} at lr "
            f"{lr_reference:g}: {_difference(row)}; {at_common}",
        )


def _difference(row: Mapping[str, Any]) -> str:
    """A comparison's mean difference and n, e.g. `+1.33 pp (n=5)`."""
    if not row["n_pairs"]:
        return "no seed in common"
    return f"{row['mean_diff']:+.2f} pp (n={row['n_pairs']})"


def _lr_tie(comparison: Comparison) -> Iterator[dict[str, str]]:
    """Cells whose chosen lr tied with others, and contrasts whose best common lr did."""
    metric = comparison.metric
    for row in comparison.selection.to_dict("records"):
        if not row["tied_lrs"]:
            continue
        lrs = row["tied_lrs"].split(",")
        yield _row(
            "lr_tie",
            cell_scope(row),
            f"lrs {', '.join(sorted(lrs, key=float))} tie on mean {metric} "
            f"{row['selection_score']:.4g} ({row['selection_seeds']} seeds); chose {lrs[0]} "
            f"(lrs run: {row['lrs_searched'].replace(',', ', ')})",
        )
    matched = comparison.matched
    chosen = matched[matched["best_common"] & (matched["measure"] == "final")]
    for row in chosen[chosen["tied_lrs"] != ""].to_dict("records"):
        lrs = row["tied_lrs"].split(",")
        yield _row(
            "lr_tie",
            comparison_scope(row),
            f"best common lr: lrs {', '.join(sorted(lrs, key=float))} tie on both arms' mean "
            f"{metric} {row['common_score']:.4g}; chose {lrs[0]}: {_difference(row)}",
        )


def _few_seeds(comparison: Comparison) -> Iterator[dict[str, str]]:
    """Comparisons whose t-interval is wider than ± the declared half-width in some view at
    their seeds (final measure), with the seeds the observed spread needs."""
    halfwidth = comparison.primary.halfwidth
    final = comparison.paired[comparison.paired["measure"] == "final"]
    for _, part in final.groupby(list(CONTRAST), sort=False):
        views = [row for view in VIEWS for row in part[part["view"] == view].to_dict("records")]
        needs = {
            row["view"]: stats.seeds_for_halfwidth(
                row["std_diff"], halfwidth, comparison.confidence
            )
            for row in views
            if row["n_pairs"] >= 2
        }
        short = [row for row in views if row["n_pairs"] < 2]
        wide = [
            row for row in views if row["view"] in needs and needs[row["view"]] > row["n_pairs"]
        ]
        if not short and not wide:
            continue
        seeds = ", ".join(f"{row['view']}: {row['n_pairs']}" for row in views)
        if wide:
            worst = max(wide, key=lambda row: needs[row["view"]])
            need = (
                f"the spread of {worst['view']} (sd of differences {worst['std_diff']:.2f} pp) "
                f"needs {needs[worst['view']]} seeds for a ±{halfwidth:g}-pp "
                f"{comparison.confidence:.0%} t-interval"
            )
        else:
            need = "fewer than 2 paired seeds: no spread to judge"
        yield _row("few_seeds", comparison_scope(part.iloc[0]), f"paired seeds {seeds}; {need}")


def _powerless_family(comparison: Comparison) -> Iterator[dict[str, str]]:
    """Primary families (per view) whose Holm correction cannot reject anything at their n."""
    alpha = comparison.primary.alpha
    family = comparison.paired[comparison.paired["family"] == PRIMARY]
    if family.empty:
        declared = ", ".join(f"{a}:{b}" for a, b in comparison.primary.contrasts or ()) or "none"
        yield _row(
            "guard_not_evaluated",
            "primary family",
            f"powerless_family: no primary contrast has both arms in one cell (declared: "
            f"{declared})",
        )
        return
    for view in VIEWS:
        part = family[family["view"] == view]
        if part.empty:
            continue
        size, n = len(part), int(part["n_pairs"].max())
        smallest = stats.min_wilcoxon_p(n)
        if size * smallest <= alpha:
            continue
        contrasts = ", ".join(
            sorted({f"{a} − {b}" for a, b in zip(part["arm"], part["reference"], strict=True)})
        )
        yield _row(
            "powerless_family",
            f"primary family, {view} ({contrasts})",
            f"{size} comparisons of at most {n} paired seeds: the smallest exact Wilcoxon p is "
            f"2/2^{n} = {smallest:.3g}, × {size} = {size * smallest:.3g} > α = {alpha:g}, so "
            "Holm rejects none whatever the data (declare fewer contrasts or run more seeds)",
        )


def _short_update_interval(runs: pd.DataFrame) -> Iterator[dict[str, str]]:
    """Sparse dynamic groups whose ΔT is shorter than an epoch, or cannot be judged."""
    dynamic = runs[runs["method"].isin(DYNAMIC_METHODS)]
    for _, group in dynamic.groupby(["workload", "dataset", "model", "method"], sort=True):
        first = group.iloc[0]
        arms = ", ".join(sorted(group["arm"].unique()))
        scope = f"{group_label(first)} · {arms}"
        known = group[group["delta_t"].notna() & group["steps_per_epoch"].notna()]
        if len(known) < len(group):
            missing = [
                f"{int(group[name].isna().sum())} of {len(group)} runs have no {name} tag"
                for name in ("delta_t", "steps_per_epoch")
                if group[name].isna().any()
            ]
            yield _row(
                "guard_not_evaluated",
                scope,
                f"short_update_interval: {'; '.join(missing)} (steps_per_epoch is tagged "
                "once a trial reports)",
            )
        short = known[known["delta_t"] < known["steps_per_epoch"]]
        for (delta_t, steps), part in short.groupby(["delta_t", "steps_per_epoch"], sort=True):
            cells = part.drop_duplicates(list(CELL))
            yield _row(
                "short_update_interval",
                scope,
                f"ΔT = {int(delta_t)} steps < {int(steps)} steps per epoch "
                f"({delta_t / steps:.2f} epoch) in {len(part)} runs of {len(cells)} cells",
            )


def _inactive_ablation(activity: pd.DataFrame) -> Iterator[dict[str, str]]:
    """Cells whose modifier changed fewer than MIN_ACTIVE_FRAC of the steps on average."""
    for _, part in activity.groupby([*CELL, "modifier", "metric"], sort=True):
        first = part.iloc[0]
        logged = part["mean_active_frac"].dropna()
        if logged.empty:
            yield _row(
                "guard_not_evaluated",
                cell_scope(first),
                f"inactive_ablation: {first['metric']} was not logged by its {len(part)} runs",
            )
            continue
        mean = float(logged.mean())
        if mean >= MIN_ACTIVE_FRAC:
            continue
        yield _row(
            "inactive_ablation",
            cell_scope(first),
            f"{first['modifier']} changed {mean:.2%} of steps (< {MIN_ACTIVE_FRAC:.0%}): "
            f"{first['metric']} averaged over each run's epochs, mean of {len(logged)} runs "
            f"(range {logged.min():.2%}–{logged.max():.2%})",
        )
