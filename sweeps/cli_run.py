"""`sparsesweep run` and `sparsesweep resume`: start, resume or extend a sweep.

Every check on the user's input (spec fields, overrides, storage, tracking store, spec
changes against an existing sweep, the Ray address) happens before Ray starts; a failure
prints one message naming the field or file and exits with code 2.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sweeps.cli_errors import (
    DEFAULT_STORAGE,
    INCOMPLETE_EXIT_CODE,
    add_column,
    fail,
    out_console,
    valid_host,
)

_ADDRESS_RE = re.compile(r"^(?:ray://)?(?P<host>[^:/\s]+):(?P<port>\d{1,5})$")


def _load(spec_path: Path, overrides: list[str] | None) -> Any:
    from sweeps.spec import load_spec

    try:
        return load_spec(spec_path, overrides or [])
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None


def _print_dry_run(spec: Any) -> None:
    from sweeps.cost import estimate_cost

    estimate = estimate_cost(spec)
    table = Table(title=f"sweep {spec.name}: {len(spec.cells())} cells")
    for column in ("cell", "trials", "epochs/trial", "trial-epochs", "device-hours"):
        add_column(table, column)
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


def _check_address(address: str | None) -> None:
    """`--address` must be `auto`, `local`, HOST:PORT or ray://HOST:PORT, and reachable."""
    if address is None or address in ("auto", "local"):
        return
    match = _ADDRESS_RE.match(address)
    if match is None or not valid_host(match["host"]) or not 1 <= int(match["port"]) <= 65535:
        raise fail(
            f"--address {address!r} is not a Ray address; allowed: auto (the cluster running on "
            "this machine), local, HOST:PORT (the head's GCS, e.g. 10.0.0.5:6379) or "
            "ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001)"
        )
    try:
        socket.create_connection((match["host"], int(match["port"])), timeout=5).close()
    except OSError as error:
        raise fail(
            f"--address {address}: nothing answers at {match['host']}:{match['port']} "
            f"({error.strerror or error}); start the cluster (`ray up cluster.yaml`) or forward its "
            "port, or leave --address out to run on a local Ray"
        ) from None


def _launch(spec: Any, address: str | None, progress: bool) -> None:
    from sweeps.launch import SweepError, run_sweep
    from sweeps.spec_checks import SpecError, check_data_roots

    _check_address(address)
    if address is None and "RAY_ADDRESS" not in os.environ:
        # on a cluster the workers' disks may differ from this one; the trial checks them there
        try:
            check_data_roots(spec)
        except SpecError as error:
            raise fail(str(error)) from None
    try:
        summary = run_sweep(spec, address=address, progress=progress)
    except SweepError as error:
        raise fail(str(error)) from None
    except ConnectionError as error:
        raise fail(f"--address {address}: {error}") from None
    _print_summary(spec, summary)
    if not summary.complete:
        raise fail(
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
    spec = stored_sweep(name, storage)
    _launch(spec, address, progress)


def stored_sweep(name: str, storage: str) -> Any:
    """The spec sweep `name` under `storage` runs under; exit 2 naming the known sweeps if none."""
    from sweeps.launch import SPEC_FILE
    from sweeps.spec import read_spec_file
    from sweeps.store import is_remote

    root = storage if is_remote(storage) else os.path.abspath(storage)
    try:
        spec = read_spec_file(f"{root.rstrip('/')}/{name}/{SPEC_FILE}")
    except ValueError as error:
        raise fail(str(error)) from None
    if spec is None:
        known = (
            sorted(p.parent.name for p in Path(root).glob(f"*/{SPEC_FILE}"))
            if not is_remote(root)
            else []
        )
        raise fail(
            f"no sweep named {name!r} under --storage {root}"
            + (f"; known sweeps: {', '.join(known)}" if known else " (no sweeps there)")
        )
    return spec


def register(app: typer.Typer) -> None:
    """Add `run` and `resume` to the `sparsesweep` app."""
    app.command("run")(run)
    app.command("resume")(resume)
