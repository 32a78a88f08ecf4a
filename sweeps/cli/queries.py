"""`sparsesweep queries`: the MLflow search filters that answer common questions of a sweep."""

from __future__ import annotations

import typer

from sweeps.cli.common import ExperimentOption, NameArgument, answer_link, out_console, say
from sweeps.cli.locate import SpecOption, StorageOption, TrackingOption, locate_sweep


def queries(
    name: NameArgument = None,
    experiment: ExperimentOption = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
    spec_path: SpecOption = None,
) -> None:
    """Print MLflow search filters for a sweep: an arm's trials, the curve runs of a sparsity,
    failed or diverged trials… (paste one into the runs page's search box)."""
    from sweeps.tracking.queries import sweep_queries

    spec = locate_sweep(name, experiment, storage, tracking_uri, spec_path)
    out_console.print(
        f"MLflow experiment {spec.name!r} at {spec.tracking_uri} (open it with: "
        f"sparsesweep ui --tracking-uri {spec.tracking_uri})",
        highlight=False,
        soft_wrap=True,
    )
    link = answer_link(spec.tracking_uri, spec.name)
    if link is not None:
        out_console.print(
            "\n# the answer: every arm's accuracy against budget (curve runs, chart view)",
            highlight=False,
            soft_wrap=True,
        )
        say(link)
    for question, filter_string in sweep_queries(spec):
        out_console.print(f"\n# {question}", highlight=False, soft_wrap=True)
        out_console.print(filter_string, highlight=False, soft_wrap=True, markup=False)
    out_console.print(
        "\nIn Python: MlflowClient(TRACKING_URI).search_runs([EXPERIMENT_ID], FILTER)",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add `queries` to the `sparsesweep` app."""
    app.command("queries")(queries)
