"""What every `sparsesweep` command shares: exit codes, consoles, the one error helper, and
the checks of options several commands take (hosts, tracking URIs, table columns)."""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

BAD_INPUT_EXIT_CODE = 2
"""Exit code of bad input (a flag, a spec field, a file): nothing was started or written."""
INCOMPLETE_EXIT_CODE = 1
"""Exit code of a command that ran but did not finish its work (run it again to continue)."""
DEFAULT_STORAGE = "./sweep_results"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

err_console = Console(stderr=True)
out_console = Console()

NameArgument = Annotated[
    str | None, typer.Argument(metavar="NAME", help="the sweep's name (or --experiment NAME)")
]
ExperimentOption = Annotated[
    str | None,
    typer.Option("--experiment", "-e", help="the sweep's name, its MLflow experiment (or NAME)"),
]


def fail(message: str, code: int = BAD_INPUT_EXIT_CODE) -> typer.Exit:
    """Print `message` to stderr unwrapped (paths stay copyable) and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print `message` to stderr as a warning, unwrapped like `fail`."""
    err_console.print(
        f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True
    )


def say(message: str) -> None:
    """Print a plain line to stdout, never wrapped (commands and paths stay copy-pasteable)."""
    out_console.print(message, highlight=False, soft_wrap=True, markup=False)


def sweep_name(name: str | None, experiment: str | None) -> str:
    """The sweep named as NAME or by --experiment/-e (every sweep command takes both); exit 2
    when neither is given or they name different sweeps."""
    if name is not None and experiment is not None and name != experiment:
        raise fail(
            f"the sweep is named twice, as NAME {name!r} and --experiment {experiment!r}; "
            "allowed: one of them, or both naming the same sweep"
        )
    chosen = name if name is not None else experiment
    if chosen is None:
        raise fail("missing the sweep's name; allowed: NAME or --experiment NAME (-e NAME)")
    return chosen


def check_tracking_option(tracking_uri: str, must_exist: bool) -> None:
    """`--tracking-uri` through the one tracking-URI check (`sweeps.tracking.uri`); exit 2 if bad."""
    from sweeps.tracking.uri import TrackingUriError, check_tracking_uri

    try:
        check_tracking_uri(tracking_uri, field="--tracking-uri", must_exist=must_exist)
    except TrackingUriError as error:
        raise fail(str(error)) from None


def add_column(table: Table, column: str) -> None:
    """Numbers right-aligned; the cell id folded onto more lines, never cut to 'default…'."""
    if column == "cell":
        table.add_column(column, justify="left", overflow="fold", min_width=20)
    else:
        table.add_column(column, justify="right")


def is_loopback(host: str) -> bool:
    """Whether `host` is localhost or a loopback IP."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def valid_host(host: str) -> bool:
    """An IP address or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(host))


def sync_command(name: str, storage: str) -> str:
    """The command that writes a sweep's waiting records, quoted for a shell."""
    return f"sparsesweep sync {shlex.quote(name)} --storage {shlex.quote(storage)}"


def answer_link(tracking_uri: str, name: str, base_url: str | None = None) -> str | None:
    """The dashboard link that opens sweep `name` on its answer (`sweeps.tracking.queries.
    runs_link`: its curve runs, charted): on the tracking server itself, or on `base_url`
    (default: where `sparsesweep ui` serves a store); None while the sweep has no experiment."""
    from sweeps.tracking.experiment import experiment_id_of
    from sweeps.tracking.queries import DEFAULT_UI_URL, runs_link
    from sweeps.tracking.uri import is_server

    experiment_id = experiment_id_of(tracking_uri, name)
    if experiment_id is None:
        return None
    if base_url is None:
        base_url = tracking_uri if is_server(tracking_uri) else DEFAULT_UI_URL
    return runs_link(base_url, experiment_id)


def pending_note(name: str, storage: str, pending: int, tracking_uri: str) -> str:
    """What to say when `pending` records of sweep `name` are not in MLflow yet."""
    return (
        f"{pending:,} MLflow records of sweep {name} are not in MLflow at {tracking_uri} yet; "
        f"they wait in the sweep's outbox: `{sync_command(name, storage)}` writes them "
        "(running the sweep again does too)"
    )
