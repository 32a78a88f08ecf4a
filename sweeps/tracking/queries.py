"""MLflow search filters for the questions researchers ask of a sweep's dashboard.

Each filter goes into the search box of the experiment's runs page in MLflow's UI, or into
`MlflowClient(tracking_uri).search_runs([experiment_id], filter_string)`.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from contract.names import Role, Tag
from sweeps.spec.messages import format_number
from sweeps.spec.schema import SweepSpec

DEFAULT_UI_URL = "http://127.0.0.1:5000"
"""Where `sparsesweep ui` serves the dashboard with its default host and port."""

CURVE_RUNS = f"tags.`{Tag.ROLE}` = '{Role.CURVE}'"
"""The curve runs of every arm, dense included: accuracy against budget, one run per curve."""


def runs_link(base_url: str, experiment_id: str, filter_string: str = CURVE_RUNS) -> str:
    """The dashboard address of an experiment's runs in model-training mode, filtered by
    `filter_string` (default: the curve runs) and opened in the chart view: one link that
    shows the answer in a fresh browser, without a click."""
    query = urlencode(
        {
            "workflowType": "machine_learning",
            "searchFilter": filter_string,
            "compareRunsMode": "CHART",
        },
        quote_via=quote,
    )
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def sweep_queries(spec: SweepSpec) -> list[tuple[str, str]]:
    """(question, filter) pairs, filled in with the sweep's own first arm and sparsity."""
    arm = next((a for a in spec.grid.arms if a != "dense"), spec.grid.arms[0])
    sparsity = format_number(spec.grid.sparsities[0])
    budget = spec.grid.budgets[-1]
    role = f"tags.`{Tag.ROLE}`"
    return [
        (
            f"all trials of arm {arm} at sparsity {sparsity}",
            f"{role} = '{Role.TRIAL}' and tags.arm = '{arm}' and tags.sparsity = '{sparsity}'",
        ),
        (
            f"the curve runs of sparsity {sparsity} (open the chart view: accuracy vs budget)",
            f"{role} = '{Role.CURVE}' and tags.sparsity = '{sparsity}'",
        ),
        (
            f"the cell runs of budget {budget} (per-epoch seed means of each arm)",
            f"{role} = '{Role.CELL}' and tags.budget = '{budget}'",
        ),
        (
            "failed or diverged trials (tag sparsesweep.status says which)",
            f"{role} = '{Role.TRIAL}' and attributes.status = 'FAILED'",
        ),
        ("diverged trials only", f"tags.`{Tag.STATUS}` = 'diverged'"),
        (
            "trials stopped early by the scheduler",
            f"{role} = '{Role.TRIAL}' and tags.`{Tag.STATUS}` = 'stopped'",
        ),
        ("the reports, newest first in the UI", f"{role} = '{Role.REPORT}'"),
    ]
