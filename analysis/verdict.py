"""The primary verdict: for each declared contrast, one pooled answer and the speed-up.

* Pooled estimate, per primary contrast (arm − baseline, final test_acc1), scope and view:
  the mean over the scope's cells of each cell's mean paired difference, every cell weighted
  the same and every paired seed of every cell counted (an adaptive sweep's extra seeds in
  some cells included), with a t-interval clustered by seed: the CR2 cluster-robust variance
  and Bell-McCaffrey degrees of freedom (`analysis.stats.pooled_interval`, method
  `seed-clustered t (CR2, cell means)`), which is correct when cells have different numbers
  of seeds. With the same seeds in every cell it is exactly the Student t-interval over seeds
  of each seed's mean over the cells. `pairs` counts the paired seed results pooled, `seeds`
  the distinct seeds (the clusters), `cells` the cells. Scopes: all the contrast's cells, then each workload, dataset, model, sparsity and
  budget that takes more than one value. Views: matched lr (`best common lr`, the
  headline), best lr, and best lr cross-fitted (`analysis.compare`).
* Relative error change: the estimate over the baseline's mean error (100 − accuracy) in the
  same cells and seeds, negated (−10 % = a tenth fewer errors); its interval is the pooled
  interval divided by that same error (held fixed).
* Budget equivalence (`analysis.stats.budget_equivalence`), per primary contrast, group and
  view (matched lr and best lr): at each of the arm's budgets (and at the declared target),
  the baseline budget that reaches the arm's mean accuracy, interpolated on log budget, over
  the arm's budget, with a paired seed bootstrap interval.
* One sentence per contrast says what the headline numbers say: the pooled matched-lr
  estimate, its interval and n, whether the interval excludes 0, and how many cells of the
  primary family differ after Holm.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from analysis import stats
from analysis.compare import (
    BEST_COMMON_LR,
    BEST_LR,
    CONTRAST,
    GROUP,
    PRIMARY,
    VIEWS,
    Comparison,
)

HEADLINE_VIEW = BEST_COMMON_LR
VIEW_ORDER: tuple[str, ...] = (BEST_COMMON_LR, *(view for view in VIEWS if view != BEST_COMMON_LR))
"""The views in the order the verdict shows them, the headline first."""
VIEW_NAMES: dict[str, str] = {view: view for view in VIEWS} | {BEST_COMMON_LR: "matched lr"}
"""How the verdict names each view (the matched-lr view is `best common lr` in the tables)."""
EQUIVALENCE_VIEWS: tuple[str, ...] = (BEST_COMMON_LR, BEST_LR)
SCOPE_FACTORS: tuple[str, ...] = ("workload", "dataset", "model", "sparsity", "budget")
ALL = "all"
PRIMARY_COLUMNS: tuple[str, ...] = (
    "contrast",
    "arm",
    "baseline",
    "scope",
    "view",
    "estimate",
    "ci_low",
    "ci_high",
    "pairs",
    "seeds",
    "cells",
    "df",
    "method",
    "reference_mean",
    "relative_error_change",
    "relative_ci_low",
    "relative_ci_high",
)
EQUIVALENCE_COLUMNS: tuple[str, ...] = (
    "contrast",
    "arm",
    "baseline",
    *GROUP,
    "view",
    "probe",
    "level",
    "arm_budget",
    "baseline_budget",
    "speedup",
    "where",
    "ci_low",
    "ci_high",
    "n",
    "ci_method",
    "outside_frac",
)


@dataclass(frozen=True)
class Verdict:
    """The primary verdict's tables and sentences."""

    primary: pd.DataFrame
    """Pooled estimates (`PRIMARY_COLUMNS`): tables/primary.csv."""
    equivalence: pd.DataFrame
    """Budget equivalence (`EQUIVALENCE_COLUMNS`): tables/budget_equivalence.csv."""
    sentences: list[str]
    """One per primary contrast."""


def contrast_label(arm: str, baseline: str) -> str:
    """`arm − baseline`, as the tables name a primary contrast."""
    return f"{arm} − {baseline}"


def primary_verdict(comparison: Comparison) -> Verdict:
    """The verdict on the comparison's declared primary contrasts (module docstring)."""
    final = comparison.pairs[comparison.pairs["measure"] == "final"]
    rows, equivalence, sentences = [], [], []
    for arm, baseline in comparison.primary.contrasts or ():
        pairs = final[(final["arm"] == arm) & (final["reference"] == baseline)]
        pooled = _pooled(pairs, arm, baseline, comparison.confidence)
        rows += pooled
        equivalence += _equivalence(pairs, arm, baseline, comparison)
        sentences.append(_sentence(arm, baseline, pooled, comparison))
    return Verdict(
        primary=pd.DataFrame(rows, columns=list(PRIMARY_COLUMNS)),
        equivalence=pd.DataFrame(equivalence, columns=list(EQUIVALENCE_COLUMNS)),
        sentences=sentences,
    )


def _scopes(pairs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, pairs) of every scope (module docstring)."""
    scopes = [(ALL, pairs)]
    for factor in SCOPE_FACTORS:
        values = sorted(pairs[factor].unique())
        if len(values) > 1:
            scopes += [(f"{factor}={_value(v)}", pairs[pairs[factor] == v]) for v in values]
    return scopes


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def pooled_estimate(
    pairs: pd.DataFrame, confidence: float = stats.CONFIDENCE
) -> tuple[stats.PooledInterval, float]:
    """(pooled interval, reference mean) of the paired differences in `pairs` (columns: the
    `CONTRAST` cell columns, seed, arm_value, reference_value): every paired seed of every
    cell (`analysis.stats.pooled_interval`); the reference mean weighs cells the same, as the
    estimate does."""
    cells = [part for _, part in pairs.groupby(list(CONTRAST), sort=True)]
    differences = [
        dict(zip(part["seed"], part["arm_value"] - part["reference_value"], strict=True))
        for part in cells
    ]
    means = [float(part["reference_value"].mean()) for part in cells]
    reference = math.fsum(means) / len(means) if means else math.nan
    return stats.pooled_interval(differences, confidence), reference


def _pooled(
    pairs: pd.DataFrame, arm: str, baseline: str, confidence: float
) -> list[dict[str, object]]:
    rows = []
    for scope, part in _scopes(pairs):
        for view in VIEW_ORDER:
            in_view = part[part["view"] == view]
            if in_view.empty:
                continue
            pooled, reference = pooled_estimate(in_view, confidence)
            error = 100.0 - reference
            rows.append(
                {
                    "contrast": contrast_label(arm, baseline),
                    "arm": arm,
                    "baseline": baseline,
                    "scope": scope,
                    "view": view,
                    "estimate": pooled.estimate,
                    "ci_low": pooled.low,
                    "ci_high": pooled.high,
                    "pairs": pooled.pairs,
                    "seeds": pooled.seeds,
                    "cells": pooled.cells,
                    "df": pooled.df,
                    "method": pooled.method,
                    "reference_mean": reference,
                    "relative_error_change": _relative(pooled.estimate, error),
                    "relative_ci_low": _relative(pooled.high, error),
                    "relative_ci_high": _relative(pooled.low, error),
                }
            )
    return rows


def _relative(difference: float, error: float) -> float:
    """The relative change of the error (−difference / error), NaN for an error of 0."""
    return -difference / error if error > 0 else math.nan


def _equivalence(
    pairs: pd.DataFrame, arm: str, baseline: str, comparison: Comparison
) -> list[dict[str, object]]:
    rows = []
    for view in EQUIVALENCE_VIEWS:
        in_view = pairs[pairs["view"] == view]
        for key, group in in_view.groupby(list(GROUP), sort=True):
            sides = {
                side: {
                    int(budget): dict(zip(part["seed"], part[f"{side}_value"], strict=True))
                    for budget, part in group.groupby("budget")
                }
                for side in ("arm", "reference")
            }
            found = stats.budget_equivalence(
                sides["arm"], sides["reference"], comparison.primary.target, comparison.confidence
            )
            for result in found:
                rows.append(
                    {
                        "contrast": contrast_label(arm, baseline),
                        "arm": arm,
                        "baseline": baseline,
                        **dict(zip(GROUP, key, strict=True)),
                        "view": view,
                        "probe": result.probe,
                        "level": result.level,
                        "arm_budget": result.arm_budget,
                        "baseline_budget": result.baseline_budget,
                        "speedup": result.speedup,
                        "where": result.where,
                        "ci_low": result.interval.low,
                        "ci_high": result.interval.high,
                        "n": result.interval.n,
                        "ci_method": result.interval.method,
                        "outside_frac": result.outside_frac,
                    }
                )
    return rows


def _sentence(
    arm: str, baseline: str, pooled: list[dict[str, object]], comparison: Comparison
) -> str:
    """What the headline numbers of one primary contrast say, in one sentence."""
    headline = next(
        (r for r in pooled if r["scope"] == ALL and r["view"] == HEADLINE_VIEW),
        next((r for r in pooled if r["scope"] == ALL), None),
    )
    if headline is None:
        return f"{arm} vs {baseline}: no cell where both ran with paired seeds; no verdict."
    estimate, low, high = (float(headline[k]) for k in ("estimate", "ci_low", "ci_high"))  # type: ignore[arg-type]
    level = f"{comparison.confidence:.0%}"
    numbers = (
        f"{estimate:+.2f} points {_bounds(low, high)} ({level} seed-clustered t-interval, "
        f"{VIEW_NAMES[str(headline['view'])]}, pooled over {headline['cells']} cells: "
        f"{headline['pairs']} pairs of {headline['seeds']} seeds"
        f"{_relative_text(headline, baseline)})"
    )
    if math.isnan(low):
        reading = "too few seeds for an interval: no verdict"
    elif high < 0:
        reading = f"{arm} is less accurate than {baseline}: the interval excludes 0"
    elif low > 0:
        reading = f"{arm} is more accurate than {baseline}: the interval excludes 0"
    else:
        reading = (
            f"no difference resolved: the interval includes 0, so effects from {low:+.2f} to "
            f"{high:+.2f} points fit the data"
        )
    family = comparison.paired[
        (comparison.paired["family"] == PRIMARY) & (comparison.paired["view"] == headline["view"])
    ]
    cells = family[(family["arm"] == arm) & (family["reference"] == baseline)]
    significant = int(cells["significant"].sum())
    holm = (
        f"; {significant} of {len(cells)} cells differ after Holm within the primary family of "
        f"{len(family)} (α = {comparison.primary.alpha:g})"
    )
    return f"{arm} vs {baseline}: {numbers} — {reading}{holm}."


def _bounds(low: float, high: float) -> str:
    return "[—]" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"


def _relative_text(row: dict[str, object], baseline: str) -> str:
    change = float(row["relative_error_change"])  # type: ignore[arg-type]
    if math.isnan(change) or change == 0:
        return ""
    return f"; {abs(change):.1%} {'more' if change > 0 else 'fewer'} test errors than {baseline}"


def metric_key(arm: str, baseline: str, view: str, name: str) -> str:
    """An MLflow metric name for a pooled number of the report run (MLflow allows no `+`).

    Names sort the answer first in MLflow's charts and tables: the headline view under
    `answer.`, the other views under `primary.`, and the estimate itself before its interval
    and counts (`answer.rigl_sparseopt.vs.rigl.matched_lr`, then `….ci_high`, `….ci_low`,
    `….pairs`, `….seeds`)."""
    prefix = "answer" if view == HEADLINE_VIEW else "primary"
    suffix = "" if name == "estimate" else f".{name}"
    text = f"{prefix}.{arm}.vs.{baseline}.{VIEW_NAMES.get(view, view)}{suffix}"
    return re.sub(r"[^\w.\-/]", "_", text.replace(", ", "_"))


def verdict_metrics(verdict: Verdict) -> dict[str, float]:
    """The pooled estimates over all cells as report-run metrics (`metric_key`)."""
    metrics = {}
    for row in verdict.primary[verdict.primary["scope"] == ALL].to_dict("records"):
        for name in ("estimate", "ci_low", "ci_high", "pairs", "seeds", "relative_error_change"):
            value = float(row[name])
            if math.isfinite(value):
                metrics[metric_key(row["arm"], row["baseline"], row["view"], name)] = value
    return metrics
