"""`sparsesweep status`: a sweep's cells × trials by status, and each cell's best lr so far."""

from __future__ import annotations

import typer
from rich.table import Table

from sweeps.cli.common import (
    DEFAULT_STORAGE,
    ExperimentOption,
    NameArgument,
    StorageOption,
    add_column,
    out_console,
    sweep_name,
)
from sweeps.cli.run import stored_sweep


def status(
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    storage: StorageOption = DEFAULT_STORAGE,
) -> None:
    """Cells × trials of a sweep by status, and each cell's best lr so far (mean over seeds)."""
    from contract.outcome import ENDED, Status
    from sweeps.run.status import seed_lines, sweep_status
    from sweeps.spec.schema import count_range_text

    spec = stored_sweep(sweep_name(name, experiment), storage)
    rows = sweep_status(spec)
    shown = (*ENDED, Status.RUNNING, Status.PENDING)
    table = Table(title=f"sweep {spec.name}")
    metric = spec.search.metric
    for column in ("cell", "expected", *(s.value for s in shown), f"best {metric}", "best lr"):
        add_column(table, column)
    for row in rows:
        best = "-" if row.best_value is None else f"{row.best_value:.4g}"
        best_lr = "-" if row.best_lr is None else f"{row.best_lr:.3g}"
        counts = [str(row.count(status)) for status in shown]
        table.add_row(row.cell_id, str(row.expected), *counts, best, best_lr)
    out_console.print(table)
    ended = sum(row.count(status) for row in rows for status in ENDED)
    for line in seed_lines(spec):
        out_console.print(line, highlight=False)
    expected = count_range_text(*spec.expected_trials_range())
    out_console.print(
        f"{ended}/{expected} trials ended; best {metric} is the mean over the "
        "seeds of a cell's lr trial (a diverged seed scores the worst value)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `status` to the `sparsesweep` app."""
    app.command("status")(status)
