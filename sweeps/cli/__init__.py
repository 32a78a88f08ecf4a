"""The `sparsesweep` command line: one Typer app that gathers every command.

Each command module keeps its heavy imports (torch, ray, mlflow) inside the command
functions, so `sparsesweep --help` and the analysis commands start fast. Every module shares
`sweeps.cli.common` (exit codes and the one error helper).
"""

from __future__ import annotations

import shutil

import typer

from sweeps.cli import analysis, fanin, queries, run, single, status, sync, ui

app = typer.Typer(
    name="sparsesweep",
    help="Sparse-training sweeps (RigL/SET ± SparseOpt) on Ray Tune + Optuna, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help (no boxes, no `<bool>` beside every flag), wrapped to the terminal's width
    rich_markup_mode=None,
    context_settings={"max_content_width": shutil.get_terminal_size((80, 24)).columns},
)
for module in (single, run, status, sync, queries, ui, fanin, analysis):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
