"""The sweep report: export, compare, guard, draw, and write Markdown + self-contained HTML.

The report opens on the primary verdict (`analysis.verdict`): the declared primary
contrasts (`analysis.primary`: the experiment tag `sparsesweep.primary`, overridden by
`--primary`) pooled over cells, with the budget equivalence; the verdict guards follow, then
every per-cell table.

Output directory::

    report.md, report.html        the report (the HTML embeds its figures as base64 PNG)
    plots/<figure>.png|.svg       the figures (see `analysis.plots`)
    tables/<table>.csv            the primary verdict (primary.csv: contrast, scope, view,
                                  estimate, ci_low, ci_high, pairs, seeds, cells, df,
                                  method, ...; and
                                  budget_equivalence.csv), every comparison table, the
                                  verdict guards (guards.csv: guard,scope,detail), ITOP,
                                  sparsity and activity per run
    data/                         the Parquet export (see `analysis.export`)

The directory is then logged to MLflow as the artifacts of a run tagged
`sparsesweep.role=report` in the sweep's experiment; the run also carries the guard tags
(`analysis.guards.guard_tags`), the declaration it used (`sparsesweep.primary`), the verdict
sentences (`sparsesweep.verdict`), the verdict and guard summary as its description
(`mlflow.note.content`, `analysis.summary.answer_text`, which `sparsesweep report` prints
too), the sweep's factors as params, the pooled estimates over all cells as metrics
(`analysis.verdict.verdict_metrics`, the headline under `answer.`) and the accuracy-vs-budget
figure at the top of its artifacts (`ANSWER_FIGURE`, `mlflow.log_figure`). `report_from_export` writes the same report from an
exported folder without MLflow.
"""

from __future__ import annotations

import getpass
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from analysis.compare import (
    BASELINE,
    BEST_COMMON_LR,
    BEST_LR,
    CELL,
    CROSS_FITTED,
    DECLARED,
    EXPLORATORY,
    GROUP,
    Comparison,
    compare,
)
from analysis.errors import AnalysisError, BadInputError
from analysis.export import export_experiment, read_tables
from analysis.fetch import Reader
from analysis.guards import (
    GUARDS,
    MIN_ACTIVE_FRAC,
    MIN_SELECTION_SEEDS,
    find_guards,
    guard_counts,
    guard_tags,
)
from analysis.plots import ANSWER_FIGURE, accuracy_vs_budget, write_figures
from analysis.primary import PrimaryDeclaration, from_json, parse_contrast
from analysis.primary_section import crossfit_blocks, primary_blocks
from analysis.render import Block, Document, render_html, render_markdown
from analysis.schema import STATUSES
from analysis.seed_rule import rule_from_json, seed_blocks, seed_table
from analysis.stats import MIN_BOOTSTRAP_N
from analysis.summary import answer_text, guard_heading, guard_lines, report_params
from analysis.text import (
    FAMILY,
    SETTING,
    budget_range,
    family_label,
    fmt,
    interval,
    lr_text,
    p_value,
    setting_label,
    signed,
    speedup_range,
)
from analysis.verdict import Verdict, primary_verdict, verdict_metrics
from contract.arms import is_sparseopt_arm
from contract.names import Role, Tag

_FIGURE_TITLES = {
    "accuracy_vs_budget": "Final test accuracy vs epoch budget, one panel per sparsity, dense as the dashed reference (95% t-interval over seeds within [0, 100], n in the legend)",
    "accuracy_vs_epoch": "Test accuracy vs epoch, per budget: each compared run (thin) and the mean over seeds (thick)",
    "paired_differences": "Paired differences arm − reference (final test accuracy, 95% paired t-interval): each arm at its best lr, both at the best common lr, and cross-fitted",
    "itop_vs_sparsity": "ITOP rate vs sparsity (final epoch, mean over seeds)",
}
_VIEW_TEXT = {
    BEST_LR: "best lr (each arm at its own chosen lr)",
    BEST_COMMON_LR: "matched lr (both arms at the best common lr)",
    CROSS_FITTED: "best lr cross-fitted (each seed at the lr chosen on the other seeds)",
}
_MAX_LISTED_RUNS = 100


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it says about completeness and trust."""

    out_dir: Path
    markdown: Path
    html: Path
    partial: bool
    mlflow_run_id: str | None
    guards: pd.DataFrame
    verdict: Verdict
    declaration: PrimaryDeclaration
    """The primary declaration the report used, its contrasts resolved."""
    answer: str
    """The verdict and guard summary (`analysis.summary.answer_text`), as the report run's
    description and the terminal show it."""
    params: dict[str, str]
    """The sweep's factors and the declaration (`analysis.summary.report_params`)."""
    comparison: Comparison


def write_report(
    tracking_uri: str,
    experiment: str,
    out_dir: Path | str,
    target: float | None = None,
    log_to_mlflow: bool = True,
    reader: Reader = "auto",
    primary: Sequence[str] | None = None,
) -> ReportResult:
    """Export the sweep, compare its arms, check the verdict guards, write the report, and
    log it to MLflow. `primary` (`ARM:BASELINE` strings) and `target` override the sweep's
    declaration (`analysis.primary`)."""
    out = Path(out_dir)
    contrasts = _parse_contrasts(primary)  # bad input fails before the export
    exported = export_experiment(tracking_uri, experiment, out / "data", reader=reader)
    result = _write(
        exported.tables.trials.to_pandas(),
        exported.tables.epochs.to_pandas(),
        exported.manifest,
        out,
        contrasts,
        target,
    )
    if not log_to_mlflow:
        return result
    run_id = log_report(
        tracking_uri,
        exported.manifest["experiment_id"],
        out,
        result.partial,
        {
            **guard_tags(result.guards),
            Tag.PRIMARY: result.declaration.to_json(),
            Tag.VERDICT: "\n".join(result.verdict.sentences)[:MAX_TAG_VAL_LENGTH],
            MLFLOW_RUN_NOTE: result.answer,
        },
        verdict_metrics(result.verdict),
        result.params,
        accuracy_vs_budget(result.comparison),
    )
    return ReportResult(**{**result.__dict__, "mlflow_run_id": run_id})


def report_from_export(
    data_dir: Path | str,
    out_dir: Path | str,
    primary: Sequence[str] | None = None,
    target: float | None = None,
) -> ReportResult:
    """The report of an exported sweep (`sparsesweep export` / a report's `data/` folder),
    written to `out_dir` without MLflow; `primary` and `target` as in `write_report`."""
    data = Path(data_dir)
    contrasts = _parse_contrasts(primary)
    manifest_path = data / "manifest.json"
    if not manifest_path.is_file():
        raise BadInputError(f"{data}: not an export directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    tables = read_tables(data)
    return _write(
        tables.trials.to_pandas(),
        tables.epochs.to_pandas(),
        manifest,
        Path(out_dir),
        contrasts,
        target,
    )


def _write(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    manifest: Mapping[str, Any],
    out: Path,
    contrasts: tuple[tuple[str, str], ...] | None,
    target: float | None,
) -> ReportResult:
    """Compare, guard, draw and write the report of exported tables into `out`."""
    declared, source = resolve_declaration(manifest.get("primary"), contrasts, target)
    comparison = compare(
        trials,
        epochs,
        metric=manifest["search_metric"],
        primary=declared,
        search_seeds=manifest.get("search_seeds"),
    )
    verdict = primary_verdict(comparison)
    guards = find_guards(comparison)
    figures = write_figures(comparison, out / "plots")
    tables = _write_tables(comparison, verdict, guards, out / "tables")
    tables["seeds"] = out / "tables" / "seeds.csv"
    seed_table(comparison, rule_from_json(manifest.get("seeds"))).to_csv(
        tables["seeds"], index=False
    )
    document = build_document(
        comparison, verdict, source, guards, trials, manifest, figures, tables, out
    )
    markdown = out / "report.md"
    markdown.write_text(render_markdown(document))
    html = out / "report.html"
    html.write_text(render_html(document, out))
    return ReportResult(
        out,
        markdown,
        html,
        comparison.partial,
        None,
        guards,
        verdict,
        comparison.primary,
        answer_text(verdict, guards, comparison),
        report_params(comparison, manifest),
        comparison,
    )


def _parse_contrasts(primary: Sequence[str] | None) -> tuple[tuple[str, str], ...] | None:
    """`ARM:BASELINE` overrides as (arm, baseline) pairs (None: no override)."""
    return tuple(parse_contrast(text) for text in primary) if primary else None


def resolve_declaration(
    tag: str | None, contrasts: tuple[tuple[str, str], ...] | None, target: float | None
) -> tuple[PrimaryDeclaration, str]:
    """The declaration a report uses and where its contrasts come from: the experiment tag
    (`sparsesweep.primary`), with `contrasts` and a `target` overriding it."""
    recorded = from_json(tag)
    if contrasts:
        source = "--primary"
    elif recorded.contrasts is not None:
        contrasts, source = recorded.contrasts, f"experiment tag {Tag.PRIMARY}"
    else:
        source = "default: every arm with a modifier against its base arm"
    chosen = PrimaryDeclaration(
        contrasts,
        alpha=recorded.alpha,
        target=recorded.target if target is None else target,
        halfwidth=recorded.halfwidth,
    )
    return chosen, source


def log_report(
    tracking_uri: str,
    experiment_id: str,
    out_dir: Path,
    partial: bool,
    extra_tags: Mapping[str, str],
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    figure: Figure | None = None,
) -> str:
    """Log `out_dir` as the artifacts of a new `sparsesweep.role=report` run tagged with
    `extra_tags` (the verdict guards, the declaration, the verdict and its description)
    and carrying `metrics` (the pooled estimates), `params` (the sweep's factors) and
    `figure` (accuracy vs budget, `ANSWER_FIGURE` at the top of its artifacts); point every
    cell and curve run at it (`sparsesweep.latest_report`); its run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    tags = {
        **extra_tags,
        Tag.ROLE: Role.REPORT,
        Tag.PARTIAL: str(partial).lower(),
        "mlflow.user": _user(),
        "mlflow.source.name": "sparsesweep report",
        "mlflow.source.type": "LOCAL",
    }
    run = client.create_run(experiment_id, run_name=f"report {stamp}", tags=tags)
    try:
        now = int(datetime.now(UTC).timestamp() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
        )
        if figure is not None:
            client.log_figure(run.info.run_id, figure, ANSWER_FIGURE)
        client.log_artifacts(run.info.run_id, str(out_dir))
    except Exception as error:  # any store failure: the local report still stands
        client.set_terminated(run.info.run_id, "FAILED")
        raise AnalysisError(
            f"report written to {out_dir}, but logging it to MLflow failed: {error}"
        ) from error
    client.set_terminated(run.info.run_id, "FINISHED")
    for role in (Role.CELL, Role.CURVE):
        for aggregate in client.search_runs(
            [experiment_id], f"tags.`{Tag.ROLE}` = '{role}'", max_results=50_000
        ):
            client.set_tag(aggregate.info.run_id, Tag.LATEST_REPORT, run.info.run_id)
    return run.info.run_id


def _user() -> str:
    """Who ran the report (MLflow's `mlflow.user`)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _write_tables(
    comparison: Comparison, verdict: Verdict, guards: pd.DataFrame, out_dir: Path
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "primary": verdict.primary,
        "budget_equivalence": verdict.equivalence,
        "guards": guards,
        "summary": comparison.summary,
        "paired_differences": comparison.paired,
        "paired_seeds": comparison.pairs,
        "matched_lr": comparison.matched,
        "optimism": comparison.optimism,
        "budget_to_target": comparison.budget_to_target,
        "itop_sparsity_per_run": comparison.itop,
        "activity_per_run": comparison.activity,
        "lr_selection": comparison.selection,
        "run_status": comparison.status,
        "curves": comparison.curves,
    }
    paths = {}
    for name, frame in frames.items():
        paths[name] = out_dir / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    paths["declaration"] = out_dir / "declaration.json"
    paths["declaration"].write_text(comparison.primary.to_json() + "\n")
    return paths


def _primary_interval(row: Any, n: int) -> str:
    """The row's primary (t) interval with its method and n."""
    return interval(row.ci_low, row.ci_high, row.ci_method, n)


def _bca(row: Any, n: int) -> str:
    """The row's BCa (or fallback) bootstrap interval with its method and n."""
    return interval(row.bca_low, row.bca_high, row.bca_method, n)


def _family(row: Any) -> str:
    """The family label of a row (a namedtuple with the `FAMILY` fields)."""
    return family_label(tuple(getattr(row, name) for name in FAMILY))


def _arm_order(arms: list[str]) -> list[str]:
    """Baselines first, then the arms that add modifiers, alphabetically within each."""
    return sorted(arms, key=lambda arm: (is_sparseopt_arm(arm), arm.count("+"), arm))


def _contrast_text(contrast: str) -> str:
    return contrast if contrast in (BASELINE, DECLARED) else f"ablation: {contrast}"


def _cell_text(row: pd.Series) -> str:
    if row["n"] == 0:
        text = "—"
    elif row["n"] == 1:
        text = f"{row['mean']:.2f} (n=1)"
    else:
        text = (
            f"{row['mean']:.2f} ± {row['std']:.2f} "
            f"{interval(row['ci_low'], row['ci_high'], row['ci_method'], row['n'])}"
        )
    return f"{text} †" if row["excluded"] else text


def build_document(
    comparison: Comparison,
    verdict: Verdict,
    source: str,
    guards: pd.DataFrame,
    trials: pd.DataFrame,
    manifest: Mapping[str, Any],
    figures: dict[str, dict[str, Path]],
    tables: dict[str, Path],
    out_dir: Path,
) -> Document:
    """The report as renderer-neutral blocks (see `analysis.render`): the primary verdict
    first (its contrasts declared by `source`), then the guards and every table."""
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
    blocks += primary_blocks(comparison, verdict, source)
    blocks.append(_guard_box(guards, comparison))
    status_text = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES if counts.get(s, 0))
    blocks.append(
        Block.paragraph(
            f"Generated {manifest['exported_at']} from {manifest['tracking_uri']} "
            f"(experiment id {manifest['experiment_id']}). Trials: {len(trials)} ({status_text})."
        )
    )
    blocks += _method_section(comparison)
    blocks += _verdict_section(comparison)
    blocks += crossfit_blocks(comparison)
    blocks += _guard_section(guards, comparison.primary.halfwidth)
    blocks += _accuracy_section(comparison)
    blocks += _paired_section(comparison)
    blocks += _matched_section(comparison)
    blocks += _target_section(comparison)
    blocks += _activity_section(comparison)
    blocks += _itop_section(comparison)
    blocks += _selection_section(comparison)
    blocks += _status_section(comparison, trials)
    blocks += seed_blocks(comparison, rule_from_json(manifest.get("seeds")))
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


NO_GUARD = "Verdict guards: none fired."


def _no_guard_text(halfwidth: float) -> str:
    """What a report without guards can say about its sweep."""
    return (
        f"{NO_GUARD} Every chosen lr lies inside its cell's lr grid, won without a tie and "
        f"was chosen on at least {MIN_SELECTION_SEEDS} seeds, every best-lr comparison ran "
        f"both arms at one lr, every comparison's 95% t-interval is within ±{halfwidth:g} "
        "points, the primary family can reject at its seeds, ΔT is at least one epoch for "
        f"SET and RigL, and every ablation changed at least {MIN_ACTIVE_FRAC:.0%} of the steps."
    )


def _guard_box(guards: pd.DataFrame, comparison: Comparison) -> Block:
    """The collapsed box under the verdict: one line per guard that fired, with why it fires,
    whether this design makes it fire, and its first case; or that none did."""
    if guards.empty:
        return Block.paragraph(_no_guard_text(comparison.primary.halfwidth))
    counts = guard_counts(guards)
    items = []
    for name, line in zip(
        [name for name in GUARDS if counts[name]], guard_lines(guards, comparison), strict=True
    ):
        first = guards[guards["guard"] == name].iloc[0]
        more = f" (and {counts[name] - 1} more)" if counts[name] > 1 else ""
        items.append(f"{line}. E.g. {first['scope']}: {first['detail']}{more}.")
    return Block.warning(
        f"{guard_heading(guards)}: read the verdict with them in mind (all in the section "
        "Verdict guards and tables/guards.csv).",
        items,
    )


def _guard_section(guards: pd.DataFrame, halfwidth: float) -> list[Block]:
    blocks = [Block.heading(2, "Verdict guards")]
    if guards.empty:
        return [*blocks, Block.paragraph(_no_guard_text(halfwidth))]
    rows = [[row.guard, row.scope, row.detail] for row in guards.itertuples(index=False)]
    return [*blocks, Block.table(["guard", "scope", "detail"], rows)]


def _method_section(comparison: Comparison) -> list[Block]:
    level = f"{comparison.confidence:.0%}"
    declared = comparison.primary
    return [
        Block.heading(2, "How these numbers were made"),
        Block.bullets(
            [
                "Accuracy is test_acc1 (%) of each epoch budget's own run: at its final epoch "
                "(final) and its best epoch (best).",
                "Per cell (arm × sparsity × budget): stage=final runs if any; otherwise, with "
                f"an lr search, the lr trial ranked first by the sweep's one lr-ranking rule "
                f"(contract.selection, the searcher's own): the best mean over seeds of "
                f"{comparison.metric} (the sweep's search metric) at the final epoch, a "
                "diverged seed scoring the worst value, failed seeds left out, an lr trial "
                "ranked once all the cell's seeds have ended; equal scores are a tie (guard "
                "lr_tie), which goes to the lr nearest the middle of the cell's lrs on a log "
                "scale, then to the smaller lr; otherwise the single lr. The lrs each cell "
                "ran, where its chosen lr lies among them and any tied lrs are in 'Runs "
                "compared per cell'.",
                *comparison.notes,
                "Only finished runs enter the statistics (latest run per seed); † marks cells "
                "with chosen runs that are running, stopped, failed or diverged.",
                f"Every interval is printed with its method and n. Primary: the {level} "
                "Student t-interval of the mean over seeds (scipy.stats.t; for a paired "
                "difference, of arm − reference per seed); an accuracy's interval is shown "
                "within [0, 100]. Beside it, from "
                f"{MIN_BOOTSTRAP_N} seeds on: the BCa bootstrap interval "
                "(scipy.stats.bootstrap, 9,999 resamples, fixed seed); below "
                f"{MIN_BOOTSTRAP_N} seeds a bootstrap has too few values to resample (at n = 2 "
                "it has three possible means) and none is given. BCa is undefined for a "
                "constant sample, whose interval is then that value ('constant sample'), and "
                "where it is otherwise undefined the percentile bootstrap stands in (so "
                "named). Mean ± std uses ddof=1.",
                "Contrasts, within one group and budget: each SparseOpt arm against its "
                "baseline (the arm without sparseopt and its options corrected, cap, normonly, "
                "wdscale), each other modifier against the nearest arm without it "
                "(ablation: corrected vs raw regrowth, +cap vs without, renorm on vs off "
                "within one preconditioner, clip, normonly, wdscale, ham), and any declared "
                "primary contrast that is neither (declared).",
                "Three views of every contrast, paired by seed. Best lr: each arm at its own "
                "chosen lr (the rule above), so the two may have run at different lrs "
                "(guard lr_mismatch). Matched lr: both arms at the same lr, for every lr both "
                "ran (the final-stage seeds if both ran that lr in the final stage, else the "
                "search seeds); the best common lr is the one the lr-ranking rule ranks first "
                f"on both arms' search seeds at that lr together ({comparison.metric}; ties as "
                "above), or the only one they share. Best lr, cross-fitted: each seed's run at "
                "the lr the rule chooses on the cell's other seeds, which removes the "
                "optimism of choosing the lr on the seeds it is then judged on (section "
                "Winner's curse).",
                "Paired differences: mean of arm − reference with its paired t-interval and "
                "BCa interval; two-sided Wilcoxon signed-rank p-value. Multiplicity is "
                "corrected (Holm) only within the primary family: the declared primary "
                "contrasts, final measure, in one view (each view is its own family); "
                f"significant: Holm-adjusted p < α = {declared.alpha:g}. Every other "
                "comparison is exploratory: its p-value is unadjusted and marks nothing "
                "significant. With n seeds the smallest possible exact Wilcoxon p is 2/2^n "
                "(0.0625 for 5 seeds, 0.00195 for 10), so a family of m comparisons can "
                "reject only if m · 2/2^n ≤ α (guard powerless_family).",
                "Budget equivalence (the primary verdict's speed-up): at each of the arm's "
                "budgets, the budget at which the baseline's mean accuracy, interpolated "
                "linearly in log budget between the budgets it ran, reaches the arm's mean "
                "there, over the arm's budget"
                + (
                    f"; and at the declared target {declared.target:g}%, the baseline's "
                    "crossing over the arm's"
                    if declared.target is not None
                    else ""
                )
                + ". Interval: percentile bootstrap resampling seeds paired across budgets "
                "and both arms (9,999 replicates, none below "
                f"{MIN_BOOTSTRAP_N} seeds); a crossing outside the budgets run is a bound.",
                "Budget to target on the grid (each arm at its best lr): smallest budget "
                "whose mean final accuracy reaches the target (default: the baseline's mean "
                "at its largest budget); speedup = baseline budget / arm budget, 'not "
                "reached' when the arm never reaches it. Interval: percentile bootstrap over "
                "seeds — each of 9,999 replicates resamples every budget's seeds "
                "independently (none below "
                f"{MIN_BOOTSTRAP_N} seeds per budget), recomputes the default target from the "
                "baseline's resampled mean, and takes the first budget whose mean reaches it "
                f"(never: not reached); the bounds are the replicates' "
                f"{(1 - comparison.confidence) / 2:.1%} and "
                f"{(1 + comparison.confidence) / 2:.1%} quantiles, so they are budgets "
                "that ran; 'reached' is the share of replicates in which the arm reaches "
                "the target.",
                f"Verdict guards: lr_at_edge (a chosen lr is the lowest or highest its cell "
                f"ran, or the only one), lr_tie (lrs tied for best and the tie-break chose), "
                f"few_selection_seeds (an lr chosen among several on the mean of fewer than "
                f"{MIN_SELECTION_SEEDS} seeds), lr_mismatch (a best-lr comparison at two "
                f"lrs), few_seeds (a comparison whose {level} t-interval is wider than "
                f"±{declared.halfwidth:g} points in some view, with the seeds its spread "
                "needs), powerless_family (a primary family Holm cannot reject in), "
                "short_update_interval (SET/RigL with ΔT = delta_t shorter than "
                "steps_per_epoch), inactive_ablation (a modifier's <modifier>_active_frac "
                "averaged over each run's epochs and over the cell's runs below "
                f"{MIN_ACTIVE_FRAC:.0%}), guard_not_evaluated (a guard the data could not "
                "decide).",
            ]
        ),
    ]


def _target_text(row: Any) -> str:
    """The per-cell budget-to-target sentence, with its bootstrap interval."""
    if row.reached and not pd.isna(row.speedup):
        text = (
            f"reaches {row.target:.2f}% ({row.target_from}) at {row.budget_to_target} "
            f"epochs vs {row.baseline_budget_to_target} for {row.baseline} "
            f"(speedup {row.speedup:.2f}×)"
        )
    else:
        text = (
            f"does not reach {row.target:.2f}% ({row.target_from}); best mean {row.best_mean:.2f}%"
        )
    seeds = f"n={row.n_seeds.replace(',', '/')} seeds per budget"
    if pd.isna(row.budget_ci_low):
        return f"{text}; {row.ci_method}, {seeds}"
    return (
        f"{text}; {row.ci_method} ({seeds}): "
        f"budget {budget_range(row.budget_ci_low, row.budget_ci_high)} vs "
        f"{budget_range(row.baseline_budget_ci_low, row.baseline_budget_ci_high)}, speedup "
        f"{speedup_range(row.speedup_ci_low, row.speedup_ci_high)}, target reached in "
        f"{row.reached_frac:.0%} of replicates"
    )


def _gain_text(row: Any) -> str:
    """One budget's difference in one view: value, interval with method and n, lrs, and the
    Holm-adjusted p (primary family) or the unadjusted p (exploratory)."""
    if row.view == BEST_COMMON_LR:
        lrs = f", lr {lr_text(row.lr_arm)}"
    elif row.view == BEST_LR:
        lrs = f", lr {lr_text(row.lr_arm)} vs {lr_text(row.lr_reference)}"
    else:
        lrs = ""
    if not row.n_pairs:
        return f"e={row.budget}: no seed in common{lrs}"
    if row.family == EXPLORATORY:
        test = f"exploratory p={p_value(row.p_wilcoxon)}"
    else:
        test = f"Holm p={p_value(row.p_holm)}{' *' if row.significant else ''}"
    return (
        f"e={row.budget}: {signed(row.mean_diff)} pp {_primary_interval(row, row.n_pairs)}"
        f"{lrs}, {test}"
    )


def _verdict_section(comparison: Comparison) -> list[Block]:
    paired = comparison.paired[comparison.paired["measure"] == "final"]
    targets = {
        (*(getattr(row, name) for name in GROUP), row.arm): row
        for row in comparison.budget_to_target.itertuples(index=False)
        if is_sparseopt_arm(row.arm)
    }
    keys = {
        (*(getattr(row, name) for name in GROUP), row.contrast, row.arm, row.reference)
        for row in paired.itertuples(index=False)
    }
    keys |= {(*group, BASELINE, arm, row.baseline) for (*group, arm), row in targets.items()}
    primary = set(comparison.primary.contrasts or ())
    items = []
    for key in sorted(keys, key=lambda k: (*k[:5], k[6], k[7], k[5])):  # group, arm, ref
        *group, contrast, arm, reference = key
        where = f"{family_label(tuple(group[:4]))}, s={group[4]:g}"
        parts = []
        target = targets.get((*group, arm)) if contrast == BASELINE else None
        if target is not None:
            parts.append(f"Budget to target: {_target_text(target)}.")
        mask = (paired["contrast"] == contrast) & (paired["arm"] == arm)
        mask &= paired["reference"] == reference
        for name, value in zip(GROUP, group, strict=True):
            mask &= paired[name] == value
        for view in (BEST_COMMON_LR, BEST_LR, CROSS_FITTED):
            rows = paired[mask & (paired["view"] == view)]
            gains = "; ".join(_gain_text(row) for row in rows.itertuples(index=False))
            parts.append(f"Gain, {_VIEW_TEXT[view]}: {gains or 'no paired seeds'}.")
        family = "primary" if (arm, reference) in primary else "exploratory"
        items.append(
            f"{arm} vs {reference} ({_contrast_text(contrast)}, {family}) — {where}: "
            f"{' '.join(parts)}"
        )
    if not items:
        items = [
            "No contrast has finished runs on both sides yet: no SparseOpt arm next to its "
            "baseline, no ablation next to its nearest arm."
        ]
    lead = (
        "Each gain is arm − reference in percentage points of final test_acc1, with its "
        f"{comparison.confidence:.0%} paired t-interval, method and n, in three views (see How "
        "these numbers were made). Primary contrasts carry the Holm-adjusted Wilcoxon p within "
        f"the primary family (* = below α = {comparison.primary.alpha:g}); every other "
        "contrast is exploratory and carries its unadjusted p. Check the verdict guards first."
    )
    return [Block.heading(2, "Per-cell comparisons"), Block.paragraph(lead), Block.bullets(items)]


def _accuracy_section(comparison: Comparison) -> list[Block]:
    """One table per setting (dataset/model) and measure: every arm, dense beside the sparse
    ones, a column per budget; the best-epoch table only where it differs from the final."""
    blocks = [Block.heading(2, "Accuracy vs epoch budget")]
    summary = comparison.summary
    if summary.empty:
        return [*blocks, Block.paragraph("No comparable trials.")]
    blocks.append(
        Block.paragraph(
            "Mean ± std over seeds, then the interval of the mean with its method and n "
            "(BCa bootstrap intervals in tables/summary.csv)."
        )
    )
    for setting, part in summary.groupby(list(SETTING), sort=True):
        budgets = sorted(part["budget"].unique())
        headers = ["sparsity", "arm", *(f"{b} ep" for b in budgets)]
        tables = {measure: _accuracy_rows(part, measure, budgets) for measure in ("final", "best")}
        label = setting_label(setting)
        if tables["best"] == tables["final"]:
            blocks.append(Block.heading(3, f"{label} — final test_acc1 (%)"))
            blocks.append(
                Block.paragraph("Every run's best epoch was its final one: one table for both.")
            )
            blocks.append(Block.table(headers, tables["final"]))
            continue
        for measure, rows in tables.items():
            blocks.append(Block.heading(3, f"{label} — {measure} test_acc1 (%)"))
            blocks.append(Block.table(headers, rows))
    return blocks


def _accuracy_rows(part: pd.DataFrame, measure: str, budgets: list[int]) -> list[list[str]]:
    """Rows (sparsity, arm, one cell per budget) of one measure; dense first, at s=0."""
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
    return rows


def _paired_section(comparison: Comparison) -> list[Block]:
    blocks = [Block.heading(2, "Paired differences (arm − reference, by seed), every view")]
    paired = comparison.paired
    if paired.empty:
        return [*blocks, Block.paragraph("No contrast with both arms in the same cell.")]
    rows = [
        [
            _family(row),
            f"{row.sparsity:g}",
            str(row.budget),
            _contrast_text(row.contrast),
            row.arm,
            row.reference,
            row.view,
            f"{lr_text(row.lr_arm)} / {lr_text(row.lr_reference)}",
            row.measure,
            str(row.n_pairs),
            fmt(row.mean_arm),
            fmt(row.mean_reference),
            signed(row.mean_diff),
            _primary_interval(row, row.n_pairs),
            _bca(row, row.n_pairs),
            p_value(row.p_wilcoxon),
            row.family,
            p_value(row.p_holm),
            "yes" if row.significant else ("no" if row.family != EXPLORATORY else "—"),
        ]
        for row in paired.itertuples(index=False)
    ]
    headers = [
        "group",
        "sparsity",
        "budget",
        "contrast",
        "arm",
        "reference",
        "view",
        "lr arm / reference",
        "measure",
        "pairs",
        "arm mean",
        "reference mean",
        "diff",
        f"{comparison.confidence:.0%} CI (primary)",
        f"{comparison.confidence:.0%} bootstrap CI",
        "Wilcoxon p",
        "family",
        "Holm p (primary family)",
        "significant",
    ]
    return [*blocks, Block.table(headers, rows)]


def _matched_section(comparison: Comparison) -> list[Block]:
    blocks = [
        Block.heading(2, "Matched lr: every lr both arms ran"),
        Block.paragraph(
            "Final test_acc1, arm − reference paired by seed at one lr; 'best common' marks the "
            "lr of the matched view (tied: the lrs that tied for it); selection scores are the "
            f"mean over search seeds of {comparison.metric}. Wilcoxon p-values here are "
            "exploratory (unadjusted). The best measure is in tables/matched_lr.csv."
        ),
    ]
    matched = comparison.matched[comparison.matched["measure"] == "final"]
    if matched.empty:
        return [*blocks, Block.paragraph("No contrast whose arms ran a common lr.")]
    rows = [
        [
            _family(row),
            f"{row.sparsity:g}",
            str(row.budget),
            _contrast_text(row.contrast),
            row.arm,
            row.reference,
            lr_text(row.lr),
            row.stage,
            ("yes" if row.best_common else "")
            + (
                f" (tied: {row.tied_lrs.replace(',', ', ')})"
                if row.best_common and row.tied_lrs
                else ""
            ),
            f"{fmt(row.score_arm)} / {fmt(row.score_reference)}",
            str(row.n_pairs),
            signed(row.mean_diff),
            _primary_interval(row, row.n_pairs),
            _bca(row, row.n_pairs),
            p_value(row.p_wilcoxon),
        ]
        for row in matched.itertuples(index=False)
    ]
    headers = [
        "group",
        "sparsity",
        "budget",
        "contrast",
        "arm",
        "reference",
        "lr",
        "seeds from",
        "best common",
        "selection score arm / reference",
        "pairs",
        "diff",
        f"{comparison.confidence:.0%} CI (primary)",
        f"{comparison.confidence:.0%} bootstrap CI",
        "Wilcoxon p",
    ]
    return [*blocks, Block.table(headers, rows)]


def _target_section(comparison: Comparison) -> list[Block]:
    blocks = [Block.heading(2, "Budget to target")]
    frame = comparison.budget_to_target
    if frame.empty:
        return [*blocks, Block.paragraph("No arm has finished runs yet.")]
    blocks.append(
        Block.paragraph(
            "On the budget grid (the continuous speed-up is the budget equivalence of the "
            "primary verdict). Each arm at its best lr. Intervals: percentile bootstrap over "
            "seeds (see How these numbers were made), with the seeds per budget; none below "
            f"{MIN_BOOTSTRAP_N} seeds."
        )
    )
    rows = [
        [
            _family(row),
            f"{row.sparsity:g}",
            row.arm,
            f"{row.target:.2f} ({row.target_from})",
            str(row.budget_to_target) if row.reached else "not reached",
            budget_range(row.budget_ci_low, row.budget_ci_high),
            str(row.baseline_budget_to_target)
            if not pd.isna(row.baseline_budget_to_target)
            else "not reached",
            budget_range(row.baseline_budget_ci_low, row.baseline_budget_ci_high),
            f"{row.speedup:.2f}×" if not pd.isna(row.speedup) else "not reached",
            speedup_range(row.speedup_ci_low, row.speedup_ci_high),
            "—" if pd.isna(row.reached_frac) else f"{row.reached_frac:.0%}",
            f"{row.ci_method}, n={row.n_seeds.replace(',', '/')}",
            fmt(row.best_mean),
            row.budgets,
        ]
        for row in frame.itertuples(index=False)
    ]
    level = f"{comparison.confidence:.0%}"
    headers = [
        "group",
        "sparsity",
        "arm",
        "target %",
        "budget to target",
        f"{level} interval",
        "baseline budget",
        f"{level} interval",
        "speedup",
        f"{level} interval",
        "reached",
        "method, seeds per budget",
        "best mean %",
        "budgets run",
    ]
    return [*blocks, Block.table(headers, rows)]


def _activity_section(comparison: Comparison) -> list[Block]:
    activity = comparison.activity
    if activity.empty:
        return []
    blocks = [
        Block.heading(2, "Modifier activity"),
        Block.paragraph(
            "Share of optimizer steps each modifier changed: <modifier>_active_frac averaged "
            "over each run's epochs, then mean ± std over the cell's compared runs (every run "
            "in tables/activity_per_run.csv)."
        ),
    ]
    rows = []
    for key, part in activity.groupby([*CELL, "modifier"], sort=True):
        cell = dict(zip((*CELL, "modifier"), key, strict=True))
        rows.append(
            [
                family_label(tuple(cell[n] for n in FAMILY)),
                f"{cell['sparsity']:g}",
                cell["arm"],
                str(cell["budget"]),
                cell["modifier"],
                str(int(part["mean_active_frac"].notna().sum())),
                _mean_std(part["mean_active_frac"], 4),
            ]
        )
    headers = ["group", "sparsity", "arm", "budget", "modifier", "runs", "active fraction"]
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
                family_label(tuple(cell[n] for n in FAMILY)),
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
            _family(row),
            f"{row.sparsity:g}",
            row.arm,
            str(row.budget),
            row.basis,
            str(row.lr_trials),
            "—" if math.isnan(row.lr_trial) else str(int(row.lr_trial)),
            lr_text(row.lr),
            row.lrs_searched.replace(",", ", ") or "—",
            row.lr_position or "—",
            fmt(row.selection_score),
            "—" if pd.isna(row.selection_seeds) else str(row.selection_seeds),
            row.tied_lrs.replace(",", ", ") or "—",
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
        "lrs run",
        "chosen lr is",
        f"mean {comparison.metric}",
        "chosen on seeds",
        "tied lrs (chosen first)",
        "runs",
    ]
    return [Block.heading(2, "Runs compared per cell"), Block.table(headers, rows)]


def _status_section(comparison: Comparison, trials: pd.DataFrame) -> list[Block]:
    blocks = [Block.heading(2, "Run status")]
    status = comparison.status
    present = [s for s in STATUSES if s in status.columns and status[s].sum() > 0]
    rows = [
        [
            _family(row),
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
