"""Sweep CLI commands: `run`, `resume`, `status`, `ui`.

Every check on the user's input (spec fields, overrides, storage, tracking store, spec
changes against an existing sweep) happens before Ray starts; failures print one message
naming the field or file and exit with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

BAD_INPUT_EXIT_CODE = 2
INCOMPLETE_EXIT_CODE = 1
DEFAULT_STORAGE = "./sweep_results"
_ADDRESS_RE = re.compile(r"^(?:ray://)?(?P<host>[^:/\s]+):(?P<port>\d{1,5})$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

err_console = Console(stderr=True)
out_console = Console()


def _fail(message: str, code: int = BAD_INPUT_EXIT_CODE) -> typer.Exit:
    """Print `message` unwrapped (paths stay copyable) and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load(spec_path: Path, overrides: list[str] | None) -> Any:
    from sweeps.spec import load_spec

    try:
        return load_spec(spec_path, overrides or [])
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None


def _add_column(table: Table, column: str) -> None:
    """Numbers right-aligned; the cell id folded onto more lines, never cut to 'default…'."""
    if column == "cell":
        table.add_column(column, justify="left", overflow="fold", min_width=20)
    else:
        table.add_column(column, justify="right")


def _print_dry_run(spec: Any) -> None:
    from sweeps.cost import estimate_cost

    estimate = estimate_cost(spec)
    table = Table(title=f"sweep {spec.name}: {len(spec.cells())} cells")
    for column in ("cell", "trials", "epochs/trial", "trial-epochs", "device-hours"):
        _add_column(table, column)
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
    if match is None or not _valid_host(match["host"]) or not 1 <= int(match["port"]) <= 65535:
        raise _fail(
            f"--address {address!r} is not a Ray address; allowed: auto (the cluster running on "
            "this machine), local, HOST:PORT (the head's GCS, e.g. 10.0.0.5:6379) or "
            "ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001)"
        )
    try:
        socket.create_connection((match["host"], int(match["port"])), timeout=5).close()
    except OSError as error:
        raise _fail(
            f"--address {address}: nothing answers at {match['host']}:{match['port']} "
            f"({error.strerror or error}); start the cluster (`ray up cluster.yaml`) or forward its "
            "port, or leave --address out to run on a local Ray"
        ) from None


def _launch(spec: Any, address: str | None, progress: bool) -> None:
    from sweeps.launch import SweepError, run_sweep
    from sweeps.spec import SpecError, check_data_roots

    _check_address(address)
    if address is None and "RAY_ADDRESS" not in os.environ:
        # on a cluster the workers' disks may differ from this one; the trial checks them there
        try:
            check_data_roots(spec)
        except SpecError as error:
            raise _fail(str(error)) from None
    try:
        summary = run_sweep(spec, address=address, progress=progress)
    except SweepError as error:
        raise _fail(str(error)) from None
    except ConnectionError as error:
        raise _fail(f"--address {address}: {error}") from None
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
        _add_column(table, column)
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


def _valid_host(host: str) -> bool:
    """An IP address or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(host))


def _server_env() -> dict[str, str]:
    """The MLflow server's environment: without its GenAI job runner unless asked for.

    MLflow 3 starts about seven busy job-consumer processes by default; a sweep dashboard
    uses none of them. Setting MLFLOW_SERVER_ENABLE_JOB_EXECUTION yourself overrides this.
    """
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def _parse_allowed_hosts(value: str) -> list[str]:
    """Split `--allowed-hosts`; each entry is a host name, an IP or a `*.` wildcard of a name."""
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if not (_valid_host(name) or (name.startswith("*.") and _valid_host(name[2:]))):
            raise _fail(
                f"--allowed-hosts: {name!r} is not a host name; allowed: comma-separated host "
                "names or IPs without a port (mlflow.example.org,10.0.0.5) or wildcards of a "
                "name (*.example.org)"
            )
    return names


def _host_patterns(names: list[str]) -> list[str]:
    """MLflow's default allowed Host headers plus each name with and without a port.

    MLflow replaces its defaults (localhost, private IPs) by `--allowed-hosts` and matches the
    Host header with its port, so both are added here.
    """
    from mlflow.server.security_utils import get_default_allowed_hosts

    return [
        *get_default_allowed_hosts(),
        *(f"{name}{port}" for name in names for port in ("", ":*")),
    ]


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
    port: Annotated[int, typer.Option("--port", help="TCP port, 1-65535")] = 5000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="server processes (MLflow's own default is 4; one serves a person and starts "
            "reliably on a busy machine)",
        ),
    ] = 1,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="comma-separated host names (wildcards like *.example.org allowed) a browser may "
            "use to reach the server, on top of MLflow's default localhost and private IPs",
        ),
    ] = None,
) -> None:
    """Serve the MLflow dashboard for a sweep's tracking store (bound to 127.0.0.1)."""
    if not _valid_host(host):
        raise _fail(
            f"--host {host!r} is not an IP address or host name; allowed: 127.0.0.1 (default, "
            "this machine only), another local address such as 0.0.0.0, or a host name"
        )
    if not 1 <= port <= 65535:
        raise _fail(f"--port {port} is out of range; allowed: an integer in [1, 65535]")
    if workers < 1:
        raise _fail(f"--workers {workers}: allowed: an integer >= 1")
    extra_hosts = _parse_allowed_hosts(allowed_hosts) if allowed_hosts is not None else []
    if tracking_uri.startswith(("http://", "https://")):
        raise _fail(
            f"--tracking-uri {tracking_uri} is already a server: open it in a browser; allowed "
            "here: a local store, sqlite:///PATH or file:///PATH"
        )
    if tracking_uri.startswith("sqlite:///"):
        database = tracking_uri.removeprefix("sqlite:///")
        if not Path(database).is_file():
            raise _fail(
                f"--tracking-uri: no MLflow database at {os.path.abspath(database)}; allowed: "
                "sqlite:///PATH of an existing store (a sweep's tracking_uri; run a sweep first)"
            )
    if not _is_loopback(host):
        err_console.print(
            f"[bold yellow]warning:[/] binding MLflow to {host}: the server has no authentication and "
            "anyone who can reach this port can read and change your runs; prefer SSH port forwarding "
            "(ssh -L 5000:127.0.0.1:5000 HOST) to a loopback-bound server; a browser reaching it "
            "by a public host name needs --allowed-hosts NAME (MLflow answers 403 otherwise)",
            highlight=False,
            soft_wrap=True,
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
        "--workers",
        str(workers),
    ]
    if extra_hosts:
        command += ["--allowed-hosts", ",".join(_host_patterns(extra_hosts))]
    out_console.print(
        f"MLflow dashboard on http://{host}:{port}  (Ctrl-C to stop)", highlight=False
    )
    sys.stdout.flush()
    # become the server: Ctrl-C and `kill` reach it directly and no orphan is left behind
    os.execve(sys.executable, command, _server_env())


def register(app: typer.Typer) -> None:
    """Add the sweep commands to the `sparsesweep` app."""
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("status")(status)
    app.command("ui")(ui)
