"""`sparsesweep run` and `sparsesweep resume`: start, resume or extend a sweep.

Every check on the user's input (spec fields, overrides, storage, tracking store, spec
changes against an existing sweep, the Ray address) happens before Ray starts; a failure
prints one message naming the field or file and exits with code 2.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sweeps.cli.common import (
    INCOMPLETE_EXIT_CODE,
    ExperimentOption,
    NameArgument,
    answer_link,
    fail,
    pending_note,
    say,
    valid_host,
    warn,
)
from sweeps.cli.locate import SpecOption, StorageOption, TrackingOption, locate_sweep

_ADDRESS_RE = re.compile(r"^(?:ray://)?(?P<host>[^:/\s]+):(?P<port>\d{1,5})$")


def _load(spec_path: Path, overrides: list[str] | None) -> Any:
    from sweeps.spec.load import load_spec

    try:
        return load_spec(spec_path, overrides or [])
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None


def _print_dry_run(spec: Any, address: str | None, allow_version_change: bool) -> None:
    """The cells, trials and cost once, then, as warnings, whatever a real run would refuse
    before Ray starts (tracking store, storage, an existing sweep, data roots here, the Ray
    address)."""
    from sweeps.run.launch import SweepError, dry_run_problems, shard_plan, stored_sweep
    from sweeps.spec.cost import estimate_cost
    from sweeps.spec.storage import locate

    say(f"sweep {spec.name} (dry run: nothing is started or written)")
    if spec.grid.adaptive is None:
        say(estimate_cost(spec).summary())
    else:
        say("adaptive seeds, no seed added:\n" + estimate_cost(spec).summary())
        say(
            "adaptive seeds, every primary cell at max:\n"
            + estimate_cost(spec, at_max=True).summary()
        )
    try:
        shards = shard_plan(spec, locate(spec), stored_sweep(locate(spec))).shards
    except (SweepError, ValueError, OSError):  # the problems below name what is wrong
        shards = []
    if len(shards) > 1:
        sizes = ", ".join(str(shard.expected(spec)) for shard in shards)
        say(f"runs as {len(shards)} Tune experiments (shards of whole cells): {sizes} trials")
    problems = dry_run_problems(spec, allow_version_change)
    for problem in [*problems, address_problem(address)]:
        if problem is not None:
            warn(problem)


def next_commands(spec: Any) -> list[tuple[str, str]]:
    """(what, command) for looking at a sweep: its dashboard, status and report, quoted for a
    shell and with every location spelled out, so each runs from any directory."""
    from sweeps.tracking.uri import is_server

    uri, name = shlex.quote(spec.tracking_uri), shlex.quote(spec.name)
    dashboard = (
        spec.tracking_uri
        if is_server(spec.tracking_uri)
        else f"sparsesweep ui --tracking-uri {uri}"
    )
    return [
        ("dashboard", dashboard),
        ("status", f"sparsesweep status {name} --storage {shlex.quote(spec.storage_path)}"),
        ("report", f"sparsesweep report {name} --tracking-uri {uri} --out report-{spec.name}"),
    ]


def _print_summary(spec: Any, summary: Any, mlflow_complete: bool) -> None:
    """How the trials ended, then the commands to look at the sweep, one unwrapped line each,
    and the dashboard link once MLflow holds every record (asking a tracking server that is
    down for the experiment's id would fail, or wait out MLflow's retries, before the note
    that says which command writes the waiting records)."""
    counts = {status: n for status, n in summary.statuses.items() if status != "pending" and n}
    pending = summary.expected - sum(counts.values())  # not started, or in flight at Ctrl-C
    if pending > 0:
        counts["pending"] = pending
    parts = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    say(f"sweep {spec.name}: {summary.ended}/{summary.expected} trials ended ({parts or 'none'})")
    for what, command in next_commands(spec):
        say(f"{what}: {command}")
    link = answer_link(spec.tracking_uri, spec.name) if mlflow_complete else None
    if link is not None:
        say(f"answer: {link}")


def _pending_records(spec: Any) -> int:
    """Records of the sweep its tracker could not send to MLflow before the run ended."""
    from sweeps.spec.storage import locate
    from sweeps.tracking.outbox import outbox_status

    status = outbox_status(locate(spec).outbox_dir)
    return 0 if status is None else status.pending


def address_problem(address: str | None) -> str | None:
    """Why `--address` is unusable: not `auto`, `local`, HOST:PORT or ray://HOST:PORT, or
    nothing answers there; None when it is fine (or not given)."""
    if address is None or address in ("auto", "local"):
        return None
    match = _ADDRESS_RE.match(address)
    if match is None or not valid_host(match["host"]) or not 1 <= int(match["port"]) <= 65535:
        return (
            f"--address {address!r} is not a Ray address; allowed: auto (the cluster running on "
            "this machine), local, HOST:PORT (the head's GCS, e.g. 10.0.0.5:6379) or "
            "ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001)"
        )
    try:
        socket.create_connection((match["host"], int(match["port"])), timeout=5).close()
    except OSError as error:
        return (
            f"--address {address}: nothing answers at {match['host']}:{match['port']} "
            f"({error.strerror or error}); start the cluster (`ray up cluster.yaml`) or forward its "
            "port, or leave --address out to run on a local Ray"
        )
    return None


def _check_address(address: str | None) -> None:
    """Exit 2 naming `--address` when it is unusable (`address_problem`)."""
    problem = address_problem(address)
    if problem is not None:
        raise fail(problem)


@dataclass(frozen=True)
class LaunchOptions:
    """How `run` and `resume` launch a sweep (their shared flags)."""

    address: str | None
    progress: bool
    verbose: bool
    allow_version_change: bool


def _launch(spec: Any, options: LaunchOptions) -> None:
    from sweeps.run.launch import SweepError, run_sweep
    from sweeps.spec.checks import check_data_roots
    from sweeps.spec.messages import SpecError

    _check_address(options.address)
    if options.address is None and "RAY_ADDRESS" not in os.environ:
        # on a cluster the workers' disks may differ from this one; the trial checks them there
        try:
            check_data_roots(spec)
        except SpecError as error:
            raise fail(str(error)) from None
    try:
        summary = run_sweep(
            spec,
            address=options.address,
            progress=options.progress,
            verbose=options.verbose,
            allow_version_change=options.allow_version_change,
            on_warning=warn,
        )
    except SweepError as error:
        raise fail(str(error)) from None
    except ConnectionError as error:
        raise fail(f"--address {options.address}: {error}") from None
    pending = _pending_records(spec)
    _print_summary(spec, summary, mlflow_complete=pending == 0)
    if pending:
        note = pending_note(spec.name, spec.storage_path, pending, spec.tracking_uri)
        if summary.complete:
            raise fail(note, INCOMPLETE_EXIT_CODE)
        warn(note)
    if not summary.complete:
        raise fail(
            f"the sweep stopped before all {summary.expected} trials ended; run the same command "
            f"again (or `sparsesweep resume {spec.name}`) to continue it",
            INCOMPLETE_EXIT_CODE,
        )


AddressOption = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster: 'auto' or ray://HOST:10001 (default: local Ray)"),
]
ProgressOption = Annotated[
    bool,
    typer.Option(
        "--progress/--no-progress",
        help="live progress (a line per ended trial when stderr is not a terminal)",
    ),
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", help="also show Ray's, Tune's and MLflow's own output")
]
AllowVersionsOption = Annotated[
    bool,
    typer.Option(
        "--allow-version-change",
        help="resume a sweep under other ray/optuna versions than it ran under (warns)",
    ),
]


def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="sweep spec YAML")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a spec field, e.g. --set grid.seeds=[0,1,2]"),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="print cells, trial count, cost and warnings; run nothing"),
    ] = False,
    address: AddressOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
    allow_version_change: AllowVersionsOption = False,
) -> None:
    """Run a sweep; running it again on an existing sweep resumes (and may extend) it."""
    spec = _load(spec_path, overrides)
    if dry_run:
        _print_dry_run(spec, address, allow_version_change)
        return
    _launch(spec, LaunchOptions(address, progress, verbose, allow_version_change))


def resume(
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
    spec_path: SpecOption = None,
    address: AddressOption = None,
    progress: ProgressOption = True,
    verbose: VerboseOption = False,
    allow_version_change: AllowVersionsOption = False,
) -> None:
    """Resume an interrupted sweep by name, under the spec it was started with."""
    spec = locate_sweep(name, experiment, storage, tracking_uri, spec_path)
    _launch(spec, LaunchOptions(address, progress, verbose, allow_version_change))


def register(app: typer.Typer) -> None:
    """Add `run` and `resume` to the `sparsesweep` app."""
    app.command("run")(run)
    app.command("resume")(resume)
