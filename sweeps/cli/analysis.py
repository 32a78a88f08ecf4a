"""`sparsesweep export` and `sparsesweep report`: a sweep's runs to Parquet, and its report.

The sweep is named as everywhere (`sweeps.cli.locate`): its name with its tracking store
(`--tracking-uri`, honouring MLFLOW_TRACKING_URI), its storage or its spec file; the default
is the store the sweep under `./sweep_results` names, else `sqlite:///mlflow.db` here. It goes through the one tracking-URI check first, so an unreachable
server fails in seconds rather than after the MLflow client's minutes of retries. Errors print
one line and exit 2 (bad input: unknown experiment, missing store, bad argument) or 1
(anything else, e.g. an experiment with no trials), without a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from sweeps.cli.common import (
    ExperimentOption,
    NameArgument,
    check_tracking_option,
    fail,
    out_console,
)
from sweeps.cli.locate import SpecOption, StorageOption, TrackingOption, locate_store
from sweeps.cli.sync import delivery_note

T = TypeVar("T")
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]


def _guarded(action: Callable[[], T], tracking_uri: str) -> T:
    """Check the tracking URI, then run a command body with every failure as one line."""
    from analysis.errors import AnalysisError

    check_tracking_option(tracking_uri, must_exist=True)
    try:
        return action()
    except AnalysisError as error:
        raise fail(str(error), error.exit_code) from None
    except Exception as error:  # the CLI promises a message, never a traceback
        raise fail(f"{type(error).__name__}: {error}", 1) from None


def export_command(
    out: OutOption,
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    tracking_uri: TrackingOption = None,
    storage: StorageOption = None,
    spec_path: SpecOption = None,
) -> None:
    """Export every trial of a sweep to Parquet: trials/ (one row per trial) and epochs/
    (one row per trial x epoch), partitioned by method and sparsity."""
    from analysis.export import export_experiment

    experiment, tracking_uri = locate_store(name, experiment, storage, tracking_uri, spec_path)
    result = _guarded(lambda: export_experiment(tracking_uri, experiment, out), tracking_uri)
    manifest = result.manifest
    out_console.print(
        f"exported {manifest['trials']} trials ({manifest['epoch_rows']} epoch rows) "
        f"of {experiment!r} to {result.out_dir}",
        highlight=False,
        soft_wrap=True,
    )
    note = delivery_note(tracking_uri, experiment, manifest["partial"], "export")
    if note:
        out_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)


def report_command(
    out: OutOption,
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    tracking_uri: TrackingOption = None,
    storage: StorageOption = None,
    spec_path: SpecOption = None,
    target: Annotated[
        float | None,
        typer.Option(
            help="Target test accuracy (%, in [0, 100]) for budget-to-target; default: each "
            "baseline's accuracy at its largest budget.",
        ),
    ] = None,
    log_mlflow: Annotated[
        bool, typer.Option("--log-mlflow/--no-log-mlflow", help="Log the report to MLflow.")
    ] = True,
    primary: Annotated[
        list[str] | None,
        typer.Option(
            "--primary",
            metavar="ARM:BASELINE",
            help="A primary contrast (repeatable), e.g. rigl+sparseopt:rigl; replaces the "
            "sweep's declared ones (experiment tag sparsesweep.primary; default: every arm "
            "with a modifier against its base arm).",
        ),
    ] = None,
) -> None:
    """Write the convergence-versus-budget report (Markdown, HTML, plots, Parquet) and log it
    to MLflow as a report run."""
    from analysis.report import write_report

    experiment, tracking_uri = locate_store(name, experiment, storage, tracking_uri, spec_path)
    if target is not None and not 0.0 <= target <= 100.0:
        raise fail(f"--target {target} is out of range; allowed: a test accuracy in [0, 100] (%)")
    result = _guarded(
        lambda: write_report(
            tracking_uri, experiment, out, target=target, log_to_mlflow=log_mlflow, primary=primary
        ),
        tracking_uri,
    )
    note = delivery_note(tracking_uri, experiment, result.partial, "report")
    if note:
        out_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    out_console.print(result.answer, highlight=False, markup=False)
    out_console.print(
        f"report: {result.markdown} and {result.html}", highlight=False, soft_wrap=True
    )
    if result.mlflow_run_id:
        out_console.print(
            f"logged to MLflow run {result.mlflow_run_id} (sparsesweep.role=report)",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add `export` and `report` to the `sparsesweep` app."""
    app.command("export")(export_command)
    app.command("report")(report_command)
