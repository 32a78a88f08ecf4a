"""`sparsesweep status`: a sweep's cells, how many of each cell's trials have ended and how
the others stand, and each cell's best value and lr so far, in 80 columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from sweeps.cli.common import ExperimentOption, NameArgument, out_console
from sweeps.cli.locate import SpecOption, StorageOption, TrackingOption, locate_sweep

if TYPE_CHECKING:
    from sweeps.run.status import CellStatus
    from sweeps.spec.schema import SweepSpec


def status_table(spec: SweepSpec, rows: list[CellStatus]) -> Table:
    """The compact table: cell, done/expected, only the non-zero statuses, best value, lr."""
    from contract.outcome import ENDED, Status

    metric = spec.search.metric
    title = f"sweep {spec.name}: each cell's best {metric} so far and its lr"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("cell", no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("trials")
    table.add_column("best", justify="right", no_wrap=True)
    table.add_column("lr", justify="right", no_wrap=True)
    order = (*ENDED, Status.RUNNING, Status.PENDING)
    for row in rows:
        ended = sum(row.count(status) for status in ENDED)
        statuses = "\n".join(  # one status a line: the column stays narrow
            f"{row.count(status)} {status.value}" for status in order if row.count(status)
        )
        best = "-" if row.best_value is None else f"{row.best_value:.4g}"
        best_lr = "-" if row.best_lr is None else f"{row.best_lr:.3g}"
        table.add_row(row.cell_id, f"{ended}/{row.expected}", statuses, best, best_lr)
    return table


def status(
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
    spec_path: SpecOption = None,
) -> None:
    """A sweep's cells: trials ended of expected, how the others stand, and each cell's best
    lr so far (mean over seeds)."""
    from contract.outcome import ENDED
    from sweeps.run.status import seed_lines, sweep_status
    from sweeps.spec.schema import count_range_text

    spec = locate_sweep(name, experiment, storage, tracking_uri, spec_path)
    rows = sweep_status(spec)
    out_console.print(status_table(spec, rows))
    ended = sum(row.count(status) for row in rows for status in ENDED)
    for line in seed_lines(spec):
        out_console.print(line, highlight=False)
    expected = count_range_text(*spec.expected_trials_range())
    out_console.print(
        f"{ended}/{expected} trials ended; best {spec.search.metric} is the mean over the "
        "seeds of a cell's lr trial (a diverged seed scores the worst value)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `status` to the `sparsesweep` app."""
    app.command("status")(status)
