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

import math
from collections.abc import Sequence
from dataclasses import dataclass

from analysis import stats

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
