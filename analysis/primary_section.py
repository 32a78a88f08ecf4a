"""The report's opening, the primary verdict, and its winner's-curse section, as blocks.

The numbers come from `analysis.verdict` (pooled estimates, budget equivalence, sentences)
and `analysis.crossfit` (optimism); this module only words and lays them out.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.compare import Comparison
from analysis.render import Block
from analysis.stats import BELOW_GRID, BEYOND_GRID
from analysis.text import FAMILY, family_label, signed
from analysis.verdict import HEADLINE_VIEW, VIEW_NAMES, VIEW_ORDER, Verdict


def primary_blocks(comparison: Comparison, verdict: Verdict, source: str) -> list[Block]:
    """The Primary verdict section: declaration, sentences, pooled estimates, equivalence."""
    declared = comparison.primary
    contrasts = ", ".join(f"{a} − {b}" for a, b in declared.contrasts or ()) or "none"
    level = f"{comparison.confidence:.0%}"
    lead = (
        f"Primary contrasts: {contrasts} ({source}); α = {declared.alpha:g}. Multiplicity is "
        "corrected (Holm) only within this family, per view; every other comparison in this "
        "report is exploratory and its p-value unadjusted. Numbers are final test_acc1 in "
        "points, arm − baseline; each pooled estimate is the mean over the scope's cells of "
        "each cell's mean paired difference (every cell weighted the same, every paired seed "
        f"of every cell counted), with the {level} t-interval clustered by seed (CR2 variance, "
        "Bell-McCaffrey degrees of freedom; with the same seeds in every cell, the t-interval "
        "over seeds of each seed's mean over the cells)."
    )
    blocks = [
        Block.heading(2, "Primary verdict"),
        Block.paragraph(lead),
        Block.bullets(verdict.sentences or ["No primary contrast ran: no verdict."]),
    ]
    return blocks + _pooled_blocks(verdict) + _equivalence_blocks(comparison, verdict)


def _pooled_blocks(verdict: Verdict) -> list[Block]:
    frame = verdict.primary
    if frame.empty:
        return []
    rows = []
    for (contrast, scope), part in frame.groupby(["contrast", "scope"], sort=False):
        by_view = {row["view"]: row for row in part.to_dict("records")}
        headline = by_view.get(HEADLINE_VIEW, part.iloc[0].to_dict())
        rows.append(
            [
                contrast,
                scope,
                str(headline["cells"]),
                *(_estimate(by_view[view]) if view in by_view else "—" for view in VIEW_ORDER),
                _relative(headline),
            ]
        )
    headers = [
        "contrast",
        "scope",
        "cells",
        *(VIEW_NAMES[view] for view in VIEW_ORDER),
        f"relative error change ({VIEW_NAMES[HEADLINE_VIEW]})",
    ]
    note = (
        "Pooled estimates per scope and view (tables/primary.csv). Matched lr: both arms at "
        "their best common lr in each cell; best lr: each arm at its own; cross-fitted: each "
        "seed at the lr chosen on the cell's other seeds (free of the in-sample choice's "
        "optimism). Relative error change: the estimate over the baseline's mean error (100 − "
        "accuracy), negated: +10% = a tenth more test errors than the baseline."
    )
    return [Block.heading(3, "Pooled estimates"), Block.paragraph(note), Block.table(headers, rows)]


def _estimate(row: dict) -> str:
    bounds = "—" if pd.isna(row["ci_low"]) else f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return f"{signed(row['estimate'])} {bounds} ({row['pairs']} pairs, {row['seeds']} seeds)"


def _relative(row: dict) -> str:
    change = row["relative_error_change"]
    if pd.isna(change):
        return "—"
    low, high = row["relative_ci_low"], row["relative_ci_high"]
    bounds = "" if pd.isna(low) else f" [{low:+.1%}, {high:+.1%}]"
    return f"{change:+.1%}{bounds}"


def _equivalence_blocks(comparison: Comparison, verdict: Verdict) -> list[Block]:
    frame = verdict.equivalence
    shown = frame[frame["view"] == HEADLINE_VIEW]
    if shown.empty:
        return []
    probes = list(dict.fromkeys(shown["probe"]))
    rows = []
    for (contrast, *group), part in shown.groupby(["contrast", *FAMILY, "sparsity"], sort=False):
        by_probe = {row["probe"]: row for row in part.to_dict("records")}
        label = f"{family_label(tuple(group[:4]))}, s={group[4]:g}"
        rows.append([contrast, label, *(_speedup(by_probe.get(p)) for p in probes)])
    note = (
        "The headline speed-up: at each of the arm's budgets, the budget the baseline needs to "
        "reach the arm's mean accuracy (its mean accuracy interpolated linearly in log budget "
        "between the budgets it ran), over the arm's budget; "
        f"{comparison.confidence:.0%} paired percentile bootstrap over seeds (a seed's runs at "
        "every budget of both arms resampled together; none below 8 seeds), matched lr (best "
        "lr in tables/budget_equivalence.csv). ≤: the baseline already reaches that accuracy "
        "at its smallest budget, so the true value may be smaller; 'baseline never reaches "
        "it': not within its largest budget. % outside: replicates whose crossing lies "
        "outside the budgets run (their bound is used)."
    )
    return [
        Block.heading(3, "Budget equivalence"),
        Block.paragraph(note),
        Block.table(["contrast", "group", *probes], rows),
    ]


def _speedup(row: dict | None) -> str:
    """One probe's speed-up with its interval, n and censoring."""
    if row is None:
        return ""
    value = row["speedup"]
    if row["where"] == BEYOND_GRID:
        text = "arm never reaches it" if value == 0 else "baseline never reaches it"
    else:
        text = f"{'≤ ' if row['where'] == BELOW_GRID else ''}{value:.2f}×"
    if pd.isna(row["ci_low"]):
        bounds = "—"
    else:
        bounds = f"[{_bound(row['ci_low'])}, {_bound(row['ci_high'])}]"
    outside = row["outside_frac"]
    extra = f", {outside:.0%} outside" if not pd.isna(outside) and outside > 0 else ""
    return f"{text} {bounds} ({row['ci_method']}, n={row['n']}{extra})"


def _bound(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.2f}"


def crossfit_blocks(comparison: Comparison) -> list[Block]:
    """The winner's-curse section: in-sample vs cross-fitted best-lr means per cell."""
    frame = comparison.optimism
    blocks = [Block.heading(2, "Winner's curse: cross-fitted lr choice")]
    if frame.empty:
        return [
            *blocks,
            Block.paragraph("No cell chose its lr by ranking its own seeds: nothing to cross-fit."),
        ]
    largest = frame.loc[frame["optimism"].idxmax()]
    where = (
        f"{family_label(tuple(largest[n] for n in FAMILY))} · {largest['arm']} "
        f"s={largest['sparsity']:g} e={largest['budget']}"
    )
    summary = (
        f"The in-sample best-lr view chooses each cell's lr on the same seeds whose test "
        f"accuracy it reports. Choosing each seed's lr on the cell's other seeds instead "
        f"(cross-fitting), the in-sample mean exceeds the cross-fitted one by "
        f"{frame['optimism'].mean():+.2f} points on average over {len(frame)} cells; largest "
        f"{largest['optimism']:+.2f} at {where}. Every cell with a nonzero difference is "
        "listed (all in tables/optimism.csv); the cross-fitted contrasts are the view 'best "
        "lr, cross-fitted' of the tables."
    )
    shown = frame[frame["optimism"] != 0].sort_values("optimism", ascending=False)
    rows = [
        [
            family_label(tuple(row[n] for n in FAMILY)),
            f"{row['sparsity']:g}",
            row["arm"],
            str(row["budget"]),
            str(row["n"]),
            f"{row['in_sample_mean']:.2f}",
            f"{row['cross_fitted_mean']:.2f}",
            signed(row["optimism"]),
            row["cross_fitted_lrs"].replace(",", ", "),
        ]
        for row in shown.to_dict("records")
    ]
    headers = [
        "group",
        "sparsity",
        "arm",
        "budget",
        "seeds",
        "in-sample mean",
        "cross-fitted mean",
        "optimism",
        "lrs chosen (cross-fitted)",
    ]
    return [*blocks, Block.paragraph(summary), Block.table(headers, rows)]
