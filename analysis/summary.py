"""The report's answer in a few lines: the primary verdict, then what each verdict guard that
fired means and whether the sweep's design makes it fire. Written once for the report run's
description (`mlflow.note.content`), the terminal (`sparsesweep report`) and the report's
guard box, so the three always agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis.compare import Comparison
from analysis.guards import GUARD_HELP, GUARDS, design_expectation, guard_counts
from analysis.verdict import Verdict

NO_VERDICT = "No primary contrast ran: no verdict."
NO_GUARDS = "Verdict guards: none fired."


def guard_lines(guards: pd.DataFrame, comparison: Comparison) -> list[str]:
    """One line per guard that fired: how often, why it fires, and whether this design makes
    it fire (`analysis.guards.design_expectation`)."""
    counts = guard_counts(guards)
    return [
        f"{name} ×{counts[name]}: {GUARD_HELP[name]} — {design_expectation(name, comparison)}"
        for name in GUARDS
        if counts[name]
    ]


def guard_heading(guards: pd.DataFrame) -> str:
    """The lead line of the guard summary: how many warnings of how many kinds."""
    if guards.empty:
        return NO_GUARDS
    kinds = sum(1 for count in guard_counts(guards).values() if count)
    return f"Verdict guards: {len(guards)} warning(s) of {kinds} kind(s)"


def answer_text(verdict: Verdict, guards: pd.DataFrame, comparison: Comparison) -> str:
    """The primary verdict (one line per contrast) and the guard summary: plain text that
    reads as Markdown too (a lead line, then a list)."""
    lines = ["Primary verdict:", ""]
    lines += [f"- {sentence}" for sentence in verdict.sentences or [NO_VERDICT]]
    lines += ["", f"{guard_heading(guards)}{':' if not guards.empty else ''}"]
    lines += ["", *(f"- {line}" for line in guard_lines(guards, comparison))]
    return "\n".join(lines).rstrip() + "\n"


def report_params(comparison: Comparison, manifest: Mapping[str, Any]) -> dict[str, str]:
    """The sweep's factors and the report's declaration, as the report run's params."""
    runs = comparison.runs

    def values(column: str) -> str:
        found = sorted(runs[column].dropna().unique()) if column in runs else []
        return ",".join(f"{value:g}" if isinstance(value, float) else str(value) for value in found)

    declared = comparison.primary
    return {
        "workloads": values("workload"),
        "datasets": values("dataset"),
        "models": values("model"),
        "arms": values("arm"),
        "sparsities": values("sparsity"),
        "budgets": values("budget"),
        "seeds": values("seed"),
        "search_metric": str(manifest["search_metric"]),
        "primary": ",".join(f"{a}:{b}" for a, b in declared.contrasts or ()) or "none",
        "alpha": f"{declared.alpha:g}",
        "halfwidth": f"{declared.halfwidth:g}",
        "target": "baseline at its largest budget"
        if declared.target is None
        else f"{declared.target:g}",
    }
