"""`sparsesweep export` and `sparsesweep report`: registered on the lead's Typer app.

Errors print one clear line and exit with code 2 (bad input: unknown experiment, missing
store, bad argument) or 1 (anything else, e.g. an experiment with no trials), without a
traceback. The tracking URI defaults to `sqlite:///mlflow.db` in the current directory and
honours MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from analysis.errors import AnalysisError, BadInputError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
T = TypeVar("T")

ExperimentOption = Annotated[
    str, typer.Option("--experiment", "-e", help="Sweep name (its MLflow experiment).")
]
TrackingOption = Annotated[
    str,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (sqlite:///path.db or http://host:port).",
    ),
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]


TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql")


def _check_tracking_uri(tracking_uri: str) -> None:
    """Refuse a tracking URI MLflow cannot open, naming the schemes it can."""
    scheme = tracking_uri.split("://", 1)[0].split("+", 1)[0] if "://" in tracking_uri else "file"
    if scheme not in TRACKING_SCHEMES:
        raise BadInputError(
            f"--tracking-uri {tracking_uri}: unsupported scheme {scheme!r}; allowed: "
            "sqlite:///PATH, file:///PATH, http(s)://HOST:PORT or a database URI "
            "(postgresql://, mysql://, mssql://)"
        )


def _guarded(action: Callable[[], T], tracking_uri: str) -> T:
    """Run a command body, turning every failure into a one-line message and an exit code."""
    try:
        _check_tracking_uri(tracking_uri)
        return action()
    except AnalysisError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except Exception as error:  # the CLI promises a message, never a traceback
        typer.echo(f"error: {type(error).__name__}: {error}", err=True)
        raise typer.Exit(1) from None


def export_command(
    experiment: ExperimentOption,
    out: OutOption,
    tracking_uri: TrackingOption = DEFAULT_TRACKING_URI,
) -> None:
    """Export every trial of a sweep to Parquet: trials/ (one row per trial) and epochs/
    (one row per trial x epoch), partitioned by method and sparsity."""
    from analysis.export import export_experiment

    result = _guarded(lambda: export_experiment(tracking_uri, experiment, out), tracking_uri)
    manifest = result.manifest
    typer.echo(
        f"exported {manifest['trials']} trials ({manifest['epoch_rows']} epoch rows) "
        f"of {experiment!r} to {result.out_dir}"
    )
    if manifest["partial"]:
        typer.echo("note: the sweep is still running; this export is partial")


def report_command(
    experiment: ExperimentOption,
    out: OutOption,
    tracking_uri: TrackingOption = DEFAULT_TRACKING_URI,
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
) -> None:
    """Write the convergence-versus-budget report (Markdown, HTML, plots, Parquet) and log it
    to MLflow as a report run."""
    from analysis.report import write_report

    if target is not None and not 0.0 <= target <= 100.0:
        typer.echo(
            f"error: --target {target} is out of range; allowed: a test accuracy in [0, 100] (%)",
            err=True,
        )
        raise typer.Exit(BadInputError.exit_code)
    result = _guarded(
        lambda: write_report(
            tracking_uri, experiment, out, target=target, log_to_mlflow=log_mlflow
        ),
        tracking_uri,
    )
    if result.partial:
        typer.echo("note: the sweep is still running; this is a PARTIAL report")
    typer.echo(f"report: {result.markdown} and {result.html}")
    if result.mlflow_run_id:
        typer.echo(f"logged to MLflow run {result.mlflow_run_id} (sparsesweep.role=report)")


def register(app: typer.Typer) -> None:
    """Add the `export` and `report` commands to `app`."""
    app.command("export")(export_command)
    app.command("report")(report_command)
