"""The sweep report: export, compare, draw, and write Markdown + self-contained HTML.

Output directory::

    report.md, report.html        the report (the HTML embeds its figures as base64 PNG)
    plots/<figure>.png|.svg       the figures (see `analysis.plots`)
    tables/<table>.csv            every comparison table, ITOP and sparsity per run included
    data/                         the Parquet export (see `analysis.export`)

The directory is then logged to MLflow as the artifacts of a run tagged
`sparsesweep.role=report` in the sweep's experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis.compare import CELL, Comparison, compare, is_sparseopt_arm
from analysis.errors import AnalysisError
from analysis.export import ExportResult, export_experiment
from analysis.fetch import Reader
from analysis.plots import write_figures
from analysis.render import Block, Document, render_html, render_markdown
from analysis.schema import STATUSES
from contract.names import Role, Tag

_FAMILY = ("workload", "dataset", "model", "method")
_FIGURE_TITLES = {
    "accuracy_vs_budget": "Final test accuracy vs epoch budget (95% bootstrap CI over seeds)",
    "accuracy_vs_epoch": "Test accuracy vs epoch, per budget: each compared run (thin) and the mean over seeds (thick)",
    "paired_differences": "Paired differences arm − baseline (final test accuracy)",
    "itop_vs_sparsity": "ITOP rate vs sparsity (final epoch, mean over seeds)",
}
_MAX_LISTED_RUNS = 100


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it says about completeness."""

    out_dir: Path
    markdown: Path
    html: Path
    partial: bool
    mlflow_run_id: str | None


def write_report(
    tracking_uri: str,
    experiment: str,
    out_dir: Path | str,
    target: float | None = None,
    log_to_mlflow: bool = True,
    reader: Reader = "auto",
) -> ReportResult:
    """Export the sweep, compare its arms, write the report, and log it to MLflow."""
    out = Path(out_dir)
    exported = export_experiment(tracking_uri, experiment, out / "data", reader=reader)
    trials = exported.tables.trials.to_pandas()
    epochs = exported.tables.epochs.to_pandas()
    comparison = compare(trials, epochs, target=target, metric=exported.manifest["search_metric"])
    figures = write_figures(comparison, out / "plots")
    tables = _write_tables(comparison, out / "tables")
    document = build_document(comparison, trials, exported, figures, tables, out)
    markdown = out / "report.md"
    markdown.write_text(render_markdown(document))
    html = out / "report.html"
    html.write_text(render_html(document, out))
    run_id = None
    if log_to_mlflow:
        run_id = log_report(
            tracking_uri, exported.manifest["experiment_id"], out, comparison.partial
        )
    return ReportResult(out, markdown, html, comparison.partial, run_id)


def log_report(tracking_uri: str, experiment_id: str, out_dir: Path, partial: bool) -> str:
    """Log `out_dir` as the artifacts of a new `sparsesweep.role=report` run; its run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    tags = {Tag.ROLE: Role.REPORT, Tag.PARTIAL: str(partial).lower()}
    run = client.create_run(experiment_id, run_name=f"report {stamp}", tags=tags)
    try:
        client.log_artifacts(run.info.run_id, str(out_dir))
    except Exception as error:  # any artifact-store failure: the local report still stands
        client.set_terminated(run.info.run_id, "FAILED")
        raise AnalysisError(
            f"report written to {out_dir}, but logging it to MLflow failed: {error}"
        ) from error
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _write_tables(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "summary": comparison.summary,
        "paired_differences": comparison.paired,
        "budget_to_target": comparison.budget_to_target,
        "itop_sparsity_per_run": comparison.itop,
        "lr_selection": comparison.selection,
        "run_status": comparison.status,
        "curves": comparison.curves,
    }
    paths = {}
    for name, frame in frames.items():
        paths[name] = out_dir / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths


def _fmt(value: float, digits: int = 2) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3g}"


def _family_label(key: tuple) -> str:
    workload, dataset, model, method = key
    prefix = "" if workload == "default" else f"{workload} · "
    return f"{prefix}{dataset} / {model} / {method}"


def _arm_order(arms: list[str]) -> list[str]:
    """Baselines first, then the arms that add modifiers, alphabetically within each."""
    return sorted(arms, key=lambda arm: (is_sparseopt_arm(arm), arm.count("+"), arm))


def _cell_text(row: pd.Series) -> str:
    if row["n"] == 0:
        text = "—"
    elif row["n"] == 1:
        text = f"{row['mean']:.2f} (n=1)"
    else:
        text = (
            f"{row['mean']:.2f} ± {row['std']:.2f} "
            f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}] n={row['n']}"
        )
    return f"{text} †" if row["excluded"] else text


def build_document(
    comparison: Comparison,
    trials: pd.DataFrame,
    exported: ExportResult,
    figures: dict[str, dict[str, Path]],
    tables: dict[str, Path],
    out_dir: Path,
) -> Document:
    """The report as renderer-neutral blocks (see `analysis.render`)."""
    manifest = exported.manifest
    blocks: list[Block] = [Block.heading(1, f"Sweep report: {manifest['experiment']}")]
    counts = trials["status"].value_counts()
    if comparison.partial:
        blocks.append(
            Block.banner(
                f"PARTIAL REPORT — the sweep is still running: {counts.get('running', 0)} of "
                f"{len(trials)} trials are running. Numbers below use finished runs only and "
                "will change."
            )
        )
    status_text = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES if counts.get(s, 0))
    blocks.append(
        Block.paragraph(
            f"Generated {manifest['exported_at']} from {manifest['tracking_uri']} "
            f"(experiment id {manifest['experiment_id']}). Trials: {len(trials)} ({status_text})."
        )
    )
    blocks += _method_section(comparison)
    blocks += _verdict_section(comparison)
    blocks += _accuracy_section(comparison)
    blocks += _paired_section(comparison)
    blocks += _target_section(comparison)
    blocks += _itop_section(comparison)
    blocks += _selection_section(comparison)
    blocks += _status_section(comparison, trials)
    blocks.append(Block.heading(2, "Figures"))
    for name, paths in figures.items():
        blocks.append(
            Block.image(
                _FIGURE_TITLES[name],
                paths["png"].relative_to(out_dir).as_posix(),
                paths["svg"].relative_to(out_dir).as_posix(),
            )
        )
    blocks.append(Block.heading(2, "Files"))
    files = [
        "data/trials/ and data/epochs/: the Parquet export, partitioned "
        "method_<method>/sparsity_<sparsity>/ (schema in data/manifest.json and analysis/schema.py)",
        *(
            f"{path.relative_to(out_dir).as_posix()}: {name.replace('_', ' ')}"
            for name, path in tables.items()
        ),
    ]
    blocks.append(Block.bullets(files))
    return Document(title=f"Sweep report: {manifest['experiment']}", blocks=blocks)


def _method_section(comparison: Comparison) -> list[Block]:
    return [
        Block.heading(2, "How these numbers were made"),
        Block.bullets(
            [
                "Accuracy is test_acc1 (%) of each epoch budget's own run: at its final epoch "
                "(final) and its best epoch (best).",
                "Per cell (arm × sparsity × budget): stage=final runs if any; otherwise, with "
                f"an lr search, the lr trial with the best mean over seeds of {comparison.metric} "
                "(the sweep's search metric) at the final epoch, a diverged seed scoring the "
                "worst value (the searcher's own rule); otherwise the single lr.",
                *comparison.notes,
                "Only finished runs enter the statistics (latest run per seed); † marks cells "
                "with chosen runs that are running, stopped, failed or diverged.",
                "Mean ± std (ddof=1) over seeds; [low, high] is the 95% percentile bootstrap "
                "CI of the mean (scipy.stats.bootstrap, 9,999 resamples, fixed seed).",
                "Paired differences: arm − baseline matched by seed (baseline = arm without "
                "sparseopt/corrected); paired bootstrap CI; two-sided Wilcoxon signed-rank "
                "p-value; Holm correction over all comparisons of the same measure "
                "(significant: Holm-adjusted p < 0.05). With n seeds the smallest possible "
                "Wilcoxon p is 2/2^n (0.0625 for 5 seeds).",
                "Budget to target: smallest budget whose mean final accuracy reaches the "
                "target (default: the baseline's mean at its largest budget); speedup = "
                "baseline budget / arm budget.",
            ]
        ),
    ]


def _verdict_section(comparison: Comparison) -> list[Block]:
    items = []
    paired = comparison.paired[comparison.paired["measure"] == "final"]
    for row in comparison.budget_to_target.itertuples(index=False):
        if not is_sparseopt_arm(row.arm):
            continue
        where = f"{_family_label(tuple(getattr(row, n) for n in _FAMILY))}, s={row.sparsity:g}"
        if row.reached and not pd.isna(row.speedup):
            reach = (
                f"reaches {row.target:.2f}% ({row.target_from}) at {row.budget_to_target} "
                f"epochs vs {row.baseline_budget_to_target} for {row.baseline} "
                f"(speedup {row.speedup:.2f}×)"
            )
        else:
            reach = f"does not reach {row.target:.2f}% ({row.target_from}); best mean {row.best_mean:.2f}%"
        mask = (paired["arm"] == row.arm) & (paired["sparsity"] == row.sparsity)
        for name in _FAMILY:
            mask &= paired[name] == getattr(row, name)
        gains = [
            f"e={p.budget}: {p.mean_diff:+.2f} pp [{_fmt(p.ci_low)}, {_fmt(p.ci_high)}], "
            f"Holm p={_p(p.p_holm)}{' *' if p.significant else ''}"
            for p in paired[mask].itertuples(index=False)
        ]
        gain_text = "; ".join(gains) if gains else "no paired seeds yet"
        items.append(
            f"{row.arm} vs {row.baseline} — {where}: {reach}. Gain by budget: {gain_text}."
        )
    if not items:
        items = ["No SparseOpt arm has finished runs next to its baseline yet."]
    return [Block.heading(2, "Verdict"), Block.bullets(items)]


def _accuracy_section(comparison: Comparison) -> list[Block]:
    blocks = [Block.heading(2, "Accuracy vs epoch budget")]
    summary = comparison.summary
    if summary.empty:
        return [*blocks, Block.paragraph("No comparable trials.")]
    for family, part in summary.groupby(list(_FAMILY), sort=True):
        budgets = sorted(part["budget"].unique())
        for measure in ("final", "best"):
            rows = []
            chosen = part[part["measure"] == measure]
            for sparsity in sorted(chosen["sparsity"].unique()):
                at = chosen[chosen["sparsity"] == sparsity]
                for arm in _arm_order(at["arm"].unique().tolist()):
                    cells = at[at["arm"] == arm].set_index("budget")
                    rows.append(
                        [f"{sparsity:g}", arm]
                        + [_cell_text(cells.loc[b]) if b in cells.index else "" for b in budgets]
                    )
            blocks.append(Block.heading(3, f"{_family_label(family)} — {measure} test_acc1 (%)"))
            blocks.append(Block.table(["sparsity", "arm", *(f"{b} ep" for b in budgets)], rows))
    return blocks


def _paired_section(comparison: Comparison) -> list[Block]:
    blocks = [Block.heading(2, "Paired differences (arm − baseline, by seed)")]
    paired = comparison.paired
    if paired.empty:
        return [*blocks, Block.paragraph("No SparseOpt arm with its baseline in the same cell.")]
    rows = [
        [
            _family_label(tuple(getattr(row, n) for n in _FAMILY)),
            f"{row.sparsity:g}",
            str(row.budget),
            row.arm,
            row.baseline,
            row.measure,
            str(row.n_pairs),
            _fmt(row.mean_arm),
            _fmt(row.mean_baseline),
            f"{row.mean_diff:+.2f}" if not pd.isna(row.mean_diff) else "—",
            f"[{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]",
            _p(row.p_wilcoxon),
            _p(row.p_holm),
            "yes" if row.significant else "no",
        ]
        for row in paired.itertuples(index=False)
    ]
    headers = [
        "group",
        "sparsity",
        "budget",
        "arm",
        "baseline",
        "measure",
        "pairs",
        "arm mean",
        "baseline mean",
        "diff",
        "95% CI",
        "Wilcoxon p",
        "Holm p",
        "significant",
    ]
    return [*blocks, Block.table(headers, rows)]


def _target_section(comparison: Comparison) -> list[Block]:
    blocks = [Block.heading(2, "Budget to target")]
    frame = comparison.budget_to_target
    if frame.empty:
        return [*blocks, Block.paragraph("No arm has finished runs yet.")]
    rows = [
        [
            _family_label(tuple(getattr(row, n) for n in _FAMILY)),
            f"{row.sparsity:g}",
            row.arm,
            f"{row.target:.2f} ({row.target_from})",
            str(row.budget_to_target) if row.reached else "not reached",
            str(row.baseline_budget_to_target)
            if not pd.isna(row.baseline_budget_to_target)
            else "not reached",
            f"{row.speedup:.2f}×" if not pd.isna(row.speedup) else "—",
            _fmt(row.best_mean),
            row.budgets,
        ]
        for row in frame.itertuples(index=False)
    ]
    headers = [
        "group",
        "sparsity",
        "arm",
        "target %",
        "budget to target",
        "baseline budget",
        "speedup",
        "best mean %",
        "budgets run",
    ]
    return [*blocks, Block.table(headers, rows)]


def _itop_section(comparison: Comparison) -> list[Block]:
    blocks = [
        Block.heading(2, "ITOP rate and final sparsity"),
        Block.paragraph(
            "Mean ± std over the compared runs; every run is in tables/itop_sparsity_per_run.csv."
        ),
    ]
    runs = comparison.itop
    if runs.empty:
        return [*blocks, Block.paragraph("No finished runs yet.")]
    grouped = runs.groupby(list(CELL), sort=True)
    rows = []
    for key, part in grouped:
        cell = dict(zip(CELL, key, strict=True))
        rows.append(
            [
                _family_label(tuple(cell[n] for n in _FAMILY)),
                f"{cell['sparsity']:g}",
                cell["arm"],
                str(cell["budget"]),
                str(len(part)),
                _mean_std(part["final_itop_rate"], 3),
                _mean_std(part["final_measured_sparsity"], 4),
            ]
        )
    headers = ["group", "sparsity", "arm", "budget", "runs", "ITOP rate", "measured sparsity"]
    return [*blocks, Block.table(headers, rows)]


def _mean_std(values: pd.Series, digits: int) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _selection_section(comparison: Comparison) -> list[Block]:
    frame = comparison.selection
    rows = [
        [
            _family_label(tuple(getattr(row, n) for n in _FAMILY)),
            f"{row.sparsity:g}",
            row.arm,
            str(row.budget),
            row.basis,
            str(row.lr_trials),
            "—" if math.isnan(row.lr_trial) else str(int(row.lr_trial)),
            "—" if math.isnan(row.lr) else f"{row.lr:.4g}",
            _fmt(row.selection_score),
            str(row.runs),
        ]
        for row in frame.itertuples(index=False)
    ]
    headers = [
        "group",
        "sparsity",
        "arm",
        "budget",
        "compared on",
        "lr trials",
        "lr trial",
        "lr",
        f"mean {comparison.metric}",
        "runs",
    ]
    return [Block.heading(2, "Runs compared per cell"), Block.table(headers, rows)]


def _status_section(comparison: Comparison, trials: pd.DataFrame) -> list[Block]:
    blocks = [Block.heading(2, "Run status")]
    status = comparison.status
    present = [s for s in STATUSES if s in status.columns and status[s].sum() > 0]
    rows = [
        [
            _family_label(tuple(getattr(row, n) for n in _FAMILY)),
            f"{row.sparsity:g}",
            row.arm,
            str(row.budget),
            *(str(getattr(row, s)) for s in present),
        ]
        for row in status.itertuples(index=False)
    ]
    blocks.append(Block.table(["group", "sparsity", "arm", "budget", *present], rows))
    unfinished = trials[trials["status"] != "finished"].sort_values(["status", "run_name"])
    if not unfinished.empty:
        listed = [
            [row.run_name or "", row.run_id, row.status, str(row.epochs_completed)]
            for row in unfinished.head(_MAX_LISTED_RUNS).itertuples(index=False)
        ]
        blocks.append(Block.paragraph("Trials that are not finished (exported, not averaged):"))
        blocks.append(Block.table(["run", "run id", "status", "epochs logged"], listed))
        if len(unfinished) > _MAX_LISTED_RUNS:
            blocks.append(Block.paragraph(f"… and {len(unfinished) - _MAX_LISTED_RUNS} more."))
    return blocks
