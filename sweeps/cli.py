"""The `sparsesweep` command line: one Typer app that gathers every layer's commands.

Each command module keeps its heavy imports (torch, ray, mlflow) inside the command
functions, so `sparsesweep --help` and the analysis commands start fast.
"""

from __future__ import annotations

import typer

from analysis import cli as analysis_cli
from sweeps import cli_fanin, cli_single, cli_sweep

app = typer.Typer(
    name="sparsesweep",
    help="Sparse-training sweeps (RigL/SET ± SparseOpt) on Ray Tune + Optuna, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli_single.register(app)
cli_sweep.register(app)
cli_fanin.register(app)
analysis_cli.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
