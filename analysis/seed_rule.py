"""The adaptive-seeds rule: whether a primary cell pair needs more seeds, and why it stopped.

A sweep whose `grid.seeds` is a mapping (`initial`, `max`, `until_halfwidth`, `batch`) runs
every lr trial on the initial seeds. Once both cells of a primary contrast (arm and baseline
at the same workload, sparsity and budget) have ended every seed they have at the lr the lr
rule picks in each (`contract.selection`), the paired t-interval of arm − baseline, final
test_acc1, over the seeds both finished (`analysis.stats.t_interval`, the report's primary
interval) decides: half-width at most `until_halfwidth`: stop (`within`); else, with `max`
seeds already: stop (`max`); else `batch` more seeds for both cells (`more`; fewer if `max`
is nearer). The rule reads the interval's width only, never the estimate or its sign, so it
cannot steer a verdict. The searcher applies it; the report and `status` show its outcome.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis import stats
from analysis.compare import BEST_LR, CELL, GROUP, PRIMARY, Comparison
from analysis.render import Block

PAIRED_METRIC = "test_acc1"
"""What the rule pairs by seed: the report's primary measure (its final value)."""
WITHIN, AT_MAX, MORE = "within", "max", "more"
"""Values of `SeedDecision.reason`."""


@dataclass(frozen=True)
class SeedRule:
    """The adaptive-seeds settings (the spec's `grid.seeds` mapping)."""

    initial: int
    max: int
    until_halfwidth: float
    batch: int = 2


@dataclass(frozen=True)
class SeedDecision:
    """The rule's answer for one primary cell pair at one moment."""

    seeds: int
    """Seeds both cells have at their chosen lrs."""
    pairs: int
    """Seeds both cells finished there: the pairs the interval rests on."""
    halfwidth: float
    """Half-width of the paired t-interval (NaN below two pairs)."""
    add: int
    """Seeds to add to both cells now (0: the pair stops)."""
    reason: str
    """`within`, `max` or `more` (module docstring)."""

    def text(self, rule: SeedRule) -> str:
        """One line: seeds, half-width and why the pair stops or continues."""
        width = "no interval" if math.isnan(self.halfwidth) else f"±{self.halfwidth:.3g}"
        why = {
            WITHIN: f"stopped: {width} within ±{rule.until_halfwidth:g}",
            AT_MAX: f"stopped: max {rule.max} seeds reached ({width} > ±{rule.until_halfwidth:g})",
            MORE: f"+{self.add} seeds: {width} > ±{rule.until_halfwidth:g}",
        }[self.reason]
        return f"{self.seeds} seeds, {self.pairs} pairs, {why}"


def seed_decision(
    differences: Sequence[float], seeds: int, rule: SeedRule, confidence: float = stats.CONFIDENCE
) -> SeedDecision:
    """The rule (module docstring) for a pair with `seeds` seeds at its chosen lrs, of which
    the finished pairs give the paired `differences` (arm − baseline, final test_acc1)."""
    interval = stats.t_interval(differences, confidence)
    halfwidth = (interval.high - interval.low) / 2
    if halfwidth <= rule.until_halfwidth:
        return SeedDecision(seeds, interval.n, halfwidth, 0, WITHIN)
    if seeds >= rule.max:
        return SeedDecision(seeds, interval.n, halfwidth, 0, AT_MAX)
    return SeedDecision(seeds, interval.n, halfwidth, min(rule.batch, rule.max - seeds), MORE)


SEED_COLUMNS: tuple[str, ...] = (
    "workload",
    "dataset",
    "model",
    "method",
    "sparsity",
    "budget",
    "arm",
    "reference",
    "seeds_arm",
    "seeds_reference",
    "pairs",
    "halfwidth",
    "stop",
)


def rule_from_json(text: str | None) -> SeedRule | None:
    """The rule of the experiment tag `sparsesweep.seeds` (None: a fixed seed list)."""
    if not text:
        return None
    values = json.loads(text)
    return SeedRule(
        int(values["initial"]),
        int(values["max"]),
        float(values["until_halfwidth"]),
        int(values.get("batch", 2)),
    )


def seed_table(comparison: Comparison, rule: SeedRule | None) -> pd.DataFrame:
    """Per primary contrast cell (best-lr view): the seeds each arm ran at its chosen lr, the
    pairs, the paired interval's half-width and why the rule stopped there (`rule` None: a
    fixed seed list, `fixed`; `more` means the sweep stopped before the rule did)."""
    selection = comparison.selection.set_index(list(CELL))
    pairs = comparison.pairs
    rows = []
    paired = comparison.paired
    primary = paired[
        (paired["family"] == PRIMARY) & (paired["view"] == BEST_LR) & (paired["measure"] == "final")
    ]
    for row in primary.to_dict("records"):
        group = [row[name] for name in GROUP]
        seeds = [
            int(selection.loc[tuple([*group, arm, row["budget"]]), "runs"])
            for arm in (row["arm"], row["reference"])
        ]
        mine = pairs[
            (pairs["view"] == BEST_LR)
            & (pairs["measure"] == "final")
            & (pairs["arm"] == row["arm"])
            & (pairs["reference"] == row["reference"])
            & (pairs["budget"] == row["budget"])
        ]
        for name, value in zip(GROUP, group, strict=True):
            mine = mine[mine[name] == value]
        differences = (mine["arm_value"] - mine["reference_value"]).tolist()
        decision = seed_decision(differences, min(seeds), rule or SeedRule(2, 2, math.inf))
        rows.append(
            {
                **{name: row[name] for name in SEED_COLUMNS[:8]},
                "seeds_arm": seeds[0],
                "seeds_reference": seeds[1],
                "pairs": decision.pairs,
                "halfwidth": decision.halfwidth,
                "stop": decision.reason if rule is not None else "fixed",
            }
        )
    return pd.DataFrame(rows, columns=list(SEED_COLUMNS))


def seed_blocks(comparison: Comparison, rule: SeedRule | None) -> list[Block]:
    """The report's section on seeds: per primary cell, seeds run and why they stopped
    (tables/seeds.csv); nothing for a fixed seed list."""
    if rule is None:
        return []
    table = seed_table(comparison, rule)
    intro = (
        f"Adaptive seeds: every lr trial ran {rule.initial} seeds; each primary cell pair then "
        f"got {rule.batch} more at its chosen lrs while the paired 95% t-interval of final "
        f"test_acc1 was wider than ±{rule.until_halfwidth:g} points, up to {rule.max} seeds. "
        "The rule reads the interval's width only, never its estimate or sign. Stop: within "
        "(narrow enough), max (seeds exhausted), more (the sweep ended before the rule did)."
    )
    rows = [
        [
            f"{row['workload']} · {row['arm']} − {row['reference']}",
            f"{row['sparsity']:g}",
            str(row["budget"]),
            f"{row['seeds_arm']} / {row['seeds_reference']}",
            str(row["pairs"]),
            "-" if math.isnan(row["halfwidth"]) else f"±{row['halfwidth']:.2f}",
            row["stop"],
        ]
        for row in table.to_dict("records")
    ]
    headers = ["contrast", "sparsity", "budget", "seeds", "pairs", "interval", "stop"]
    return [
        Block.heading(2, "Seeds per primary cell"),
        Block.paragraph(intro),
        Block.table(headers, rows),
    ]
