"""`sparsesweep ui`: the MLflow dashboard on a sweep's tracking store (loopback by default)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from sweeps.cli.common import (
    DEFAULT_TRACKING_URI,
    ExperimentOption,
    NameArgument,
    check_tracking_option,
    err_console,
    fail,
    is_loopback,
    out_console,
    say,
    valid_host,
)
from sweeps.cli.locate import SpecOption, StorageOption, TrackingOption, locate_store
from sweeps.tracking.uri import is_server

QUIET_UVICORN = "--log-level warning --no-access-log"
"""The server's log without its line per request (`--server-logs` keeps them)."""


QUIET_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated"
"""The deprecation warning MLflow 3.17's server prints at every start (nothing to act on)."""


def _server_env(quiet: bool) -> dict[str, str]:
    """The MLflow server's environment: without its GenAI job runner unless asked for, and
    (`quiet`) without the library deprecation warning it prints at start.

    MLflow 3 starts about seven busy job-consumer processes by default; a sweep dashboard
    uses none of them. Setting MLFLOW_SERVER_ENABLE_JOB_EXECUTION or PYTHONWARNINGS yourself
    overrides this.
    """
    defaults = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if quiet:
        defaults["PYTHONWARNINGS"] = QUIET_WARNINGS
    return {**defaults, **os.environ}


def _parse_allowed_hosts(value: str) -> list[str]:
    """Split `--allowed-hosts`; each entry is a host name, an IP or a `*.` wildcard of a name."""
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if not (valid_host(name) or (name.startswith("*.") and valid_host(name[2:]))):
            raise fail(
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
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    tracking_uri: TrackingOption = None,
    storage: StorageOption = None,
    spec_path: SpecOption = None,
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
    server_logs: Annotated[
        bool,
        typer.Option(
            "--server-logs",
            help="show the MLflow server's own log: a line per request and its warnings",
        ),
    ] = False,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="comma-separated host names (wildcards like *.example.org allowed) a browser may "
            "use to reach the server, on top of MLflow's default localhost and private IPs",
        ),
    ] = None,
) -> None:
    """Serve the MLflow dashboard of a tracking store (bound to 127.0.0.1) and print, for each
    sweep in it (or the one named), the link that opens its answer (curve runs, charted)."""
    from sweeps.tracking.experiment import sweep_experiments
    from sweeps.tracking.queries import runs_link

    named = name is not None or experiment is not None or spec_path is not None
    if named:
        sweep, tracking_uri = locate_store(name, experiment, storage, tracking_uri, spec_path)
    elif tracking_uri is None:
        tracking_uri = DEFAULT_TRACKING_URI
    if not valid_host(host):
        raise fail(
            f"--host {host!r} is not an IP address or host name; allowed: 127.0.0.1 (default, "
            "this machine only), another local address such as 0.0.0.0, or a host name"
        )
    if not 1 <= port <= 65535:
        raise fail(f"--port {port} is out of range; allowed: an integer in [1, 65535]")
    if workers < 1:
        raise fail(f"--workers {workers}: allowed: an integer >= 1")
    extra_hosts = _parse_allowed_hosts(allowed_hosts) if allowed_hosts is not None else []
    if is_server(tracking_uri):
        raise fail(
            f"--tracking-uri (or MLFLOW_TRACKING_URI) {tracking_uri} is already a server: open "
            "it in a browser; allowed here: a store to serve, sqlite:///PATH, file:///PATH or a "
            "database URI"
        )
    check_tracking_option(tracking_uri, must_exist=True)
    if not is_loopback(host):
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
    if not server_logs:
        command += ["--uvicorn-opts", QUIET_UVICORN]
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    out_console.print(f"MLflow dashboard on {base_url}  (Ctrl-C to stop)", highlight=False)
    for found, experiment_id in sweep_experiments(tracking_uri):
        if not named or found == sweep:
            say(f"sweep {found}: {runs_link(base_url, experiment_id)}")
    sys.stdout.flush()
    # become the server: Ctrl-C and `kill` reach it directly and no orphan is left behind
    os.execve(sys.executable, command, _server_env(quiet=not server_logs))


def register(app: typer.Typer) -> None:
    """Add `ui` to the `sparsesweep` app."""
    app.command("ui")(ui)
