"""The sweep's MLflow experiment: created on first use with an explicit artifact location, and
tagged with what a reader of the sweep needs (search metric, description, where records not
yet in MLflow wait). Tags are set only when their value changes, so starting a finished sweep
again changes nothing in MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from contract.names import Tag
from sweeps.spec.storage import OUTBOX_DIR, SPEC_FILE, locate
from sweeps.tracking.runs import experiment_note

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow 3's experiment kind: its UI opens an experiment of kind `custom_model_development` on
its runs (model-training mode) rather than on the GenAI traces overview."""
MODEL_TRAINING_KIND = "custom_model_development"


def experiment_tags(spec: SweepSpec, outbox_dir: str) -> dict[str, str]:
    """The tracker's experiment tags: search metric, the primary declaration the report answers
    (`analysis:` of the spec, declared before the data), description (`mlflow.note.content`:
    the sweep's factors and how to read its runs), the outbox folder, where the stored spec is,
    the seeds every lr trial runs, the adaptive-seed rule (if any) and the kind that opens the experiment in MLflow's
    model-training mode."""
    factors = {
        "workloads": list(spec.workloads),
        "arms": spec.grid.arms,
        "sparsities": spec.grid.sparsities,
        "budgets (epochs)": spec.grid.budgets,
        "seeds": spec.grid.seeds
        if isinstance(spec.grid.seeds, list)
        else spec.grid.seeds.model_dump(),
    }
    tags = {
        Tag.SEARCH_METRIC: spec.search.metric,
        Tag.PRIMARY: spec.analysis.declaration().to_json(),
        Tag.SEARCH_SEEDS: str(len(spec.grid.search_seeds())),
        MLFLOW_RUN_NOTE: experiment_note(spec.name, factors, spec.search.metric),
        Tag.OUTBOX: str(Path(outbox_dir).absolute()),
        Tag.SPEC_FILE: locate(spec).spec_file,
        EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND,
    }
    if spec.grid.adaptive is not None:
        tags[Tag.SEEDS] = json.dumps(spec.grid.adaptive.model_dump())
    return tags


def ensure_experiment(
    client: Any, name: str, artifact_location: str | None, tags: dict[str, str]
) -> str:
    """The id of experiment `name`, created if missing; `tags` set where they differ."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={Tag.SWEEP: name, **tags}
        )
    for key, value in tags.items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def tag_experiment(
    tracking_uri: str, name: str, artifact_location: str | None, tags: dict[str, str]
) -> str:
    """`ensure_experiment` with a client of its own (for the launcher, before Tune starts)."""
    from mlflow.tracking import MlflowClient

    return ensure_experiment(MlflowClient(tracking_uri), name, artifact_location, tags)


def experiment_id_of(tracking_uri: str, name: str) -> str | None:
    """The id of experiment `name` in the store (None: no such experiment)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri).get_experiment_by_name(name)
    return None if found is None else found.experiment_id


def sweep_experiments(tracking_uri: str) -> list[tuple[str, str]]:
    """(name, id) of every sweep's experiment in the store (tagged `sparsesweep.sweep`)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri).search_experiments(max_results=50_000)
    return sorted((e.name, e.experiment_id) for e in found if Tag.SWEEP in e.tags)


def recorded_spec_file(tracking_uri: str, name: str) -> str | None:
    """Where sweep `name` keeps its stored spec, as its experiment records it (the tag
    `sparsesweep.spec_file`, or beside the outbox of a sweep tagged before it existed); None
    when the store has no such experiment or it says neither."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if found is None:
        return None
    if Tag.SPEC_FILE in found.tags:
        return found.tags[Tag.SPEC_FILE]
    outbox = Path(found.tags.get(Tag.OUTBOX, ""))
    return str(outbox.parent / SPEC_FILE) if outbox.name == OUTBOX_DIR else None


def outbox_of(tracking_uri: str, name: str) -> str | None:
    """The outbox folder experiment `name` is tagged with (None: no such experiment or tag)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri).get_experiment_by_name(name)
    return None if found is None else found.tags.get(Tag.OUTBOX)
