"""Sweep CLI commands: `run`, `resume`, `status`, `ui`.

Every check on the user's input (spec fields, overrides, storage, tracking store, spec
changes against an existing sweep) happens before Ray starts; failures print one message
naming the field or file and exit with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

BAD_INPUT_EXIT_CODE = 2
INCOMPLETE_EXIT_CODE = 1
DEFAULT_STORAGE = "./sweep_results"

err_console = Console(stderr=True)
out_console = Console()


def _fail(message: str, code: int = BAD_INPUT_EXIT_CODE) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _load(spec_path: Path, overrides: list[str] | None) -> Any:
    from sweeps.spec import load_spec

    try:
        return load_spec(spec_path, overrides or [])
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None


def _print_dry_run(spec: Any) -> None:
    from sweeps.cost import estimate_cost

    estimate = estimate_cost(spec)
    table = Table(title=f"sweep {spec.name}: {len(spec.cells())} cells")
    for column in ("cell", "trials", "epochs/trial", "trial-epochs", "device-hours"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for cell in estimate.cells:
        hours = "?" if cell.device_hours is None else f"{cell.device_hours:.2f}"
        table.add_row(
            cell.cell_id,
            str(cell.trials),
            str(cell.epochs_per_trial),
            str(cell.trial_epochs),
            hours,
        )
    out_console.print(table)
    out_console.print(estimate.summary(), highlight=False)


def _print_summary(spec: Any, summary: Any) -> None:
    parts = ", ".join(f"{count} {status}" for status, count in sorted(summary.statuses.items()))
    out_console.print(
        f"sweep {spec.name}: {summary.ended}/{summary.expected} trials ended ({parts or 'none'})"
    )
    out_console.print(
        f"MLflow: {spec.tracking_uri}  (dashboard: sparsesweep ui --tracking-uri {spec.tracking_uri})"
    )
    out_console.print(
        f"report: sparsesweep report --experiment {spec.name} --tracking-uri {spec.tracking_uri} --out report-{spec.name}"
    )


def _launch(spec: Any, address: str | None, progress: bool) -> None:
    from sweeps.launch import SweepError, run_sweep

    try:
        summary = run_sweep(spec, address=address, progress=progress)
    except SweepError as error:
        raise _fail(str(error)) from None
    _print_summary(spec, summary)
    if not summary.complete:
        raise _fail(
            f"the sweep stopped before all {summary.expected} trials ended; run the same command "
            f"again (or `sparsesweep resume {spec.name}`) to continue it",
            INCOMPLETE_EXIT_CODE,
        )


def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="sweep spec YAML")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a spec field, e.g. --set grid.seeds=[0,1,2]"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print cells, trial count and cost; run nothing")
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster: 'auto' or ray://HOST:10001 (default: local Ray)"
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="live progress bar")
    ] = True,
) -> None:
    """Run a sweep; running it again on an existing sweep resumes (and may extend) it."""
    spec = _load(spec_path, overrides)
    if dry_run:
        _print_dry_run(spec)
        return
    _launch(spec, address, progress)


def resume(
    name: Annotated[str, typer.Argument(help="sweep name")],
    storage: Annotated[
        str, typer.Option("--storage", help="the sweep's storage_path")
    ] = DEFAULT_STORAGE,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Resume an interrupted sweep by name, under the spec it was started with."""
    spec = _stored(name, storage)
    _launch(spec, address, progress)


def _stored(name: str, storage: str) -> Any:
    from sweeps.launch import SPEC_FILE
    from sweeps.store import is_remote, read_spec_file

    root = storage if is_remote(storage) else os.path.abspath(storage)
    try:
        spec = read_spec_file(f"{root.rstrip('/')}/{name}/{SPEC_FILE}")
    except ValueError as error:
        raise _fail(str(error)) from None
    if spec is None:
        known = (
            sorted(p.parent.name for p in Path(root).glob(f"*/{SPEC_FILE}"))
            if not is_remote(root)
            else []
        )
        raise _fail(
            f"no sweep named {name!r} under --storage {root}"
            + (f"; known sweeps: {', '.join(known)}" if known else " (no sweeps there)")
        )
    return spec


def status(
    name: Annotated[str, typer.Argument(help="sweep name")],
    storage: Annotated[
        str, typer.Option("--storage", help="the sweep's storage_path")
    ] = DEFAULT_STORAGE,
) -> None:
    """Cells × trials of a sweep: done / running / pending / failed, and the best value so far."""
    from sweeps.status import sweep_status

    spec = _stored(name, storage)
    rows = sweep_status(spec)
    metric = spec.search.metric
    table = Table(title=f"sweep {spec.name}")
    for column in (
        "cell",
        "expected",
        "done",
        "running",
        "pending",
        "failed",
        f"best {metric}",
        "best lr",
    ):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for row in rows:
        best = "-" if row.best_value is None else f"{row.best_value:.2f}"
        best_lr = "-" if row.best_lr is None else f"{row.best_lr:.3g}"
        table.add_row(
            row.cell_id,
            str(row.expected),
            str(row.done),
            str(row.running),
            str(row.pending),
            str(row.failed),
            best,
            best_lr,
        )
    out_console.print(table)
    done = sum(row.done for row in rows)
    out_console.print(f"{done}/{spec.expected_trials()} trials done")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui(
    tracking_uri: Annotated[
        str,
        typer.Option(
            "--tracking-uri", help="backend store (default: sqlite:///mlflow.db in the cwd)"
        ),
    ] = "sqlite:///mlflow.db",
    host: Annotated[
        str, typer.Option("--host", help="bind address; loopback by default")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5000,
) -> None:
    """Serve the MLflow dashboard for a sweep's tracking store (bound to 127.0.0.1)."""
    if tracking_uri.startswith(("http://", "https://")):
        raise _fail(f"--tracking-uri {tracking_uri} is already a server: open it in a browser")
    if tracking_uri.startswith("sqlite:///"):
        database = tracking_uri.removeprefix("sqlite:///")
        if not Path(database).is_file():
            raise _fail(
                f"--tracking-uri: no MLflow database at {os.path.abspath(database)} (run a sweep first)"
            )
    if not _is_loopback(host):
        err_console.print(
            f"[bold yellow]warning:[/] binding MLflow to {host}: the server has no authentication and "
            "anyone who can reach this port can read and change your runs; prefer SSH port forwarding",
            highlight=False,
        )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    out_console.print(
        f"MLflow dashboard on http://{host}:{port}  (Ctrl-C to stop)", highlight=False
    )
    try:
        raise typer.Exit(subprocess.call(command))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    """Add the sweep commands to the `sparsesweep` app."""
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("status")(status)
    app.command("ui")(ui)
