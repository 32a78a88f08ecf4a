"""`sparsesweep sync`: write to MLflow what a sweep's outbox still holds; and what `export` and
`report` say about a sweep whose records are not all in MLflow.

A sweep's tracker writes every MLflow record to a durable outbox first (`sweeps.tracking`);
when MLflow was down or slow at the end of a run, or the driver was killed, the records wait
there. The next `run`/`resume` of the sweep sends them first; `sync` sends them without
starting Ray, e.g. once the tracking server is back.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from sweeps.cli.common import (
    INCOMPLETE_EXIT_CODE,
    ExperimentOption,
    NameArgument,
    check_tracking_option,
    err_console,
    fail,
    pending_note,
    say,
)
from sweeps.cli.locate import SpecOption, StorageOption, TrackingOption, locate_sweep


def _report(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True, markup=False)


def sync(
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
    spec_path: SpecOption = None,
) -> None:
    """Write to MLflow the records a sweep's outbox still holds (those a run could not send
    before it stopped); waits while MLflow keeps taking them."""
    from sweeps.spec.storage import locate
    from sweeps.tracking.outbox import Outbox, OutboxBusyError, outbox_status
    from sweeps.tracking.sender import Destination, Sender
    from sweeps.tracking.uri import drain_timeout_s

    spec = locate_sweep(name, experiment, storage, tracking_uri, spec_path)
    location = locate(spec)
    status = outbox_status(location.outbox_dir)
    if status is None or status.pending == 0:
        say(f"MLflow: nothing waits to be written for sweep {spec.name}")
        return
    check_tracking_option(spec.tracking_uri, must_exist=False)
    try:
        drain_s = drain_timeout_s()
        outbox = Outbox(location.outbox_dir)
    except (ValueError, OutboxBusyError) as error:
        raise fail(str(error)) from None
    destination = Destination(
        spec.tracking_uri,
        spec.name,
        spec.search.metric,
        location.artifact_location,
        location.spec_file,
    )
    sender = Sender(outbox, destination)
    sender.start()
    try:
        pending = sender.drain(drain_s, _report)
    finally:
        sender.stop()
        outbox.close()
    if pending:
        note = pending_note(spec.name, spec.storage_path, pending, spec.tracking_uri)
        raise fail(note, INCOMPLETE_EXIT_CODE)
    say(f"MLflow: every record of sweep {spec.name} is written")


def delivery_note(tracking_uri: str, experiment: str, partial: bool, what: str) -> str | None:
    """What `export`/`report` add about a sweep whose records are not all in MLflow: still
    running, ended with records waiting in its outbox, or stopped with trials not ended."""
    from sweeps.spec.storage import OUTBOX_DIR
    from sweeps.tracking.experiment import outbox_of
    from sweeps.tracking.outbox import outbox_status

    outbox = outbox_of(tracking_uri, experiment)
    status = outbox_status(outbox) if outbox else None
    if status is not None and status.holder is not None:
        return f"the sweep is still running; this {what} is partial"
    folder = Path(outbox) if outbox else None
    storage = (
        str(folder.parent.parent)
        if folder is not None and folder.name == OUTBOX_DIR
        else "STORAGE_PATH"
    )
    if status is not None and status.pending:
        return f"this {what} lacks records: " + pending_note(
            experiment, storage, status.pending, tracking_uri
        )
    if partial:
        return (
            f"the sweep stopped before all its trials ended; this {what} is partial "
            f"(`sparsesweep resume {shlex.quote(experiment)} --storage {shlex.quote(storage)}` "
            "continues it)"
        )
    return None


def register(app: typer.Typer) -> None:
    """Add `sync` to the `sparsesweep` app."""
    app.command("sync")(sync)
