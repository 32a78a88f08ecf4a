"""How the report writes numbers: one formatting rule per kind of number, shared by its sections.

Missing values print as `—`; every interval prints with its method and n; budgets and
speed-ups that were never reached say so instead of printing 0 or inf.
"""

from __future__ import annotations

import math

import pandas as pd

FAMILY: tuple[str, ...] = ("workload", "dataset", "model", "method")
"""The columns a report groups its tables by (a DST method on one dataset and model)."""


SETTING: tuple[str, ...] = ("workload", "dataset", "model")
"""The columns of a setting: what every arm, dense included, is compared within."""


def setting_label(key: tuple) -> str:
    """`dataset / model`, prefixed by the workload unless it is `default`."""
    workload, dataset, model = key
    prefix = "" if workload == "default" else f"{workload} · "
    return f"{prefix}{dataset} / {model}"


def fmt(value: float | None, digits: int = 2) -> str:
    """A plain number (`—` when missing)."""
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def p_value(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3g}"


def lr_text(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.4g}"


def signed(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:+.2f}"


def interval(low: float, high: float, method: str, n: int) -> str:
    """An interval with its method and n beside it: `[1.55, 2.93] (t, n=5)`."""
    bounds = "—" if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"
    return f"{bounds} ({method}, n={n})"


def family_label(key: tuple) -> str:
    """`dataset / model / method`, prefixed by the workload unless it is `default`."""
    workload, dataset, model, method = key
    prefix = "" if workload == "default" else f"{workload} · "
    return f"{prefix}{dataset} / {model} / {method}"


def budget_value(value: float) -> str:
    """A budget to target (`not reached` for inf)."""
    if pd.isna(value):
        return "—"
    return "not reached" if math.isinf(value) else str(int(value))


def budget_range(low: float, high: float) -> str:
    return f"[{budget_value(low)}, {budget_value(high)}]"


def speedup_value(value: float) -> str:
    """A speed-up bound: 0 means the arm never reached the target, inf the baseline never did."""
    if pd.isna(value):
        return "—"
    if value == 0:
        return "not reached"
    return "baseline not reached" if math.isinf(value) else f"{value:.2f}×"


def speedup_range(low: float, high: float) -> str:
    """A speed-up interval; `not reached` when the arm reaches the target in neither bound."""
    if low == 0 and high == 0:
        return "not reached"
    return f"[{speedup_value(low)}, {speedup_value(high)}]"
