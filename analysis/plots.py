"""The report's figures, each written as PNG and SVG.

Figures are built with matplotlib's object API (`Figure`, no pyplot state), which renders
PNG with the Agg backend whatever backend the session has selected.

* accuracy vs budget: one panel per setting (dataset/model) and sparsity, a line per sparse
  arm with its 95 % t-interval band over seeds (within [0, 100], n in the legend), the dense
  runs of the setting as a dashed reference line in every panel;
* accuracy vs epoch: one panel per group and budget, every compared run's curve (thin) and
  each arm's mean over seeds (thick);
* paired-difference forest plot: arm − reference with its paired t-interval, per contrast,
  group and budget, in every view (each arm at its best lr; both at the best common lr;
  cross-fitted);
* ITOP rate vs sparsity: one panel per (dataset/model/method) and budget, a line per arm;
* one curve run's accuracy vs budget (`budget_curve`): its points and their interval band, the
  figure the tracker logs on each curve run (`ANSWER_FIGURE`, as the report run's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib as mpl
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.compare import (
    ACCURACY,
    BEST_COMMON_LR,
    BEST_LR,
    CONTRAST,
    CROSS_FITTED,
    GROUP,
    Comparison,
)
from analysis.text import SETTING
from contract.names import Aggregate

FIGURES: tuple[str, ...] = (
    "accuracy_vs_budget",
    "accuracy_vs_epoch",
    "paired_differences",
    "itop_vs_sparsity",
)
ANSWER_FIGURE = "accuracy_vs_budget.png"
"""The accuracy-vs-budget figure's artifact on the report run and on each curve run (MLflow's
`log_figure`)."""
BUDGET_AXIS = "budget (epochs)"
ACCURACY_AXIS = "test top-1 (%)"
_CURVE_COLUMNS = {
    Aggregate.TEST_ACC1_MEAN: "mean",
    Aggregate.TEST_ACC1_CI_LOW: "ci_low",
    Aggregate.TEST_ACC1_CI_HIGH: "ci_high",
    Aggregate.TEST_ACC1_N: "n",
}
"""A curve run's metrics -> the columns `_band_line` draws."""
_PANEL = (4.2, 3.2)
_FAMILY = ("workload", "dataset", "model", "method")
_MAX_COLUMNS = 3


def write_figures(comparison: Comparison, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Draw every figure into `out_dir`; returns {figure: {"png": path, "svg": path}}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    painters: dict[str, Callable[[Comparison], Figure]] = {
        "accuracy_vs_budget": accuracy_vs_budget,
        "accuracy_vs_epoch": accuracy_vs_epoch,
        "paired_differences": paired_differences,
        "itop_vs_sparsity": itop_vs_sparsity,
    }
    if _itop_sparsities(comparison) == 1:
        del painters["itop_vs_sparsity"]  # one sparse sparsity: single points say nothing
    written = {}
    for name, paint in painters.items():
        figure = paint(comparison)
        written[name] = {}
        for kind in ("png", "svg"):
            path = out_dir / f"{name}.{kind}"
            figure.savefig(path, dpi=110, bbox_inches="tight", metadata=_metadata(kind))
            written[name][kind] = path
    return written


def _itop_sparsities(comparison: Comparison) -> int:
    """How many sparsities of sparse methods the ITOP figure would put on its x axis (dense,
    at s=0, is everywhere 1)."""
    runs = comparison.itop.dropna(subset=["final_itop_rate"])
    return runs[runs["method"] != "dense"]["sparsity"].nunique()


def _metadata(kind: str) -> dict[str, str | None]:
    """Drop creation dates so that the same data gives the same files."""
    return {"Date": None} if kind == "svg" else {}


def _label(key: tuple) -> str:
    workload, dataset, model, method = key[:4]
    prefix = "" if workload == "default" else f"{workload} "
    text = f"{prefix}{dataset}/{model}/{method}"
    return text if len(key) == 4 else f"{text} s={key[4]:g}"


def _grid(rows: int, cols: int) -> tuple[Figure, list[list[Axes]]]:
    rows, cols = max(rows, 1), max(cols, 1)
    figure = Figure(figsize=(_PANEL[0] * cols, _PANEL[1] * rows))
    return figure, figure.subplots(rows, cols, squeeze=False)


def _empty(message: str) -> Figure:
    figure, axes = _grid(1, 1)
    axes[0][0].text(0.5, 0.5, message, ha="center", va="center")
    axes[0][0].set_axis_off()
    return figure


def _colors(arms: list[str]) -> dict[str, str]:
    palette = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: palette[i % len(palette)] for i, arm in enumerate(sorted(arms))}


def accuracy_vs_budget(comparison: Comparison) -> Figure:
    """Mean final test accuracy per budget, a line and 95 % t-interval band (within [0, 100])
    per arm, one panel per setting and sparsity with every sparse method side by side, and
    the dense runs of the same setting as a dashed reference line with its band."""
    final = comparison.summary[
        (comparison.summary["measure"] == "final") & (comparison.summary["n"] > 0)
    ]
    if final.empty:
        return _empty("no finished runs yet")
    dense = final[final["method"] == "dense"]
    sparse = final[final["method"] != "dense"]
    shown = sparse if not sparse.empty else dense
    panels = sorted(shown.groupby([*SETTING, "sparsity"]).groups)
    colors = _colors(sparse["arm"].unique().tolist())
    cols = min(len(panels), _MAX_COLUMNS)
    figure, axes = _grid(math.ceil(len(panels) / cols), cols)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (*setting, sparsity) in zip(flat, panels, strict=False):
        reference = dense[_matches_setting(dense, tuple(setting))]
        for arm, line in reference.groupby("arm"):
            _band_line(ax, line, "black", f"{arm} (reference)", "s--")
        if shown is sparse:
            panel = sparse[
                _matches_setting(sparse, tuple(setting)) & (sparse["sparsity"] == sparsity)
            ]
            for arm, line in panel.groupby("arm"):
                _band_line(ax, line, colors[arm], arm, "o-")
        ax.set_title(_setting_label(tuple(setting), sparsity), fontsize=9)
        ax.set_xlabel(BUDGET_AXIS)
        ax.set_ylabel(ACCURACY_AXIS)
        ax.set_xticks(sorted(final[_matches_setting(final, tuple(setting))]["budget"].unique()))
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def budget_curve(points: Mapping[int, Mapping[str, float]], title: str) -> Figure:
    """One curve run's figure: its mean final accuracy per budget with the interval band, from
    {budget: {metric: value}} with the run's metric names (`Aggregate.TEST_ACC1_*`)."""
    rows = [
        {"budget": budget, **{column: values[key] for key, column in _CURVE_COLUMNS.items()}}
        for budget, values in sorted(points.items())
        if all(key in values for key in _CURVE_COLUMNS)
    ]
    if not rows:
        return _empty("no complete budget yet")
    figure, axes = _grid(1, 1)
    ax = axes[0][0]
    line = pd.DataFrame(rows)
    _band_line(ax, line, _colors([title])[title], title, "o-")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(BUDGET_AXIS)
    ax.set_ylabel(ACCURACY_AXIS)
    ax.set_xticks(line["budget"].tolist())
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _band_line(ax: Axes, line: pd.DataFrame, color: str, label: str, style: str) -> None:
    """One arm's mean per budget and its interval band; the label says its seeds (n)."""
    line = line.sort_values("budget")
    counts = sorted({int(n) for n in line["n"]})
    seeds = "/".join(str(n) for n in counts)
    ax.plot(line["budget"], line["mean"], style, color=color, label=f"{label} (n={seeds})")
    band = line.dropna(subset=["ci_low", "ci_high"])
    ax.fill_between(
        band["budget"],
        band["ci_low"].clip(0.0, 100.0),
        band["ci_high"].clip(0.0, 100.0),
        color=color,
        alpha=0.15 if color == "black" else 0.2,
    )


def _matches_setting(frame: pd.DataFrame, setting: tuple) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in zip(SETTING, setting, strict=True):
        mask &= frame[name] == value
    return mask


def _setting_label(setting: tuple, sparsity: float) -> str:
    workload, dataset, model = setting
    prefix = "" if workload == "default" else f"{workload} "
    return f"{prefix}{dataset}/{model} s={sparsity:g}"


def _matches(frame: pd.DataFrame, family: tuple) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in zip(_FAMILY, family, strict=True):
        mask &= frame[name] == value
    return mask


def accuracy_vs_epoch(comparison: Comparison) -> Figure:
    """Per group and budget, each compared run's test accuracy over epochs (thin) and the
    arm's mean over seeds (thick)."""
    curves, runs = comparison.curves, comparison.run_curves
    if curves.empty:
        return _empty("no per-epoch curves yet")
    groups = sorted(curves.groupby(list(GROUP)).groups)
    colors = _colors(curves["arm"].unique().tolist())
    in_groups = {
        group: curves[_matches(curves, group[:4]) & (curves["sparsity"] == group[4])]
        for group in groups
    }
    budgets = {group: sorted(frame["budget"].unique()) for group, frame in in_groups.items()}
    figure, axes = _grid(len(groups), max(len(values) for values in budgets.values()))
    for row, group in enumerate(groups):
        in_group = in_groups[group]
        run_group = runs[_matches(runs, group[:4]) & (runs["sparsity"] == group[4])]
        for ax in axes[row][len(budgets[group]) :]:
            ax.set_visible(False)  # this group ran fewer budgets than another
        for col, budget in enumerate(budgets[group]):
            ax = axes[row][col]
            panel = in_group[in_group["budget"] == budget]
            for (arm, _), line in run_group[run_group["budget"] == budget].groupby(
                ["arm", "run_id"]
            ):
                line = line.sort_values("epoch")
                ax.plot(line["epoch"], line[ACCURACY], color=colors[arm], linewidth=0.6, alpha=0.35)
            for arm, line in panel.groupby("arm"):
                line = line.sort_values("epoch")
                ax.plot(line["epoch"], line["mean"], color=colors[arm], linewidth=2, label=arm)
            ax.set_title(f"{_label(group)} e={budget}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"{ACCURACY} (%)")
            ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


_VIEW_STYLE: dict[str, tuple[float, str]] = {
    BEST_LR: (0.25, "tab:blue"),
    BEST_COMMON_LR: (0.0, "tab:orange"),
    CROSS_FITTED: (-0.25, "tab:green"),
}


def paired_differences(comparison: Comparison) -> Figure:
    """Forest plot of mean(arm − reference) of final accuracy with its paired t-interval, a
    line per view: each arm at its best lr, both arms at the best common lr, and each seed at
    the lr chosen on the other seeds (cross-fitted)."""
    rows = comparison.paired[
        (comparison.paired["measure"] == "final") & (comparison.paired["n_pairs"] > 0)
    ]
    if rows.empty:
        return _empty("no paired comparisons (no contrast with both arms finished yet)")
    keys = list(CONTRAST)
    contrasts = rows[keys].drop_duplicates().sort_values(keys).reset_index(drop=True)
    figure = Figure(figsize=(8.5, 1.1 + 0.45 * len(contrasts)))
    ax = figure.subplots()
    labels = []
    for index, contrast in contrasts.iterrows():
        y = len(contrasts) - 1 - index
        found = rows[(rows[keys] == contrast[keys]).all(axis=1)]
        counts = []
        for view, (offset, color) in _VIEW_STYLE.items():
            for _, row in found[found["view"] == view].iterrows():
                if pd.notna(row["ci_low"]):
                    ax.plot(
                        [row["ci_low"], row["ci_high"]], [y + offset] * 2, color=color, linewidth=2
                    )
                marker = "D" if row["significant"] else "o"
                ax.plot(row["mean_diff"], y + offset, marker, color=color)
                counts.append(f"{row['n_pairs']}")
        group = tuple(contrast[name] for name in GROUP)
        labels.append(
            f"{_label(group)} e={contrast['budget']} {contrast['arm']} − {contrast['reference']} "
            f"(n={'/'.join(counts)})"
        )
    for view, (_, color) in _VIEW_STYLE.items():
        ax.plot([], [], "o-", color=color, label=view)
    ax.set_yticks(range(len(contrasts)))
    ax.set_yticklabels(list(reversed(labels)), fontsize=7)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"final {ACCURACY}: arm − reference (percentage points), 95% paired t-interval")
    ax.set_title(
        f"diamond: Holm-adjusted Wilcoxon p < {comparison.primary.alpha:g} within the primary "
        "family",
        fontsize=8,
    )
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def itop_vs_sparsity(comparison: Comparison) -> Figure:
    """Mean final ITOP rate per sparsity, a line per arm, a panel per family and budget."""
    runs = comparison.itop.dropna(subset=["final_itop_rate"])
    if runs.empty:
        return _empty("no ITOP rates logged")
    means = runs.groupby([*GROUP, "arm", "budget"])["final_itop_rate"].mean().reset_index()
    families = sorted(means.groupby(list(_FAMILY)).groups)
    budgets = sorted(means["budget"].unique())
    colors = _colors(means["arm"].unique().tolist())
    figure, axes = _grid(len(families), len(budgets))
    for row, family in enumerate(families):
        for col, budget in enumerate(budgets):
            ax = axes[row][col]
            panel = means[_matches(means, family) & (means["budget"] == budget)]
            for arm, line in panel.groupby("arm"):
                line = line.sort_values("sparsity")
                ax.plot(
                    line["sparsity"], line["final_itop_rate"], "o-", color=colors[arm], label=arm
                )
            ax.set_title(f"{_label(family)} e={budget}", fontsize=9)
            ax.set_xlabel("sparsity")
            ax.set_ylabel("final ITOP rate")
            if not panel.empty:
                ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
